// Parsing untrusted cloud JSON into typed records: pure, no I/O. A bad record is reported by its
// id/sn and skipped; it never stops the others.

export type Metadata = Record<string, unknown>;

export interface DeviceRecord {
  id: number | string | null;
  sn: string;
  name: string;
  /** The secret; kept apart from `meta`, which may be published. */
  totpKey: string;
  /** Everything the cloud said of the device except `totp_key`. */
  meta: Metadata;
}

export interface DevicePage {
  devices: DeviceRecord[];
  next: string | null;
  problems: string[];
  /** Serial numbers of refused records: still in the account, but their record is broken. */
  refused: string[];
}

/** Serial numbers become topic segments and discovery ids, so only these characters pass. */
const SAFE_SN = /^[A-Za-z0-9_-]{1,64}$/;

/** `bridge` names the bridge's own topics and discovery id (`<base>/bridge/info`, `hmarex2mqtt_bridge`). */
export const RESERVED_SN = 'bridge';

export function isSafeSegment(value: string): boolean {
  return SAFE_SN.test(value);
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** Untrusted text made safe for a log line: printable ASCII, at most `max` characters. */
export function printable(text: string, max: number): string {
  const clean = text.replace(/[^\x20-\x7e]/g, '?');
  return clean.length > max ? `${clean.slice(0, max - 3)}...` : clean;
}

/** A short, printable description of an untrusted value for log messages. */
export function describeValue(value: unknown): string {
  if (Array.isArray(value)) return '(a list)';
  if (typeof value === 'object' && value !== null) return '(an object)';
  return printable(typeof value === 'string' ? JSON.stringify(value) : String(value), 40);
}

/** Records nest a few levels; far deeper ones would overflow the stack when serialised. */
const MAX_DEPTH = 32;

/** Whether `value` nests deeper than `levels`; the recursion stops there, so it cannot overflow. */
function nestsDeeperThan(value: unknown, levels: number): boolean {
  if (typeof value !== 'object' || value === null) return false;
  if (levels === 0) return true;
  return Object.values(value).some((child) => nestsDeeperThan(child, levels - 1));
}

function recordLabel(raw: Record<string, unknown>, index: number): string {
  const parts = [`#${index}`];
  if (typeof raw.id === 'number' || typeof raw.id === 'string') parts.push(`id ${describeValue(raw.id)}`);
  if (raw.sn !== undefined) parts.push(`sn ${describeValue(raw.sn)}`);
  return `device record ${parts.join(', ')}`;
}

/** One device record; returns a problem text instead of throwing. */
export function parseDevice(raw: unknown, index: number): DeviceRecord | string {
  if (!isObject(raw)) return `device record #${index} is not an object`;
  const label = recordLabel(raw, index);
  if (nestsDeeperThan(raw, MAX_DEPTH)) return `${label} skipped: nested more than ${MAX_DEPTH} levels deep`;
  const { totp_key: totpKey, ...meta } = raw;
  const sn = typeof raw.sn === 'number' ? String(raw.sn) : raw.sn;
  if (sn === undefined || sn === null || sn === '') return `${label} skipped: no sn`;
  if (typeof sn !== 'string') return `${label} skipped: sn is neither text nor a number`;
  if (!isSafeSegment(sn)) {
    return `${label} skipped: sn may only hold letters, digits, '_' and '-' (at most 64)`;
  }
  if (sn === RESERVED_SN) return `${label} skipped: sn "${RESERVED_SN}" would clash with the bridge's own topics`;
  // The key is never quoted, only what is wrong with it.
  if (totpKey === undefined || totpKey === null) return `${label} skipped: no usable totp_key (missing)`;
  if (typeof totpKey !== 'string') return `${label} skipped: no usable totp_key (not text)`;
  if (totpKey === '') return `${label} skipped: no usable totp_key (empty)`;
  const id = typeof raw.id === 'number' || typeof raw.id === 'string' ? raw.id : null;
  const name = typeof raw.name === 'string' && raw.name.trim() !== '' ? raw.name : sn;
  return { id, sn, name, totpKey, meta: { ...meta, sn } };
}

/** One page of `GET device/`, the Django REST Framework envelope, or a bare list. */
export function parseDevicePage(body: unknown, firstIndex = 0): DevicePage {
  let results: unknown;
  let next: string | null = null;
  if (Array.isArray(body)) {
    results = body;
  } else if (isObject(body)) {
    results = body.results;
    if (body.next !== undefined && body.next !== null) {
      if (typeof body.next !== 'string') throw new TypeError('device list: "next" is not a string');
      next = body.next === '' ? null : body.next;
    }
  } else {
    throw new TypeError('device list: the body is not a JSON object');
  }
  if (!Array.isArray(results)) throw new TypeError('device list: "results" is not a list');
  const devices: DeviceRecord[] = [];
  const problems: string[] = [];
  const refused: string[] = [];
  results.forEach((raw, offset) => {
    const parsed = parseDevice(raw, firstIndex + offset);
    if (typeof parsed !== 'string') {
      devices.push(parsed);
      return;
    }
    problems.push(parsed);
    const sn = isObject(raw) && typeof raw.sn === 'string' ? raw.sn : null;
    if (sn !== null && isSafeSegment(sn) && sn !== RESERVED_SN) refused.push(sn);
  });
  return { devices, next, problems, refused };
}

/** Later duplicates of a serial number are dropped: two keys for one topic cannot both be right. */
export function dedupeBySerial(devices: DeviceRecord[]): { devices: DeviceRecord[]; problems: string[] } {
  const seen = new Map<string, DeviceRecord>();
  const problems: string[] = [];
  for (const device of devices) {
    const first = seen.get(device.sn);
    if (first) {
      problems.push(
        `device record id ${describeValue(device.id)} skipped: sn ${device.sn} is already used by id ${describeValue(first.id)}`,
      );
    } else {
      seen.set(device.sn, device);
    }
  }
  return { devices: [...seen.values()], problems };
}
