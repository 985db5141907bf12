// Property-based tests: arbitrary, hostile input to the record parser and the topic/discovery
// builders. Whatever the cloud or the broker sends, topics stay inside the bridge's own tree and
// ids hold only safe characters.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { ConfigError, loadConfig } from '../src/config.js';
import { describeValue, parseDevice, parseDevicePage, type DeviceRecord } from '../src/devices.js';
import { BRIDGE_OBJECT_ID, deviceDiscovery, deviceObjectId, objectIdFromDiscoveryTopic } from '../src/discovery.js';
import { buildTopics, serialFromInfoTopic } from '../src/topics.js';
import { KeyError, decodeKey } from '../src/totp.js';

const BASE = 'hmarex2mqtt';
const topics = buildTopics(BASE, 'homeassistant', 'homeassistant/status');
const ctx = { topics, version: '1.0.0', period: 30 };
const SAFE = /^[A-Za-z0-9_-]+$/;

/** Strings biased towards what breaks topics: wildcards, separators, spaces, control and non-ASCII characters. */
const nasty = fc.oneof(
  fc.string({ unit: fc.constantFrom('/', '+', '#', ' ', '\u0000', '\n', '\u001b', 'é', '中', '😀', '\u202e', 'a', 'B', '0', '-', '_', '.') }),
  fc.string({ unit: 'binary' }),
  fc.string(),
  fc.constantFrom('bridge', '', '+', '#', '/', '../x', 'a/b', `${'A'.repeat(64)}`, `${'A'.repeat(65)}`),
);
const anyValue = fc.oneof(nasty, fc.integer(), fc.double(), fc.boolean(), fc.constant(null), fc.anything());

/** A device record as a hostile cloud might send it: any field may be missing or of any type. */
const hostileRecord = fc.record(
  {
    id: anyValue,
    sn: fc.oneof(nasty, anyValue, fc.stringMatching(/^[0-9A-F]{30}$/)),
    name: fc.oneof(nasty, anyValue),
    totp_key: fc.oneof(nasty, anyValue, fc.stringMatching(/^[A-Z2-7]{16}$/)),
    type: anyValue,
    version_name: anyValue,
    firmware: anyValue,
    data: fc.oneof(anyValue, fc.record({ temp_current: anyValue, temp_setpoint: anyValue, is_online: anyValue, wifi_level: anyValue }, { requiredKeys: [] })),
  },
  { requiredKeys: [] },
);

/** Every string anywhere in a JSON-like value, keyed by the property that holds it. */
function* strings(value: unknown, key = ''): Generator<[string, string]> {
  if (typeof value === 'string') yield [key, value];
  else if (Array.isArray(value)) for (const item of value) yield* strings(item, key);
  else if (typeof value === 'object' && value !== null) for (const [k, v] of Object.entries(value)) yield* strings(v, k);
}

function assertOwnTopic(topic: string, sn: string): void {
  assert.ok(!/[+#\u0000]/.test(topic), `wildcard or NUL in ${JSON.stringify(topic)}`);
  const levels = topic.split('/');
  if (levels[0] === BASE) {
    assert.equal(levels.length, 3, `one level for the device in ${JSON.stringify(topic)}`);
    assert.ok([sn, 'bridge'].includes(levels[1]), `the device's own sn in ${JSON.stringify(topic)}`);
  } else {
    assert.deepEqual(levels.slice(0, 2), ['homeassistant', 'device'], `outside the bridge's topics: ${JSON.stringify(topic)}`);
    assert.equal(levels.length, 4);
  }
}

function checkDevice(device: DeviceRecord): void {
  assert.match(device.sn, SAFE);
  assert.ok(device.sn.length <= 64);
  assert.notEqual(device.sn, 'bridge', 'the bridge’s own name is refused');
  assert.equal('totp_key' in device.meta, false, 'the key stays out of the metadata');
  for (const topic of [topics.deviceInfo(device.sn), topics.deviceTotp(device.sn), topics.discovery(deviceObjectId(device.sn))]) {
    assertOwnTopic(topic, device.sn);
  }
  assert.notEqual(deviceObjectId(device.sn), BRIDGE_OBJECT_ID);
  const discovery = deviceDiscovery(device, ctx);
  for (const [key, value] of strings(discovery)) {
    if (key === 'unique_id' || key === 'identifiers' || key === 'via_device') assert.match(value, SAFE, `${key} ${JSON.stringify(value)}`);
    if (key === 'default_entity_id') assert.match(value, /^[a-z_]+\.[a-z0-9_]+$/, `${key} ${JSON.stringify(value)}`);
    if (key.endsWith('topic')) assertOwnTopic(value, device.sn);
  }
  const block = discovery.device as Record<string, unknown>;
  assert.equal(block.name, device.name, 'the name goes into the payload as it is');
  // The name reaches no id or topic: every id is the sn's, whatever the name says.
  assert.deepEqual(block.identifiers, [deviceObjectId(device.sn)]);
}

describe('properties: the record parser', () => {
  it('never throws on any record; what it accepts has a safe sn and no key in its metadata', () => {
    fc.assert(
      fc.property(fc.oneof(hostileRecord, anyValue), fc.nat(), (raw, index) => {
        const parsed = parseDevice(raw, index);
        if (typeof parsed === 'string') {
          assert.match(parsed, /^device record #\d+/);
          return;
        }
        checkDevice(parsed);
      }),
      { numRuns: 2000 },
    );
  });

  it('a whole page: the envelope is refused with a "device list:" TypeError or parsed; never anything else', () => {
    fc.assert(
      fc.property(
        fc.oneof(fc.record({ results: fc.array(hostileRecord, { maxLength: 8 }), next: fc.oneof(fc.constant(null), nasty, anyValue) }, { requiredKeys: [] }), anyValue, fc.array(hostileRecord)),
        (body) => {
          let page;
          try {
            page = parseDevicePage(body);
          } catch (error) {
            assert.ok(error instanceof TypeError && /^device list: /.test(error.message), String(error));
            return;
          }
          for (const device of page.devices) checkDevice(device);
          assert.ok(page.next === null || typeof page.next === 'string');
          assert.equal(page.devices.some((device) => 'totp_key' in device.meta), false);
        },
      ),
      { numRuns: 1000 },
    );
  });

  it('problem texts never quote the key, and are printable', () => {
    const key = fc.stringMatching(/^[A-Za-z0-9]{12,20}$/);
    fc.assert(
      fc.property(hostileRecord, key, fc.nat(1000), (record, secret, index) => {
        fc.pre(!JSON.stringify(record).includes(secret));
        const problem = parseDevice({ ...record, totp_key: record.totp_key === undefined ? undefined : secret }, index);
        const text = typeof problem === 'string' ? problem : '';
        assert.equal(text.includes(secret), false);
        assert.match(text, /^[\x20-\x7e]*$/);
      }),
      { numRuns: 1000 },
    );
  });

  it('describeValue is short printable ASCII for any value', () => {
    fc.assert(
      fc.property(anyValue, (value) => {
        const text = describeValue(value);
        assert.ok(text.length <= 40);
        assert.match(text, /^[\x20-\x7e]*$/);
      }),
    );
  });
});

describe('properties: topics read back from the broker', () => {
  it('an info topic yields a safe serial number or nothing, never the bridge', () => {
    fc.assert(
      fc.property(nasty, nasty, (middle, tail) => {
        for (const topic of [`${BASE}/${middle}/info`, `${BASE}/${middle}/${tail}`, `${middle}/info`]) {
          const sn = serialFromInfoTopic(BASE, topic);
          if (sn !== null) {
            assert.match(sn, SAFE);
            assert.notEqual(sn, 'bridge');
          }
        }
      }),
      { numRuns: 2000 },
    );
  });

  it('a discovery topic yields one of our safe object ids or nothing', () => {
    fc.assert(
      fc.property(nasty, nasty, (prefix, objectId) => {
        for (const topic of [`${prefix}/device/${objectId}/config`, `homeassistant/device/hmarex2mqtt_${objectId}/config`]) {
          const id = objectIdFromDiscoveryTopic(topic);
          if (id !== null) {
            assert.match(id, SAFE);
            assert.ok(id.startsWith('hmarex2mqtt_'));
          }
        }
      }),
      { numRuns: 2000 },
    );
  });
});

describe('properties: topic settings', () => {
  it('a base topic or discovery prefix is refused or yields topics without wildcards or empty levels', () => {
    fc.assert(
      fc.property(nasty, nasty, (base, prefix) => {
        let settings;
        try {
          settings = loadConfig({ file: false, env: { HMAREX_EMAIL: 'a@b.c', HMAREX_PASSWORD: 'x', MQTT_BASE_TOPIC: base, HA_DISCOVERY_PREFIX: prefix } }).settings;
        } catch (error) {
          assert.ok(error instanceof ConfigError, String(error));
          return;
        }
        const own = buildTopics(settings.mqtt.base_topic, settings.homeassistant.discovery_prefix, settings.homeassistant.status_topic);
        for (const topic of [own.state, own.requestRefresh, own.deviceTotp('AB12'), own.discovery(deviceObjectId('AB12'))]) {
          assert.ok(!/[+#\u0000]/.test(topic) && !topic.split('/').includes(''), JSON.stringify(topic));
        }
      }),
      { numRuns: 300 },
    );
  });
});

describe('properties: key decoding', () => {
  it('decodes or refuses with a fixed message that never quotes the key', () => {
    const messages = new Set(['totp_key is empty', 'totp_key holds characters other than printable ASCII', 'totp_key is not base32']);
    fc.assert(
      fc.property(fc.oneof(nasty, fc.stringMatching(/^[A-Za-z2-7=\s-]{0,40}$/)), fc.constantFrom('raw' as const, 'base32' as const), (key, encoding) => {
        try {
          const bytes = decodeKey(key, encoding);
          assert.ok(bytes.length > 0 || encoding === 'base32');
        } catch (error) {
          assert.ok(error instanceof KeyError, String(error));
          assert.ok(messages.has(error.message), error.message);
        }
      }),
      { numRuns: 3000 },
    );
  });
});
