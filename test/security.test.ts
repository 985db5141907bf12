// Secrets stay secret: the account password, the broker password, the cloud's tokens and the
// thermostats' keys appear in no log line (debug included), no MQTT payload, no error message and
// no check-config output; secrets come from files; the cache is private.
import assert from 'node:assert/strict';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { createServer, type AddressInfo } from 'node:net';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import { DeviceCache } from '../src/cache.js';
import { loadConfig } from '../src/config.js';
import { parseDevicePage } from '../src/devices.js';
import { createLogger } from '../src/log.js';
import { SIM_EMAIL, SimCloud, simDevice } from '../src/simcloud.js';
import { Mosquitto, Recorder, ROOT, tempDir, waitUntil } from './helpers.js';

const TSX = import.meta.resolve('tsx');
const MAIN = join(ROOT, 'src/main.ts');
const BASE = 'hmarex2mqtt';

/** The program from its sources (not a possibly stale build), with only the environment given. */
function program(args: string[], env: Record<string, string>, cwd = tempDir()) {
  return spawn(process.execPath, ['--import', TSX, MAIN, ...args], { cwd, env: { PATH: process.env.PATH, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
}

function programSync(args: string[], env: Record<string, string> = {}) {
  return spawnSync(process.execPath, ['--import', TSX, MAIN, ...args], { cwd: tempDir(), env: { PATH: process.env.PATH, ...env }, encoding: 'utf8', timeout: 30_000 });
}

/** A directory mosquitto can read after it drops root for its own user. */
function sharedDir(): string {
  const dir = tempDir('hmarex2mqtt-sec-');
  chmodSync(dir, 0o755);
  return dir;
}

function hits(text: string, secrets: string[]): string[] {
  return secrets.filter((secret) => text.includes(secret));
}

describe('secrets: a full run of the daemon at debug level', { timeout: 60_000 }, () => {
  const password = `acct-${randomBytes(9).toString('hex')}`;
  const mqttPassword = `mqtt-${randomBytes(9).toString('hex')}`;
  const dir = sharedDir();
  const stateDir = join(dir, 'state', 'nested');
  let cloud: SimCloud;
  let broker: Mosquitto;
  let sub: Recorder;
  let stdout = '';
  let stderr = '';
  let exit: { code: number | null; signal: NodeJS.Signals | null };

  before(async () => {
    const passwd = join(dir, 'mosquitto.passwd');
    execFileSync('mosquitto_passwd', ['-c', '-b', passwd, 'bridge', mqttPassword]);
    chmodSync(passwd, 0o644);
    broker = await new Mosquitto({ listenerConfig: (port) => [`listener ${port} 127.0.0.1`, 'allow_anonymous false', `password_file ${passwd}`] }).start();
    cloud = new SimCloud({ password, devices: [simDevice(1), simDevice(2), simDevice(3)] });
    await cloud.start();
    sub = await Recorder.connect(broker.url, ['#'], { username: 'bridge', password: mqttPassword });
    writeFileSync(join(dir, 'hmarex.pw'), `${password}\n`, { mode: 0o600 });
    writeFileSync(join(dir, 'mqtt.pw'), `${mqttPassword}\n`, { mode: 0o600 });
  });
  after(async () => {
    await sub.close();
    await cloud.stop();
    await broker.dispose();
  });

  it('runs login, refresh, 401 re-login, failed logins, hostile answers and a stop', async () => {
    const child = program(['run'], {
      HMAREX_URL: cloud.url,
      HMAREX_EMAIL: SIM_EMAIL,
      HMAREX_PASSWORD_FILE: join(dir, 'hmarex.pw'),
      HMAREX_REFRESH: '* * * * * *',
      HMAREX_RETRY_MIN_MS: '100',
      HMAREX_RETRY_MAX_MS: '300',
      MQTT_URL: broker.url,
      MQTT_USERNAME: 'bridge',
      MQTT_PASSWORD_FILE: join(dir, 'mqtt.pw'),
      STATE_DIR: stateDir,
      LOG_LEVEL: 'debug',
    });
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const exited = new Promise<typeof exit>((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
    const logged = (pattern: RegExp, count = 1) => waitUntil(() => (stdout.match(new RegExp(pattern, 'g')) ?? []).length >= count, `${count} × ${pattern} in the log`, 10_000);
    try {
      const sn = cloud.devices[0].sn;
      await sub.waitFor((m) => m.topic === `${BASE}/${sn}/totp` && m.payload !== '', 'a code', 15_000);

      const unauthorized = cloud.counters.unauthorized;
      cloud.revokeTokens();
      await waitUntil(() => cloud.counters.unauthorized > unauthorized && cloud.issuedTokens.length >= 2, '401 and a re-login', 10_000);

      cloud.password = 'changed-by-the-user';
      cloud.revokeTokens();
      await logged(/login refused \(HTTP 400: Unable to log in/);
      // A hostile login answer that echoes what was sent: the echo is dropped.
      cloud.loginFault = { kind: 'status', status: 400, body: JSON.stringify({ non_field_errors: [`no user ${SIM_EMAIL} with password ${password}`] }) };
      await logged(/login refused \(HTTP 400\): check hmarex\.email/);
      cloud.loginFault = { kind: 'none' };
      cloud.password = password;
      await waitUntil(() => cloud.issuedTokens.length >= 3, 'a login again', 10_000);

      // A device list error that quotes the token it was sent, then hostile records.
      const token = cloud.issuedTokens.at(-1) ?? '';
      cloud.fault = { kind: 'status', status: 400, body: JSON.stringify({ detail: `Token ${token} may not list devices` }) };
      await logged(/device list page 1: HTTP 400"|device list page 1: HTTP 400;/);
      cloud.fault = { kind: 'none' };
      cloud.pageHook = (page) => ({ ...page, results: [...(page.results as unknown[]), { id: 9, sn: 'x/+/#', totp_key: 'HOSTILEKEYHOSTIL' }, { id: 10, sn: 'ABC', totp_key: 'ключключключключ' }] });
      await logged(/skipped: sn may only hold/);
      await logged(/thermostat ABC \(id 10\) skipped/);
      cloud.pageHook = null;

      child.kill('SIGTERM');
      exit = await exited;
    } finally {
      child.kill('SIGKILL');
    }
    assert.deepEqual(exit, { code: 0, signal: null }, stderr);
  });

  it('logged at debug level, in JSON lines', () => {
    const levels = new Set(stdout.trim().split('\n').map((line) => (JSON.parse(line) as { level: number }).level));
    assert.ok(levels.has(20), 'debug lines were written');
    assert.ok(levels.has(50), 'error lines were written');
  });

  it('no password, token or key in the log or on stderr', () => {
    const secrets = [password, mqttPassword, ...cloud.issuedTokens, ...cloud.devices.map((d) => d.totp_key), 'HOSTILEKEYHOSTIL', 'ключключключключ'];
    assert.ok(cloud.issuedTokens.length >= 3);
    assert.deepEqual(hits(stdout, secrets), [], 'secrets in the log');
    assert.deepEqual(hits(stderr, secrets), [], 'secrets on stderr');
  });

  it('no password, token or key in any MQTT payload', () => {
    assert.ok(sub.messages.length > 10);
    const secrets = [password, mqttPassword, ...cloud.issuedTokens, ...cloud.devices.map((d) => d.totp_key)];
    for (const m of sub.messages) assert.deepEqual(hits(`${m.topic} ${m.payload}`, secrets), [], `secret in ${m.topic}`);
  });

  it('the device cache holds the keys, 0600 in a 0700 folder', () => {
    assert.equal(statSync(stateDir).mode & 0o777, 0o700);
    const file = join(stateDir, 'devices.json');
    assert.equal(statSync(file).mode & 0o777, 0o600);
    assert.ok(readFileSync(file, 'utf8').includes(cloud.devices[0].totp_key), 'it is the file with the keys');
  });
});

describe('secrets: settings, check-config and error messages', () => {
  const secret = `pw-${randomBytes(9).toString('hex')}`;

  function configFile(name: string, text: string, mode = 0o600): string {
    const file = join(tempDir(), name);
    writeFileSync(file, text, { mode });
    chmodSync(file, mode);
    return file;
  }

  it('check-config masks both passwords, from the file, the environment and URLs', () => {
    const file = configFile('config.yaml', `hmarex:\n  email: a@b.c\n  password: ${secret}-file\n  url: "https://user:${secret}-url1@cloud.invalid/api/"\nmqtt:\n  url: "mqtt://user:${secret}-url2@broker.invalid:1883"\n`);
    const result = programSync(['check-config', '--config', file], { MQTT_PASSWORD: `${secret}-env` });
    assert.equal(result.status, 0, result.stderr);
    assert.match(result.stdout, /password: "\*{8}"/);
    assert.match(result.stdout, /url: mqtt:\/\/user:\*{8}@broker\.invalid:1883/);
    assert.deepEqual(hits(result.stdout + result.stderr, [secret]), []);
  });

  it('takes both passwords from files (Docker secrets), without their final newline', () => {
    const dir = tempDir();
    writeFileSync(join(dir, 'a'), `${secret}-a\n`);
    writeFileSync(join(dir, 'm'), `${secret}-m\r\n`);
    const { settings } = loadConfig({ file: false, env: { HMAREX_EMAIL: 'a@b.c', HMAREX_PASSWORD_FILE: join(dir, 'a'), MQTT_PASSWORD_FILE: join(dir, 'm') } });
    assert.equal(settings.hmarex.password, `${secret}-a`);
    assert.equal(settings.mqtt.password, `${secret}-m`);
    const result = programSync(['check-config'], { HMAREX_EMAIL: 'a@b.c', HMAREX_PASSWORD_FILE: join(dir, 'a'), MQTT_PASSWORD_FILE: join(dir, 'm') });
    assert.equal(result.status, 0, result.stderr);
    assert.deepEqual(hits(result.stdout + result.stderr, [secret]), []);
  });

  for (const [what, text] of [
    ['a password that is a map', `hmarex:\n  email: a@b.c\n  password: { x: "${secret}" }\n`],
    ['a password that is a list', `hmarex:\n  email: a@b.c\n  password: [ "${secret}" ]\n`],
    ['a broker password that is a map', `hmarex:\n  email: a@b.c\n  password: ok\nmqtt:\n  password: { nested: [ "${secret}" ] }\n`],
    ['a password beside a YAML syntax error', `hmarex:\n  email: a@b.c\n  password: "${secret}\n  url: : :\n`],
    ['a password under a misspelt key', `hmarex:\n  email: a@b.c\n  pasword: "${secret}"\n`],
    ['a URL with a password that is not valid', `hmarex:\n  email: a@b.c\n  password: ok\nmqtt:\n  url: "http://u:${secret}@broker"\n`],
  ] as const) {
    it(`exit 2 without the secret on stdout or stderr: ${what}`, () => {
      const result = programSync(['check-config', '--config', configFile('config.yaml', text)]);
      assert.equal(result.status, 2, result.stdout);
      assert.match(result.stderr, /invalid configuration/);
      assert.deepEqual(hits(result.stdout + result.stderr, [secret]), []);
    });
  }

  it('a JSON file that is not JSON is refused without quoting it', () => {
    const result = programSync(['run', '--config', configFile('config.json', `hmarex:\n  password: ${secret}\n`)]);
    assert.equal(result.status, 2);
    assert.match(result.stderr, /config\.json": not valid JSON/);
    assert.deepEqual(hits(result.stderr + result.stdout, [secret]), []);
  });

  it('a fatal error prints its message only: no stack, no object, no secret', async () => {
    // The health port taken by someone else is a start-up failure after the settings are read.
    const taken = createServer();
    await new Promise<void>((resolve) => taken.listen(0, '127.0.0.1', resolve));
    try {
      const port = String((taken.address() as AddressInfo).port);
      const result = await new Promise<{ status: number | null; stderr: string; stdout: string }>((resolve) => {
        const child = program(['run'], { HMAREX_EMAIL: 'a@b.c', HMAREX_PASSWORD: secret, MQTT_PASSWORD: `${secret}-mqtt`, HEALTH_PORT: port, HMAREX_URL: 'http://127.0.0.1:9/api/', MQTT_URL: 'mqtt://127.0.0.1:9', STATE_DIR: tempDir() });
        let stderr = '';
        let stdout = '';
        child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
        child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
        child.once('exit', (status) => resolve({ status, stderr, stdout }));
      });
      assert.equal(result.status, 1, result.stderr);
      assert.match(result.stderr, /^hmarex2mqtt: fatal: listen EADDRINUSE.*\n$/);
      assert.doesNotMatch(result.stderr, /^\s+at /m, 'no stack');
      assert.deepEqual(hits(result.stderr + result.stdout, [secret]), []);
    } finally {
      taken.close();
    }
  });

  it('warns when the account password would cross the network unencrypted', () => {
    const warnings = (url: string) => loadConfig({ file: false, env: { HMAREX_EMAIL: 'a@b.c', HMAREX_PASSWORD: 'x', HMAREX_URL: url } }).warnings.join('\n');
    assert.match(warnings('http://cloud.example.invalid/api/'), /hmarex\.url uses http:\/\/: the account password and token cross the network unencrypted to cloud\.example\.invalid; use https:\/\//);
    for (const quiet of ['https://my.hmarex.com/api/', 'http://127.0.0.1:8080/api/', 'http://localhost/api/', 'http://[::1]:8080/api/']) assert.equal(warnings(quiet), '', quiet);
  });

  it('warns about a config file with a password that others can read, only then', () => {
    const withPassword = `hmarex:\n  email: a@b.c\n  password: ${secret}\n`;
    const open = loadConfig({ file: configFile('config.yaml', withPassword, 0o644), env: {} });
    assert.match(open.warnings.join('\n'), /holds a password and can be read by other users \(mode 644\): chmod 600 it/);
    assert.deepEqual(loadConfig({ file: configFile('config.yaml', withPassword, 0o600), env: {} }).warnings, []);
    const noPassword = configFile('config.yaml', 'hmarex:\n  email: a@b.c\n  password: ""\n', 0o644);
    assert.deepEqual(loadConfig({ file: noPassword, env: { HMAREX_PASSWORD: secret } }).warnings, [], 'the password came from the environment');
    const mqttOnly = configFile('config.json', JSON.stringify({ hmarex: { email: 'a@b.c' }, mqtt: { password: secret } }), 0o640);
    assert.match(loadConfig({ file: mqttOnly, env: { HMAREX_PASSWORD: 'x' } }).warnings.join('\n'), /can be read by other users \(mode 640\)/);
  });
});

describe('secrets: the logger', () => {
  it('redacts secrets handed to it in objects, at every level', () => {
    let out = '';
    const destination = new Writable({
      write(chunk: Buffer, _encoding, done) {
        out += chunk.toString();
        done();
      },
    });
    const logger = createLogger({ level: 'trace', destination });
    const s = (n: number) => `secret-${n}-${randomBytes(6).toString('hex')}`;
    const secrets = Array.from({ length: 9 }, (_, i) => s(i));
    logger.trace({ password: secrets[0], token: secrets[1] }, 'trace');
    logger.debug({ settings: { hmarex: { password: secrets[2] } } }, 'settings');
    logger.info({ device: { totp_key: secrets[3] }, totpKey: secrets[4] }, 'device');
    logger.warn({ response: { headers: { authorization: `Token ${secrets[5]}` } } }, 'headers');
    logger.error({ login: { access_token: secrets[6] }, mqtt: { password: secrets[7] } }, 'login');
    logger.fatal({ record: { meta: { totp_key: secrets[8] } } }, 'nested');
    assert.equal(out.trim().split('\n').length, 6);
    assert.deepEqual(hits(out, secrets), []);
    assert.match(out, /\[redacted\]/);
  });
});

describe('secrets: the cache folder is tightened', () => {
  it('an existing folder open to others becomes 0700 at the first save', async () => {
    const dir = join(tempDir(), 'state');
    mkdirSync(dir, { mode: 0o755 });
    chmodSync(dir, 0o755);
    const [record] = parseDevicePage([simDevice(1)]).devices;
    await new DeviceCache(dir).save([record], new Date());
    assert.equal(statSync(dir).mode & 0o777, 0o700);
    assert.equal(statSync(join(dir, 'devices.json')).mode & 0o777, 0o600);
  });
});
