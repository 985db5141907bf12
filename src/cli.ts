// The command line: parses arguments, loads settings, runs one command, returns its exit code.
import { parseArgs } from 'node:util';
import YAML from 'yaml';
import { Bridge } from './bridge.js';
import { runCodes } from './codes.js';
import { ConfigError, loadConfig, maskedSettings, type LoadedConfig } from './config.js';
import { startHealthServer } from './health.js';
import { createLogger, type Logger } from './log.js';
import { VERSION } from './version.js';

export const EXIT_OK = 0;
export const EXIT_FATAL = 1;
export const EXIT_CONFIG = 2;

const HELP = `hmarex2mqtt: Terneo thermostat TOTP codes from the Hmarex cloud, published to MQTT

Usage:
  hmarex2mqtt [run] [--config FILE]                 the daemon, until SIGINT/SIGTERM
  hmarex2mqtt codes [--config FILE] [--watch] [--json]
                                                    the account's thermostats and their current codes
  hmarex2mqtt check-config [--config FILE]          validate and print the effective settings
  hmarex2mqtt demo                                  the whole pipeline with a simulated cloud and broker
  hmarex2mqtt --help | --version

Settings come from --config FILE, else $HMAREX2MQTT_CONFIG, else config/config.yaml when it
exists; every key can be set from the environment (see config/config.example.yaml).
Exit codes: 0 clean stop, 1 fatal error, 2 bad configuration.
`;

export interface Io {
  stdout: NodeJS.WritableStream;
  stderr: NodeJS.WritableStream;
}

const processIo: Io = { stdout: process.stdout, stderr: process.stderr };

function load(file: string | undefined, io: Io): LoadedConfig | number {
  try {
    return loadConfig({ file });
  } catch (error) {
    if (error instanceof ConfigError) {
      io.stderr.write(`hmarex2mqtt: ${error.message}\n`);
      return EXIT_CONFIG;
    }
    throw error;
  }
}

/** Resolves on the first SIGINT or SIGTERM. */
function untilSignal(): Promise<NodeJS.Signals> {
  return new Promise((resolve) => {
    const handler = (signal: NodeJS.Signals) => {
      process.off('SIGINT', handler);
      process.off('SIGTERM', handler);
      resolve(signal);
    };
    process.on('SIGINT', handler);
    process.on('SIGTERM', handler);
  });
}

/** Stops within a few seconds whatever hangs: a daemon that will not die is worse than a dirty stop. */
async function stopWithin(ms: number, stop: () => Promise<void>, logger: Logger): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<void>((resolve) => {
    timer = setTimeout(() => {
      logger.warn(`stop took more than ${ms / 1000} s; exiting anyway`);
      resolve();
    }, ms);
  });
  await Promise.race([stop(), timeout]);
  clearTimeout(timer);
}

async function runDaemon(loaded: LoadedConfig): Promise<number> {
  const { settings } = loaded;
  const logger = createLogger({ level: settings.log.level });
  for (const warning of loaded.warnings) logger.warn(warning);
  logger.info(`hmarex2mqtt ${VERSION} starting${loaded.file ? ` with ${loaded.file}` : ''}`);
  const bridge = new Bridge({ settings, logger, version: VERSION });
  const health = settings.health.port ? await startHealthServer(bridge, settings.health, logger) : null;
  await bridge.start();
  const signal = await untilSignal();
  logger.info(`${signal} received, stopping`);
  await stopWithin(5000, async () => {
    await bridge.stop();
    await health?.close();
  }, logger);
  logger.info('stopped');
  return EXIT_OK;
}

export async function main(argv: string[], io: Io = processIo): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      options: {
        config: { type: 'string', short: 'c' },
        watch: { type: 'boolean', short: 'w' },
        json: { type: 'boolean' },
        help: { type: 'boolean', short: 'h' },
        version: { type: 'boolean', short: 'v' },
      },
    });
  } catch (error) {
    io.stderr.write(`hmarex2mqtt: ${(error as Error).message}\n\n${HELP}`);
    return EXIT_CONFIG;
  }
  const { values, positionals } = parsed;
  if (values.help) {
    io.stdout.write(HELP);
    return EXIT_OK;
  }
  if (values.version) {
    io.stdout.write(`${VERSION}\n`);
    return EXIT_OK;
  }
  const command = positionals[0] ?? 'run';
  if (positionals.length > 1) {
    io.stderr.write(`hmarex2mqtt: unexpected argument ${JSON.stringify(positionals[1])}\n\n${HELP}`);
    return EXIT_CONFIG;
  }
  switch (command) {
    case 'run': {
      const loaded = load(values.config, io);
      return typeof loaded === 'number' ? loaded : runDaemon(loaded);
    }
    case 'check-config': {
      const loaded = load(values.config, io);
      if (typeof loaded === 'number') return loaded;
      for (const warning of loaded.warnings) io.stderr.write(`warning: ${warning}\n`);
      io.stdout.write(`# effective settings${loaded.file ? ` (file: ${loaded.file})` : ' (no config file; environment and defaults)'}\n`);
      io.stdout.write(YAML.stringify(maskedSettings(loaded.settings)));
      return EXIT_OK;
    }
    case 'codes': {
      const loaded = load(values.config, io);
      if (typeof loaded === 'number') return loaded;
      return runCodes(loaded.settings, { watch: values.watch ?? false, json: values.json ?? false }, io);
    }
    case 'demo':
      // Loaded only here: its embedded broker is of no use to the daemon, and costs it memory.
      return (await import('./demo.js')).runDemo(io);
    default:
      io.stderr.write(`hmarex2mqtt: unknown command ${JSON.stringify(command)}\n\n${HELP}`);
      return EXIT_CONFIG;
  }
}
