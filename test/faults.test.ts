// Fault injection with real processes: a mosquitto of the test's own that is killed and restarted,
// and the simulated cloud switched to every failure the issue lists. What arrives is checked from a
// subscriber's side; the figures are printed at the end and written by writeFigures (bench/results/faults.json holds the last committed ones).
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { chmodSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { Agent } from 'undici';
import { CACHE_FILE } from '../src/cache.js';
import { CloudClient } from '../src/cloud.js';
import { SIM_EMAIL, SIM_PASSWORD, simDevice, type SimCloud, type SimDevice } from '../src/simcloud.js';
import { windowAt } from '../src/totp.js';
import { FakeClock } from './fakeclock.js';
import { Mosquitto, Recorder, freePort, referenceHotp, startRig, tempDir, waitUntil, writeFigures, type Received, type Rig } from './helpers.js';

const BASE = 'hmarex2mqtt';
const STATE = `${BASE}/bridge/state`;
const INFO = `${BASE}/bridge/info`;

const figures = {
  broker_restarts: 0,
  reconnects_survived: 0,
  windows_expected: 0,
  windows_covered: 0,
  codes_checked: 0,
  stale_codes: 0,
  token_failures: 0,
  logins_for_token_failures: 0,
  cloud_faults_survived: [] as string[],
};

const json = (m: Received | undefined) => JSON.parse(m?.payload || 'null') as Record<string, unknown>;

interface Code {
  sn: string;
  auth: string;
  time: string;
  from: number;
  until: number;
  at: number;
  retain: boolean;
}

function codes(sub: Recorder, from = 0): Code[] {
  const out: Code[] = [];
  for (const m of sub.messages.slice(from)) {
    if (!m.topic.startsWith(`${BASE}/`) || !m.topic.endsWith('/totp') || m.payload === '') continue;
    const p = json(m);
    out.push({
      sn: String(p.sn),
      auth: String(p.auth),
      time: String(p.time),
      from: Date.parse(String(p.valid_from)),
      until: Date.parse(String(p.valid_until)),
      at: m.at,
      retain: m.retain,
    });
  }
  return out;
}

/** Every code is right for its own `time` (by an independent computation) and arrived within its window. */
function assertCodesSound(all: Code[], devices: SimDevice[], period: number): void {
  const keys = new Map(devices.map((d) => [d.sn, Buffer.from(d.totp_key, 'ascii')]));
  for (const c of all) {
    const key = keys.get(c.sn);
    assert.ok(key, `code for an unknown thermostat ${c.sn}`);
    assert.equal(c.auth, referenceHotp(key, Number(c.time) / period, 9), `code of ${c.sn} for time ${c.time}`);
    assert.ok(c.at >= c.from, `code of ${c.sn} for ${c.time} arrived ${c.from - c.at} ms before its window`);
    if (c.at >= c.until) figures.stale_codes += 1;
    assert.ok(c.at < c.until, `code of ${c.sn} for ${c.time} arrived ${c.at - c.until} ms after its window${c.retain ? ' (retained)' : ''}`);
  }
  figures.codes_checked += all.length;
}

/** Waits until every thermostat got a code for a window that began at or after `sinceMs`. */
function waitForFreshCodes(sub: Recorder, devices: SimDevice[], sinceMs: number, what: string, timeoutMs = 6000): Promise<unknown> {
  return waitUntil(() => devices.every((d) => codes(sub).some((c) => c.sn === d.sn && c.from >= sinceMs)), what, timeoutMs);
}

function waitForInfo(sub: Recorder, match: (info: Record<string, unknown>) => boolean, what: string, from: number, timeoutMs = 5000): Promise<Record<string, unknown>> {
  return sub.waitFor((m) => m.topic === INFO && match(json(m)), what, timeoutMs, from).then(json);
}

/** Sleeps until `phaseMs` into the current (or next) window of `periodMs`. */
async function untilPhase(periodMs: number, phaseMs: number): Promise<void> {
  const into = Date.now() % periodMs;
  await sleep((phaseMs - into + periodMs) % periodMs);
}

/** Records when each request to the simulated cloud was answered, with the counters after it. */
function watchRequests(cloud: SimCloud): { log: Array<{ at: number; device: number; logins: number; failedLogins: number }>; stop(): void } {
  const log: Array<{ at: number; device: number; logins: number; failedLogins: number }> = [];
  let active = true;
  void (async () => {
    while (active) {
      await cloud.nextRequest();
      log.push({ at: Date.now(), device: cloud.counters.deviceRequests, logins: cloud.counters.logins, failedLogins: cloud.counters.failedLogins });
    }
  })();
  return { log, stop: () => (active = false) };
}

function logDelays(rig: Rig, message: RegExp): number[] {
  return rig.log.lines
    .map((l) => JSON.parse(l) as { msg?: string; delayMs?: number })
    .filter((l) => l.delayMs !== undefined && message.test(l.msg ?? ''))
    .map((l) => l.delayMs as number);
}

describe('faults: the MQTT broker', { timeout: 90_000 }, () => {
  const PERIOD = 2;
  const P = PERIOD * 1000;
  let broker: Mosquitto;
  let rig: Rig;
  let sub: Recorder;
  /** When the broker was up, as the test knows it: from after start() to before the kill. */
  const ups: Array<{ from: number; to: number }> = [];

  before(async () => {
    broker = new Mosquitto();
    broker.port = await freePort();
    rig = await startRig({
      broker,
      env: { TOTP_PERIOD: String(PERIOD), MQTT_RECONNECT_MIN_MS: '50', MQTT_RECONNECT_MAX_MS: '400' },
    });
  });
  after(async () => {
    await sub?.close();
    await rig.dispose();
    await broker.dispose();
  });

  it('keeps trying with growing, capped delays while the broker is not up at start', async () => {
    await waitUntil(() => logDelays(rig, /MQTT reconnect/).length >= 6, 'six reconnect attempts', 8000);
    assert.match(rig.log.text(), /refused the connection \(nothing listens there; is the broker running\?\)/);
    const delays = logDelays(rig, /MQTT reconnect/).slice(0, 6);
    const ceilings = [50, 100, 200, 400, 400, 400];
    for (const [i, d] of delays.entries()) assert.ok(d >= ceilings[i] / 2 && d <= ceilings[i], `attempt ${i}: ${d} ms, ceiling ${ceilings[i]}`);
    assert.deepEqual(rig.bridge.health(), { healthy: false, reason: 'not connected to the MQTT broker' });
    // Meanwhile the cloud was read: the codes are ready for when the broker comes.
    await waitUntil(() => rig.bridge.deviceRecords.length === 3, 'devices read without a broker');

    await broker.start();
    ups.push({ from: Date.now(), to: Infinity });
    sub = await Recorder.connect(broker.url, [`${BASE}/#`, 'homeassistant/#']);
    await sub.waitFor((m) => m.topic === STATE && m.payload === 'online', 'online once the broker is up', 5000);
    await waitForFreshCodes(sub, rig.cloud.devices, 0, 'codes once the broker is up');
    await waitUntil(() => rig.bridge.health().healthy, 'healthy');
  });

  it('rides through kills and restarts, also across window boundaries: all re-sent, every window covered, no stale code', async () => {
    const devices = rig.cloud.devices;
    // Odd rounds kill the broker shortly before a boundary and restart it after.
    const rounds = [
      { killAt: 700, downMs: 600 },
      { killAt: P - 300, downMs: 900 },
      { killAt: 400, downMs: 1000 },
      { killAt: P - 150, downMs: 700 },
      { killAt: P - 500, downMs: 1500 },
    ];
    for (const [i, round] of rounds.entries()) {
      // Up for at least one whole window before each kill.
      const upSince = ups[ups.length - 1].from;
      await waitForFreshCodes(sub, devices, windowAt(upSince, { period: PERIOD, epoch: '2000' }).validUntilMs + P, `round ${i}: a whole window served`, 8000);
      await untilPhase(P, round.killAt);
      ups[ups.length - 1].to = Date.now();
      await broker.stop();
      figures.broker_restarts += 1;
      await sleep(round.downMs);
      await broker.start();
      const from = sub.messages.length;
      const upAt = Date.now();
      ups.push({ from: upAt, to: Infinity });

      // Back online, with everything a broker without persistence lost.
      await sub.waitFor((m) => m.topic === STATE && m.payload === 'online', `round ${i}: online again`, 5000, from);
      await sub.waitFor((m) => m.topic === `homeassistant/device/hmarex2mqtt_bridge/config`, `round ${i}: bridge discovery`, 5000, from);
      await sub.waitFor((m) => m.topic === INFO && json(m).device_count === 3, `round ${i}: bridge info`, 5000, from);
      await sub.waitFor((m) => m.topic === `${BASE}/bridge/devices`, `round ${i}: device list`, 5000, from);
      for (const d of devices) {
        await sub.waitFor((m) => m.topic === `homeassistant/device/hmarex2mqtt_${d.sn}/config` && m.payload !== '', `round ${i}: discovery of ${d.sn}`, 5000, from);
        await sub.waitFor((m) => m.topic === `${BASE}/${d.sn}/info` && m.payload !== '', `round ${i}: info of ${d.sn}`, 5000, from);
      }
      // The current codes come at once (or, in a window's last moments, the next window's at its boundary).
      await waitUntil(
        () => devices.every((d) => codes(sub, from).some((c) => c.sn === d.sn && c.until > upAt)),
        `round ${i}: current codes re-sent`,
        P + 2000,
      );
      figures.reconnects_survived += 1;
    }
    await waitForFreshCodes(sub, devices, windowAt(ups[ups.length - 1].from, { period: PERIOD, epoch: '2000' }).validUntilMs + P, 'a last whole window');
    ups[ups.length - 1].to = Date.now();
    assert.equal((await rig.bridge.metrics.reconnects.get()).values[0].value, rounds.length, 'one MQTT reconnect per restart, none more');

    const all = codes(sub);
    assertCodesSound(all, devices, PERIOD);
    // Every window in which the broker was up long enough got every thermostat's code: up at its
    // boundary and for 300 ms after it (the boundary's codes), or up from some time in it with a
    // second or more left (time for the bridge's next reconnect attempt and the re-send).
    for (const up of ups) {
      const first = windowAt(up.from, { period: PERIOD, epoch: '2000' });
      const starts = first.validUntilMs - up.from >= 1000 ? [first.validFromMs] : [];
      for (let w = first.validUntilMs; w + 300 <= up.to; w += P) starts.push(w);
      for (const w of starts) {
        figures.windows_expected += 1;
        const missing = devices.filter((d) => !all.some((c) => c.sn === d.sn && c.from === w));
        assert.deepEqual(missing.map((d) => d.sn), [], `window from ${new Date(w).toISOString()} lacks codes`);
        figures.windows_covered += 1;
      }
    }
    assert.ok(figures.windows_expected >= 2 * rounds.length, `${figures.windows_expected} windows checked`);
  });

  it('does not deliver a retained code past its window to a subscriber that comes late', async () => {
    await untilPhase(P, 100);
    const late = await Recorder.connect(broker.url, [`${BASE}/+/totp`]);
    try {
      await late.waitFor((m) => m.payload !== '', 'a retained code');
      const first = codes(late)[0];
      assert.equal(first.retain, true);
      assert.ok(first.at < first.until);
      assert.ok(first.until - first.at > P / 2, 'the retained code is the current window’s');
    } finally {
      await late.close();
    }
  });
});

describe('faults: a broker that freezes', { timeout: 40_000 }, () => {
  // Time limits: without the fixes these hang rather than fail.
  it('gives up the messages in flight when the connection drops, and sends fresh ones after', { timeout: 20_000 }, async () => {
    const rig = await startRig();
    try {
      await waitUntil(() => rig.bridge.health().healthy && rig.bridge.info.device_count === 3, 'serving');
      // Frozen, the broker's kernel still takes the bytes: the QoS 1 info and device list of
      // this refresh are in flight, never acknowledged, when the broker is killed.
      rig.broker.freeze(true);
      await rig.bridge.refresh('request');
      await rig.broker.restart();
      const givenUp = () =>
        rig.log.lines
          .map((l) => JSON.parse(l) as { msg?: string; topic?: string; error?: string })
          .filter((l) => l.msg === 'publish failed' && l.error === 'connection lost')
          .map((l) => l.topic);
      await waitUntil(() => givenUp().includes(INFO) && givenUp().includes(`${BASE}/bridge/devices`), 'the lost messages given up');
      await waitUntil(() => rig.bridge.health().healthy, 'back online');
      const late = await Recorder.connect(rig.broker.url, [INFO]);
      try {
        const info = json(await late.waitFor((m) => m.topic === INFO, 'info re-sent'));
        assert.equal(info.device_count, 3);
      } finally {
        await late.close();
      }
    } finally {
      await rig.dispose();
    }
  });

  it('stops within a few seconds even when the broker answers nothing', { timeout: 20_000 }, async () => {
    const rig = await startRig();
    try {
      await waitUntil(() => rig.bridge.health().healthy && rig.bridge.info.device_count === 3, 'serving');
      rig.broker.freeze(true);
      const startedAt = Date.now();
      const hung = sleep(8000).then(() => 'hung');
      assert.notEqual(await Promise.race([rig.bridge.stop().then(() => 'stopped'), hung]), 'hung', 'stop() hung on a frozen broker');
      assert.ok(Date.now() - startedAt < 4000, `stopped after ${Date.now() - startedAt} ms`);
    } finally {
      await rig.dispose();
    }
  });
});

describe('faults: broker credentials refused', { timeout: 30_000 }, () => {
  it('says what to fix, keeps secrets out, and retries slowly instead of looping', async () => {
    const broker = new Mosquitto({
      listenerConfig: (port) => {
        const file = join(broker.dir, 'passwd');
        execFileSync('mosquitto_passwd', ['-b', '-c', file, 'bridge', 'right-secret']);
        // Started as root, mosquitto reads the file as its own user.
        chmodSync(broker.dir, 0o711);
        chmodSync(file, 0o644);
        return [`listener ${port} 127.0.0.1`, 'allow_anonymous false', `password_file ${file}`];
      },
    });
    await broker.start();
    const rig = await startRig({
      broker,
      env: { MQTT_USERNAME: 'bridge', MQTT_PASSWORD: 'wrong-secret-xyz', MQTT_RECONNECT_MIN_MS: '20', MQTT_RECONNECT_MAX_MS: '1000' },
    });
    try {
      await waitUntil(() => (rig.log.text().match(/check mqtt\.username \/ mqtt\.password/g) ?? []).length >= 3, 'three refusals', 8000);
      assert.match(rig.log.text(), /broker 127\.0\.0\.1:\d+ refused the connection: .*(password|authori[sz]ed)/i);
      // Without the refusal rule these would be 10-40 ms; refused credentials wait the cap.
      const delays = logDelays(rig, /MQTT reconnect/);
      assert.ok(delays.length >= 2);
      for (const d of delays) assert.ok(d >= 1000, `retry after a refusal in ${d} ms`);
      assert.ok(!rig.log.text().includes('wrong-secret-xyz'), 'the password is not logged');
      assert.equal(rig.bridge.health().healthy, false);
    } finally {
      await rig.dispose();
      await broker.dispose();
    }
  });
});

describe('faults: the cloud', { timeout: 60_000 }, () => {
  const PERIOD = 2;
  let rig: Rig;
  let sub: Recorder;

  before(async () => {
    rig = await startRig({
      cloud: { pageSize: 2 },
      env: { TOTP_PERIOD: String(PERIOD), HMAREX_TIMEOUT_MS: '300', HMAREX_RETRY_MIN_MS: '40', HMAREX_RETRY_MAX_MS: '640' },
    });
    sub = await Recorder.connect(rig.broker.url, [`${BASE}/#`]);
    await waitForInfo(sub, (i) => i.cloud === 'online' && i.device_count === 3, 'online', 0);
  });
  after(async () => {
    assertCodesSound(codes(sub), rig.cloud.devices, PERIOD);
    await sub.close();
    await rig.dispose();
  });

  it('re-logs in exactly once per token failure, 401 or 403, and retries the call', async () => {
    for (const status of [401, 403, 401, 403] as const) {
      rig.cloud.rejectTokensWith = status;
      rig.cloud.revokeTokens();
      const before = { ...rig.cloud.counters };
      const from = sub.messages.length;
      await rig.bridge.refresh('request');
      const logins = rig.cloud.counters.logins - before.logins;
      figures.token_failures += 1;
      figures.logins_for_token_failures += logins;
      assert.equal(logins, 1, `one login after a ${status}`);
      assert.equal(rig.cloud.counters.unauthorized - before.unauthorized, 1);
      // Two pages: the refused one again with the new token, then the second.
      assert.equal(rig.cloud.counters.deviceRequests - before.deviceRequests, 3);
      await waitForInfo(sub, (i) => i.cloud === 'online' && i.last_error === null, `online after a ${status}`, from);
    }
    rig.cloud.rejectTokensWith = 401;
  });

  it('shares one login among all callers whose token failed at the same moment', async () => {
    const client = new CloudClient({ baseUrl: rig.cloud.url, email: SIM_EMAIL, password: SIM_PASSWORD, timeoutMs: 2000 });
    try {
      await client.listDevices();
      for (const status of [401, 403] as const) {
        rig.cloud.rejectTokensWith = status;
        rig.cloud.revokeTokens();
        const logins = rig.cloud.counters.logins;
        const results = await Promise.all(Array.from({ length: 8 }, () => client.listDevices()));
        for (const r of results) assert.equal(r.devices.length, 3);
        figures.token_failures += 1;
        figures.logins_for_token_failures += rig.cloud.counters.logins - logins;
        assert.equal(rig.cloud.counters.logins - logins, 1, `eight callers after a ${status}, one login`);
      }
    } finally {
      rig.cloud.rejectTokensWith = 401;
      await client.close();
    }
  });

  it('backs off with jitter up to the cap through a 5xx outage, status offline, codes going on', async () => {
    const watch = watchRequests(rig.cloud);
    const from = sub.messages.length;
    const startedAt = Date.now();
    rig.cloud.fault = { kind: 'status', status: 500 };
    void rig.bridge.refresh('request');
    try {
      const info = await waitForInfo(sub, (i) => i.cloud === 'offline', 'offline', from);
      assert.match(String(info.last_error), /HTTP 500/);
      await waitUntil(() => watch.log.length >= 9, 'nine tries', 10_000);
      // The codes go on from the keys last read: a boundary passed during the outage.
      await waitForFreshCodes(sub, rig.cloud.devices, startedAt, 'codes during the outage');
    } finally {
      rig.cloud.fault = { kind: 'none' };
      watch.stop();
    }
    const gaps = watch.log.slice(1, 9).map((r, i) => r.at - watch.log[i].at);
    const ceilings = [40, 80, 160, 320, 640, 640, 640, 640];
    for (const [i, gap] of gaps.entries()) {
      // Loose above: a busy machine answers late, never early.
      assert.ok(gap >= ceilings[i] / 2 - 5 && gap <= ceilings[i] + 300, `retry ${i + 1} after ${gap} ms, ceiling ${ceilings[i]}`);
    }
    assert.ok(Math.min(...gaps.slice(4)) > Math.max(...gaps.slice(0, 2)), `grew: ${gaps.join(', ')}`);
    const delays = logDelays(rig, /cloud refresh failed/).slice(-8);
    assert.ok(new Set(delays.slice(-4)).size > 1, `jittered at the cap: ${delays.join(', ')}`);
    await waitForInfo(sub, (i) => i.cloud === 'online' && i.last_error === null, 'online again', from);
    figures.cloud_faults_survived.push('HTTP 500');
  });

  for (const [name, fault, error] of [
    ['a hang past the time limit', { kind: 'hang' }, /no complete answer within the time limit/],
    ['a closed connection', { kind: 'close' }, /connection closed by the server/],
    ['HTTP 502 at login', { kind: 'status', status: 502 }, /login: HTTP 502/],
  ] as const) {
    it(`goes offline on ${name}, then back online`, async () => {
      const from = sub.messages.length;
      if (name.includes('login')) {
        rig.cloud.loginFault = fault;
        rig.cloud.revokeTokens();
      } else {
        rig.cloud.fault = fault;
      }
      try {
        void rig.bridge.refresh('request');
        const info = await waitForInfo(sub, (i) => i.cloud === 'offline', 'offline', from);
        assert.match(String(info.last_error), error);
        assert.equal(info.device_count, 3, 'the thermostats are still served');
      } finally {
        rig.cloud.fault = { kind: 'none' };
        rig.cloud.loginFault = { kind: 'none' };
      }
      await waitForInfo(sub, (i) => i.cloud === 'online', 'online again', from);
      figures.cloud_faults_survived.push(name);
    });
  }

  it('goes offline when the cloud refuses connections, and comes back when it listens again', async () => {
    const port = Number(new URL(rig.cloud.url).port);
    const from = sub.messages.length;
    await rig.cloud.stop();
    void rig.bridge.refresh('request');
    const info = await waitForInfo(sub, (i) => i.cloud === 'offline', 'offline', from);
    assert.match(String(info.last_error), /connection refused/);
    await rig.cloud.start(port);
    await waitForInfo(sub, (i) => i.cloud === 'online', 'online again', from);
    figures.cloud_faults_survived.push('connection refused');
  });

  it('honours Retry-After on 429', async () => {
    const watch = watchRequests(rig.cloud);
    const from = sub.messages.length;
    rig.cloud.fault = { kind: 'status', status: 429, retryAfter: '1' };
    void rig.bridge.refresh('request');
    try {
      const info = await waitForInfo(sub, (i) => i.cloud === 'offline', 'offline', from);
      assert.match(String(info.last_error), /HTTP 429/);
    } finally {
      rig.cloud.fault = { kind: 'none' };
    }
    await waitForInfo(sub, (i) => i.cloud === 'online', 'online again', from);
    watch.stop();
    // The backoff alone would have tried again after 20-40 ms.
    const gap = watch.log[1].at - watch.log[0].at;
    assert.ok(gap >= 950, `retried ${gap} ms after a 429 with Retry-After: 1`);
    figures.cloud_faults_survived.push('HTTP 429 + Retry-After');
  });

  it('runs a refresh requested while one is under way again after it, not at the next retry', async () => {
    const from = sub.messages.length;
    // The refresh under way fails with a long Retry-After: only the repeat can bring the list soon.
    rig.cloud.fault = { kind: 'status', status: 429, retryAfter: '30' };
    void rig.cloud.nextRequest().then(() => (rig.cloud.fault = { kind: 'none' }));
    const first = rig.bridge.refresh('request');
    void rig.bridge.refresh('request');
    await first;
    await waitForInfo(sub, (i) => i.cloud === 'online', 'online by the repeated refresh', from, 5000);
    assert.ok(sub.messages.slice(from).some((m) => m.topic === INFO && json(m).cloud === 'offline'), 'the first one failed');
  });

  it('on a refused login: status auth_failed, an error that says what to fix, slow retries, codes going on', async () => {
    const watch = watchRequests(rig.cloud);
    const from = sub.messages.length;
    const startedAt = Date.now();
    rig.cloud.password = 'changed-on-the-website';
    rig.cloud.revokeTokens();
    const before = { ...rig.cloud.counters };
    void rig.bridge.refresh('request');
    try {
      const info = await waitForInfo(sub, (i) => i.cloud === 'auth_failed', 'auth_failed', from);
      assert.match(String(info.last_error), /login refused \(HTTP 400: Unable to log in with provided credentials\.\): check hmarex\.email and hmarex\.password/);
      await waitUntil(() => rig.cloud.counters.failedLogins - before.failedLogins >= 5, 'five refused logins', 8000);
      await waitForFreshCodes(sub, rig.cloud.devices, startedAt, 'codes while the login is refused');
    } finally {
      rig.cloud.password = SIM_PASSWORD;
      watch.stop();
    }
    await waitForInfo(sub, (i) => i.cloud === 'online', 'online once the password is right again', from);
    const logins = watch.log.filter((r, i) => r.failedLogins > (i === 0 ? before.failedLogins : watch.log[i - 1].failedLogins));
    const gaps = logins.slice(1).map((r, i) => r.at - logins[i].at);
    assert.ok(gaps[gaps.length - 1] > gaps[0], `refused logins spread out: ${gaps.join(', ')}`);
    // Each try is one login: never two at once.
    assert.equal(rig.cloud.counters.logins - before.logins, rig.cloud.counters.failedLogins - before.failedLogins + 1);
    const text = rig.log.text();
    assert.match(text, /check hmarex\.email and hmarex\.password/);
    for (const secret of [SIM_PASSWORD, 'changed-on-the-website']) assert.ok(!text.includes(secret) && !sub.messages.some((m) => m.payload.includes(secret)));
  });

  it('warns in the log and in bridge/info when the cloud’s clock differs by more than a few seconds', async () => {
    for (const [offset, words] of [
      [90_000, /the local clock is 90 s behind the cloud's/],
      [-20_000, /the local clock is 20 s ahead of the cloud's/],
    ] as const) {
      rig.cloud.dateOffsetMs = offset;
      const from = sub.messages.length;
      await rig.bridge.refresh('request');
      const info = await waitForInfo(sub, (i) => i.clock_warning !== null, 'a clock warning', from);
      assert.match(String(info.clock_warning), words);
      assert.ok(Math.abs(Number(info.clock_skew_s) - offset / 1000) <= 1, `skew ${String(info.clock_skew_s)} s`);
      assert.match(rig.log.text(), words);
    }
    rig.cloud.dateOffsetMs = 0;
    const from = sub.messages.length;
    await rig.bridge.refresh('request');
    const info = await waitForInfo(sub, (i) => i.cloud === 'online', 'online', from);
    assert.equal(info.clock_warning, null);
    assert.ok(Math.abs(Number(info.clock_skew_s)) <= 1);
  });
});

describe('faults: login refused for a long time (fake clock)', { timeout: 30_000 }, () => {
  it('retries at growing intervals up to the 15-minute cap, one login each', async () => {
    const clock = new FakeClock();
    const rig = await startRig({
      start: false,
      env: { HMAREX_RETRY_MIN_MS: '5000', HMAREX_RETRY_MAX_MS: '900000' },
      bridge: { clock, readbackTimeoutMs: 50 },
    });
    rig.cloud.password = 'changed-on-the-website';
    try {
      await rig.bridge.start();
      const delays: number[] = [];
      for (let i = 0; i < 11; i += 1) {
        // The retry timer is the only one longer than the window timer's longest sleep.
        const delay = await waitUntil(() => (rig.cloud.counters.failedLogins === i + 1 ? clock.pendingDelays().find((d) => d > 1000) : undefined), `try ${i + 1}`);
        delays.push(delay);
        clock.advance(delay);
      }
      const ceilings = delays.map((_, i) => Math.min(900_000, 5000 * 2 ** i));
      for (const [i, d] of delays.entries()) assert.ok(d >= ceilings[i] / 2 && d <= ceilings[i], `try ${i + 1}: ${d} ms, ceiling ${ceilings[i]}`);
      assert.ok(delays.slice(-3).every((d) => d >= 450_000 && d <= 900_000), `at the cap: ${delays.join(', ')}`);
      assert.equal(rig.cloud.counters.logins, 11, 'one login per try');
      assert.equal(rig.bridge.info.cloud, 'auth_failed');
    } finally {
      await rig.dispose();
    }
  });

  it('keeps refresh requests over MQTT away from the login endpoint while the login is refused', async () => {
    const clock = new FakeClock();
    const rig = await startRig({ start: false, bridge: { clock, readbackTimeoutMs: 50 } });
    rig.cloud.password = 'changed-on-the-website';
    const sub = await Recorder.connect(rig.broker.url, [`${BASE}/bridge/state`]);
    try {
      await rig.bridge.start();
      await waitUntil(() => rig.bridge.info.cloud === 'auth_failed', 'auth_failed');
      await sub.waitFor((m) => m.payload === 'online', 'the bridge on the broker');
      const ignored = () => rig.log.lines.filter((l) => l.includes('the cloud refused the login; fix hmarex.email')).length;
      for (let i = 1; i <= 5; i += 1) {
        await sub.client.publishAsync(`${BASE}/bridge/request/refresh`, '');
        await waitUntil(() => ignored() >= i, `request ${i} answered`);
      }
      assert.equal(rig.cloud.counters.logins, 1, 'only the first, refused, login');
    } finally {
      await sub.close();
      await rig.dispose();
    }
  });
});

describe('faults: a (re)connect in the last moments of a window', { timeout: 30_000 }, () => {
  it('sends no code that could arrive after its window; the next window’s comes at its boundary', async () => {
    // Fake time stands 40 ms before a boundary while the bridge connects and reads the cloud.
    const boundary = windowAt(Date.now(), { period: 2, epoch: '2000' }).validUntilMs;
    const clock = new FakeClock(boundary - 40);
    const rig = await startRig({ start: false, env: { TOTP_PERIOD: '2' }, bridge: { clock, readbackTimeoutMs: 50 } });
    const sub = await Recorder.connect(rig.broker.url, [`${BASE}/#`]);
    try {
      await rig.bridge.start();
      await waitForInfo(sub, (i) => i.device_count === 3, 'devices read', 0);
      assert.equal(rig.bridge.health().healthy, false, 'no code of the ending window went out');
      clock.advance(40);
      for (const d of rig.cloud.devices) await sub.waitFor((m) => m.topic === `${BASE}/${d.sn}/totp`, `code of ${d.sn}`);
      // One connection keeps order: a code of the ending window would have come first.
      const times = codes(sub).map((c) => c.from);
      assert.deepEqual([...new Set(times)], [boundary]);
      assert.equal(rig.bridge.health().healthy, true);
    } finally {
      await sub.close();
      await rig.dispose();
    }
  });
});

describe('faults: restart during a cloud outage', { timeout: 30_000 }, () => {
  let stateDir: string;
  let served: SimDevice[];

  before(async () => {
    stateDir = tempDir();
    const first = await startRig({ stateDir, cloud: { devices: [simDevice(11), simDevice(12)] } });
    await waitUntil(() => first.bridge.info.cache_saved_at !== null, 'the cache written');
    served = first.cloud.devices;
    await first.dispose();
  });
  after(() => rmSync(stateDir, { recursive: true, force: true }));

  it('publishes codes from the cache at once when the cloud is down from the start', async () => {
    const mode = statSync(join(stateDir, CACHE_FILE)).mode & 0o777;
    assert.equal(mode, 0o600, `cache mode ${mode.toString(8)}`);
    assert.equal(statSync(stateDir).mode & 0o777, 0o700);
    const rig = await startRig({ stateDir, start: false });
    const sub = await Recorder.connect(rig.broker.url, [`${BASE}/#`]);
    await rig.cloud.stop();
    try {
      const startedAt = Date.now();
      await rig.bridge.start();
      for (const d of served) await sub.waitFor((m) => m.topic === `${BASE}/${d.sn}/totp` && m.payload !== '', `cached code of ${d.sn}`, 2000);
      const firstCode = Math.max(...served.map((d) => sub.on(`${BASE}/${d.sn}/totp`)[0].at));
      assert.ok(firstCode - startedAt < 1500, `codes ${firstCode - startedAt} ms after start`);
      assertCodesSound(codes(sub), served, 30);
      const info = await waitForInfo(sub, (i) => i.cloud === 'offline', 'offline', 0);
      assert.match(String(info.last_error), /connection refused/);
      assert.equal(info.device_count, 2);
      assert.notEqual(info.cache_saved_at, null);
      assert.match(rig.log.text(), /codes go on from the keys read at /);
      figures.cloud_faults_survived.push('restart with the cloud down');
    } finally {
      await sub.close();
      await rig.dispose();
    }
  });

  it('maps a DNS failure to offline, with the cached codes going on (no real name is resolved)', async () => {
    let lookups = 0;
    const dispatcher = new Agent({
      connect: {
        lookup: (hostname: string, _options: unknown, callback: (error: Error | null, address: string, family: number) => void) => {
          lookups += 1;
          callback(Object.assign(new Error(`getaddrinfo ENOTFOUND ${hostname}`), { code: 'ENOTFOUND', hostname }), '', 4);
        },
      },
    });
    const rig = await startRig({ stateDir, env: { HMAREX_URL: 'http://cloud.hmarex.invalid/api/' }, bridge: { cloudDispatcher: dispatcher } });
    const sub = await Recorder.connect(rig.broker.url, [`${BASE}/#`]);
    try {
      const info = await waitForInfo(sub, (i) => i.cloud === 'offline', 'offline', 0);
      assert.match(String(info.last_error), /login: host name not found \(DNS\)/);
      assert.ok(lookups >= 1, 'the injected lookup was asked');
      for (const d of served) await sub.waitFor((m) => m.topic === `${BASE}/${d.sn}/totp` && m.payload !== '', `cached code of ${d.sn}`);
      assertCodesSound(codes(sub), served, 30);
      figures.cloud_faults_survived.push('DNS failure');
    } finally {
      await sub.close();
      await rig.dispose();
      await dispatcher.destroy();
    }
  });
});

describe('faults: Home Assistant restarts', { timeout: 30_000 }, () => {
  it('re-sends once per birth after a delay, ignores a retained birth and offline, never flaps', async () => {
    const DELAY = 150;
    const rig = await startRig({ start: false, bridge: { haBirthDelayMs: [DELAY, DELAY] } });
    const sub = await Recorder.connect(rig.broker.url, ['#']);
    const liveOnline = (from: number) => sub.messages.slice(from).filter((m) => m.topic === STATE && m.payload === 'online' && !m.retain).length;
    try {
      // A birth left retained by an HA configured so: every (re)subscribe hands it back.
      await sub.client.publishAsync('homeassistant/status', 'online', { retain: true, qos: 1 });
      await rig.bridge.start();
      await waitForInfo(sub, (i) => i.device_count === 3, 'devices', 0);
      for (const d of rig.cloud.devices) await sub.waitFor((m) => m.topic === `${BASE}/${d.sn}/totp`, 'codes');

      // HA restarts, and its birth is seen three times (a flapping link, or several HA instances).
      const from = sub.messages.length;
      const sentAt = Date.now();
      await sub.client.publishAsync('homeassistant/status', 'offline');
      for (let i = 0; i < 3; i += 1) await sub.client.publishAsync('homeassistant/status', 'online');
      const resent = await sub.waitFor((m) => m.topic === STATE && m.payload === 'online' && !m.retain, 're-send', 3000, from);
      assert.ok(resent.at - sentAt >= DELAY - 5, `re-sent ${resent.at - sentAt} ms after the birth`);
      for (const d of rig.cloud.devices) {
        await sub.waitFor((m) => m.topic === `homeassistant/device/hmarex2mqtt_${d.sn}/config` && m.payload !== '', `discovery of ${d.sn}`, 3000, from);
        await sub.waitFor((m) => m.topic === `${BASE}/${d.sn}/totp` && m.payload !== '', `code of ${d.sn}`, 3000, from);
      }
      // A later birth as a marker: what the first burst caused is all in before its re-send.
      const marker = sub.messages.length;
      await sub.client.publishAsync('homeassistant/status', 'online');
      await sub.waitFor((m) => m.topic === STATE && m.payload === 'online' && !m.retain, 'marker re-send', 3000, marker);
      assert.equal(liveOnline(from), 2, 'one re-send for the burst, one for the marker');
      // Start: one `online` at connect; the retained birth added none.
      assert.equal(liveOnline(0), 3);
      assert.ok(!sub.messages.some((m) => m.topic === STATE && m.payload === 'offline'), 'never offline');
    } finally {
      await sub.client.publishAsync('homeassistant/status', '', { retain: true, qos: 1 });
      await sub.close();
      await rig.dispose();
    }
  });
});

describe('faults: figures', () => {
  it('prints and saves them', (t) => {
    const out = {
      ...figures,
      windows: `${figures.windows_covered}/${figures.windows_expected}`,
      logins_per_token_failure: `${figures.logins_for_token_failures}/${figures.token_failures}`,
      measured_at: new Date().toISOString(),
    };
    t.diagnostic(`reconnects survived: ${figures.reconnects_survived} of ${figures.broker_restarts} broker kills`);
    t.diagnostic(`windows covered / expected: ${out.windows}`);
    t.diagnostic(`codes checked: ${figures.codes_checked}, arrived after their window: ${figures.stale_codes}`);
    t.diagnostic(`logins made / token failures: ${out.logins_per_token_failure}`);
    t.diagnostic(`cloud faults survived: ${figures.cloud_faults_survived.join(', ')}`);
    t.diagnostic(`figures written to ${writeFigures('faults.json', out)}`);
    assert.equal(figures.windows_covered, figures.windows_expected);
    assert.equal(figures.logins_for_token_failures, figures.token_failures);
  });
});
