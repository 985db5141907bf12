// The pure parts without a broker: record parsing, topics, payloads and discovery.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { dedupeBySerial, parseDevicePage } from '../src/devices.js';
import { bridgeDiscovery, deviceDiscovery, objectIdFromDiscoveryTopic } from '../src/discovery.js';
import { buildTopics, serialFromInfoTopic, totpPayload } from '../src/topics.js';
import { TERNEO_DEFAULTS } from '../src/totp.js';

const topics = buildTopics('hmarex2mqtt', 'homeassistant', 'homeassistant/status');
const ctx = { topics, version: '1.2.3', period: 30 };

describe('device records', () => {
  it('parses the documented envelope and keeps every field but the key as metadata', () => {
    const page = parseDevicePage({
      count: 1,
      next: null,
      previous: null,
      results: [{ id: 18801, sn: '1100150010434B58363539AAAAAAAA', name: 'Room1', totp_key: 'BW4ERXAJXXXXXXXX', type: 'ax', data: { temp_current: '21.5' } }],
    });
    assert.equal(page.next, null);
    assert.deepEqual(page.problems, []);
    const [device] = page.devices;
    assert.equal(device.totpKey, 'BW4ERXAJXXXXXXXX');
    assert.deepEqual(device.meta, { id: 18801, sn: '1100150010434B58363539AAAAAAAA', name: 'Room1', type: 'ax', data: { temp_current: '21.5' } });
  });

  it('skips a bad record with a warning naming its id/sn, and serves the rest', () => {
    const page = parseDevicePage({
      results: [
        { id: 1, sn: 'AAAA', totp_key: 'KEYKEYKEYKEYKEY1' },
        { id: 2, sn: 'BBBB' },
        { id: 3, totp_key: 'KEYKEYKEYKEYKEY3' },
        { id: 4, sn: 'a/b/#', totp_key: 'KEYKEYKEYKEYKEY4' },
        'not an object',
        { id: 5, sn: 'CCCC', totp_key: '' },
        { id: 6, sn: 'DDDD', totp_key: 'KEYKEYKEYKEYKEY6' },
      ],
    });
    assert.deepEqual(page.devices.map((d) => d.sn), ['AAAA', 'DDDD']);
    assert.equal(page.problems.length, 5);
    assert.match(page.problems[0], /id 2, sn "BBBB".*no usable totp_key/);
    assert.match(page.problems[1], /id 3.*no sn/);
    assert.match(page.problems[2], /id 4.*sn may only hold/);
    assert.match(page.problems[3], /#4 is not an object/);
    assert.ok(page.problems.every((p) => !p.includes('KEYKEY')), 'problems never quote a key');
  });

  it('refuses envelopes that are not lists, and a non-string next', () => {
    assert.throws(() => parseDevicePage({ results: {} }), /"results" is not a list/);
    assert.throws(() => parseDevicePage('<html>'), /not a JSON object/);
    assert.throws(() => parseDevicePage({ results: [], next: 5 }), /"next" is not a string/);
  });

  it('drops later duplicates of a serial number, naming both ids', () => {
    const { devices } = parseDevicePage([
      { id: 1, sn: 'AAAA', totp_key: 'KEY1KEY1KEY1KEY1' },
      { id: 2, sn: 'AAAA', totp_key: 'KEY2KEY2KEY2KEY2' },
    ]);
    const result = dedupeBySerial(devices);
    assert.deepEqual(result.devices.map((d) => d.id), [1]);
    assert.match(result.problems[0], /id 2 skipped: sn AAAA is already used by id 1/);
  });

  it('names a thermostat by its sn when the cloud gives no name', () => {
    const [device] = parseDevicePage([{ id: 1, sn: 'AAAA', totp_key: 'KEY1KEY1KEY1KEY1', name: '  ' }]).devices;
    assert.equal(device.name, 'AAAA');
  });
});

describe('topics and payloads', () => {
  it('builds the contract topics', () => {
    assert.equal(topics.state, 'hmarex2mqtt/bridge/state');
    assert.equal(topics.info, 'hmarex2mqtt/bridge/info');
    assert.equal(topics.devices, 'hmarex2mqtt/bridge/devices');
    assert.equal(topics.requestRefresh, 'hmarex2mqtt/bridge/request/refresh');
    assert.equal(topics.deviceInfo('AB12'), 'hmarex2mqtt/AB12/info');
    assert.equal(topics.deviceTotp('AB12'), 'hmarex2mqtt/AB12/totp');
    assert.equal(topics.discovery('hmarex2mqtt_AB12'), 'homeassistant/device/hmarex2mqtt_AB12/config');
  });

  it('reads serial numbers back from info topics, never the bridge', () => {
    assert.equal(serialFromInfoTopic('hmarex2mqtt', 'hmarex2mqtt/AB12/info'), 'AB12');
    assert.equal(serialFromInfoTopic('hmarex2mqtt', 'hmarex2mqtt/bridge/info'), null);
    assert.equal(serialFromInfoTopic('hmarex2mqtt', 'other/AB12/info'), null);
    assert.equal(objectIdFromDiscoveryTopic('homeassistant/device/hmarex2mqtt_AB12/config'), 'hmarex2mqtt_AB12');
    assert.equal(objectIdFromDiscoveryTopic('homeassistant/device/zigbee2mqtt_x/config'), null);
  });

  it('builds the totp payload as the local API wants it', () => {
    const payload = totpPayload('AB12', { counter: 1, time: '30', auth: '012345678', validFromMs: Date.UTC(2000, 0, 1, 0, 0, 30), validUntilMs: Date.UTC(2000, 0, 1, 0, 1) }, TERNEO_DEFAULTS);
    assert.deepEqual(payload, {
      sn: 'AB12',
      auth: '012345678',
      time: '30',
      valid_from: '2000-01-01T00:00:30.000Z',
      valid_until: '2000-01-01T00:01:00.000Z',
      period: 30,
      digits: 9,
    });
  });
});

describe('discovery', () => {
  const [device] = parseDevicePage([
    { id: 1, sn: 'AB12', name: 'Ванная "1"', totp_key: 'KEY1KEY1KEY1KEY1', version_name: '2.4', type: 'ax', data: { temp_current: 21, is_online: true } },
  ]).devices;

  it('puts names only in payload values and builds ids from the serial number', () => {
    const config = deviceDiscovery(device, ctx);
    assert.equal((config.device as Record<string, unknown>).name, 'Ванная "1"');
    const components = config.components as Record<string, Record<string, unknown>>;
    for (const component of Object.values(components)) {
      assert.match(String(component.unique_id), /^hmarex2mqtt_AB12_[a-z_]+$/);
      assert.match(String(component.default_entity_id), /^(sensor|binary_sensor)\.hmarex2mqtt_ab12_[a-z_]+$/);
    }
    assert.deepEqual(Object.keys(components).sort(), ['online', 'temperature', 'totp']);
    assert.equal(JSON.stringify(config).includes('KEY1KEY1'), false);
  });

  it('lets HA mark a code unavailable when no new one comes in time', () => {
    const totp = (deviceDiscovery(device, ctx).components as Record<string, Record<string, unknown>>).totp;
    assert.ok(Number(totp.expire_after) > 30 && Number(totp.expire_after) < 60);
  });

  it('describes the bridge with its own entities', () => {
    const config = bridgeDiscovery(ctx);
    assert.deepEqual((config.origin as Record<string, unknown>).sw_version, '1.2.3');
    assert.ok('refresh' in (config.components as object));
  });
});
