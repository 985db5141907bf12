// The device cache: the last device list and keys read from the cloud, so that a restart during a
// cloud outage still publishes codes. It holds keys, so it is written 0600 in a 0700 folder, and
// atomically (write, fsync, rename) so a crash never leaves half a file.
import { chmod, mkdir, open, readFile, rename } from 'node:fs/promises';
import { join } from 'node:path';
import { parseDevicePage, type DeviceRecord } from './devices.js';

export const CACHE_FILE = 'devices.json';

export interface CachedDevices {
  devices: DeviceRecord[];
  savedAt: Date;
}

interface CacheFileV1 {
  version: 1;
  saved_at: string;
  devices: Array<Record<string, unknown>>;
}

export class DeviceCache {
  readonly path: string;

  constructor(private readonly dir: string) {
    this.path = join(dir, CACHE_FILE);
  }

  async save(devices: DeviceRecord[], savedAt: Date): Promise<void> {
    await mkdir(this.dir, { recursive: true, mode: 0o700 });
    await chmod(this.dir, 0o700);
    const content: CacheFileV1 = {
      version: 1,
      saved_at: savedAt.toISOString(),
      devices: devices.map((d) => ({ ...d.meta, totp_key: d.totpKey })),
    };
    const temp = `${this.path}.${process.pid}.tmp`;
    const handle = await open(temp, 'w', 0o600);
    try {
      await handle.writeFile(JSON.stringify(content));
      await handle.sync();
    } finally {
      await handle.close();
    }
    await rename(temp, this.path);
  }

  /** null when there is no cache; throws with a readable message when it is unusable. */
  async load(): Promise<CachedDevices | null> {
    let text: string;
    try {
      text = await readFile(this.path, 'utf8');
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return null;
      throw new Error(`device cache ${this.path}: cannot read (${(error as NodeJS.ErrnoException).code})`);
    }
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch {
      throw new Error(`device cache ${this.path}: not JSON, ignored`);
    }
    const file = parsed as Partial<CacheFileV1>;
    const savedAt = new Date(String(file.saved_at));
    if (file.version !== 1 || Number.isNaN(savedAt.getTime())) {
      throw new Error(`device cache ${this.path}: unknown format, ignored`);
    }
    return { devices: parseDevicePage(file.devices).devices, savedAt };
  }
}
