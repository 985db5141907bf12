// The MQTT connection: last will, reconnects with capped backoff, and publishes that are dropped,
// never queued, while the broker is away (a queued code would arrive after its window).
import { EventEmitter } from 'node:events';
import { readFileSync } from 'node:fs';
import mqtt, { type IClientOptions, type IClientPublishOptions, type MqttClient } from 'mqtt';
import { Backoff } from './backoff.js';
import type { Logger } from './log.js';

export interface PublisherOptions {
  url: string;
  clientId: string;
  username?: string;
  password?: string;
  protocolVersion: 4 | 5;
  tls?: { ca?: string; cert?: string; key?: string; rejectUnauthorized: boolean; servername?: string };
  will: { topic: string; payload: string };
  reconnectMinMs: number;
  reconnectMaxMs: number;
  logger: Logger;
}

export interface PublishOptions {
  retain?: boolean;
  qos?: 0 | 1;
  /** MQTT 5 message expiry in whole seconds; ignored on 3.1.1. */
  expirySeconds?: number;
}

/** The longest a stop waits for the broker to acknowledge the last messages. */
const STOP_WAIT_MS = 2000;

/** CONNACK codes that mean "your credentials or client id are wrong": retrying fast will not help. */
const AUTH_REFUSALS = new Set([4, 5, 0x85, 0x86, 0x87, 0x8c]);

/** A broker or TLS error in words a user can act on; never includes a password. */
export function describeMqttError(error: Error & { code?: string | number }, url: string): string {
  const where = new URL(url).host;
  const code = error.code;
  if (typeof code === 'number' && AUTH_REFUSALS.has(code)) {
    return `broker ${where} refused the connection: ${error.message.replace(/^Connection refused: /, '')} (check mqtt.username / mqtt.password / mqtt.client_id)`;
  }
  switch (code) {
    case 'ECONNREFUSED':
      return `broker ${where} refused the connection (nothing listens there; is the broker running?)`;
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
      return `broker host ${where} not found (DNS)`;
    case 'ETIMEDOUT':
      return `broker ${where} did not answer in time`;
    case 'UNABLE_TO_VERIFY_LEAF_SIGNATURE':
    case 'SELF_SIGNED_CERT_IN_CHAIN':
    case 'DEPTH_ZERO_SELF_SIGNED_CERT':
    case 'UNABLE_TO_GET_ISSUER_CERT_LOCALLY':
      return `TLS: the certificate of broker ${where} is not signed by a trusted CA (set mqtt.tls.ca to the CA file)`;
    case 'ERR_TLS_CERT_ALTNAME_INVALID':
      return `TLS: the certificate of broker ${where} is not valid for that host name (connect by the name in the certificate, or set mqtt.tls.servername)`;
    case 'CERT_HAS_EXPIRED':
      return `TLS: the certificate of broker ${where} has expired`;
    case 'EPROTO':
      return `TLS handshake with broker ${where} failed (does the broker speak TLS on that port? is mqtts:// right?)`;
    case 'ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED':
      return `TLS: broker ${where} wants a client certificate (set mqtt.tls.cert and mqtt.tls.key)`;
    case 'ERR_SSL_TLSV1_ALERT_UNKNOWN_CA':
    case 'ERR_SSL_SSLV3_ALERT_BAD_CERTIFICATE':
    case 'ERR_SSL_SSLV3_ALERT_CERTIFICATE_UNKNOWN':
      return `TLS: broker ${where} did not accept our client certificate (is mqtt.tls.cert signed by a CA the broker trusts?)`;
    case 'ECONNRESET':
      return `broker ${where} closed the connection at once (does mqtt.url's mqtt:// or mqtts:// match what the broker speaks on that port?)`;
    default: {
      // OpenSSL's own text ("...:SSL routines:ssl3_read_bytes:<reason>:../deps/...") cut to its reason.
      const ssl = /SSL routines:[^:]*:([^:]+)/.exec(error.message);
      return ssl ? `TLS with broker ${where} failed: ${ssl[1]}` : `broker ${where}: ${error.message}`;
    }
  }
}

export interface PublisherEvents {
  connect: [];
  disconnect: [];
  /** `retained`: sent by the broker from its store at subscribe time, not live. */
  message: [topic: string, payload: Buffer, retained: boolean];
}

export class Publisher extends EventEmitter<PublisherEvents> {
  private readonly client: MqttClient;
  private readonly backoff: Backoff;
  private reconnectTimer: NodeJS.Timeout | null = null;
  private lastRefusal: number | null = null;
  private stopping = false;
  private wasConnected = false;
  /** Whether the last attempt got through: a failed attempt is no new loss of the broker. */
  private up = false;
  reconnects = 0;

  constructor(private readonly options: PublisherOptions) {
    super();
    this.backoff = new Backoff(options.reconnectMinMs, options.reconnectMaxMs);
    this.client = mqtt.connect(options.url, this.clientOptions());
    this.client.on('connect', () => {
      this.backoff.reset();
      this.lastRefusal = null;
      if (this.wasConnected) this.reconnects += 1;
      this.wasConnected = true;
      this.up = true;
      options.logger.info({ broker: new URL(options.url).host }, 'connected to the MQTT broker');
      this.emit('connect');
    });
    this.client.on('message', (topic, payload, packet) => this.emit('message', topic, payload, packet.retain));
    this.client.on('error', (error: Error & { code?: string | number }) => {
      // Only the latest failure decides the pace: a refusal slows retries, a broker that was
      // down and is refusing no more gets the normal backoff again.
      this.lastRefusal = typeof error.code === 'number' && AUTH_REFUSALS.has(error.code) ? error.code : null;
      options.logger.error(describeMqttError(error, options.url));
    });
    this.client.on('close', () => {
      if (this.stopping) return;
      this.dropInFlight();
      if (this.up) this.emit('disconnect');
      this.up = false;
      this.scheduleReconnect();
    });
  }

  get connected(): boolean {
    return this.client.connected;
  }

  /** Listeners on the MQTT client and its current connection, for leak checks. */
  get listenerTotal(): number {
    const count = <E extends string | symbol>(emitter: { eventNames(): E[]; listenerCount(name: E): number }) =>
      emitter.eventNames().reduce((sum, name) => sum + emitter.listenerCount(name), 0);
    return count(this) + count(this.client) + (this.client.stream ? count(this.client.stream) : 0);
  }

  /** Publishes now, or drops the message when the broker is away. Returns whether it was sent. */
  publish(topic: string, payload: string | Buffer, options: PublishOptions = {}): boolean {
    if (!this.client.connected) return false;
    this.client.publish(topic, payload, this.publishOptions(options), (error) => {
      if (error && !this.stopping) this.options.logger.debug({ topic, error: error.message }, 'publish failed');
    });
    return true;
  }

  publishOptions(options: PublishOptions): IClientPublishOptions {
    const result: IClientPublishOptions = { qos: options.qos ?? 0, retain: options.retain ?? false };
    if (options.expirySeconds !== undefined && this.options.protocolVersion === 5) {
      result.properties = { messageExpiryInterval: Math.max(1, Math.ceil(options.expirySeconds)) };
    }
    return result;
  }

  /** The window hot path: payload and options prepared before the boundary, nothing allocated here. */
  publishPrepared(topic: string, payload: Buffer, options: IClientPublishOptions): boolean {
    if (!this.client.connected) return false;
    this.client.publish(topic, payload, options);
    return true;
  }

  async subscribe(filters: string[]): Promise<void> {
    if (!this.client.connected) return;
    await this.client.subscribeAsync(filters, { qos: 0 });
  }

  async unsubscribe(filters: string[]): Promise<void> {
    if (!this.client.connected) return;
    await this.client.unsubscribeAsync(filters);
  }

  /** Sends the last messages (waiting for them to leave), then disconnects for good. */
  async stop(lastMessages: Array<{ topic: string; payload: string; options: PublishOptions }>): Promise<void> {
    this.stopping = true;
    if (this.reconnectTimer) clearTimeout(this.reconnectTimer);
    if (this.client.connected) {
      // A broker that stopped answering must not hold up the stop: wait a little, not forever.
      let timer: NodeJS.Timeout | undefined;
      const limit = new Promise<void>((resolve) => (timer = setTimeout(resolve, STOP_WAIT_MS)));
      await Promise.race([Promise.allSettled(lastMessages.map((m) => this.client.publishAsync(m.topic, m.payload, this.publishOptions(m.options)))), limit]);
      clearTimeout(timer);
    }
    // Forced: the last messages are acknowledged (or given up); a clean end would wait for every
    // message in flight, and the broker's last will says `offline` as we just did.
    await this.client.endAsync(true);
  }

  /**
   * With a clean session mqtt.js never sends again a QoS 1 message that was in flight when the
   * connection dropped, yet keeps its callback for ever (a leak, and a clean end() would wait on
   * it). Everything is re-sent fresh on connect, so such messages are given up here.
   */
  private dropInFlight(): void {
    for (const key of Object.keys(this.client.outgoing)) {
      const messageId = Number(key);
      const entry = this.client.outgoing[messageId];
      delete this.client.outgoing[messageId];
      this.client.outgoingStore.del({ messageId }, () => undefined);
      entry.cb(new Error('connection lost'));
    }
  }

  private scheduleReconnect(): void {
    if (this.reconnectTimer) return;
    // A broker that refused our credentials gets slow retries, not a crash loop or a flood.
    const delay = this.lastRefusal !== null ? Math.max(this.backoff.next(), Math.min(30_000, this.options.reconnectMaxMs)) : this.backoff.next();
    this.options.logger.info({ delayMs: delay }, `MQTT reconnect in ${(delay / 1000).toFixed(1)} s`);
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = null;
      if (!this.stopping) this.client.reconnect();
    }, delay);
  }

  private clientOptions(): IClientOptions {
    const { options } = this;
    const tls = options.tls;
    return {
      clientId: options.clientId,
      username: options.username || undefined,
      password: options.password || undefined,
      protocolVersion: options.protocolVersion,
      clean: true,
      keepalive: 30,
      connectTimeout: 10_000,
      // Reconnects are ours (capped backoff); mqtt.js would retry at a fixed period.
      reconnectPeriod: 0,
      queueQoSZero: false,
      will: { topic: options.will.topic, payload: Buffer.from(options.will.payload), qos: 1, retain: true },
      ca: tls?.ca ? readFileSync(tls.ca) : undefined,
      cert: tls?.cert ? readFileSync(tls.cert) : undefined,
      key: tls?.key ? readFileSync(tls.key) : undefined,
      rejectUnauthorized: tls?.rejectUnauthorized ?? true,
      servername: tls?.servername || undefined,
    };
  }
}
