// `hmarex2mqtt codes`: the account's thermostats and their current codes, without MQTT.
import { DeviceCache } from './cache.js';
import { CLOCK_SKEW_WARN_MS, CloudClient, CloudError } from './cloud.js';
import type { Settings } from './config.js';
import type { DeviceRecord } from './devices.js';
import { systemClock, type Clock } from './scheduler.js';
import { totpPayload, type TotpPayload } from './topics.js';
import { CodeGenerator, decodeKey, windowAt } from './totp.js';

export interface CodesOptions {
  watch: boolean;
  json: boolean;
  clock?: Clock;
  /** Resolves when --watch should end; defaults to SIGINT/SIGTERM. */
  until?: Promise<void>;
}

interface Io {
  stdout: NodeJS.WritableStream;
  stderr: NodeJS.WritableStream;
}

interface Row {
  name: string;
  sn: string;
  generator: CodeGenerator;
}

async function readDevices(settings: Settings, io: Io): Promise<DeviceRecord[] | null> {
  let skewMs: number | null = null;
  const cloud = new CloudClient({
    baseUrl: settings.hmarex.url,
    email: settings.hmarex.email,
    password: settings.hmarex.password,
    timeoutMs: settings.hmarex.timeout_ms,
    hooks: { clockSkew: (ms) => (skewMs = ms) },
  });
  try {
    const list = await cloud.listDevices();
    for (const problem of list.problems) io.stderr.write(`warning: ${problem}\n`);
    if (skewMs !== null && Math.abs(skewMs) > CLOCK_SKEW_WARN_MS) {
      io.stderr.write(`warning: the local clock differs from the cloud's by ${Math.round(skewMs / 1000)} s: these codes may be rejected\n`);
    }
    return list.devices;
  } catch (error) {
    const reason = error instanceof CloudError ? error.message : String(error);
    const cached = await new DeviceCache(settings.state.dir).load().catch(() => null);
    if (!cached) {
      io.stderr.write(`hmarex2mqtt: the cloud could not be read (${reason}) and there is no device cache in ${settings.state.dir}\n`);
      return null;
    }
    io.stderr.write(`note: the cloud could not be read (${reason}); codes from the device cache of ${cached.savedAt.toISOString()}\n`);
    return cached.devices;
  } finally {
    await cloud.close();
  }
}

function rowsFor(devices: DeviceRecord[], settings: Settings, io: Io): Row[] {
  const rows: Row[] = [];
  for (const device of devices) {
    try {
      rows.push({ name: device.name, sn: device.sn, generator: new CodeGenerator(decodeKey(device.totpKey, settings.totp.key_encoding), settings.totp) });
    } catch (error) {
      io.stderr.write(`warning: thermostat ${device.sn} skipped: ${(error as Error).message}\n`);
    }
  }
  return rows;
}

export function codesJson(rows: Row[], settings: Settings, nowMs: number): Array<TotpPayload & { name: string }> {
  const window = windowAt(nowMs, settings.totp);
  return rows.map((row) => ({ ...totpPayload(row.sn, row.generator.codeFor(window), settings.totp), name: row.name }));
}

/** A plain text table; names are made printable so a hostile name cannot move the cursor. */
export function codesTable(rows: Row[], settings: Settings, nowMs: number): string {
  const window = windowAt(nowMs, settings.totp);
  const left = Math.ceil((window.validUntilMs - nowMs) / 1000);
  const lines = [['NAME', 'SERIAL NUMBER', 'CODE', 'TIME', 'LEFT']];
  for (const row of rows) {
    const code = row.generator.codeFor(window);
    lines.push([row.name.replace(/[^\x20-\x7e\u00a0-\uffff]/g, '?'), row.sn, code.auth, code.time, `${left}s`]);
  }
  const widths = lines[0].map((_, col) => Math.max(...lines.map((line) => line[col].length)));
  return `${lines.map((line) => line.map((cell, col) => cell.padEnd(widths[col])).join('  ').trimEnd()).join('\n')}\n`;
}

function untilSignal(): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      process.off('SIGINT', done);
      process.off('SIGTERM', done);
      resolve();
    };
    process.on('SIGINT', done);
    process.on('SIGTERM', done);
  });
}

export async function runCodes(settings: Settings, options: CodesOptions, io: Io): Promise<number> {
  const clock = options.clock ?? systemClock;
  const devices = await readDevices(settings, io);
  if (!devices) return 1;
  const rows = rowsFor(devices, settings, io);
  const render = () =>
    options.json ? `${JSON.stringify(codesJson(rows, settings, clock.now()))}\n` : codesTable(rows, settings, clock.now());
  if (!options.watch) {
    io.stdout.write(render());
    return 0;
  }
  // --watch: redraw every second on a terminal (a countdown), once per window elsewhere.
  const tty = (io.stdout as NodeJS.WriteStream).isTTY === true && !options.json;
  let lastCounter: number | null = null;
  let timer: unknown = null;
  const tick = () => {
    const window = windowAt(clock.now(), settings.totp);
    if (tty) io.stdout.write(`\x1b[H\x1b[2J${render()}`);
    else if (window.counter !== lastCounter) io.stdout.write(render());
    lastCounter = window.counter;
    const untilNextSecond = 1000 - (clock.now() % 1000);
    timer = clock.setTimeout(tick, tty ? untilNextSecond : window.validUntilMs - clock.now());
  };
  tick();
  await (options.until ?? untilSignal());
  clock.clearTimeout(timer);
  return 0;
}
