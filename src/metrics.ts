// Prometheus metrics. One registry per bridge, not prom-client's global one, so that tests and the
// benchmark can run several bridges in one process.
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { RequestOutcome } from './cloud.js';

export class Metrics {
  readonly registry = new Registry();
  readonly codesPublished: Counter;
  readonly publishLag: Histogram;
  readonly reconnects: Counter;
  readonly cloudRequests: Counter<'endpoint' | 'outcome'>;
  readonly logins: Counter;
  readonly devices: Gauge;
  readonly cacheAge: Gauge;

  constructor(cacheSavedAt: () => number | null, now: () => number = Date.now) {
    const registers = [this.registry];
    this.codesPublished = new Counter({ name: 'hmarex2mqtt_codes_published_total', help: 'TOTP payloads published', registers });
    this.publishLag = new Histogram({
      name: 'hmarex2mqtt_publish_lag_seconds',
      help: 'Time from a window boundary to the last of its codes handed to the MQTT client',
      buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
      registers,
    });
    this.reconnects = new Counter({ name: 'hmarex2mqtt_mqtt_reconnects_total', help: 'Reconnections to the MQTT broker', registers });
    this.cloudRequests = new Counter({
      name: 'hmarex2mqtt_cloud_requests_total',
      help: 'Requests to the Hmarex cloud by endpoint and outcome',
      labelNames: ['endpoint', 'outcome'],
      registers,
    });
    this.logins = new Counter({ name: 'hmarex2mqtt_cloud_logins_total', help: 'Logins to the Hmarex cloud', registers });
    this.devices = new Gauge({ name: 'hmarex2mqtt_devices', help: 'Thermostats being served', registers });
    this.cacheAge = new Gauge({
      name: 'hmarex2mqtt_cache_age_seconds',
      help: 'Age of the device list and keys in use (since they were last read from the cloud)',
      registers,
      collect() {
        const savedAt = cacheSavedAt();
        this.set(savedAt === null ? -1 : (now() - savedAt) / 1000);
      },
    });
    // The event-loop-delay monitor samples every 10 ms by default: 5 ms of CPU a second on an
    // otherwise idle daemon (npm run bench). 100 ms is fine for a dashboard.
    collectDefaultMetrics({ register: this.registry, prefix: 'hmarex2mqtt_', eventLoopMonitoringPrecision: 100 });
  }

  cloudRequest(endpoint: 'login' | 'device', outcome: RequestOutcome): void {
    this.cloudRequests.inc({ endpoint, outcome });
  }
}
