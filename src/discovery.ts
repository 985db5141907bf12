// Home Assistant device-based discovery payloads: pure. Names from the cloud go only into payload
// values; ids and topics come from the (already safe) serial number.
import type { DeviceRecord } from './devices.js';
import type { Topics } from './topics.js';

export const OBJECT_ID_PREFIX = 'hmarex2mqtt_';
export const BRIDGE_OBJECT_ID = `${OBJECT_ID_PREFIX}bridge`;

export interface DiscoveryContext {
  topics: Topics;
  version: string;
  period: number;
}

export type DiscoveryPayload = Record<string, unknown>;

export function deviceObjectId(sn: string): string {
  return `${OBJECT_ID_PREFIX}${sn}`;
}

/** The object id of one of our discovery topics; null when the topic is not ours. */
export function objectIdFromDiscoveryTopic(topic: string): string | null {
  const match = /\/device\/([A-Za-z0-9_-]+)\/config$/.exec(topic);
  return match && match[1].startsWith(OBJECT_ID_PREFIX) ? match[1] : null;
}

/** HA entity ids are lower case; unique ids keep the serial number as the cloud spells it. */
function entityIds(objectId: string, suffix: string, domain: string) {
  return {
    unique_id: `${objectId}_${suffix}`,
    default_entity_id: `${domain}.${objectId.toLowerCase().replace(/-/g, '_')}_${suffix}`,
  };
}

function origin(version: string) {
  return {
    name: 'hmarex2mqtt',
    sw_version: version,
    support_url: 'https://github.com/hmarex2mqtt/hmarex2mqtt',
  };
}

function firstString(meta: Record<string, unknown>, ...keys: string[]): string | undefined {
  for (const key of keys) {
    const value = meta[key];
    if (typeof value === 'string' && value.trim() !== '') return value;
    if (typeof value === 'number') return String(value);
  }
  return undefined;
}

function readings(device: DeviceRecord): Record<string, unknown> {
  const data = device.meta.data;
  return typeof data === 'object' && data !== null && !Array.isArray(data) ? (data as Record<string, unknown>) : {};
}

interface Reading {
  id: string;
  platform: 'sensor' | 'binary_sensor';
  /** The key under the record's `data` whose presence adds the entity. */
  field: string;
  name: string;
  device_class: string;
  value_template?: string;
  [option: string]: string | undefined;
}

/** Cloud readings that get an entity when the record carries them. */
const READINGS: Reading[] = [
  { id: 'temperature', platform: 'sensor', field: 'temp_current', name: 'Temperature', device_class: 'temperature', state_class: 'measurement', unit_of_measurement: '°C' },
  { id: 'setpoint', platform: 'sensor', field: 'temp_setpoint', name: 'Setpoint', device_class: 'temperature', unit_of_measurement: '°C' },
  {
    id: 'online',
    platform: 'binary_sensor',
    field: 'is_online',
    name: 'Cloud connection',
    device_class: 'connectivity',
    entity_category: 'diagnostic',
    value_template: "{{ 'ON' if value_json.data.is_online in [true, 'true', 1, '1'] else 'OFF' }}",
  },
  { id: 'wifi', platform: 'sensor', field: 'wifi_level', name: 'Wi-Fi signal', device_class: 'signal_strength', unit_of_measurement: 'dBm', entity_category: 'diagnostic' },
];

/** The discovery message of one thermostat. */
export function deviceDiscovery(device: DeviceRecord, ctx: DiscoveryContext): DiscoveryPayload {
  const objectId = deviceObjectId(device.sn);
  const infoTopic = ctx.topics.deviceInfo(device.sn);
  const entity = (suffix: string, domain: string) => entityIds(objectId, suffix, domain);
  const components: Record<string, Record<string, unknown>> = {
    totp: {
      platform: 'sensor',
      ...entity('totp', 'sensor'),
      name: 'TOTP code',
      icon: 'mdi:key-chain-variant',
      state_topic: ctx.topics.deviceTotp(device.sn),
      value_template: '{{ value_json.auth }}',
      json_attributes_topic: ctx.topics.deviceTotp(device.sn),
      json_attributes_template: '{{ {"time": value_json.time, "valid_until": value_json.valid_until} | tojson }}',
      // A code older than its window is useless: let HA show it unavailable instead.
      expire_after: ctx.period + 5,
    },
  };
  const data = readings(device);
  for (const reading of READINGS) {
    if (data[reading.field] === undefined) continue;
    const { id, platform, field, ...config } = reading;
    components[id] = {
      platform,
      ...entity(id, platform),
      ...config,
      state_topic: infoTopic,
      value_template: reading.value_template ?? `{{ value_json.data.${field} }}`,
    };
  }
  const model = firstString(device.meta, 'type', 'model');
  const firmware = firstString(device.meta, 'version_name', 'firmware');
  return {
    device: {
      identifiers: [objectId],
      name: device.name,
      manufacturer: 'Terneo',
      ...(model ? { model } : {}),
      ...(firmware ? { sw_version: firmware } : {}),
      serial_number: device.sn,
      via_device: BRIDGE_OBJECT_ID,
    },
    origin: origin(ctx.version),
    availability: [{ topic: ctx.topics.state }],
    components,
  };
}

/** The discovery message of the bridge itself. */
export function bridgeDiscovery(ctx: DiscoveryContext): DiscoveryPayload {
  const entity = (suffix: string, domain: string) => entityIds(BRIDGE_OBJECT_ID, suffix, domain);
  return {
    device: {
      identifiers: [BRIDGE_OBJECT_ID],
      name: 'hmarex2mqtt bridge',
      manufacturer: 'hmarex2mqtt',
      model: 'Hmarex cloud bridge',
      sw_version: ctx.version,
    },
    origin: origin(ctx.version),
    components: {
      connection: {
        platform: 'binary_sensor',
        ...entity('connection', 'binary_sensor'),
        name: 'Connection',
        device_class: 'connectivity',
        entity_category: 'diagnostic',
        state_topic: ctx.topics.state,
        payload_on: 'online',
        payload_off: 'offline',
      },
      cloud: {
        platform: 'sensor',
        ...entity('cloud', 'sensor'),
        name: 'Cloud status',
        entity_category: 'diagnostic',
        availability: [{ topic: ctx.topics.state }],
        state_topic: ctx.topics.info,
        value_template: '{{ value_json.cloud }}',
        json_attributes_topic: ctx.topics.info,
        json_attributes_template: '{{ {"last_error": value_json.last_error, "clock_skew_s": value_json.clock_skew_s, "clock_warning": value_json.clock_warning} | tojson }}',
      },
      devices: {
        platform: 'sensor',
        ...entity('devices', 'sensor'),
        name: 'Thermostats',
        entity_category: 'diagnostic',
        availability: [{ topic: ctx.topics.state }],
        state_topic: ctx.topics.info,
        value_template: '{{ value_json.device_count }}',
      },
      last_refresh: {
        platform: 'sensor',
        ...entity('last_refresh', 'sensor'),
        name: 'Last refresh',
        device_class: 'timestamp',
        entity_category: 'diagnostic',
        availability: [{ topic: ctx.topics.state }],
        state_topic: ctx.topics.info,
        value_template: '{{ value_json.last_refresh }}',
      },
      refresh: {
        platform: 'button',
        ...entity('refresh', 'button'),
        name: 'Refresh devices',
        availability: [{ topic: ctx.topics.state }],
        command_topic: ctx.topics.requestRefresh,
        payload_press: 'refresh',
      },
    },
  };
}
