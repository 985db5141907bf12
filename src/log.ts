// Logging: JSON lines for machines, colour lines on a terminal. Redaction is the second line of
// defence; the first is that no module hands a secret to the logger.
import { createRequire } from 'node:module';
import { pino, type DestinationStream, type Logger } from 'pino';
import type PinoPretty from 'pino-pretty';

export type { Logger };

/** Secret property names, redacted up to three levels deep (e.g. `settings.hmarex.password`). */
const SECRET_FIELDS = ['password', 'token', 'access_token', 'totp_key', 'totpKey', 'authorization'];

export const REDACT_PATHS = SECRET_FIELDS.flatMap((field) => [field, `*.${field}`, `*.*.${field}`, `*.*.*.${field}`]);

export interface LoggerOptions {
  level: string;
  /** Where lines go; defaults to stdout (fd 1). */
  destination?: DestinationStream;
  /** Colour lines; defaults to "the destination is a terminal". */
  pretty?: boolean;
  fd?: 1 | 2;
}

export function createLogger(options: LoggerOptions): Logger {
  const fd = options.fd ?? 1;
  const isTty = fd === 1 ? process.stdout.isTTY : process.stderr.isTTY;
  const base = {
    level: options.level,
    base: undefined,
    redact: { paths: REDACT_PATHS, censor: '[redacted]' },
  };
  if (options.destination) return pino(base, options.destination);
  if (options.pretty ?? isTty) {
    // Loaded only for a terminal: a daemon under Docker or systemd never needs its ~8 MB.
    const pretty = createRequire(import.meta.url)('pino-pretty') as typeof PinoPretty;
    return pino(base, pretty({ colorize: true, destination: fd, translateTime: 'SYS:HH:MM:ss', ignore: 'pid,hostname' }));
  }
  return pino(base, pino.destination({ fd, sync: true }));
}
