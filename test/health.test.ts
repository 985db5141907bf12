// /healthz and /metrics over HTTP against a running bridge: healthy, broker down, codes stale, and
// metrics whose values move as the bridge works.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { startHealthServer, type HealthServer } from '../src/health.js';
import { windowAt } from '../src/totp.js';
import { FakeClock } from './fakeclock.js';
import { Recorder, referenceHotp, startRig, waitUntil, type Rig } from './helpers.js';

async function get(server: HealthServer, path: string): Promise<{ status: number; body: string; type: string }> {
  const response = await fetch(`http://127.0.0.1:${server.port}${path}`);
  return { status: response.status, body: await response.text(), type: response.headers.get('content-type') ?? '' };
}

async function healthz(server: HealthServer): Promise<{ status: number; body: { healthy: boolean; reason?: string; cloud: string; devices: number } }> {
  const { status, body } = await get(server, '/healthz');
  return { status, body: JSON.parse(body) as { healthy: boolean; reason?: string; cloud: string; devices: number } };
}

/** One sample of the Prometheus text format; labels given must all match. */
function sample(text: string, name: string, labels: Record<string, string> = {}): number | undefined {
  for (const line of text.split('\n')) {
    const match = /^([a-zA-Z_:][\w:]*)(\{[^}]*\})? (\S+)$/.exec(line);
    if (!match || match[1] !== name) continue;
    const have = Object.fromEntries([...(match[2] ?? '').matchAll(/(\w+)="([^"]*)"/g)].map((m) => [m[1], m[2]]));
    if (Object.entries(labels).every(([k, v]) => have[k] === v)) return Number(match[3]);
  }
  return undefined;
}

describe('/healthz', { timeout: 60_000 }, () => {
  // The bridge's timers run only when the test advances this clock; MQTT and HTTP are real. It
  // starts 1 s into a window: a connect in a window's last moments would rightly publish nothing.
  const clock = new FakeClock(windowAt(Date.now(), { period: 30, epoch: '2000' }).validFromMs + 1000);
  let rig: Rig;
  let server: HealthServer;

  before(async () => {
    rig = await startRig({ bridge: { clock }, cloud: { dateOffsetMs: clock.now() - Date.now() } });
    server = await startHealthServer(rig.bridge, { port: 0, host: '127.0.0.1' }, rig.log.logger);
  });
  after(async () => {
    await server.close();
    await rig.dispose();
  });

  it('is 200 while the broker is connected and the codes are current', async () => {
    const { body } = await waitUntil(async () => {
      const r = await healthz(server);
      return r.status === 200 && r.body.devices === 3 ? r : null;
    }, 'healthy with 3 thermostats');
    assert.deepEqual(body, { healthy: true, cloud: 'online', devices: 3 });
  });

  it('is 503 when the codes of the current window were not published, and 200 once they are', async () => {
    // Into the next window without running the timer that publishes it: a stuck bridge.
    clock.jump(30_000);
    const stale = await healthz(server);
    assert.equal(stale.status, 503);
    assert.equal(stale.body.healthy, false);
    assert.match(stale.body.reason ?? '', /codes of the current window have not been published/);
    clock.advance(1000);
    assert.equal((await healthz(server)).status, 200, 'healthy once the window timer has run');
  });

  it('is 503 while the broker is down, and 200 after it is back', async () => {
    await rig.broker.stop();
    const down = await waitUntil(async () => {
      const r = await healthz(server);
      return r.status === 503 ? r : null;
    }, '503 without the broker');
    assert.match(down.body.reason ?? '', /not connected to the MQTT broker/);
    await rig.broker.start();
    await waitUntil(async () => (await healthz(server)).status === 200, 'healthy after the broker is back', 10_000);
  });

  it('answers 404 elsewhere and 405 to other methods', async () => {
    assert.equal((await get(server, '/')).status, 404);
    assert.equal((await fetch(`http://127.0.0.1:${server.port}/healthz`, { method: 'POST' })).status, 405);
  });
});

describe('/metrics', { timeout: 60_000 }, () => {
  // 3 s before a window boundary, which comes when the test advances the clock.
  const clock = new FakeClock(windowAt(Date.now(), { period: 30, epoch: '2000' }).validUntilMs - 3000);
  let rig: Rig;
  let server: HealthServer;
  const metrics = async () => (await get(server, '/metrics')).body;

  before(async () => {
    // The simulated cloud's Date header follows the same clock, so no clock skew is seen.
    rig = await startRig({ bridge: { clock }, cloud: { dateOffsetMs: clock.now() - Date.now() } });
    server = await startHealthServer(rig.bridge, { port: 0, host: '127.0.0.1' }, rig.log.logger);
    await waitUntil(async () => (await healthz(server)).body.devices === 3, 'three thermostats');
  });
  after(async () => {
    await server.close();
    await rig.dispose();
  });

  it('serves every metric family in the Prometheus text format', async () => {
    const { status, type, body } = await get(server, '/metrics');
    assert.equal(status, 200);
    assert.match(type, /^text\/plain; version=0\.0\.4/);
    for (const family of [
      'hmarex2mqtt_codes_published_total counter',
      'hmarex2mqtt_publish_lag_seconds histogram',
      'hmarex2mqtt_mqtt_reconnects_total counter',
      'hmarex2mqtt_cloud_requests_total counter',
      'hmarex2mqtt_cloud_logins_total counter',
      'hmarex2mqtt_devices gauge',
      'hmarex2mqtt_cache_age_seconds gauge',
    ]) {
      assert.ok(body.includes(`# TYPE ${family}\n`), family);
    }
    assert.equal(sample(body, 'hmarex2mqtt_devices'), 3);
    assert.equal(sample(body, 'hmarex2mqtt_cloud_logins_total'), 1);
    assert.equal(sample(body, 'hmarex2mqtt_cloud_requests_total', { endpoint: 'login', outcome: 'ok' }), 1);
    assert.ok((sample(body, 'hmarex2mqtt_cloud_requests_total', { endpoint: 'device', outcome: 'ok' }) ?? 0) >= 1);
    // -1 until the device cache is written, then its age on the bridge's clock (which stands still).
    await waitUntil(async () => sample(await metrics(), 'hmarex2mqtt_cache_age_seconds') === 0, 'the cache to be written');
  });

  it('counts the codes of a window boundary and their publish lag', async () => {
    const sub = await Recorder.connect(rig.broker.url, [`hmarex2mqtt/${rig.cloud.devices[0].sn}/totp`]);
    try {
      const first = await sub.waitFor(() => true, 'the current code');
      const before = await metrics();
      const published = sample(before, 'hmarex2mqtt_codes_published_total') ?? 0;
      const lagCount = sample(before, 'hmarex2mqtt_publish_lag_seconds_count');
      assert.equal(lagCount, 0, 'the publish at connect is no boundary: no lag observed');
      const lagSum = sample(before, 'hmarex2mqtt_publish_lag_seconds_sum') ?? 0;
      clock.advance(3000);
      const nextTime = String(Number((JSON.parse(first.payload) as { time: string }).time) + 30);
      const next = await sub.waitFor((m) => m.payload !== '' && (JSON.parse(m.payload) as { time: string }).time === nextTime, 'the next window');
      const { time, auth } = JSON.parse(next.payload) as { time: string; auth: string };
      assert.equal(auth, referenceHotp(Buffer.from(rig.cloud.devices[0].totp_key, 'ascii'), Number(time) / 30, 9));
      const afterText = await waitUntil(async () => {
        const text = await metrics();
        return (sample(text, 'hmarex2mqtt_codes_published_total') ?? 0) >= published + 3 ? text : null;
      }, 'the counter to move');
      assert.equal(sample(afterText, 'hmarex2mqtt_codes_published_total'), published + 3, 'one code per thermostat');
      assert.equal(sample(afterText, 'hmarex2mqtt_publish_lag_seconds_count'), 1, 'one lag observation per boundary');
      assert.equal(sample(afterText, 'hmarex2mqtt_cache_age_seconds'), 3, 'the cache grew 3 s older');
      // On this clock the timer fires at the boundary itself: what is left is the publishing.
      const lag = (sample(afterText, 'hmarex2mqtt_publish_lag_seconds_sum') ?? 0) - lagSum;
      assert.ok(lag >= 0 && lag < 0.1, `boundary lag ${lag} s`);
    } finally {
      await sub.close();
    }
  });

  it('counts cloud failures by outcome, logins and devices as the cloud changes', async () => {
    rig.cloud.fault = { kind: 'status', status: 502 };
    await rig.bridge.refresh('request');
    rig.cloud.fault = { kind: 'none' };
    let text = await metrics();
    assert.equal(sample(text, 'hmarex2mqtt_cloud_requests_total', { endpoint: 'device', outcome: 'server_error' }), 1);

    rig.cloud.revokeTokens();
    rig.cloud.devices = rig.cloud.devices.slice(0, 2);
    await waitUntil(async () => {
      await rig.bridge.refresh('request');
      text = await metrics();
      return sample(text, 'hmarex2mqtt_devices') === 2;
    }, 'a refresh that sees two thermostats');
    assert.equal(sample(text, 'hmarex2mqtt_cloud_logins_total'), 2, 'a new login after the token was revoked');
    assert.ok((sample(text, 'hmarex2mqtt_cloud_requests_total', { endpoint: 'device', outcome: 'unauthorized' }) ?? 0) >= 1);
  });

  it('counts reconnections to the broker', async () => {
    assert.equal(sample(await metrics(), 'hmarex2mqtt_mqtt_reconnects_total'), 0);
    await rig.broker.restart();
    await waitUntil(async () => sample(await metrics(), 'hmarex2mqtt_mqtt_reconnects_total') === 1, 'one reconnect', 10_000);
  });
});
