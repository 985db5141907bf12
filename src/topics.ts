// Topic names and non-discovery payloads: pure. Serial numbers reaching here have passed
// isSafeSegment, so no device data can widen a topic.
import { RESERVED_SN, isSafeSegment } from './devices.js';
import type { Code, TotpSettings } from './totp.js';

export interface Topics {
  state: string;
  info: string;
  devices: string;
  requestRefresh: string;
  requestFilter: string;
  deviceInfo(sn: string): string;
  deviceTotp(sn: string): string;
  deviceInfoFilter: string;
  discovery(objectId: string): string;
  discoveryFilter: string;
  haStatus: string;
}

export function buildTopics(base: string, discoveryPrefix: string, haStatus: string): Topics {
  return {
    state: `${base}/bridge/state`,
    info: `${base}/bridge/info`,
    devices: `${base}/bridge/devices`,
    requestRefresh: `${base}/bridge/request/refresh`,
    requestFilter: `${base}/bridge/request/#`,
    deviceInfo: (sn) => `${base}/${sn}/info`,
    deviceTotp: (sn) => `${base}/${sn}/totp`,
    deviceInfoFilter: `${base}/+/info`,
    discovery: (objectId) => `${discoveryPrefix}/device/${objectId}/config`,
    discoveryFilter: `${discoveryPrefix}/device/+/config`,
    haStatus,
  };
}

/**
 * `base/<sn>/info` -> sn, or null for other topics (the bridge's own among them). Anyone on the
 * broker can publish there: only a serial number that could be ours is taken.
 */
export function serialFromInfoTopic(base: string, topic: string): string | null {
  const prefix = `${base}/`;
  if (!topic.startsWith(prefix) || !topic.endsWith('/info')) return null;
  const sn = topic.slice(prefix.length, -'/info'.length);
  return sn !== RESERVED_SN && isSafeSegment(sn) ? sn : null;
}

export interface TotpPayload {
  sn: string;
  auth: string;
  time: string;
  valid_from: string;
  valid_until: string;
  period: number;
  digits: number;
}

export function totpPayload(sn: string, code: Code, settings: Pick<TotpSettings, 'period' | 'digits'>): TotpPayload {
  return {
    sn,
    auth: code.auth,
    time: code.time,
    valid_from: new Date(code.validFromMs).toISOString(),
    valid_until: new Date(code.validUntilMs).toISOString(),
    period: settings.period,
    digits: settings.digits,
  };
}

export type CloudStatus = 'online' | 'offline' | 'auth_failed' | 'starting';

export interface BridgeInfo {
  version: string;
  cloud: CloudStatus;
  device_count: number;
  last_refresh: string | null;
  last_error: string | null;
  clock_skew_s: number | null;
  /** Set while the local clock differs from the cloud's by more than a few seconds. */
  clock_warning: string | null;
  cache_saved_at: string | null;
}
