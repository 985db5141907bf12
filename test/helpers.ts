// Shared test harness: brokers of the test's own, a recording subscriber that waits for events
// with a time limit, settings built as the daemon builds them, and a logger that captures lines.
import { spawn, type ChildProcess } from 'node:child_process';
import { createHmac } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, connect as netConnect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import mqtt, { type IClientOptions, type MqttClient } from 'mqtt';
import { pino } from 'pino';
import { Bridge, type BridgeOptions } from '../src/bridge.js';
import { loadConfig, type Settings } from '../src/config.js';
import { REDACT_PATHS, type Logger } from '../src/log.js';
import { SIM_EMAIL, SIM_PASSWORD, SimCloud, type SimCloudOptions } from '../src/simcloud.js';

export const ROOT = new URL('..', import.meta.url).pathname;

/** An independent RFC 4226 computation with node:crypto, to check the bridge's codes against. */
export function referenceHotp(key: Buffer, counter: number, digits: number, algorithm = 'sha1'): string {
  const message = Buffer.alloc(8);
  message.writeBigUInt64BE(BigInt(counter));
  const digest = createHmac(algorithm, key).update(message).digest();
  const offset = digest[digest.length - 1] & 0x0f;
  const binary = digest.readUInt32BE(offset) & 0x7fffffff;
  return String(binary % 10 ** digits).padStart(digits, '0');
}

/**
 * Writes a test's measured figures as JSON: into $FIGURES_DIR when set (`FIGURES_DIR=bench/results
 * npm test` refreshes the committed ones), else under the temp folder, so a test run leaves the
 * work tree as it was.
 */
export function writeFigures(name: string, figures: unknown): string {
  const dir = process.env.FIGURES_DIR ?? join(tmpdir(), 'hmarex2mqtt-figures');
  mkdirSync(dir, { recursive: true });
  const file = join(dir, name);
  writeFileSync(file, `${JSON.stringify(figures, null, 2)}\n`);
  return file;
}

export function tempDir(prefix = 'hmarex2mqtt-test-'): string {
  return mkdtempSync(join(tmpdir(), prefix));
}

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}

/** Polls `check` until it returns a truthy value; fails with `what` after `timeoutMs`. */
export async function waitUntil<T>(check: () => T | Promise<T>, what: string, timeoutMs = 5000, everyMs = 20): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value) return value as NonNullable<T>;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, everyMs));
  }
}

function portAcceptsConnections(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = netConnect(port, '127.0.0.1');
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

export interface MosquittoOptions {
  port?: number;
  /** Extra lines for the listener's config (TLS, passwords, ...). */
  config?: string[];
  /** Replaces the default `listener PORT 127.0.0.1` + `allow_anonymous true`. */
  listenerConfig?: (port: number) => string[];
}

/** A mosquitto of the test's own, on a free port, that it can stop and start again. */
export class Mosquitto {
  private process: ChildProcess | null = null;
  readonly dir = tempDir('hmarex2mqtt-mosquitto-');
  port = 0;
  output = '';

  constructor(private readonly options: MosquittoOptions = {}) {}

  get url(): string {
    return `mqtt://127.0.0.1:${this.port}`;
  }

  /** Freezes (SIGSTOP) or thaws (SIGCONT) the broker: connections stay open, nothing is answered. */
  freeze(frozen: boolean): void {
    this.process?.kill(frozen ? 'SIGSTOP' : 'SIGCONT');
  }

  async start(): Promise<this> {
    if (!this.port) this.port = this.options.port ?? (await freePort());
    const listener = this.options.listenerConfig?.(this.port) ?? [`listener ${this.port} 127.0.0.1`, 'allow_anonymous true'];
    const conf = join(this.dir, 'mosquitto.conf');
    writeFileSync(conf, [...listener, 'persistence false', 'log_dest stderr', 'log_type error', 'log_type warning', ...(this.options.config ?? []), ''].join('\n'));
    const child = spawn('mosquitto', ['-c', conf], { stdio: ['ignore', 'pipe', 'pipe'] });
    child.stdout?.on('data', (d: Buffer) => (this.output += d.toString()));
    child.stderr?.on('data', (d: Buffer) => (this.output += d.toString()));
    this.process = child;
    await waitUntil(
      async () => {
        if (child.exitCode !== null) throw new Error(`mosquitto exited at start: ${this.output}`);
        return portAcceptsConnections(this.port);
      },
      `mosquitto on port ${this.port}`,
      10_000,
    );
    return this;
  }

  /** Kills the broker (SIGKILL: as a crash, no goodbye to clients) and waits for it to be gone. */
  async stop(signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
    const child = this.process;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    child.kill(signal);
    await exited;
    this.process = null;
  }

  async restart(): Promise<void> {
    await this.stop();
    await this.start();
  }

  async dispose(): Promise<void> {
    await this.stop();
    rmSync(this.dir, { recursive: true, force: true });
  }
}

export interface Received {
  topic: string;
  payload: string;
  retain: boolean;
  at: number;
  /** MQTT 5 message expiry, when present. */
  expiry?: number;
}

/** A subscriber that records every message and can wait for one. */
export class Recorder {
  readonly messages: Received[] = [];
  private constructor(readonly client: MqttClient) {
    client.on('message', (topic, payload, packet) => {
      this.messages.push({
        topic,
        payload: payload.toString('utf8'),
        retain: packet.retain,
        at: Date.now(),
        expiry: packet.properties?.messageExpiryInterval,
      });
    });
  }

  static async connect(url: string, filters: string[], options: IClientOptions = {}): Promise<Recorder> {
    const client = await mqtt.connectAsync(url, { protocolVersion: 5, reconnectPeriod: 200, ...options });
    client.on('error', () => undefined);
    const recorder = new Recorder(client);
    await client.subscribeAsync(filters, { qos: 1 });
    return recorder;
  }

  on(topic: string): Received[] {
    return this.messages.filter((m) => m.topic === topic);
  }

  last(topic: string): Received | undefined {
    return this.on(topic).at(-1);
  }

  /** Resolves with the first message (at index >= `from`) that matches. */
  waitFor(match: (m: Received) => boolean, what: string, timeoutMs = 5000, from = 0): Promise<Received> {
    return waitUntil(() => this.messages.slice(from).find(match), what, timeoutMs, 5);
  }

  async close(): Promise<void> {
    await this.client.endAsync(true);
  }
}

/** Settings exactly as the daemon builds them, from environment variables only. */
export function testSettings(env: Record<string, string>): Settings {
  return loadConfig({ file: false, env: { LOG_LEVEL: 'debug', ...env } }).settings;
}

export interface CapturedLogger {
  logger: Logger;
  lines: string[];
  text(): string;
}

/** A pino logger at `debug` with the daemon's redaction, writing into memory. */
export function captureLogger(level = 'debug'): CapturedLogger {
  const lines: string[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _encoding, done) {
      lines.push(...chunk.toString('utf8').split('\n').filter((l) => l !== ''));
      done();
    },
  });
  const logger = pino({ level, base: undefined, redact: { paths: REDACT_PATHS, censor: '[redacted]' } }, stream);
  return { logger, lines, text: () => lines.join('\n') };
}

export interface Rig {
  cloud: SimCloud;
  broker: Mosquitto;
  settings: Settings;
  stateDir: string;
  log: CapturedLogger;
  bridge: Bridge;
  dispose(): Promise<void>;
}

export interface RigOptions {
  cloud?: SimCloudOptions;
  env?: Record<string, string>;
  bridge?: Partial<BridgeOptions>;
  /** Reuse a running broker instead of starting one. */
  broker?: Mosquitto;
  stateDir?: string;
  start?: boolean;
}

/** A simulated cloud, a mosquitto of its own and a bridge wired to both (started unless told not). */
export async function startRig(options: RigOptions = {}): Promise<Rig> {
  const cloud = new SimCloud(options.cloud);
  await cloud.start();
  const broker = options.broker ?? (await new Mosquitto().start());
  const stateDir = options.stateDir ?? tempDir();
  const settings = testSettings({
    HMAREX_URL: cloud.url,
    HMAREX_EMAIL: SIM_EMAIL,
    HMAREX_PASSWORD: SIM_PASSWORD,
    MQTT_URL: broker.url,
    STATE_DIR: stateDir,
    MQTT_RECONNECT_MIN_MS: '100',
    MQTT_RECONNECT_MAX_MS: '500',
    HMAREX_RETRY_MIN_MS: '100',
    HMAREX_RETRY_MAX_MS: '1000',
    HMAREX_TIMEOUT_MS: '2000',
    ...options.env,
  });
  const log = captureLogger();
  const bridge = new Bridge({
    settings,
    logger: log.logger,
    version: '0.0.0-test',
    haBirthDelayMs: [50, 150],
    requestMinIntervalMs: 0,
    ...options.bridge,
  });
  if (options.start !== false) await bridge.start();
  return {
    cloud,
    broker,
    settings,
    stateDir,
    log,
    bridge,
    async dispose() {
      await bridge.stop();
      await cloud.stop();
      if (!options.broker) await broker.dispose();
      if (!options.stateDir) rmSync(stateDir, { recursive: true, force: true });
    },
  };
}
