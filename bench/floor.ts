// The floor: a bare mqtt.js client that publishes N payloads, made well before the boundary, at
// every window boundary: what MQTT itself costs with this broker and subscriber, and nothing else.
// Usage (forked, so it ends with the benchmark): floor.ts BROKER_URL BASE_TOPIC N PERIOD_S
import mqtt, { type IClientPublishOptions } from 'mqtt';
import { simDevice } from '../src/simcloud.js';
import { totpPayload } from '../src/topics.js';
import { windowAt, type Window } from '../src/totp.js';

const [url, base, count, periodText] = process.argv.slice(2);
const n = Number(count);
const settings = { period: Number(periodText), digits: 9, epoch: '2000' as const };
const periodMs = settings.period * 1000;
const sns = Array.from({ length: n }, (_, i) => simDevice(i + 1).sn);
const topics = sns.map((sn) => `${base}/${sn}/totp`);

// The same connection options as the bridge's publisher.
const client = await mqtt.connectAsync(url, { protocolVersion: 5, clean: true, keepalive: 30, reconnectPeriod: 0, queueQoSZero: false });
let next: Window = windowAt(Date.now(), settings);
let payloads: Buffer[] = [];

/** Mid-window: the next window's payloads (same size and shape as the bridge's), then wait for it. */
function prepare(): void {
  next = windowAt(windowAt(Date.now(), settings).validUntilMs, settings);
  payloads = sns.map((sn) => Buffer.from(JSON.stringify(totpPayload(sn, { ...next, auth: '000000000' }, settings))));
  arm();
}

function arm(): void {
  // A timer may fire a little before the wall clock reaches the boundary: wait out the rest.
  const wait = next.validFromMs - Date.now();
  if (wait > 0) setTimeout(arm, wait);
  else publish();
}

function publish(): void {
  const options: IClientPublishOptions = {
    qos: 0,
    retain: true,
    properties: { messageExpiryInterval: Math.max(1, Math.ceil((next.validUntilMs - Date.now()) / 1000)) },
  };
  for (let i = 0; i < n; i += 1) client.publish(topics[i], payloads[i], options);
  setTimeout(prepare, periodMs / 2);
}

process.on('disconnect', () => void client.endAsync(true).then(() => process.exit(0)));
prepare();
