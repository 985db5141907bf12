// `hmarex2mqtt demo`: the real pipeline against a simulated cloud on loopback and an embedded
// broker (or the one in MQTT_URL), printing what it publishes. No account needed.
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer, type AddressInfo, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Aedes } from 'aedes';
import mqtt from 'mqtt';
import { Bridge } from './bridge.js';
import { loadConfig } from './config.js';
import { createLogger } from './log.js';
import { SIM_EMAIL, SIM_PASSWORD, SimCloud, simDevice } from './simcloud.js';
import { VERSION } from './version.js';

interface Io {
  stdout: NodeJS.WritableStream;
  stderr: NodeJS.WritableStream;
}

interface EmbeddedBroker {
  port: number;
  close(): Promise<void>;
}

function listen(server: Server, port: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const onError = (error: Error) => {
      server.off('listening', onListening);
      reject(error);
    };
    const onListening = () => {
      server.off('error', onError);
      resolve((server.address() as AddressInfo).port);
    };
    server.once('error', onError);
    server.once('listening', onListening);
    server.listen(port, '127.0.0.1');
  });
}

/** aedes on 1883, or on a free port when 1883 is taken. */
async function startEmbeddedBroker(): Promise<EmbeddedBroker> {
  const broker = await Aedes.createBroker();
  const server = createServer(broker.handle);
  let port: number;
  try {
    port = await listen(server, 1883);
  } catch {
    port = await listen(server, 0);
  }
  return {
    port,
    close: async () => {
      await new Promise<void>((resolve) => broker.close(() => resolve()));
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

function clockTime(iso: string): string {
  return new Date(iso).toISOString().slice(11, 19);
}

/** One publish in words. */
export function describePublish(topic: string, payload: Buffer, retained: boolean): string {
  const text = payload.toString('utf8');
  const flag = retained ? ' (retained)' : '';
  if (text === '') return `${topic}: cleared${flag}`;
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    return `${topic}: ${text.slice(0, 80)}${flag}`;
  }
  const record = (typeof body === 'object' && body !== null ? body : {}) as Record<string, unknown>;
  if (topic.endsWith('/totp')) {
    return `${topic}: code ${String(record.auth)} for time ${String(record.time)}, valid ${clockTime(String(record.valid_from))}-${clockTime(String(record.valid_until))} UTC${flag}`;
  }
  if (topic.endsWith('/config')) {
    const device = (record.device ?? {}) as Record<string, unknown>;
    const components = Object.keys((record.components ?? {}) as object);
    return `${topic}: Home Assistant discovery for ${JSON.stringify(device.name)} (${components.join(', ')})${flag}`;
  }
  if (Array.isArray(body)) return `${topic}: ${body.length} thermostat(s)${flag}`;
  return `${topic}: ${text.length > 160 ? `${text.slice(0, 157)}...` : text}${flag}`;
}

export async function runDemo(io: Io, until?: Promise<void>): Promise<number> {
  const cloud = new SimCloud({ devices: [simDevice(1, { name: 'Living room' }), simDevice(2, { name: 'Bathroom' }), simDevice(3, { name: 'Kitchen' })] });
  await cloud.start();
  const external = process.env.MQTT_URL;
  const embedded = external ? null : await startEmbeddedBroker();
  const brokerUrl = external ?? `mqtt://127.0.0.1:${embedded?.port}`;
  const stateDir = await mkdtemp(join(tmpdir(), 'hmarex2mqtt-demo-'));
  const { settings } = loadConfig({
    file: false,
    env: {
      ...process.env,
      HMAREX_URL: cloud.url,
      HMAREX_EMAIL: SIM_EMAIL,
      HMAREX_PASSWORD: SIM_PASSWORD,
      HMAREX_PASSWORD_FILE: '',
      MQTT_URL: brokerUrl,
      STATE_DIR: stateDir,
      // aedes speaks MQTT 3.1.1 only.
      ...(embedded ? { MQTT_PROTOCOL_VERSION: '4' } : {}),
    },
  });
  const base = settings.mqtt.base_topic;
  io.stdout.write(
    [
      'hmarex2mqtt demo: the real bridge, a simulated Hmarex cloud with 3 thermostats, no account needed.',
      `  cloud:  ${cloud.url}`,
      embedded ? `  broker: embedded MQTT broker on 127.0.0.1:${embedded.port}` : `  broker: ${brokerUrl} (from MQTT_URL)`,
      `  watch:  mosquitto_sub -h 127.0.0.1 -p ${new URL(brokerUrl).port || 1883} -t '${base}/#' -t '${settings.homeassistant.discovery_prefix}/#' -v`,
      `  A new code is published for every thermostat every ${settings.totp.period} s. Ctrl-C stops.`,
      '',
    ].join('\n'),
  );
  const watcher = mqtt.connect(brokerUrl, { protocolVersion: embedded ? 4 : settings.mqtt.protocol_version, reconnectPeriod: 1000 });
  watcher.on('error', () => undefined);
  watcher.on('message', (topic, payload, packet) => {
    if (topic.endsWith('/bridge/readback')) return;
    io.stdout.write(`${new Date().toISOString().slice(11, 19)} ${describePublish(topic, payload, packet.retain)}\n`);
  });
  await new Promise<void>((resolve) => watcher.once('connect', () => resolve()));
  await watcher.subscribeAsync([`${base}/#`, `${settings.homeassistant.discovery_prefix}/#`]);
  const logger = createLogger({ level: settings.log.level });
  const bridge = new Bridge({ settings, logger, version: VERSION });
  await bridge.start();
  await (until ?? new Promise<void>((resolve) => {
    process.once('SIGINT', () => resolve());
    process.once('SIGTERM', () => resolve());
  }));
  await bridge.stop();
  await watcher.endAsync();
  await embedded?.close();
  await cloud.stop();
  await rm(stateDir, { recursive: true, force: true });
  return 0;
}
