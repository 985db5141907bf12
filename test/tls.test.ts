// Broker security against real mosquitto processes: TLS with a CA and certificates made here with
// openssl (custom CA, SNI, client certificates, reject_unauthorized), password authentication,
// and every failure reported in words a user can act on, never with a password in them.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { chmodSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ConfigError, loadConfig } from '../src/config.js';
import { Mosquitto, Recorder, startRig, tempDir, waitUntil, type Rig } from './helpers.js';

const HOST = 'broker.test';
const BASE = 'hmarex2mqtt';

/** A CA, a server certificate for HOST only, a client certificate, and a second, unrelated CA. */
function makePki(): Record<'ca' | 'otherCa' | 'otherKey' | 'serverCert' | 'serverKey' | 'clientCert' | 'clientKey' | 'strangerCert' | 'strangerKey', string> {
  const dir = tempDir('hmarex2mqtt-pki-');
  const at = (name: string) => join(dir, name);
  const openssl = (...args: string[]) => execFileSync('openssl', args, { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] });
  const key = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  const selfSigned = (name: string, cn: string) => openssl('req', '-x509', ...key, '-keyout', `${name}.key`, '-out', `${name}.crt`, '-days', '2', '-subj', `/CN=${cn}`);
  const signed = (name: string, cn: string, ca: string, ext: string) => {
    openssl('req', ...key, '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', `/CN=${cn}`);
    writeFileSync(at(`${name}.ext`), `${ext}\n`);
    openssl('x509', '-req', '-in', `${name}.csr`, '-CA', `${ca}.crt`, '-CAkey', `${ca}.key`, '-CAcreateserial', '-out', `${name}.crt`, '-days', '2', '-extfile', `${name}.ext`);
  };
  selfSigned('ca', 'hmarex2mqtt test CA');
  selfSigned('other', 'some other CA');
  signed('server', HOST, 'ca', `subjectAltName=DNS:${HOST}`);
  signed('client', 'bridge', 'ca', 'extendedKeyUsage=clientAuth');
  signed('stranger', 'bridge', 'other', 'extendedKeyUsage=clientAuth');
  // mosquitto drops root for its own user before it reads its files: test keys only.
  chmodSync(dir, 0o755);
  for (const name of readdirSync(dir)) chmodSync(at(name), 0o644);
  return {
    ca: at('ca.crt'),
    otherCa: at('other.crt'),
    otherKey: at('other.key'),
    serverCert: at('server.crt'),
    serverKey: at('server.key'),
    clientCert: at('client.crt'),
    clientKey: at('client.key'),
    strangerCert: at('stranger.crt'),
    strangerKey: at('stranger.key'),
  };
}

const errorsOf = (rig: Rig) => rig.log.lines.map((l) => JSON.parse(l) as { level: number; msg: string }).filter((l) => l.level === 50).map((l) => l.msg);

/** Waits for the bridge to log `expected` as an error, and checks it never got connected. */
async function refusedWith(rig: Rig, expected: RegExp): Promise<void> {
  await waitUntil(() => errorsOf(rig).some((msg) => expected.test(msg)), `an error matching ${expected}`, 8000);
  assert.equal(rig.log.text().includes('connected to the MQTT broker'), false);
  assert.equal(rig.bridge.health().healthy, false);
}

describe('broker security: TLS', { timeout: 60_000 }, () => {
  let pki: ReturnType<typeof makePki>;
  let tlsBroker: Mosquitto;
  let mtlsBroker: Mosquitto;
  const tlsListener = (extra: string[]) => (port: number) => [`listener ${port} 127.0.0.1`, `cafile ${pki.ca}`, `certfile ${pki.serverCert}`, `keyfile ${pki.serverKey}`, 'allow_anonymous true', ...extra];
  const mqtts = (broker: Mosquitto) => `mqtts://127.0.0.1:${broker.port}`;

  before(async () => {
    pki = makePki();
    tlsBroker = await new Mosquitto({ listenerConfig: tlsListener([]) }).start();
    mtlsBroker = await new Mosquitto({ listenerConfig: tlsListener(['require_certificate true']) }).start();
  });
  after(async () => {
    await tlsBroker.dispose();
    await mtlsBroker.dispose();
  });

  /** A bridge on `broker` with these settings; `check` runs before it is taken down. */
  async function withBridge(broker: Mosquitto, env: Record<string, string>, check: (rig: Rig) => Promise<void>): Promise<void> {
    const rig = await startRig({ broker, env: { MQTT_URL: mqtts(broker), ...env } });
    try {
      await check(rig);
    } finally {
      await rig.dispose();
    }
  }

  /** Codes arrive at a subscriber of our own on the same TLS listener. */
  async function codesArrive(rig: Rig, broker: Mosquitto, client: { cert?: string; key?: string } = {}): Promise<void> {
    const sub = await Recorder.connect(mqtts(broker), [`${BASE}/#`], {
      ca: readFileSync(pki.ca),
      servername: HOST,
      ...(client.cert && client.key ? { cert: readFileSync(client.cert), key: readFileSync(client.key) } : {}),
    });
    try {
      const sn = rig.cloud.devices[0].sn;
      await sub.waitFor((m) => m.topic === `${BASE}/${sn}/totp` && m.payload !== '', 'a code over TLS', 8000);
    } finally {
      await sub.close();
    }
  }

  it('mqtts:// with a custom CA and the server name set for SNI and verification', async () => {
    await withBridge(tlsBroker, { MQTT_TLS_CA: pki.ca, MQTT_TLS_SERVERNAME: HOST }, async (rig) => {
      await codesArrive(rig, tlsBroker);
      assert.equal(rig.bridge.health().healthy, true);
    });
  });

  it('a certificate for another host name is refused, in words', async () => {
    await withBridge(tlsBroker, { MQTT_TLS_CA: pki.ca }, (rig) =>
      refusedWith(rig, /^TLS: the certificate of broker 127\.0\.0\.1:\d+ is not valid for that host name \(connect by the name in the certificate, or set mqtt\.tls\.servername\)$/),
    );
  });

  it('a certificate from an unknown CA is refused, in words', async () => {
    const expected = /^TLS: the certificate of broker 127\.0\.0\.1:\d+ is not signed by a trusted CA \(set mqtt\.tls\.ca to the CA file\)$/;
    await withBridge(tlsBroker, { MQTT_TLS_CA: pki.otherCa, MQTT_TLS_SERVERNAME: HOST }, (rig) => refusedWith(rig, expected));
    await withBridge(tlsBroker, { MQTT_TLS_SERVERNAME: HOST }, (rig) => refusedWith(rig, expected));
  });

  it('reject_unauthorized=false connects anyway, with a warning at start', async () => {
    const env = { MQTT_TLS_CA: pki.otherCa, MQTT_TLS_REJECT_UNAUTHORIZED: 'false' };
    const { warnings } = loadConfig({ file: false, env: { HMAREX_EMAIL: 'a@b.c', HMAREX_PASSWORD: 'x', MQTT_URL: mqtts(tlsBroker), ...env } });
    assert.match(warnings.join('\n'), /mqtt\.tls\.reject_unauthorized is false: the broker certificate is not checked/);
    await withBridge(tlsBroker, env, (rig) => codesArrive(rig, tlsBroker));
  });

  it('a client certificate and key for a broker that requires one', async () => {
    await withBridge(mtlsBroker, { MQTT_TLS_CA: pki.ca, MQTT_TLS_SERVERNAME: HOST, MQTT_TLS_CERT: pki.clientCert, MQTT_TLS_KEY: pki.clientKey }, (rig) =>
      codesArrive(rig, mtlsBroker, { cert: pki.clientCert, key: pki.clientKey }),
    );
  });

  it('no client certificate, or one the broker does not trust, is reported in words', async () => {
    await withBridge(mtlsBroker, { MQTT_TLS_CA: pki.ca, MQTT_TLS_SERVERNAME: HOST }, (rig) =>
      refusedWith(rig, /^TLS: broker 127\.0\.0\.1:\d+ wants a client certificate \(set mqtt\.tls\.cert and mqtt\.tls\.key\)$/),
    );
    await withBridge(mtlsBroker, { MQTT_TLS_CA: pki.ca, MQTT_TLS_SERVERNAME: HOST, MQTT_TLS_CERT: pki.strangerCert, MQTT_TLS_KEY: pki.strangerKey }, (rig) =>
      refusedWith(rig, /^TLS: broker 127\.0\.0\.1:\d+ did not accept our client certificate/),
    );
  });

  it('plain mqtt:// to a TLS listener is reported in words', async () => {
    await withBridge(tlsBroker, { MQTT_URL: `mqtt://127.0.0.1:${tlsBroker.port}` }, (rig) =>
      refusedWith(rig, /^broker 127\.0\.0\.1:\d+ closed the connection at once \(does mqtt\.url's mqtt:\/\/ or mqtts:\/\/ match/),
    );
  });

  it('wrong TLS files are configuration problems with names, not crashes', () => {
    const garbage = join(tempDir(), 'garbage.pem');
    writeFileSync(garbage, 'not a certificate\n');
    const problems = (env: Record<string, string>): string => {
      try {
        loadConfig({ file: false, env: { HMAREX_EMAIL: 'a@b.c', HMAREX_PASSWORD: 'x', MQTT_URL: 'mqtts://127.0.0.1:8883', ...env } });
      } catch (error) {
        assert.ok(error instanceof ConfigError);
        return error.problems.join('\n');
      }
      return '';
    };
    assert.match(problems({ MQTT_TLS_CA: garbage }), /mqtt\.tls\.ca: ".*garbage\.pem" is not a PEM certificate/);
    assert.match(problems({ MQTT_TLS_CERT: pki.clientCert, MQTT_TLS_KEY: pki.otherKey }), /mqtt\.tls\.key: this key does not belong to the certificate in mqtt\.tls\.cert/);
    assert.match(problems({ MQTT_TLS_CERT: pki.clientCert, MQTT_TLS_KEY: garbage }), /mqtt\.tls\.key: .* is not an unencrypted PEM private key/);
    assert.match(problems({ MQTT_TLS_CERT: pki.clientCert }), /give both or neither/);
    assert.match(problems({ MQTT_TLS_CA: '/nonexistent/ca.crt' }), /mqtt\.tls\.ca: cannot read "\/nonexistent\/ca\.crt" \(ENOENT\)/);
    const plain = loadConfig({ file: false, env: { HMAREX_EMAIL: 'a@b.c', HMAREX_PASSWORD: 'x', MQTT_URL: 'mqtt://127.0.0.1:1883', MQTT_TLS_CA: pki.ca } });
    assert.match(plain.warnings.join('\n'), /mqtt\.tls settings are ignored: mqtt\.url does not use TLS/);
  });
});

describe('broker security: password authentication', { timeout: 30_000 }, () => {
  const password = `broker-pw-${process.pid}-${Date.now()}`;
  let broker: Mosquitto;

  before(async () => {
    const dir = tempDir('hmarex2mqtt-passwd-');
    chmodSync(dir, 0o755);
    const file = join(dir, 'passwd');
    execFileSync('mosquitto_passwd', ['-c', '-b', file, 'bridge', password]);
    chmodSync(file, 0o644);
    broker = await new Mosquitto({ listenerConfig: (port) => [`listener ${port} 127.0.0.1`, 'allow_anonymous false', `password_file ${file}`] }).start();
  });
  after(async () => {
    await broker.dispose();
  });

  it('connects with the right user name and password', async () => {
    const rig = await startRig({ broker, env: { MQTT_USERNAME: 'bridge', MQTT_PASSWORD: password } });
    const sub = await Recorder.connect(broker.url, [`${BASE}/#`], { username: 'bridge', password });
    try {
      await sub.waitFor((m) => m.topic === `${BASE}/${rig.cloud.devices[0].sn}/totp` && m.payload !== '', 'a code');
    } finally {
      await sub.close();
      await rig.dispose();
    }
  });

  it('works under the least-privilege ACL the README recommends', async () => {
    const dir = tempDir('hmarex2mqtt-acl-');
    chmodSync(dir, 0o755);
    const passwd = join(dir, 'passwd');
    execFileSync('mosquitto_passwd', ['-c', '-b', passwd, 'hmarex2mqtt', password]);
    execFileSync('mosquitto_passwd', ['-b', passwd, 'homeassistant', password]);
    const acl = join(dir, 'acl');
    writeFileSync(
      acl,
      [
        'user hmarex2mqtt',
        'topic readwrite hmarex2mqtt/#',
        'topic readwrite homeassistant/device/+/config',
        'topic read homeassistant/status',
        'user homeassistant',
        'topic read hmarex2mqtt/#',
        'topic write hmarex2mqtt/bridge/request/refresh',
        'topic readwrite homeassistant/#',
        '',
      ].join('\n'),
    );
    for (const file of [passwd, acl]) chmodSync(file, 0o644);
    const locked = await new Mosquitto({ listenerConfig: (port) => [`listener ${port} 127.0.0.1`, 'allow_anonymous false', `password_file ${passwd}`, `acl_file ${acl}`] }).start();
    const rig = await startRig({ broker: locked, env: { MQTT_USERNAME: 'hmarex2mqtt', MQTT_PASSWORD: password } });
    const ha = await Recorder.connect(locked.url, [`${BASE}/#`, 'homeassistant/#'], { username: 'homeassistant', password });
    try {
      const sn = rig.cloud.devices[0].sn;
      await ha.waitFor((m) => m.topic === `${BASE}/${sn}/totp` && m.payload !== '', 'a code');
      await ha.waitFor((m) => m.topic === `homeassistant/device/hmarex2mqtt_${sn}/config`, 'discovery');
      const before = rig.cloud.counters.deviceRequests;
      await ha.client.publishAsync(`${BASE}/bridge/request/refresh`, '', { qos: 1 });
      await waitUntil(() => rig.cloud.counters.deviceRequests > before, 'a refresh asked for by Home Assistant');
    } finally {
      await ha.close();
      await rig.dispose();
      await locked.dispose();
    }
  });

  for (const [what, env] of [
    ['a wrong password', { MQTT_USERNAME: 'bridge', MQTT_PASSWORD: `${password}-wrong` }],
    ['no credentials', {}],
  ] as const) {
    it(`${what} is reported in words, without the password`, async () => {
      const rig = await startRig({ broker, env });
      try {
        await refusedWith(rig, /^broker 127\.0\.0\.1:\d+ refused the connection: Not authorized \(check mqtt\.username \/ mqtt\.password \/ mqtt\.client_id\)$/);
        assert.equal(rig.log.text().includes(password), false);
      } finally {
        await rig.dispose();
      }
    });
  }
});
