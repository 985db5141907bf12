// The subscriber whose clock the lag is read on: a process of its own, so nothing the benchmark
// does delays its timestamps. Every live (not retained) code is timed against its own `valid_from`.
// Usage (forked): subscriber.ts BROKER_URL FILTER
import mqtt from 'mqtt';
import type { FromSubscriber, ToSubscriber } from './protocol.js';

const [url, filter] = process.argv.slice(2);
const send = (message: FromSubscriber) => process.send?.(message);
/** Sub-millisecond wall clock: the lags at small N are around a millisecond. */
const wallNow = () => performance.timeOrigin + performance.now();

const byWindow = new Map<number, number[]>();
const topics = new Set<string>();
let firstAt: number | null = null;
let lastNewAt: number | null = null;

const client = await mqtt.connectAsync(url, { protocolVersion: 5, reconnectPeriod: 0, clean: true });
client.on('message', (topic, payload, packet) => {
  const at = wallNow();
  // Retained copies are history replayed on subscribe, and an empty payload is a cleared topic.
  if (packet.retain || payload.length === 0) return;
  const validFrom = Date.parse((JSON.parse(payload.toString('utf8')) as { valid_from: string }).valid_from);
  firstAt ??= at;
  if (!topics.has(topic)) {
    topics.add(topic);
    lastNewAt = at;
  }
  let lags = byWindow.get(validFrom);
  if (!lags) byWindow.set(validFrom, (lags = []));
  lags.push(at - validFrom);
});
await client.subscribeAsync(filter, { qos: 0 });

process.on('message', (message: ToSubscriber) => {
  if (message.type === 'status') send({ type: 'status', firstAt, lastNewAt, topics: topics.size });
  else send({ type: 'report', windows: [...byWindow].map(([validFromMs, lags]) => ({ validFromMs, lags })) });
});
process.on('disconnect', () => void client.endAsync(true).then(() => process.exit(0)));
send({ type: 'ready' });
