// What comes in over MQTT: payloads of any size or content on `bridge/request/*` do no harm, a
// flood of refresh requests cannot make the bridge hammer the cloud, and the bridge subscribes to
// nothing and clears nothing outside its own topics, whatever is retained on the broker.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { simDevice } from '../src/simcloud.js';
import { Mosquitto, Recorder, startRig, waitUntil, type Rig } from './helpers.js';

const BASE = 'hmarex2mqtt';
const REFRESH = `${BASE}/bridge/request/refresh`;

const countLines = (rig: Rig, pattern: RegExp) => rig.log.lines.filter((l) => pattern.test(l)).length;

describe('bad commands: any payload on bridge/request/*', { timeout: 30_000 }, () => {
  let rig: Rig;
  let sub: Recorder;

  before(async () => {
    // The default minimum interval between requested refreshes (10 s).
    rig = await startRig({ bridge: { requestMinIntervalMs: undefined }, env: { TOTP_PERIOD: '2', HMAREX_REFRESH: '0 0 1 1 *' } });
    sub = await Recorder.connect(rig.broker.url, ['#']);
    await sub.waitFor((m) => m.topic === `${BASE}/bridge/info` && JSON.parse(m.payload).device_count === 3, 'three thermostats');
  });
  after(async () => {
    await sub.close();
    await rig.dispose();
  });

  it('a flood of refresh requests makes at most one cloud refresh per interval', async () => {
    const before = rig.cloud.counters.deviceRequests;
    const flood = 300;
    // Sent at once, not one by one: the whole flood lands well within one interval.
    await Promise.all(Array.from({ length: flood }, (_, i) => sub.client.publishAsync(REFRESH, i % 3 === 0 ? '' : randomBytes(i % 50), { qos: i % 2 === 0 ? 0 : 1 })));
    // Every request reached the bridge: one honoured, the rest ignored and said so.
    await waitUntil(() => countLines(rig, /refresh requested over MQTT/) + countLines(rig, /refresh request ignored/) >= flood, 'every request handled', 10_000);
    await waitUntil(() => rig.bridge.info.cloud === 'online' && rig.cloud.counters.deviceRequests > before, 'the one refresh', 5000);
    assert.equal(rig.cloud.counters.deviceRequests - before, 1, 'one refresh for the whole flood');
    assert.equal(countLines(rig, /refresh requested over MQTT/), 1);
    const ignored = rig.log.lines.filter((l) => /refresh request ignored: the last one was less than 10 s ago/.test(l)).map((l) => JSON.parse(l).level as number);
    assert.equal(ignored.length, flood - 1);
    assert.equal(ignored.filter((level) => level === 30).length, 1, 'one info line for the flood, the rest at debug');
  });

  it('huge, binary, JSON-bomb and injection payloads on any request topic do no harm', async () => {
    const loginsBefore = rig.cloud.counters.logins;
    const payloads: Array<string | Buffer> = [
      Buffer.alloc(4 * 1024 * 1024, 0xff),
      randomBytes(65536),
      '['.repeat(100_000),
      '{"__proto__": {"polluted": true}, "constructor": {"prototype": {"polluted": true}}}',
      '{"sn": "x/+/#", "topic": "#", "base_topic": "evil"}',
      '\u0000\u001b[2J\ud800',
    ];
    const topics = [REFRESH, `${BASE}/bridge/request/restart`, `${BASE}/bridge/request/a/b/c`, `${BASE}/bridge/request/+`.replace('+', 'plus'), 'homeassistant/status'];
    await Promise.all(topics.flatMap((topic) => payloads.map((payload) => sub.client.publishAsync(topic, payload, { qos: 1 }))));
    const marker = `marker-${randomBytes(4).toString('hex')}`;
    await sub.client.publishAsync(`${BASE}/bridge/request/${marker}`, 'x', { qos: 1 });
    await waitUntil(() => countLines(rig, /unknown request topic ignored/) >= payloads.length * 3 + 1, 'the unknown requests handled', 10_000);
    assert.equal(({} as Record<string, unknown>).polluted, undefined, 'no prototype pollution');
    assert.equal(rig.cloud.counters.logins, loginsBefore, 'no login caused');
    // Still serving: fresh codes for every thermostat after all that.
    const from = sub.messages.length;
    for (const device of rig.cloud.devices) {
      await sub.waitFor((m) => m.topic === `${BASE}/${device.sn}/totp` && m.payload !== '', `a fresh code for ${device.sn}`, 5000, from);
    }
    assert.equal(rig.bridge.health().healthy, true);
    assert.ok(!sub.messages.some((m) => m.topic.startsWith('evil') || m.topic.includes(marker) && m.payload !== 'x'), 'no reply anywhere');
  });

  it('refresh requests are honoured again once the interval has passed', async () => {
    const quick = await startRig({ broker: rig.broker, bridge: { requestMinIntervalMs: 500 }, env: { HMAREX_REFRESH: '0 0 1 1 *', MQTT_BASE_TOPIC: 'quick' } });
    try {
      await waitUntil(() => quick.bridge.info.cloud === 'online', 'started');
      const requests = () => quick.cloud.counters.deviceRequests;
      const before = requests();
      await sub.client.publishAsync('quick/bridge/request/refresh', '', { qos: 1 });
      await waitUntil(() => requests() === before + 1, 'the first request honoured');
      const honouredAt = Date.now();
      await sub.client.publishAsync('quick/bridge/request/refresh', '', { qos: 1 });
      await waitUntil(() => countLines(quick, /refresh request ignored/) === 1, 'the second ignored');
      await waitUntil(() => Date.now() - honouredAt > 600, 'the interval to pass', 2000);
      await sub.client.publishAsync('quick/bridge/request/refresh', '', { qos: 1 });
      await waitUntil(() => requests() === before + 2, 'the third honoured');
    } finally {
      await quick.dispose();
    }
  });
});

describe('topic injection: nothing outside the bridge’s own topics', { timeout: 30_000 }, () => {
  let broker: Mosquitto;
  let rig: Rig;
  /** Retained where the bridge reads back its own topics at start, by someone else. */
  const JUNK = [`${BASE}/has space/info`, `${BASE}/ünï/info`, `${BASE}//info`, 'homeassistant/device/hmarex2mqtt_has space/config'];
  /** Connected before the bridge starts: it sees everything the bridge ever publishes. */
  let sub: Recorder;
  const hostile = [
    simDevice(1),
    simDevice(2, { name: 'x/+/#\u0000 ../../ 😀' }),
    simDevice(3, { sn: 'homeassistant/status' }),
    simDevice(4, { sn: '#' }),
    simDevice(5, { sn: '+/+' }),
    simDevice(6, { sn: 'bridge' }),
    simDevice(7, { sn: 'sn with spaces' }),
  ];

  before(async () => {
    broker = await new Mosquitto({ config: ['log_type subscribe', 'log_type unsubscribe'] }).start();
    const seed = await Recorder.connect(broker.url, ['seed/unused']);
    for (const topic of JUNK) {
      await seed.client.publishAsync(topic, JSON.stringify({ availability: [{ topic: `${BASE}/bridge/state` }] }), { retain: true, qos: 1 });
    }
    await seed.close();
    sub = await Recorder.connect(broker.url, ['#']);
    await waitUntil(() => sub.messages.length === JUNK.length, 'the retained junk');
    rig = await startRig({ broker, cloud: { devices: hostile }, env: { HMAREX_REFRESH: '0 0 1 1 *' }, bridge: { readbackTimeoutMs: 2000 } });
  });
  after(async () => {
    await sub.close();
    await rig.dispose();
    await broker.dispose();
  });

  /** The filters the bridge (un)subscribed, from the broker's log: `<time>: <client> [<qos>] <filter>`. */
  function brokerLog(kind: 'subscribe' | 'unsubscribe'): string[] {
    const line = new RegExp(`^\\d+: ${rig.settings.mqtt.client_id} ${kind === 'subscribe' ? '\\d ' : ''}(.+)$`);
    return broker.output.split('\n').flatMap((l) => line.exec(l)?.[1] ?? []);
  }

  it('subscribes only to its own request topics, HA status and its own read-back filters', async () => {
    const subscriptions = () => brokerLog('subscribe');
    await waitUntil(() => subscriptions().includes(`${BASE}/bridge/readback`), 'the read-back subscription', 5000);
    assert.deepEqual([...new Set(subscriptions())].sort(), [`${BASE}/+/info`, `${BASE}/bridge/readback`, `${BASE}/bridge/request/#`, 'homeassistant/device/+/config', 'homeassistant/status'].sort());
  });

  it('publishes only to its own topics, and clears no retained junk it does not own', async () => {
    await sub.waitFor((m) => m.topic === `${BASE}/bridge/devices` && JSON.parse(m.payload).length === 2, 'the two safe thermostats');
    // Orphans are cleared once the read-back has ended (the bridge unsubscribes) and the device
    // list is known. The broker delivers in order: a refresh asked for after the unsubscribe is
    // handled after that clearing, so its info message comes after any cleared topic.
    await waitUntil(() => brokerLog('unsubscribe').includes(`${BASE}/bridge/readback`), 'the end of the read-back', 5000);
    const from = sub.messages.length;
    await sub.client.publishAsync(`${BASE}/bridge/request/refresh`, '', { qos: 1 });
    await sub.waitFor((m) => m.topic === `${BASE}/bridge/info`, 'the info after that refresh', 5000, from);
    const served = rig.bridge.deviceRecords.map((d) => d.sn).sort();
    assert.deepEqual(served, [hostile[0].sn, hostile[1].sn].sort());
    const allowed = new Set([
      ...['state', 'info', 'devices', 'readback'].map((t) => `${BASE}/bridge/${t}`),
      ...served.flatMap((sn) => [`${BASE}/${sn}/info`, `${BASE}/${sn}/totp`, `homeassistant/device/hmarex2mqtt_${sn}/config`]),
      'homeassistant/device/hmarex2mqtt_bridge/config',
      `${BASE}/bridge/request/refresh`, // the test's own request above
    ]);
    for (const m of sub.messages) {
      if (JUNK.includes(m.topic)) assert.notEqual(m.payload, '', `retained junk on ${m.topic} was not ours to clear`);
      else assert.ok(allowed.has(m.topic), `outside the bridge's topics: ${JSON.stringify(m.topic)}`);
    }
    const discovery = sub.last(`homeassistant/device/hmarex2mqtt_${hostile[1].sn}/config`);
    assert.equal(JSON.parse(discovery?.payload ?? '{}').device.name, hostile[1].name, 'the hostile name only inside the payload');
  });
});
