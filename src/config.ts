// Settings: one convict schema, a YAML or JSON file, every key overridable from the environment.
// A bad configuration is reported whole: every problem named, then exit 2.
import { X509Certificate, createPrivateKey, randomBytes } from 'node:crypto';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { createSecureContext } from 'node:tls';
import convict from 'convict';
import { validate as validateCron } from 'node-cron';
import YAML from 'yaml';
import type { KeyEncoding, TotpAlgorithm, TotpEpoch } from './totp.js';

/** Where `text` has a parse error at `offset`, as a person counts: line and column from 1. */
function position(text: string, offset: number): string {
  const before = text.slice(0, offset).split('\n');
  return `line ${before.length}, column ${before[before.length - 1].length + 1}`;
}

// The parsers' own messages may quote the file's text, which can hold a password: only the
// kind of error and its position are passed on.
function parseJson(text: string): unknown {
  try {
    return JSON.parse(text) as unknown;
  } catch (error) {
    const at = /position (\d+)/.exec((error as Error).message);
    throw new Error(`not valid JSON${at ? ` at ${position(text, Number(at[1]))}` : ''}`);
  }
}

function parseYaml(text: string): unknown {
  try {
    return YAML.parse(text, { logLevel: 'error' }) as unknown;
  } catch (error) {
    // YAMLParseError's first line is a fixed text plus the position, without the source;
    // logLevel 'error' keeps warnings (which quote the source) off stderr.
    throw new Error(error instanceof YAML.YAMLParseError ? error.message.split('\n')[0].replace(/:$/, '') : 'not valid YAML');
  }
}

convict.addParser([
  { extension: ['yaml', 'yml'], parse: parseYaml },
  { extension: ['json', '*'], parse: parseJson },
]);

function urlFormat(protocols: string[]) {
  return (value: unknown) => {
    if (typeof value !== 'string') throw new Error('must be a URL string');
    let url: URL;
    try {
      url = new URL(value);
    } catch {
      throw new Error(`must be a URL (${protocols.map((p) => `${p}://`).join(', ')})`);
    }
    if (!protocols.includes(url.protocol.replace(/:$/, ''))) {
      throw new Error(`must use ${protocols.map((p) => `${p}://`).join(', ')}`);
    }
  };
}

convict.addFormat({ name: 'http-url', validate: urlFormat(['http', 'https']) });
convict.addFormat({ name: 'mqtt-url', validate: urlFormat(['mqtt', 'mqtts', 'ws', 'wss']) });
convict.addFormat({
  name: 'cron',
  validate(value: unknown) {
    if (typeof value !== 'string' || !validateCron(value)) {
      throw new Error('must be a cron expression such as "*/10 * * * *"');
    }
  },
});
convict.addFormat({
  name: 'topic-prefix',
  validate(value: unknown) {
    if (typeof value !== 'string' || value === '') throw new Error('must be a non-empty topic');
    if (/[+#\u0000]/.test(value) || value.startsWith('/') || value.endsWith('/') || value.includes('//')) {
      throw new Error('must be a plain topic without wildcards or empty levels');
    }
  },
});
convict.addFormat({
  name: 'positive-int',
  validate(value: unknown) {
    if (typeof value !== 'number' || !Number.isInteger(value) || value <= 0) {
      throw new Error('must be a positive whole number');
    }
  },
  coerce: (value: unknown) => (typeof value === 'string' && /^\d+$/.test(value) ? Number(value) : value),
});

const schema = {
  hmarex: {
    url: { doc: 'API base; login/ and device/ are relative to it', format: 'http-url', default: 'https://my.hmarex.com/api/', env: 'HMAREX_URL' },
    email: { doc: 'account e-mail', format: String, default: '', env: 'HMAREX_EMAIL' },
    password: { doc: 'account password', format: String, default: '', env: 'HMAREX_PASSWORD', sensitive: true },
    password_file: { doc: 'read the password from this file (Docker secrets)', format: String, default: '', env: 'HMAREX_PASSWORD_FILE' },
    refresh: { doc: 'cron expression: when to re-read the device list and keys', format: 'cron', default: '*/10 * * * *', env: 'HMAREX_REFRESH' },
    timeout_ms: { doc: 'per-request time limit', format: 'positive-int', default: 10000, env: 'HMAREX_TIMEOUT_MS' },
    retry_min_ms: { doc: 'first retry delay after a failed refresh', format: 'positive-int', default: 5000, env: 'HMAREX_RETRY_MIN_MS' },
    retry_max_ms: { doc: 'longest retry delay after failed refreshes or logins', format: 'positive-int', default: 900000, env: 'HMAREX_RETRY_MAX_MS' },
  },
  mqtt: {
    url: { doc: 'broker URL', format: 'mqtt-url', default: 'mqtt://localhost:1883', env: 'MQTT_URL' },
    username: { doc: 'broker user name', format: String, default: '', env: 'MQTT_USERNAME' },
    password: { doc: 'broker password', format: String, default: '', env: 'MQTT_PASSWORD', sensitive: true },
    password_file: { doc: 'read the broker password from this file', format: String, default: '', env: 'MQTT_PASSWORD_FILE' },
    client_id: { doc: 'client id (default hmarex2mqtt_<random>)', format: String, default: '', env: 'MQTT_CLIENT_ID' },
    base_topic: { doc: 'base topic', format: 'topic-prefix', default: 'hmarex2mqtt', env: 'MQTT_BASE_TOPIC' },
    protocol_version: { doc: '5 or 4 (3.1.1)', format: [5, 4], default: 5, env: 'MQTT_PROTOCOL_VERSION' },
    reconnect_min_ms: { doc: 'first reconnect delay', format: 'positive-int', default: 1000, env: 'MQTT_RECONNECT_MIN_MS' },
    reconnect_max_ms: { doc: 'longest reconnect delay', format: 'positive-int', default: 60000, env: 'MQTT_RECONNECT_MAX_MS' },
    tls: {
      ca: { doc: 'CA certificate file', format: String, default: '', env: 'MQTT_TLS_CA' },
      cert: { doc: 'client certificate file', format: String, default: '', env: 'MQTT_TLS_CERT' },
      key: { doc: 'client key file', format: String, default: '', env: 'MQTT_TLS_KEY' },
      reject_unauthorized: { doc: 'verify the broker certificate', format: Boolean, default: true, env: 'MQTT_TLS_REJECT_UNAUTHORIZED' },
      servername: { doc: 'TLS server name (SNI), when it differs from the URL host', format: String, default: '', env: 'MQTT_TLS_SERVERNAME' },
    },
  },
  homeassistant: {
    discovery: { doc: 'publish discovery', format: Boolean, default: true, env: 'HA_DISCOVERY' },
    discovery_prefix: { doc: 'discovery prefix', format: 'topic-prefix', default: 'homeassistant', env: 'HA_DISCOVERY_PREFIX' },
    status_topic: { doc: "HA's birth/last-will topic", format: 'topic-prefix', default: 'homeassistant/status', env: 'HA_STATUS_TOPIC' },
  },
  totp: {
    digits: { doc: 'code length', format: [6, 7, 8, 9, 10], default: 9, env: 'TOTP_DIGITS' },
    period: { doc: 'window length in seconds', format: 'positive-int', default: 30, env: 'TOTP_PERIOD' },
    algorithm: { doc: 'HMAC hash', format: ['SHA1', 'SHA256', 'SHA512'], default: 'SHA1', env: 'TOTP_ALGORITHM' },
    key_encoding: { doc: 'raw: key characters are the HMAC key bytes; base32: decode first', format: ['raw', 'base32'], default: 'raw', env: 'TOTP_KEY_ENCODING' },
    epoch: { doc: '2000 or unix: what counter and time count from', format: ['2000', 'unix'], default: '2000', env: 'TOTP_EPOCH' },
  },
  state: {
    dir: { doc: 'where the device cache lives', format: String, default: './data', env: 'STATE_DIR' },
  },
  log: {
    level: { doc: 'log level', format: ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'], default: 'info', env: 'LOG_LEVEL' },
  },
  health: {
    port: { doc: 'HTTP port for /healthz and /metrics; 0 turns it off', format: 'port', default: 0, env: 'HEALTH_PORT' },
    host: { doc: 'address the health listener binds', format: String, default: '127.0.0.1', env: 'HEALTH_HOST' },
  },
};

export interface Settings {
  hmarex: {
    url: string;
    email: string;
    password: string;
    password_file: string;
    refresh: string;
    timeout_ms: number;
    retry_min_ms: number;
    retry_max_ms: number;
  };
  mqtt: {
    url: string;
    username: string;
    password: string;
    password_file: string;
    client_id: string;
    base_topic: string;
    protocol_version: 4 | 5;
    reconnect_min_ms: number;
    reconnect_max_ms: number;
    tls: { ca: string; cert: string; key: string; reject_unauthorized: boolean; servername: string };
  };
  homeassistant: { discovery: boolean; discovery_prefix: string; status_topic: string };
  totp: { digits: number; period: number; algorithm: TotpAlgorithm; key_encoding: KeyEncoding; epoch: TotpEpoch };
  state: { dir: string };
  log: { level: string };
  health: { port: number; host: string };
}

/** Paths of every secret setting, for masking and for log redaction. */
export const SECRET_KEYS = ['hmarex.password', 'mqtt.password'] as const;

export class ConfigError extends Error {
  constructor(readonly problems: string[]) {
    super(`invalid configuration:\n${problems.map((p) => `  - ${p}`).join('\n')}`);
    this.name = 'ConfigError';
  }
}

export interface LoadOptions {
  /** --config FILE; false: no file at all, whatever the environment says. */
  file?: string | false;
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  /** Needed for commands that talk to the cloud; `demo` supplies its own. */
  requireAccount?: boolean;
}

export interface LoadedConfig {
  settings: Settings;
  file: string | null;
  warnings: string[];
}

/** --config, else $HMAREX2MQTT_CONFIG, else config/config.yaml when it exists, else none. */
export function resolveConfigFile(options: LoadOptions): string | null {
  const env = options.env ?? process.env;
  if (options.file === false) return null;
  if (options.file) return options.file;
  if (env.HMAREX2MQTT_CONFIG) return env.HMAREX2MQTT_CONFIG;
  const fallback = `${options.cwd ?? process.cwd()}/config/config.yaml`;
  return existsSync(fallback) ? fallback : null;
}

const MASK = '********';
const VALUE_WAS = ': value was ';

/**
 * convict quotes a bad value after "value was" (never for the secret settings themselves): that
 * part is left out when it holds a password, or a URL with a password in it.
 */
function scrubProblem(problem: string, secrets: string[]): string {
  const at = problem.indexOf(VALUE_WAS);
  if (at < 0) return problem;
  const value = problem.slice(at + VALUE_WAS.length);
  const secret = /:\/\/[^/\s"]*@/.test(value) || secrets.some((s) => s !== '' && value.includes(s));
  return secret ? `${problem.slice(0, at)} (the value is not shown: it holds a password)` : problem;
}

function readSecretFile(path: string, key: string, problems: string[]): string {
  try {
    return readFileSync(path, 'utf8').replace(/\r?\n$/, '');
  } catch (error) {
    problems.push(`${key}: cannot read ${JSON.stringify(path)} (${(error as NodeJS.ErrnoException).code ?? 'error'})`);
    return '';
  }
}

export function loadConfig(options: LoadOptions = {}): LoadedConfig {
  const env = options.env ?? process.env;
  const config = convict(schema, { env, args: [] });
  const problems: string[] = [];
  const warnings: string[] = [];
  const file = resolveConfigFile(options);
  if (file) {
    if (!existsSync(file)) throw new ConfigError([`config file ${JSON.stringify(file)} does not exist`]);
    try {
      config.loadFile(file);
    } catch (error) {
      throw new ConfigError([`config file ${JSON.stringify(file)}: ${(error as Error).message.split('\n')[0]}`]);
    }
  }
  const secrets = SECRET_KEYS.map((key) => String(config.get(key) ?? ''));
  try {
    config.validate({ allowed: 'strict' });
  } catch (error) {
    for (const line of (error as Error).message.split('\n')) {
      if (line.trim() !== '') problems.push(scrubProblem(line.trim(), secrets));
    }
  }
  const settings = config.getProperties() as unknown as Settings;
  if (settings.hmarex.password_file) {
    const fromFile = readSecretFile(settings.hmarex.password_file, 'hmarex.password_file', problems);
    if (fromFile) settings.hmarex.password = fromFile;
  }
  if (settings.mqtt.password_file) {
    const fromFile = readSecretFile(settings.mqtt.password_file, 'mqtt.password_file', problems);
    if (fromFile) settings.mqtt.password = fromFile;
  }
  if (options.requireAccount !== false) {
    if (!settings.hmarex.email) problems.push('hmarex.email: required (the Hmarex account e-mail; env HMAREX_EMAIL)');
    if (!settings.hmarex.password) {
      problems.push('hmarex.password: required (or hmarex.password_file; env HMAREX_PASSWORD / HMAREX_PASSWORD_FILE)');
    }
  }
  problems.push(...tlsProblems(settings.mqtt.tls));
  if (settings.hmarex.retry_min_ms > settings.hmarex.retry_max_ms) {
    problems.push('hmarex.retry_min_ms: must not exceed hmarex.retry_max_ms');
  }
  if (settings.mqtt.reconnect_min_ms > settings.mqtt.reconnect_max_ms) {
    problems.push('mqtt.reconnect_min_ms: must not exceed mqtt.reconnect_max_ms');
  }
  if (problems.length > 0) throw new ConfigError(problems);
  if (file && fileHoldsSecret(file)) {
    const mode = statSync(file).mode;
    if (mode & 0o044) {
      warnings.push(
        `config file ${file} holds a password and can be read by other users (mode ${(mode & 0o777).toString(8)}): chmod 600 it, or use hmarex.password_file / mqtt.password_file`,
      );
    }
  }
  warnings.push(...tlsWarnings(settings.mqtt));
  const cloud = new URL(settings.hmarex.url);
  if (cloud.protocol === 'http:' && !isLoopback(cloud.hostname)) {
    warnings.push(`hmarex.url uses http://: the account password and token cross the network unencrypted to ${cloud.host}; use https://`);
  }
  if (!settings.mqtt.client_id) settings.mqtt.client_id = `hmarex2mqtt_${randomBytes(4).toString('hex')}`;
  return { settings, file, warnings };
}

/** Whether the file itself sets a non-empty password (not the environment or a password file). */
function fileHoldsSecret(file: string): boolean {
  const text = readFileSync(file, 'utf8');
  const parsed = /\.ya?ml$/i.test(file) ? parseYaml(text) : parseJson(text);
  return SECRET_KEYS.some((key) => {
    const value = key.split('.').reduce<unknown>((node, part) => (typeof node === 'object' && node !== null ? (node as Record<string, unknown>)[part] : undefined), parsed);
    return value !== undefined && value !== null && value !== '';
  });
}

/** TLS files are read here, so that a wrong one is a named configuration problem, not a crash. */
function tlsProblems(tls: Settings['mqtt']['tls']): string[] {
  const problems: string[] = [];
  const read = (key: 'ca' | 'cert' | 'key', check: (pem: Buffer) => unknown, what: string): Buffer | null => {
    const path = tls[key];
    if (!path) return null;
    let pem: Buffer;
    try {
      pem = readFileSync(path);
    } catch (error) {
      problems.push(`mqtt.tls.${key}: cannot read ${JSON.stringify(path)} (${(error as NodeJS.ErrnoException).code ?? 'error'})`);
      return null;
    }
    try {
      check(pem);
      return pem;
    } catch {
      problems.push(`mqtt.tls.${key}: ${JSON.stringify(path)} is not ${what}`);
      return null;
    }
  };
  read('ca', (pem) => new X509Certificate(pem), 'a PEM certificate');
  const cert = read('cert', (pem) => new X509Certificate(pem), 'a PEM certificate');
  const key = read('key', (pem) => createPrivateKey(pem), 'an unencrypted PEM private key');
  if (Boolean(tls.cert) !== Boolean(tls.key)) {
    problems.push('mqtt.tls.cert and mqtt.tls.key: give both or neither');
  } else if (cert && key) {
    try {
      createSecureContext({ cert, key });
    } catch {
      problems.push('mqtt.tls.key: this key does not belong to the certificate in mqtt.tls.cert');
    }
  }
  return problems;
}

function isLoopback(hostname: string): boolean {
  return hostname === 'localhost' || hostname === '[::1]' || /^127\.\d+\.\d+\.\d+$/.test(hostname);
}

function tlsWarnings(mqtt: Settings['mqtt']): string[] {
  const encrypted = /^(mqtts|wss):/.test(mqtt.url);
  const warnings: string[] = [];
  if (!encrypted && (mqtt.tls.ca || mqtt.tls.cert || mqtt.tls.servername)) {
    warnings.push('mqtt.tls settings are ignored: mqtt.url does not use TLS (mqtts:// or wss://)');
  }
  if (encrypted && !mqtt.tls.reject_unauthorized) {
    warnings.push('mqtt.tls.reject_unauthorized is false: the broker certificate is not checked, so anyone on the path can pose as the broker and read the codes');
  }
  return warnings;
}

/** A URL's password (`scheme://user:password@host`) masked. */
function maskUrl(value: string): string {
  try {
    const url = new URL(value);
    if (!url.password) return value;
    url.password = MASK;
    return url.toString();
  } catch {
    return value;
  }
}

/** The effective settings with every secret masked, for `check-config`. */
export function maskedSettings(settings: Settings): Settings {
  const copy = structuredClone(settings);
  if (copy.hmarex.password) copy.hmarex.password = MASK;
  if (copy.mqtt.password) copy.mqtt.password = MASK;
  copy.hmarex.url = maskUrl(copy.hmarex.url);
  copy.mqtt.url = maskUrl(copy.mqtt.url);
  return copy;
}

/** Every key with its env variable, default and doc, for the README's table (kept in step by a test). */
export function describeSchema(): Array<{ key: string; env: string; default: unknown; doc: string }> {
  const rows: Array<{ key: string; env: string; default: unknown; doc: string }> = [];
  const walk = (node: Record<string, unknown>, path: string[]) => {
    for (const [name, value] of Object.entries(node)) {
      const entry = value as Record<string, unknown>;
      if ('default' in entry && 'env' in entry) {
        rows.push({ key: [...path, name].join('.'), env: String(entry.env), default: entry.default, doc: String(entry.doc) });
      } else {
        walk(entry, [...path, name]);
      }
    }
  };
  walk(schema, []);
  return rows;
}
