// Settings: file + environment, strict validation with every problem named, and the exit codes
// of the real program.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { chmodSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { ConfigError, loadConfig, maskedSettings, resolveConfigFile } from '../src/config.js';
import { ROOT, tempDir } from './helpers.js';

const MAIN = join(ROOT, 'dist/main.js');

function run(args: string[], env: Record<string, string> = {}, cwd = tempDir()) {
  const clean = Object.fromEntries(Object.entries(process.env).filter(([k]) => !/^(HMAREX|MQTT|HA_|TOTP|STATE_|LOG_|HEALTH_)/.test(k)));
  return spawnSync(process.execPath, [MAIN, ...args], { cwd, env: { ...clean, ...env }, encoding: 'utf8', timeout: 20_000 });
}

function writeConfig(text: string, name = 'config.yaml'): string {
  const dir = tempDir();
  const file = join(dir, name);
  writeFileSync(file, text, { mode: 0o600 });
  return file;
}

function problemsOf(fn: () => unknown): string[] {
  try {
    fn();
  } catch (error) {
    assert.ok(error instanceof ConfigError, `expected a ConfigError, got ${String(error)}`);
    return error.problems;
  }
  assert.fail('expected the configuration to be refused');
}

describe('config: validation', () => {
  it('names every bad key in one go', () => {
    const file = writeConfig(
      [
        'hmarex:',
        '  url: "not a url"',
        '  refresh: "every ten minutes"',
        '  timeout_ms: -5',
        '  unknown_key: 1',
        'mqtt:',
        '  url: "http://broker:1883"',
        '  protocol_version: 3',
        'totp:',
        '  algorithm: MD5',
        '  epoch: "1990"',
      ].join('\n'),
    );
    const problems = problemsOf(() => loadConfig({ file, env: {} }));
    const text = problems.join('\n');
    for (const key of ['hmarex.url', 'hmarex.refresh', 'hmarex.timeout_ms', 'hmarex.unknown_key', 'mqtt.url', 'mqtt.protocol_version', 'totp.algorithm', 'totp.epoch', 'hmarex.email', 'hmarex.password']) {
      assert.match(text, new RegExp(key.replace('.', '\\.')), `problem for ${key} in:\n${text}`);
    }
    assert.match(text, /cron expression/);
    assert.match(text, /mqtt:\/\/, mqtts:\/\/, ws:\/\/, wss:\/\//);
  });

  it('reads YAML and JSON files; the environment wins over the file', () => {
    const yaml = writeConfig('hmarex:\n  email: file@example.com\n  password: from-file\ntotp:\n  period: 60\n');
    const fromYaml = loadConfig({ file: yaml, env: { TOTP_PERIOD: '15' } }).settings;
    assert.equal(fromYaml.hmarex.email, 'file@example.com');
    assert.equal(fromYaml.totp.period, 15);
    const json = writeConfig(JSON.stringify({ hmarex: { email: 'j@example.com', password: 'p' }, mqtt: { base_topic: 'heat' } }), 'config.json');
    const fromJson = loadConfig({ file: json, env: {} }).settings;
    assert.equal(fromJson.mqtt.base_topic, 'heat');
    assert.match(fromJson.mqtt.client_id, /^hmarex2mqtt_[0-9a-f]{8}$/);
  });

  it('has the contract defaults', () => {
    const { settings } = loadConfig({ file: false, env: { HMAREX_EMAIL: 'a@b.c', HMAREX_PASSWORD: 'x' } });
    assert.equal(settings.hmarex.url, 'https://my.hmarex.com/api/');
    assert.equal(settings.hmarex.refresh, '*/10 * * * *');
    assert.equal(settings.hmarex.timeout_ms, 10000);
    assert.equal(settings.mqtt.url, 'mqtt://localhost:1883');
    assert.equal(settings.mqtt.base_topic, 'hmarex2mqtt');
    assert.equal(settings.mqtt.protocol_version, 5);
    assert.equal(settings.mqtt.tls.reject_unauthorized, true);
    assert.deepEqual(settings.homeassistant, { discovery: true, discovery_prefix: 'homeassistant', status_topic: 'homeassistant/status' });
    assert.deepEqual(settings.totp, { digits: 9, period: 30, algorithm: 'SHA1', key_encoding: 'raw', epoch: '2000' });
    assert.equal(settings.state.dir, './data');
    assert.equal(settings.log.level, 'info');
  });

  it('takes every key from the environment alone', () => {
    const { settings } = loadConfig({
      file: false,
      env: {
        HMAREX_URL: 'https://my.terneo.ua/api/',
        HMAREX_EMAIL: 'a@b.c',
        HMAREX_PASSWORD: 'x',
        MQTT_URL: 'mqtts://broker.lan:8883',
        MQTT_PROTOCOL_VERSION: '4',
        HA_DISCOVERY: 'false',
        TOTP_DIGITS: '6',
        TOTP_ALGORITHM: 'SHA256',
        TOTP_KEY_ENCODING: 'base32',
        TOTP_EPOCH: 'unix',
        LOG_LEVEL: 'debug',
      },
    });
    assert.equal(settings.hmarex.url, 'https://my.terneo.ua/api/');
    assert.equal(settings.mqtt.protocol_version, 4);
    assert.equal(settings.homeassistant.discovery, false);
    assert.deepEqual(settings.totp, { digits: 6, period: 30, algorithm: 'SHA256', key_encoding: 'base32', epoch: 'unix' });
  });

  it('reads the password from a file', () => {
    const secret = writeConfig('s3cret-from-file\n', 'password');
    const { settings } = loadConfig({ file: false, env: { HMAREX_EMAIL: 'a@b.c', HMAREX_PASSWORD_FILE: secret } });
    assert.equal(settings.hmarex.password, 's3cret-from-file');
    const problems = problemsOf(() => loadConfig({ file: false, env: { HMAREX_EMAIL: 'a@b.c', HMAREX_PASSWORD_FILE: '/nonexistent/pw' } }));
    assert.match(problems.join('\n'), /hmarex\.password_file: cannot read/);
  });

  it('finds the file by --config, then $HMAREX2MQTT_CONFIG, then config/config.yaml', () => {
    const cwd = tempDir();
    assert.equal(resolveConfigFile({ cwd, env: {} }), null);
    mkdirSync(join(cwd, 'config'));
    writeFileSync(join(cwd, 'config/config.yaml'), '{}');
    assert.equal(resolveConfigFile({ cwd, env: {} }), join(cwd, 'config/config.yaml'));
    assert.equal(resolveConfigFile({ cwd, env: { HMAREX2MQTT_CONFIG: '/x.yaml' } }), '/x.yaml');
    assert.equal(resolveConfigFile({ cwd, env: { HMAREX2MQTT_CONFIG: '/x.yaml' }, file: '/y.yaml' }), '/y.yaml');
  });

  it('masks secrets', () => {
    const { settings } = loadConfig({ file: false, env: { HMAREX_EMAIL: 'a@b.c', HMAREX_PASSWORD: 'hunter2', MQTT_PASSWORD: 'mqtt-pw' } });
    const masked = JSON.stringify(maskedSettings(settings));
    assert.ok(!masked.includes('hunter2') && !masked.includes('mqtt-pw'));
    assert.equal(settings.hmarex.password, 'hunter2', 'the original is untouched');
  });
});

describe('config: the program', () => {
  it('stops with exit 2 and every problem listed on a bad file', () => {
    const file = writeConfig('hmarex:\n  email: a@b.c\n  password: hunter2\n  refresh: "nope"\nmqtt:\n  url: "ftp://x"\n  bogus: true\n');
    const result = run(['run', '--config', file]);
    assert.equal(result.status, 2, result.stderr);
    for (const key of ['hmarex.refresh', 'mqtt.url', 'mqtt.bogus']) assert.match(result.stderr, new RegExp(key.replace('.', '\\.')));
    assert.ok(!result.stderr.includes('hunter2') && !result.stdout.includes('hunter2'));
  });

  it('exit 2 when the account is missing, naming what to set', () => {
    const result = run(['run']);
    assert.equal(result.status, 2);
    assert.match(result.stderr, /hmarex\.email: required/);
    assert.match(result.stderr, /hmarex\.password: required/);
  });

  it('exit 2 when --config names a file that does not exist', () => {
    const result = run(['check-config', '--config', '/nonexistent/config.yaml']);
    assert.equal(result.status, 2);
    assert.match(result.stderr, /\/nonexistent\/config\.yaml/);
  });

  it('check-config prints the effective settings with secrets masked, exit 0', () => {
    const file = writeConfig('hmarex:\n  email: a@b.c\n  password: hunter2\nmqtt:\n  password: broker-secret\n');
    const result = run(['check-config', '--config', file], { MQTT_BASE_TOPIC: 'from-env' });
    assert.equal(result.status, 0, result.stderr);
    assert.match(result.stdout, /base_topic: from-env/);
    assert.match(result.stdout, /email: a@b\.c/);
    assert.match(result.stdout, /password: "\*\*\*\*\*\*\*\*"/);
    assert.ok(!result.stdout.includes('hunter2') && !result.stdout.includes('broker-secret'));
  });

  it('warns when a config file holding a password is readable by others', () => {
    const file = writeConfig('hmarex:\n  email: a@b.c\n  password: hunter2\n');
    chmodSync(file, 0o644);
    const result = run(['check-config', '--config', file]);
    assert.equal(result.status, 0);
    assert.match(result.stderr, /can be read by other users/);
  });

  it('--help, --version and an unknown command', () => {
    assert.match(run(['--help']).stdout, /hmarex2mqtt codes/);
    assert.match(run(['--version']).stdout, /^\d+\.\d+\.\d+\n$/);
    const unknown = run(['frobnicate']);
    assert.equal(unknown.status, 2);
    assert.match(unknown.stderr, /unknown command "frobnicate"/);
  });
});
