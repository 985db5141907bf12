// The bridge end to end: simulated cloud over real HTTP, a real mosquitto, checked from a
// subscriber's side.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { simDevice } from '../src/simcloud.js';
import { decodeKey, CodeGenerator, TERNEO_DEFAULTS, EPOCH_2000_MS } from '../src/totp.js';
import { Mosquitto, Recorder, referenceHotp, startRig, tempDir, waitUntil, type Received, type Rig } from './helpers.js';

const BASE = 'hmarex2mqtt';
const parse = (m: Received | undefined) => JSON.parse(m?.payload ?? 'null') as Record<string, unknown>;

/** The code a thermostat must accept for the payload's own `time`, computed independently. */
function expectedCode(key: string, time: string): string {
  return referenceHotp(Buffer.from(key, 'ascii'), Number(time) / 30, 9);
}

describe('bridge: topics, payloads and discovery', () => {
  let rig: Rig;
  let sub: Recorder;
  const devices = [simDevice(1, { name: 'Living room' }), simDevice(2, { name: 'Bathroom', data: undefined }), simDevice(3)];

  before(async () => {
    rig = await startRig({ cloud: { devices, pageSize: 2 } });
    sub = await Recorder.connect(rig.broker.url, ['#']);
    await sub.waitFor((m) => m.topic === `${BASE}/bridge/info` && parse(m).cloud === 'online', 'bridge info online');
  });
  after(async () => {
    await sub.close();
    await rig.dispose();
  });

  it('follows pagination and serves every thermostat', async () => {
    const info = parse(await sub.waitFor((m) => m.topic === `${BASE}/bridge/info` && parse(m).device_count === 3, 'device_count 3'));
    assert.equal(info.device_count, 3);
    assert.ok(rig.cloud.counters.deviceRequests >= 2, 'two pages were read');
  });

  it('publishes bridge/state online, retained, to a late subscriber', async () => {
    const late = await Recorder.connect(rig.broker.url, [`${BASE}/#`, 'homeassistant/#']);
    try {
      const state = await late.waitFor((m) => m.topic === `${BASE}/bridge/state`, 'retained state');
      assert.equal(state.payload, 'online');
      assert.equal(state.retain, true);
      for (const d of devices) {
        await late.waitFor((m) => m.topic === `${BASE}/${d.sn}/info` && m.retain, `retained info of ${d.sn}`);
        await late.waitFor((m) => m.topic === `${BASE}/${d.sn}/totp` && m.retain, `retained totp of ${d.sn}`);
        await late.waitFor((m) => m.topic === `homeassistant/device/hmarex2mqtt_${d.sn}/config` && m.retain, `retained discovery of ${d.sn}`);
      }
      const list = JSON.parse((await late.waitFor((m) => m.topic === `${BASE}/bridge/devices`, 'devices')).payload) as Array<Record<string, unknown>>;
      assert.deepEqual(list.map((d) => d.sn), devices.map((d) => d.sn));
    } finally {
      await late.close();
    }
  });

  it('publishes metadata without the key', () => {
    const info = parse(sub.last(`${BASE}/${devices[0].sn}/info`));
    assert.equal(info.name, 'Living room');
    assert.equal(info.id, devices[0].id);
    assert.deepEqual(info.data, devices[0].data);
    assert.equal('totp_key' in info, false);
    for (const m of sub.messages) for (const d of devices) assert.ok(!m.payload.includes(d.totp_key), `key of ${d.sn} in ${m.topic}`);
  });

  it('publishes a code that matches an independent computation for its own time', async () => {
    const m = await sub.waitFor((x) => x.topic === `${BASE}/${devices[0].sn}/totp`, 'a code');
    const payload = parse(m);
    assert.deepEqual(Object.keys(payload).sort(), ['auth', 'digits', 'period', 'sn', 'time', 'valid_from', 'valid_until'].sort());
    assert.equal(payload.sn, devices[0].sn);
    assert.equal(typeof payload.time, 'string');
    assert.equal(typeof payload.auth, 'string');
    assert.equal(payload.auth, expectedCode(devices[0].totp_key, payload.time as string));
    assert.equal(Date.parse(payload.valid_from as string), EPOCH_2000_MS + Number(payload.time) * 1000);
    assert.equal(Date.parse(payload.valid_until as string) - Date.parse(payload.valid_from as string), 30_000);
    assert.equal(payload.period, 30);
    assert.equal(payload.digits, 9);
    assert.equal(m.retain, false, 'live delivery');
    // MQTT 5 expiry: the seconds left in the window when it was published.
    const left = (Date.parse(payload.valid_until as string) - m.at) / 1000;
    assert.ok(m.expiry !== undefined && m.expiry >= Math.floor(left) && m.expiry <= Math.ceil(left) + 1, `message expiry ${m.expiry} for ${left} s left`);
  });

  it('sends device-based discovery with device, origin, availability and the TOTP sensor', () => {
    const d = devices[0];
    const config = parse(sub.last(`homeassistant/device/hmarex2mqtt_${d.sn}/config`));
    const device = config.device as Record<string, unknown>;
    assert.deepEqual(device.identifiers, [`hmarex2mqtt_${d.sn}`]);
    assert.equal(device.name, 'Living room');
    assert.equal(device.serial_number, d.sn);
    assert.equal(device.model, 'ax');
    assert.equal(device.sw_version, '2.4');
    assert.equal((config.origin as Record<string, unknown>).name, 'hmarex2mqtt');
    assert.deepEqual(config.availability, [{ topic: `${BASE}/bridge/state` }]);
    const components = config.components as Record<string, Record<string, unknown>>;
    const totp = components.totp;
    assert.equal(totp.platform, 'sensor');
    assert.equal(totp.name, 'TOTP code');
    assert.equal(totp.state_topic, `${BASE}/${d.sn}/totp`);
    assert.equal(totp.value_template, '{{ value_json.auth }}');
    assert.match(String(totp.json_attributes_template), /time/);
    assert.match(String(totp.json_attributes_template), /valid_until/);
    assert.equal(totp.default_entity_id, `sensor.hmarex2mqtt_${d.sn.toLowerCase()}_totp`);
    assert.ok(!JSON.stringify(config).includes('"object_id"'), 'no deprecated object_id');
    assert.deepEqual(Object.keys(components).sort(), ['online', 'setpoint', 'temperature', 'totp', 'wifi']);
    assert.equal(components.temperature.value_template, '{{ value_json.data.temp_current }}');
    // A thermostat whose record has no readings gets the code sensor only.
    const bare = parse(sub.last(`homeassistant/device/hmarex2mqtt_${devices[1].sn}/config`));
    assert.deepEqual(Object.keys(bare.components as object), ['totp']);
  });

  it('sends discovery for the bridge itself', () => {
    const config = parse(sub.last('homeassistant/device/hmarex2mqtt_bridge/config'));
    assert.deepEqual((config.device as Record<string, unknown>).identifiers, ['hmarex2mqtt_bridge']);
    const components = config.components as Record<string, Record<string, unknown>>;
    assert.equal(components.refresh.command_topic, `${BASE}/bridge/request/refresh`);
    assert.equal(components.connection.state_topic, `${BASE}/bridge/state`);
  });

  it('re-sends discovery and state after Home Assistant comes online', async () => {
    const from = sub.messages.length;
    await sub.client.publishAsync('homeassistant/status', 'online');
    await sub.waitFor((m) => m.topic === `homeassistant/device/hmarex2mqtt_${devices[2].sn}/config`, 'discovery re-sent', 5000, from);
    await sub.waitFor((m) => m.topic === `${BASE}/${devices[2].sn}/totp`, 'code re-sent', 5000, from);
  });
});

describe('bridge: code windows', () => {
  it('publishes every thermostat a new code within a second of each boundary', async () => {
    const rig = await startRig({ env: { TOTP_PERIOD: '2' } });
    const sub = await Recorder.connect(rig.broker.url, ['hmarex2mqtt/+/totp']);
    try {
      const sn = rig.cloud.devices[0].sn;
      const first = await sub.waitFor((m) => m.topic === `hmarex2mqtt/${sn}/totp`, 'first code');
      const times = new Set<string>();
      await waitUntil(() => {
        for (const m of sub.on(`hmarex2mqtt/${sn}/totp`)) times.add(String(parse(m).time));
        return times.size >= 4;
      }, 'four windows', 10_000);
      for (const device of rig.cloud.devices) {
        for (const m of sub.on(`hmarex2mqtt/${device.sn}/totp`).filter((x) => x.at > first.at + 100)) {
          const p = parse(m);
          const lag = m.at - Date.parse(p.valid_from as string);
          assert.ok(lag >= 0 && lag < 1000, `code of ${device.sn} arrived ${lag} ms after its boundary`);
          const gen = new CodeGenerator(decodeKey(device.totp_key, 'raw'), { ...TERNEO_DEFAULTS, period: 2 });
          assert.equal(p.auth, gen.codeAt(Date.parse(p.valid_from as string)).auth);
          assert.ok(m.at < Date.parse(p.valid_until as string), 'never after its window');
        }
      }
    } finally {
      await sub.close();
      await rig.dispose();
    }
  });
});

describe('bridge: the account changes', () => {
  it('re-logs in once on 401 and picks up added and removed thermostats on refresh', async () => {
    const rig = await startRig();
    const sub = await Recorder.connect(rig.broker.url, ['#']);
    try {
      await sub.waitFor((m) => m.topic === 'hmarex2mqtt/bridge/info' && parse(m).device_count === 3, 'three thermostats');
      const [gone] = rig.cloud.devices;
      const added = simDevice(7, { name: 'Attic' });
      rig.cloud.devices = [...rig.cloud.devices.slice(1), added];
      rig.cloud.revokeTokens();
      const loginsBefore = rig.cloud.counters.logins;
      const from = sub.messages.length;
      await sub.client.publishAsync('hmarex2mqtt/bridge/request/refresh', '');
      await sub.waitFor((m) => m.topic === `homeassistant/device/hmarex2mqtt_${added.sn}/config` && m.payload !== '', 'discovery of the new one', 5000, from);
      const code = parse(await sub.waitFor((m) => m.topic === `hmarex2mqtt/${added.sn}/totp`, 'code of the new one', 5000, from));
      assert.equal(code.auth, expectedCode(added.totp_key, code.time as string));
      for (const topic of [`homeassistant/device/hmarex2mqtt_${gone.sn}/config`, `hmarex2mqtt/${gone.sn}/info`, `hmarex2mqtt/${gone.sn}/totp`]) {
        const cleared = await sub.waitFor((m) => m.topic === topic && m.payload === '', `cleared ${topic}`, 5000, from);
        assert.equal(cleared.payload, '');
      }
      assert.equal(rig.cloud.counters.logins - loginsBefore, 1, 'exactly one re-login');
      assert.equal(rig.cloud.counters.unauthorized, 1);
    } finally {
      await sub.close();
      await rig.dispose();
    }
  });

  it('keeps serving a thermostat whose record turns broken in one answer', async () => {
    const rig = await startRig();
    const sub = await Recorder.connect(rig.broker.url, ['#']);
    try {
      await sub.waitFor((m) => m.topic === 'hmarex2mqtt/bridge/info' && parse(m).device_count === 3, 'three thermostats');
      const [broken, unusable] = rig.cloud.devices;
      rig.cloud.devices = [{ ...broken, totp_key: '' }, { ...unusable, totp_key: 'клю' }, rig.cloud.devices[2]];
      const from = sub.messages.length;
      await rig.bridge.refresh('request');
      const info = parse(await sub.waitFor((m) => m.topic === 'hmarex2mqtt/bridge/info' && parse(m).cloud === 'online', 'refreshed', 5000, from));
      assert.equal(info.device_count, 3);
      assert.ok(!sub.messages.slice(from).some((m) => m.payload === '' && (m.topic.includes(broken.sn) || m.topic.includes(unusable.sn))), 'nothing cleared');
      assert.match(rig.log.text(), new RegExp(`thermostat ${broken.sn} keeps its last good record and key`));
      assert.match(rig.log.text(), new RegExp(`thermostat ${unusable.sn} keeps its last good record and key: its new key is unusable`));
      // Codes go on from the last good key.
      await rig.bridge.refresh('request');
      assert.ok(rig.bridge.deviceRecords.some((d) => d.sn === broken.sn && d.totpKey === broken.totp_key));
    } finally {
      await sub.close();
      await rig.dispose();
    }
  });

  it('clears at start-up the retained topics of thermostats removed while it was stopped', async () => {
    const broker = await new Mosquitto().start();
    const stateDir = tempDir();
    try {
      const first = await startRig({ broker, stateDir });
      const removed = first.cloud.devices[2];
      const sub = await Recorder.connect(broker.url, ['#']);
      await sub.waitFor((m) => m.topic === `homeassistant/device/hmarex2mqtt_${removed.sn}/config` && m.payload !== '', 'discovery');
      await first.dispose();
      await sub.close();

      const second = await startRig({ broker, stateDir: tempDir(), cloud: { devices: first.cloud.devices.slice(0, 2) }, start: false });
      const check = await Recorder.connect(broker.url, ['#']);
      try {
        await check.waitFor((m) => m.topic === `homeassistant/device/hmarex2mqtt_${removed.sn}/config` && m.payload !== '', 'orphan retained before the restart');
        const from = check.messages.length;
        await second.bridge.start();
        await check.waitFor((m) => m.topic === `homeassistant/device/hmarex2mqtt_${removed.sn}/config` && m.payload === '', 'orphan discovery cleared', 8000, from);
        await check.waitFor((m) => m.topic === `hmarex2mqtt/${removed.sn}/info` && m.payload === '', 'orphan info cleared', 8000, from);
        const kept = first.cloud.devices[0].sn;
        assert.ok(!check.messages.slice(from).some((m) => m.topic === `homeassistant/device/hmarex2mqtt_${kept}/config` && m.payload === ''), 'a kept one is not cleared');
      } finally {
        await check.close();
        await second.dispose();
      }
    } finally {
      await broker.dispose();
    }
  });
});

describe('bridge: stop', () => {
  it('publishes offline and clears the retained codes', async () => {
    const rig = await startRig();
    const sub = await Recorder.connect(rig.broker.url, ['hmarex2mqtt/#']);
    try {
      const sn = rig.cloud.devices[0].sn;
      await sub.waitFor((m) => m.topic === `hmarex2mqtt/${sn}/totp` && m.payload !== '', 'a code');
      await rig.bridge.stop();
      await sub.waitFor((m) => m.topic === 'hmarex2mqtt/bridge/state' && m.payload === 'offline', 'offline');
      await sub.waitFor((m) => m.topic === `hmarex2mqtt/${sn}/totp` && m.payload === '', 'code cleared');
    } finally {
      await sub.close();
      await rig.dispose();
    }
  });
});
