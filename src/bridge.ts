// The controller: wires the cloud, the device cache, the code windows and MQTT, and keeps the
// retained topics in step with the account.
import { createHash, randomBytes } from 'node:crypto';
import type { IClientPublishOptions } from 'mqtt';
import type { Dispatcher } from 'undici';
import { DeviceCache } from './cache.js';
import { CLOCK_SKEW_WARN_MS, CloudClient, CloudError } from './cloud.js';
import type { Settings } from './config.js';
import { describeValue, type DeviceRecord } from './devices.js';
import { Backoff } from './backoff.js';
import { BRIDGE_OBJECT_ID, OBJECT_ID_PREFIX, bridgeDiscovery, deviceDiscovery, deviceObjectId, objectIdFromDiscoveryTopic, type DiscoveryContext } from './discovery.js';
import type { Logger } from './log.js';
import { Metrics } from './metrics.js';
import { Publisher } from './publisher.js';
import { WindowTimer, scheduleRefresh, systemClock, type Clock, type RefreshSchedule } from './scheduler.js';
import { buildTopics, serialFromInfoTopic, totpPayload, type BridgeInfo, type CloudStatus, type Topics } from './topics.js';
import { CodeGenerator, decodeKey, windowAt, type TotpSettings, type Window } from './totp.js';

export interface BridgeOptions {
  settings: Settings;
  logger: Logger;
  version: string;
  clock?: Clock;
  metrics?: Metrics;
  /** Random delay before re-sending everything after HA's birth message. */
  haBirthDelayMs?: [min: number, max: number];
  /** Least time between two refreshes asked for on `bridge/request/refresh`. */
  requestMinIntervalMs?: number;
  /** Longest wait for the broker to hand back our retained topics at each connect. */
  readbackTimeoutMs?: number;
  /** The cloud client's connections, for tests that inject network failures (DNS, ...). */
  cloudDispatcher?: Dispatcher;
}

/** Codes handed to mqtt.js in one go at a boundary; see publishCodes. */
const PUBLISH_SLICE = 250;

/**
 * A code handed to the broker this close to the end of its window could reach subscribers after
 * it: outside the boundary path, such a code is not sent (the next window's follows shortly).
 */
function lateGuardMs(periodS: number): number {
  return Math.min(250, (periodS * 1000) / 8);
}

interface LiveDevice {
  record: DeviceRecord;
  generator: CodeGenerator;
  totpTopic: string;
  infoJson: string;
  /** Digest of the discovery last published, to skip unchanged re-sends (not the ~3 KB text). */
  discoveryDigest: string | null;
  /** The next window's payload, computed before its boundary. */
  prepared: { counter: number; payload: Buffer } | null;
}

export type Health = { healthy: true } | { healthy: false; reason: string };

export class Bridge {
  readonly metrics: Metrics;
  private readonly settings: Settings;
  private readonly logger: Logger;
  private readonly clock: Clock;
  private readonly topics: Topics;
  private readonly totp: TotpSettings;
  private readonly discoveryCtx: DiscoveryContext;
  private readonly cloud: CloudClient;
  private readonly cache: DeviceCache;
  private readonly windows: WindowTimer;
  private readonly retryBackoff: Backoff;
  private publisher: Publisher | null = null;
  private schedule: RefreshSchedule | null = null;
  private devices = new Map<string, LiveDevice>();
  private deviceListKnown = false;
  private cloudStatus: CloudStatus = 'starting';
  private lastRefresh: Date | null = null;
  private lastError: string | null = null;
  private cacheSavedAt: Date | null = null;
  private clockSkewMs: number | null = null;
  /** The skew last warned of, so that a steady one is not logged at every request. */
  private loggedSkewMs: number | null = null;
  private refreshing: Promise<void> | null = null;
  private refreshAgain = false;
  private retryTimer: unknown = null;
  private birthTimer: unknown = null;
  private prepareTimer: unknown = null;
  private lastRequestAt = -Infinity;
  private ignoredRequests = 0;
  private publishedCounter: number | null = null;
  private readback: { nonce: string; seen: Set<string>; done: () => void } | null = null;
  private orphansSeen = new Set<string>();
  private stopped = false;

  constructor(private readonly options: BridgeOptions) {
    this.settings = options.settings;
    this.logger = options.logger;
    this.clock = options.clock ?? systemClock;
    const { mqtt, homeassistant, totp, hmarex } = this.settings;
    this.topics = buildTopics(mqtt.base_topic, homeassistant.discovery_prefix, homeassistant.status_topic);
    this.totp = totp;
    this.discoveryCtx = { topics: this.topics, version: options.version, period: totp.period };
    this.metrics = options.metrics ?? new Metrics(() => this.cacheSavedAt?.getTime() ?? null, () => this.clock.now());
    this.cache = new DeviceCache(this.settings.state.dir);
    this.retryBackoff = new Backoff(hmarex.retry_min_ms, hmarex.retry_max_ms);
    this.cloud = new CloudClient({
      baseUrl: hmarex.url,
      email: hmarex.email,
      password: hmarex.password,
      timeoutMs: hmarex.timeout_ms,
      now: () => this.clock.now(),
      dispatcher: options.cloudDispatcher,
      hooks: {
        request: (endpoint, outcome) => this.metrics.cloudRequest(endpoint, outcome),
        login: () => this.metrics.logins.inc(),
        clockSkew: (ms) => this.noteClockSkew(ms),
      },
    });
    this.windows = new WindowTimer(totp, this.clock, {
      window: (window) => this.onWindow(window),
      clockJump: (delta) => this.logger.warn(`the system clock jumped by ${(delta / 1000).toFixed(1)} s; code windows re-aligned`),
    });
  }

  /** Starts serving: cached codes at once, then the broker and the cloud, each retried on its own. */
  async start(): Promise<void> {
    await this.loadCache();
    this.windows.start();
    this.publisher = this.createPublisher();
    this.schedule = scheduleRefresh(this.settings.hmarex.refresh, () => this.refresh('schedule'));
    void this.refresh('start');
  }

  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    this.windows.stop();
    this.schedule?.stop();
    this.clock.clearTimeout(this.retryTimer);
    this.clock.clearTimeout(this.birthTimer);
    this.clock.clearTimeout(this.prepareTimer);
    const last = [
      { topic: this.topics.state, payload: 'offline', options: { retain: true, qos: 1 as const } },
      // A code published now would be stale soon after we are gone: take the retained ones away.
      ...[...this.devices.values()].map((d) => ({ topic: d.totpTopic, payload: '', options: { retain: true, qos: 1 as const } })),
    ];
    await this.publisher?.stop(last);
    await this.cloud.close();
  }

  /**
   * Re-reads the device list; concurrent callers share one refresh. A request that finds one
   * under way gets another after it: the list in flight may have been read before the request.
   */
  refresh(reason: 'start' | 'schedule' | 'request' | 'retry'): Promise<void> {
    if (this.stopped) return Promise.resolve();
    if (this.refreshing) {
      if (reason === 'request') this.refreshAgain = true;
      return this.refreshing;
    }
    // While a retry after a failure is pending, the backoff decides when to call the cloud.
    if (reason === 'schedule' && this.retryTimer !== null) return Promise.resolve();
    this.refreshing = this.doRefresh(reason).finally(() => {
      this.refreshing = null;
      if (this.refreshAgain) {
        this.refreshAgain = false;
        void this.refresh('request');
      }
    });
    return this.refreshing;
  }

  health(): Health {
    if (!this.publisher?.connected) return { healthy: false, reason: 'not connected to the MQTT broker' };
    if (this.devices.size > 0 && this.publishedCounter !== this.windows.window.counter) {
      return { healthy: false, reason: 'the codes of the current window have not been published' };
    }
    return { healthy: true };
  }

  get info(): BridgeInfo {
    return {
      version: this.options.version,
      cloud: this.cloudStatus,
      device_count: this.devices.size,
      last_refresh: this.lastRefresh?.toISOString() ?? null,
      last_error: this.lastError,
      clock_skew_s: this.clockSkewMs === null ? null : Math.round(this.clockSkewMs / 1000),
      clock_warning: this.clockWarning(),
      cache_saved_at: this.cacheSavedAt?.toISOString() ?? null,
    };
  }

  /** Listeners held by the MQTT connection, for leak checks over long runs. */
  get mqttListenerCount(): number {
    return this.publisher?.listenerTotal ?? 0;
  }

  /** The thermostats being served (for tests and diagnostics). */
  get deviceRecords(): DeviceRecord[] {
    return [...this.devices.values()].map((d) => d.record);
  }

  private createPublisher(): Publisher {
    const { mqtt } = this.settings;
    const publisher = new Publisher({
      url: mqtt.url,
      clientId: mqtt.client_id,
      username: mqtt.username,
      password: mqtt.password,
      protocolVersion: mqtt.protocol_version,
      tls: {
        ca: mqtt.tls.ca,
        cert: mqtt.tls.cert,
        key: mqtt.tls.key,
        rejectUnauthorized: mqtt.tls.reject_unauthorized,
        servername: mqtt.tls.servername,
      },
      will: { topic: this.topics.state, payload: 'offline' },
      reconnectMinMs: mqtt.reconnect_min_ms,
      reconnectMaxMs: mqtt.reconnect_max_ms,
      logger: this.logger,
    });
    publisher.on('connect', () => void this.onConnect());
    publisher.on('disconnect', () => this.logger.warn('lost the MQTT broker; codes are dropped until it is back'));
    publisher.on('message', (topic, payload, retained) => this.onMessage(topic, payload, retained));
    return publisher;
  }

  private get readbackTopic(): string {
    return `${this.settings.mqtt.base_topic}/bridge/readback`;
  }

  private get mqtt(): Publisher {
    if (!this.publisher) throw new Error('bridge not started');
    return this.publisher;
  }

  private async onConnect(): Promise<void> {
    if (this.mqtt.reconnects > 0) this.metrics.reconnects.inc();
    this.publishAll();
    try {
      await this.mqtt.subscribe([this.topics.requestFilter, this.topics.haStatus]);
      await this.readBack();
    } catch (error) {
      this.logger.warn(`after connecting: ${(error as Error).message}`);
    }
  }

  /**
   * Everything a subscriber needs, as after a broker restart that lost retained messages:
   * availability and discovery first, then the states, as Home Assistant advises.
   */
  private publishAll(): void {
    this.mqtt.publish(this.topics.state, 'online', { retain: true, qos: 1 });
    if (this.settings.homeassistant.discovery) {
      this.publishJson(this.topics.discovery(BRIDGE_OBJECT_ID), bridgeDiscovery(this.discoveryCtx));
    }
    this.publishBridge();
    for (const device of this.devices.values()) {
      device.discoveryDigest = null;
      this.publishDevice(device, true);
    }
    this.publishCodes(this.windows.window);
  }

  private publishJson(topic: string, payload: unknown): void {
    this.mqtt.publish(topic, JSON.stringify(payload), { retain: true, qos: 1 });
  }

  private publishBridge(): void {
    if (!this.publisher) return;
    this.publishJson(this.topics.info, this.info);
    this.mqtt.publish(this.topics.devices, `[${[...this.devices.values()].map((d) => d.infoJson).join(',')}]`, { retain: true, qos: 1 });
  }

  private publishDevice(device: LiveDevice, infoChanged: boolean): void {
    const { sn } = device.record;
    if (this.settings.homeassistant.discovery) {
      const discovery = JSON.stringify(deviceDiscovery(device.record, this.discoveryCtx));
      const digest = createHash('sha1').update(discovery).digest('base64');
      if (digest !== device.discoveryDigest && this.mqtt.publish(this.topics.discovery(deviceObjectId(sn)), discovery, { retain: true, qos: 1 })) {
        device.discoveryDigest = digest;
      }
    }
    if (infoChanged) this.mqtt.publish(this.topics.deviceInfo(sn), device.infoJson, { retain: true, qos: 1 });
  }

  private clearDevice(sn: string): void {
    this.logger.info(`thermostat ${sn} is no longer in the account; its retained topics are cleared`);
    const clear = { retain: true, qos: 1 as const };
    this.mqtt.publish(this.topics.discovery(deviceObjectId(sn)), '', clear);
    this.mqtt.publish(this.topics.deviceInfo(sn), '', clear);
    this.mqtt.publish(this.topics.deviceTotp(sn), '', clear);
  }

  private onWindow(window: Window): void {
    this.publishCodes(window, true);
    // The next window's payloads are made in mid-window: off the boundary, and not while this
    // boundary's codes are still on their way (their broker and subscribers need the CPU then).
    this.clock.clearTimeout(this.prepareTimer);
    if (this.devices.size === 0) return;
    this.prepareTimer = this.clock.setTimeout(() => {
      this.prepareTimer = null;
      this.prepare(windowAt(window.validUntilMs, this.totp));
    }, (window.validUntilMs - window.validFromMs) / 2);
  }

  /**
   * Publishes the window's codes of `devices` (all by default). `atBoundary`: publish lag is
   * measured only for the boundary's own publish, not for one at a (re)connect or refresh.
   */
  private publishCodes(window: Window, atBoundary = false, devices = [...this.devices.values()]): void {
    if (!this.publisher?.connected || devices.length === 0) return;
    const now = this.clock.now();
    if (window.validUntilMs - now < lateGuardMs(this.totp.period)) return;
    const options: IClientPublishOptions = this.mqtt.publishOptions({ retain: true, qos: 0, expirySeconds: (window.validUntilMs - now) / 1000 });
    // mqtt.js holds every write back until the current callback returns: in slices, the first
    // codes are on their way while the later ones are still being handed over.
    const publishFrom = (start: number): void => {
      if (this.stopped) return;
      const end = Math.min(devices.length, start + PUBLISH_SLICE);
      for (let i = start; i < end; i += 1) {
        const device = devices[i];
        const payload = device.prepared?.counter === window.counter ? device.prepared.payload : this.payloadFor(device, window);
        this.mqtt.publishPrepared(device.totpTopic, payload, options);
      }
      if (end < devices.length) setImmediate(publishFrom, end);
      else if (atBoundary) this.metrics.publishLag.observe(Math.max(0, this.clock.now() - window.validFromMs) / 1000);
    };
    publishFrom(0);
    this.publishedCounter = window.counter;
    this.metrics.codesPublished.inc(devices.length);
  }

  private prepare(window: Window): void {
    // The window's part of the JSON is made once, by totpPayload (the one definition of the
    // format); only serial and code differ. Serials are safe segments: nothing to escape.
    const template = JSON.stringify(totpPayload('<sn>', { ...window, auth: '<auth>' }, this.totp));
    for (const device of this.devices.values()) {
      const auth = device.generator.codeFor(window).auth;
      const text = template.replace('<sn>', () => device.record.sn).replace('<auth>', () => auth);
      device.prepared = { counter: window.counter, payload: Buffer.from(text) };
    }
  }

  private payloadFor(device: LiveDevice, window: Window): Buffer {
    return Buffer.from(JSON.stringify(totpPayload(device.record.sn, device.generator.codeFor(window), this.totp)));
  }

  private onMessage(topic: string, payload: Buffer, retained: boolean): void {
    if (this.readback && this.noteRetained(topic, payload)) return;
    if (topic === this.topics.haStatus) {
      // A retained `online` comes back at every (re)subscribe: it is an old birth, already
      // answered by the re-send that every connect makes.
      if (payload.toString() === 'online' && !retained) this.onHomeAssistantBirth();
      return;
    }
    if (topic === this.topics.requestRefresh) {
      const now = this.clock.now();
      const minInterval = this.options.requestMinIntervalMs ?? 10_000;
      if (now - this.lastRequestAt < minInterval) {
        // One line per interval at info: a flood of requests must not become a flood of log lines.
        this.ignoredRequests += 1;
        this.logger[this.ignoredRequests === 1 ? 'info' : 'debug']('refresh request ignored: the last one was less than %d s ago', Math.round(minInterval / 1000));
        return;
      }
      // A refused password stays refused until the user fixes it: the backoff alone may call the
      // login endpoint, or requests could hammer it.
      if (this.cloudStatus === 'auth_failed' && this.retryTimer !== null) {
        this.logger.info('refresh request ignored: the cloud refused the login; fix hmarex.email / hmarex.password and restart');
        return;
      }
      this.ignoredRequests = 0;
      this.lastRequestAt = now;
      this.logger.info('refresh requested over MQTT');
      void this.refresh('request');
      return;
    }
    if (topic.startsWith(this.topics.requestFilter.slice(0, -1))) this.logger.debug('unknown request topic ignored');
  }

  /** HA came (back) online: send everything again once, after a short random delay, so many
   * bridges do not answer the same birth message in the same millisecond. */
  private onHomeAssistantBirth(): void {
    if (this.birthTimer !== null) return;
    const [min, max] = this.options.haBirthDelayMs ?? [1000, 3000];
    this.birthTimer = this.clock.setTimeout(() => {
      this.birthTimer = null;
      this.logger.info('Home Assistant is online: discovery and state re-sent');
      if (this.publisher?.connected) this.publishAll();
    }, min + Math.random() * (max - min));
  }

  /**
   * Reads back our own retained discovery and `info` topics, to find thermostats that left the
   * account while we were away. A marker sent after subscribing tells when the broker is done.
   */
  private async readBack(): Promise<void> {
    const filters = [this.topics.discoveryFilter, this.topics.deviceInfoFilter, this.readbackTopic];
    const readback = { nonce: randomBytes(8).toString('hex'), seen: new Set<string>(), done: () => {} };
    let timer: unknown = null;
    const finished = new Promise<void>((resolve) => {
      readback.done = resolve;
      timer = this.clock.setTimeout(resolve, this.options.readbackTimeoutMs ?? 5000);
    });
    this.readback = readback;
    try {
      await this.mqtt.subscribe(filters);
      this.mqtt.publish(this.readbackTopic, readback.nonce, { qos: 0 });
      await finished;
      // After a reconnect meanwhile, the filters belong to the newer read-back: leave them.
      if (this.readback === readback) await this.mqtt.unsubscribe(filters);
    } finally {
      this.clock.clearTimeout(timer);
      if (this.readback === readback) this.readback = null;
    }
    for (const sn of readback.seen) this.orphansSeen.add(sn);
    this.clearOrphans();
  }

  /** Returns true when the message belonged to the read-back. */
  private noteRetained(topic: string, payload: Buffer): boolean {
    const readback = this.readback;
    if (!readback) return false;
    if (topic === this.readbackTopic) {
      if (payload.toString() === readback.nonce) readback.done();
      return true;
    }
    const objectId = objectIdFromDiscoveryTopic(topic);
    if (objectId) {
      if (payload.length > 0 && objectId !== BRIDGE_OBJECT_ID && this.isOurDiscovery(payload)) {
        readback.seen.add(objectId.slice(OBJECT_ID_PREFIX.length));
      }
      return true;
    }
    const sn = serialFromInfoTopic(this.settings.mqtt.base_topic, topic);
    if (sn === null) return false;
    if (payload.length > 0) readback.seen.add(sn);
    return true;
  }

  /** Another bridge on another base topic may share the discovery prefix: leave its devices be. */
  private isOurDiscovery(payload: Buffer): boolean {
    try {
      const parsed = JSON.parse(payload.toString('utf8')) as { availability?: Array<{ topic?: unknown }> };
      return Array.isArray(parsed.availability) && parsed.availability.some((a) => a.topic === this.topics.state);
    } catch {
      return false;
    }
  }

  /** Clears retained topics of thermostats no longer in the account, once the account is known. */
  private clearOrphans(): void {
    if (!this.deviceListKnown || !this.publisher?.connected) return;
    for (const sn of this.orphansSeen) if (!this.devices.has(sn)) this.clearDevice(sn);
    this.orphansSeen.clear();
  }

  private async doRefresh(reason: string): Promise<void> {
    this.clock.clearTimeout(this.retryTimer);
    this.retryTimer = null;
    this.logger.debug(`refreshing the device list (${reason})`);
    try {
      const list = await this.cloud.listDevices();
      if (this.stopped) return;
      for (const problem of list.problems) this.logger.warn(problem);
      this.cloudStatus = 'online';
      this.lastError = null;
      this.lastRefresh = new Date(this.clock.now());
      this.retryBackoff.reset();
      this.applyDevices(list.devices, new Set(list.refused));
      await this.saveCache([...this.devices.values()].map((d) => d.record));
    } catch (error) {
      if (this.stopped) return;
      this.onRefreshFailure(error);
    }
    this.publishBridge();
  }

  private onRefreshFailure(error: unknown): void {
    const cloudError = error instanceof CloudError ? error : new CloudError('unavailable', (error as Error).message);
    this.cloudStatus = cloudError.kind === 'auth_failed' ? 'auth_failed' : 'offline';
    this.lastError = cloudError.message;
    const backoff = this.retryBackoff.next();
    // Honour Retry-After, but never wait more than an hour on the cloud's word.
    const delay = Math.max(backoff, Math.min(cloudError.retryAfterMs ?? 0, 3_600_000));
    const serving = this.devices.size > 0 ? `; codes go on from the keys read ${this.cacheSavedAt ? `at ${this.cacheSavedAt.toISOString()}` : 'before'}` : '';
    this.logger.error({ delayMs: delay }, `cloud refresh failed: ${cloudError.message}; next try in ${Math.round(delay / 1000)} s${serving}`);
    this.retryTimer = this.clock.setTimeout(() => {
      this.retryTimer = null;
      void this.refresh('retry');
    }, delay);
  }

  /**
   * Makes `records` the served set. A thermostat we serve whose new record is broken (`refused`,
   * or a key that does not decode) keeps its last good one: a glitch in one answer must not take
   * its entities away from Home Assistant.
   */
  private applyDevices(records: DeviceRecord[], refused: ReadonlySet<string> = new Set()): void {
    const next = new Map<string, LiveDevice>();
    const keepLastGood = (sn: string, why: string) => {
      const old = this.devices.get(sn);
      if (!old || next.has(sn)) return;
      this.logger.warn(`thermostat ${sn} keeps its last good record and key: ${why}`);
      next.set(sn, old);
    };
    const changed: Array<{ device: LiveDevice; infoChanged: boolean; newCode: boolean }> = [];
    const added: string[] = [];
    for (const record of records) {
      const old = this.devices.get(record.sn);
      const sameKey = old?.record.totpKey === record.totpKey;
      let generator = sameKey ? old?.generator : undefined;
      if (!generator) {
        try {
          generator = new CodeGenerator(decodeKey(record.totpKey, this.totp.key_encoding), this.totp);
        } catch (error) {
          this.logger.warn(`thermostat ${record.sn} (id ${String(record.id)}) skipped: ${(error as Error).message}`);
          keepLastGood(record.sn, 'its new key is unusable');
          continue;
        }
      }
      const device: LiveDevice = {
        record,
        generator,
        totpTopic: this.topics.deviceTotp(record.sn),
        infoJson: JSON.stringify(record.meta),
        discoveryDigest: old?.discoveryDigest ?? null,
        prepared: sameKey ? (old?.prepared ?? null) : null,
      };
      next.set(record.sn, device);
      if (!old) added.push(`${record.sn} (${describeValue(record.name)})`);
      changed.push({ device, infoChanged: old?.infoJson !== device.infoJson, newCode: !sameKey });
    }
    // One line, not one per thermostat: 10,000 lines cost a third of a second at start.
    if (added.length > 0) {
      this.logger.info(`${added.length} thermostat(s) newly served${added.length <= 10 ? `: ${added.join(', ')}` : ''}`);
    }
    for (const sn of refused) keepLastGood(sn, 'the cloud sent a broken record for it');
    const removed = [...this.devices.keys()].filter((sn) => !next.has(sn));
    this.devices = next;
    this.deviceListKnown = true;
    this.metrics.devices.set(next.size);
    if (!this.publisher?.connected) return;
    for (const sn of removed) this.clearDevice(sn);
    const window = this.windows.window;
    for (const { device, infoChanged } of changed) this.publishDevice(device, infoChanged);
    // No code of this window went out yet (no thermostats before, or a connect in its last
    // moments): all of them; else those with a new key.
    const fresh = changed.filter((c) => c.newCode).map((c) => c.device);
    this.publishCodes(window, false, this.publishedCounter !== window.counter ? undefined : fresh);
    this.clearOrphans();
  }

  private async loadCache(): Promise<void> {
    try {
      const cached = await this.cache.load();
      if (!cached) return;
      this.cacheSavedAt = cached.savedAt;
      this.applyDevices(cached.devices);
      this.logger.info(`serving ${this.devices.size} thermostat(s) from the cache of ${cached.savedAt.toISOString()} until the cloud answers`);
    } catch (error) {
      this.logger.warn((error as Error).message);
    }
  }

  private async saveCache(devices: DeviceRecord[]): Promise<void> {
    const savedAt = new Date(this.clock.now());
    try {
      await this.cache.save(devices, savedAt);
      this.cacheSavedAt = savedAt;
    } catch (error) {
      this.logger.warn(`device cache not written (${(error as NodeJS.ErrnoException).code ?? (error as Error).message}); codes still flow`);
    }
  }

  /** What `bridge/info` says of the clock while it differs from the cloud's; null when it agrees. */
  private clockWarning(): string | null {
    const skew = this.clockSkewMs;
    if (skew === null || Math.abs(skew) <= CLOCK_SKEW_WARN_MS) return null;
    return `the local clock is ${(Math.abs(skew) / 1000).toFixed(0)} s ${skew > 0 ? 'behind' : 'ahead of'} the cloud's: codes will be rejected near window edges; check NTP`;
  }

  private noteClockSkew(skewMs: number): void {
    this.clockSkewMs = skewMs;
    const warning = this.clockWarning();
    const logged = this.loggedSkewMs;
    // Logged when it starts, ends or moves by more than the threshold; not at every request.
    if (warning !== null && (logged === null || Math.abs(skewMs - logged) > CLOCK_SKEW_WARN_MS)) {
      this.logger.warn(warning);
      this.loggedSkewMs = skewMs;
    } else if (warning === null && logged !== null) {
      this.logger.info("the local clock agrees with the cloud's again");
      this.loggedSkewMs = null;
    }
  }
}
