// `hmarex2mqtt codes`: the table, --json and --watch against the simulated cloud, the device cache
// when the cloud cannot be reached, and the command as a process. Codes are checked against an
// independent RFC 4226 computation.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import { DeviceCache } from '../src/cache.js';
import { runCodes } from '../src/codes.js';
import type { Settings } from '../src/config.js';
import { parseDevicePage } from '../src/devices.js';
import { SIM_EMAIL, SIM_PASSWORD, SimCloud, simDevice } from '../src/simcloud.js';
import type { TotpPayload } from '../src/topics.js';
import { EPOCH_2000_MS } from '../src/totp.js';
import { FakeClock } from './fakeclock.js';
import { ROOT, freePort, referenceHotp, tempDir, testSettings, waitUntil } from './helpers.js';

/** Window 29,000,000 since 2000 (in 2027), 10 s into it: 20 s left. */
const COUNTER0 = 29_000_000;
const T0 = EPOCH_2000_MS + COUNTER0 * 30 * 1000 + 10_000;
const devices = [simDevice(1, { name: 'Living room' }), simDevice(2, { name: 'Bath\u001b[2Jroom' })];

const code = (key: string, counter: number) => referenceHotp(Buffer.from(key, 'ascii'), counter, 9);

/** A stdout/stderr pair that keeps what is written; `tty` makes stdout claim to be a terminal. */
function captureIo(tty = false) {
  const out: string[] = [];
  const err: string[] = [];
  const sink = (into: string[]) =>
    new Writable({
      write(chunk: Buffer, _encoding, done) {
        into.push(chunk.toString('utf8'));
        done();
      },
    });
  const stdout = Object.assign(sink(out), { isTTY: tty });
  return { io: { stdout, stderr: sink(err) }, out, err, text: () => out.join(''), errors: () => err.join('') };
}

type CodeRow = TotpPayload & { name: string };

/** `codes --watch` on a fake clock, writing into memory, until `stop()`. */
function startWatch(settings: Settings, mode: { tty: boolean; json: boolean }) {
  const clock = new FakeClock(T0);
  const { io, out } = captureIo(mode.tty);
  let stop = () => {};
  const until = new Promise<void>((resolve) => (stop = resolve));
  const done = runCodes(settings, { watch: true, json: mode.json, clock, until }, io);
  return { clock, out, stop: () => stop(), done };
}

describe('codes', { timeout: 60_000 }, () => {
  let cloud: SimCloud;
  let settings: Settings;

  before(async () => {
    cloud = new SimCloud({ devices });
    await cloud.start();
    settings = testSettings({ HMAREX_URL: cloud.url, HMAREX_EMAIL: SIM_EMAIL, HMAREX_PASSWORD: SIM_PASSWORD, STATE_DIR: tempDir(), LOG_LEVEL: 'info' });
  });
  after(() => cloud.stop());

  it('prints a table: name, serial number, code, time, seconds left', async () => {
    const { io, text, errors } = captureIo();
    assert.equal(await runCodes(settings, { watch: false, json: false, clock: new FakeClock(T0) }, io), 0);
    const [header, ...rows] = text().trimEnd().split('\n');
    assert.deepEqual(header.split(/\s{2,}/), ['NAME', 'SERIAL NUMBER', 'CODE', 'TIME', 'LEFT']);
    assert.equal(rows.length, 2);
    const [living, bath] = rows.map((r) => r.split(/\s{2,}/));
    assert.deepEqual(living, ['Living room', devices[0].sn, code(devices[0].totp_key, COUNTER0), String(COUNTER0 * 30), '20s']);
    assert.deepEqual(bath.slice(1), [devices[1].sn, code(devices[1].totp_key, COUNTER0), String(COUNTER0 * 30), '20s']);
    assert.ok(!text().includes('\u001b'), 'a name cannot put escape sequences on the terminal');
    assert.equal(errors(), '');
  });

  it('--json: the totp payload of each thermostat with its name', async () => {
    const { io, text } = captureIo();
    assert.equal(await runCodes(settings, { watch: false, json: true, clock: new FakeClock(T0) }, io), 0);
    const rows = JSON.parse(text()) as CodeRow[];
    assert.equal(rows.length, 2);
    for (const [i, row] of rows.entries()) {
      assert.deepEqual(Object.keys(row).sort(), ['auth', 'digits', 'name', 'period', 'sn', 'time', 'valid_from', 'valid_until']);
      assert.equal(row.sn, devices[i].sn);
      assert.equal(row.name, devices[i].name);
      assert.equal(row.auth, code(devices[i].totp_key, COUNTER0));
      assert.equal(row.time, String(COUNTER0 * 30));
      assert.equal(row.valid_from, new Date(T0 - 10_000).toISOString());
      assert.equal(row.valid_until, new Date(T0 + 20_000).toISOString());
      assert.deepEqual([row.period, row.digits], [30, 9]);
    }
  });

  it('--watch on a terminal: redraws every second with a countdown and new codes at the boundary', async () => {
    const { clock, out, stop, done } = startWatch(settings, { tty: true, json: false });
    await waitUntil(() => out.length === 1, 'the first screen');
    assert.ok(out[0].startsWith('\u001b[H\u001b[2J'), 'the screen is cleared');
    assert.match(out[0], /\s20s\n/);
    clock.advance(1000);
    assert.equal(out.length, 2);
    assert.match(out[1], /\s19s\n/);
    assert.ok(out[1].includes(code(devices[0].totp_key, COUNTER0)));
    clock.advance(19_000);
    const boundary = out.at(-1) ?? '';
    assert.match(boundary, /\s30s\n/);
    assert.ok(boundary.includes(code(devices[0].totp_key, COUNTER0 + 1)), 'the next window\u2019s code');
    assert.ok(boundary.includes(String((COUNTER0 + 1) * 30)));
    stop();
    assert.equal(await done, 0);
    assert.equal(clock.pending, 0, 'no timer left behind');
  });

  it('--watch --json elsewhere: one array per window', async () => {
    const { clock, out, stop, done } = startWatch(settings, { tty: false, json: true });
    await waitUntil(() => out.length === 1, 'the first array');
    clock.advance(19_000);
    assert.equal(out.length, 1, 'nothing new inside the window');
    clock.advance(1000);
    assert.equal(out.length, 2, 'a new array at the boundary');
    clock.advance(30_000);
    assert.equal(out.length, 3);
    const arrays = out.map((line) => JSON.parse(line) as CodeRow[]);
    assert.deepEqual(arrays.map((a) => a[1].auth), [0, 1, 2].map((n) => code(devices[1].totp_key, COUNTER0 + n)));
    stop();
    assert.equal(await done, 0);
  });

  it('uses the device cache when the cloud cannot be reached, and says so', async () => {
    const stateDir = tempDir();
    const savedAt = new Date(T0 - 3_600_000);
    await new DeviceCache(stateDir).save(parseDevicePage(devices).devices, savedAt);
    const offline = testSettings({ HMAREX_URL: `http://127.0.0.1:${await freePort()}/api/`, HMAREX_EMAIL: SIM_EMAIL, HMAREX_PASSWORD: SIM_PASSWORD, STATE_DIR: stateDir });
    const { io, text, errors } = captureIo();
    assert.equal(await runCodes(offline, { watch: false, json: true, clock: new FakeClock(T0) }, io), 0);
    assert.ok(errors().includes(`cloud could not be read (login: connection refused); codes from the device cache of ${savedAt.toISOString()}`), errors());
    const rows = JSON.parse(text()) as CodeRow[];
    assert.deepEqual(rows.map((r) => r.auth), devices.map((d) => code(d.totp_key, COUNTER0)));
  });

  it('fails with exit 1 when there is neither cloud nor cache', async () => {
    const offline = testSettings({ HMAREX_URL: `http://127.0.0.1:${await freePort()}/api/`, HMAREX_EMAIL: SIM_EMAIL, HMAREX_PASSWORD: SIM_PASSWORD, STATE_DIR: tempDir() });
    const { io, text, errors } = captureIo();
    assert.equal(await runCodes(offline, { watch: false, json: false, clock: new FakeClock(T0) }, io), 1);
    assert.equal(text(), '');
    assert.match(errors(), /could not be read \(login: connection refused\) and there is no device cache/);
  });

  it('a refused login falls back to the cache too, and never prints the password', async () => {
    const stateDir = tempDir();
    await new DeviceCache(stateDir).save(parseDevicePage(devices).devices, new Date(T0));
    const wrong = testSettings({ HMAREX_URL: cloud.url, HMAREX_EMAIL: SIM_EMAIL, HMAREX_PASSWORD: 'not-the-password', STATE_DIR: stateDir });
    const { io, text, errors } = captureIo();
    assert.equal(await runCodes(wrong, { watch: false, json: false, clock: new FakeClock(T0) }, io), 0);
    assert.match(errors(), /cloud could not be read .*device cache/);
    assert.ok(!`${text()}${errors()}`.includes('not-the-password'));
    assert.ok(text().includes(code(devices[0].totp_key, COUNTER0)));
  });

  describe('as a process', () => {
    const main = join(ROOT, 'dist/main.js');
    const env = () => ({ PATH: process.env.PATH ?? '', HMAREX_URL: cloud.url, HMAREX_EMAIL: SIM_EMAIL, HMAREX_PASSWORD: SIM_PASSWORD, STATE_DIR: tempDir() });

    it('`codes --json` prints codes valid now; no secret in the output', async () => {
      // Not spawnSync: the simulated cloud answers from this process's event loop.
      const child = spawn(process.execPath, [main, 'codes', '--json'], { cwd: tempDir(), env: env(), stdio: ['ignore', 'pipe', 'pipe'] });
      const result = { stdout: '', stderr: '' };
      child.stdout.on('data', (d: Buffer) => (result.stdout += d.toString()));
      child.stderr.on('data', (d: Buffer) => (result.stderr += d.toString()));
      const status = await new Promise<number | null>((resolve) => child.once('exit', (c) => resolve(c)));
      assert.equal(status, 0, result.stderr);
      const rows = JSON.parse(result.stdout) as CodeRow[];
      assert.deepEqual(rows.map((r) => r.name), devices.map((d) => d.name));
      for (const [i, row] of rows.entries()) {
        assert.equal(row.auth, code(devices[i].totp_key, Number(row.time) / 30));
        assert.ok(Date.parse(row.valid_until) > Date.now() - 30_000, 'a current window');
      }
      for (const secret of [SIM_PASSWORD, ...devices.map((d) => d.totp_key)]) assert.ok(!`${result.stdout}${result.stderr}`.includes(secret));
    });

    it('`codes --watch` runs until SIGTERM and exits 0', async () => {
      const child = spawn(process.execPath, [main, 'codes', '--watch'], { cwd: tempDir(), env: env(), stdio: ['ignore', 'pipe', 'pipe'] });
      let stdout = '';
      child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
      const exited = new Promise<number | null>((resolve) => child.once('exit', (c) => resolve(c)));
      try {
        await waitUntil(() => stdout.includes(devices[1].sn), 'the table', 15_000);
        assert.match(stdout, /^NAME\s+SERIAL NUMBER\s+CODE\s+TIME\s+LEFT\n/);
        child.kill('SIGTERM');
        assert.equal(await exited, 0);
      } finally {
        child.kill('SIGKILL');
      }
    });
  });
});
