// A simulated Hmarex cloud on loopback, answering as the documented API does (DRF envelopes,
// Token auth, pagination), with switchable failures. `demo`, the tests and the benchmark use it.
import { createHash, randomBytes } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';

export type SimFault =
  | { kind: 'none' }
  | { kind: 'status'; status: number; body?: string; contentType?: string; retryAfter?: string }
  | { kind: 'hang' }
  | { kind: 'close' }
  | { kind: 'trickle'; intervalMs: number }
  | { kind: 'body'; body: string; contentType?: string };

export interface SimDevice extends Record<string, unknown> {
  id: number;
  sn: string;
  name: string;
  totp_key: string;
}

export interface SimCloudOptions {
  email?: string;
  password?: string;
  devices?: SimDevice[];
  pageSize?: number;
  /** Shift of the Date header against the local clock, to simulate clock skew. */
  dateOffsetMs?: number;
}

export interface SimCounters {
  logins: number;
  failedLogins: number;
  deviceRequests: number;
  unauthorized: number;
}

const BASE32 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';

export const SIM_EMAIL = 'demo@example.com';
export const SIM_PASSWORD = 'demo-password';

/** A plausible thermostat record, as public client code shows them. */
export function simDevice(index: number, overrides: Partial<SimDevice> = {}): SimDevice {
  const sn = `1100150010434B583635${String(index).padStart(10, '0')}`;
  // Deterministic, so a run can be checked against an independent computation; base32 letters,
  // so both key encodings accept it.
  const digest = createHash('sha256').update(`sim-key-${index}`).digest();
  const key = [...digest.subarray(0, 16)].map((byte) => BASE32[byte % 32]).join('');
  return {
    id: 18800 + index,
    sn,
    name: `Room ${index}`,
    type: 'ax',
    version_name: '2.4',
    readonly: false,
    data: {
      temp_current: 20 + (index % 5),
      temp_setpoint: 23,
      is_online: true,
      wifi_level: -60 - (index % 20),
    },
    totp_key: key,
    ...overrides,
  };
}

export class SimCloud {
  readonly counters: SimCounters = { logins: 0, failedLogins: 0, deviceRequests: 0, unauthorized: 0 };
  devices: SimDevice[];
  pageSize: number;
  email: string;
  password: string;
  dateOffsetMs: number;
  /** Applies to every request until changed. */
  fault: SimFault = { kind: 'none' };
  /** Applies to login requests only (on top of `fault`). */
  loginFault: SimFault = { kind: 'none' };
  /** The status for a token that is unknown or revoked: the real cloud answers 401, proxies 403. */
  rejectTokensWith: 401 | 403 = 401;
  /** Rewrites a device-list page before it is sent, for hostile answers. */
  pageHook: ((page: Record<string, unknown>, pageNumber: number) => unknown) | null = null;
  private readonly tokens = new Set<string>();
  /** Every token ever handed out, revoked ones too: tests search logs and payloads for them. */
  readonly issuedTokens: string[] = [];
  private readonly server: Server;
  private readonly sockets = new Set<Socket>();
  private readonly waiters: Array<() => void> = [];
  private port = 0;

  constructor(options: SimCloudOptions = {}) {
    this.email = options.email ?? SIM_EMAIL;
    this.password = options.password ?? SIM_PASSWORD;
    this.devices = options.devices ?? [1, 2, 3].map((i) => simDevice(i));
    this.pageSize = options.pageSize ?? 10;
    this.dateOffsetMs = options.dateOffsetMs ?? 0;
    this.server = createServer((req, res) => this.handle(req, res));
    this.server.on('connection', (socket) => {
      this.sockets.add(socket);
      socket.on('close', () => this.sockets.delete(socket));
    });
  }

  async start(port = 0): Promise<string> {
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(port, '127.0.0.1', () => resolve());
    });
    this.port = (this.server.address() as AddressInfo).port;
    return this.url;
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}/api/`;
  }

  /** Every token issued so far stops working, as after a password change or a revocation. */
  revokeTokens(): void {
    this.tokens.clear();
  }

  async stop(): Promise<void> {
    for (const socket of this.sockets) socket.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  /** Resolves after the next request has been answered (or failed). */
  nextRequest(): Promise<void> {
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  private settle(): void {
    for (const resolve of this.waiters.splice(0)) resolve();
  }

  private handle(req: IncomingMessage, res: ServerResponse): void {
    res.on('close', () => this.settle());
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      const url = new URL(req.url ?? '/', 'http://127.0.0.1');
      const isLogin = url.pathname === '/api/login/';
      const fault = isLogin && this.loginFault.kind !== 'none' ? this.loginFault : this.fault;
      if (this.applyFault(fault, req, res)) return;
      if (isLogin && req.method === 'POST') return this.login(Buffer.concat(chunks).toString('utf8'), res);
      if (url.pathname === '/api/device/' && req.method === 'GET') return this.deviceList(req, url, res);
      this.send(res, 404, { detail: 'Not found.' });
    });
  }

  private applyFault(fault: SimFault, req: IncomingMessage, res: ServerResponse): boolean {
    switch (fault.kind) {
      case 'none':
        return false;
      case 'status': {
        const headers: Record<string, string> = { 'content-type': fault.contentType ?? 'application/json' };
        if (fault.retryAfter !== undefined) headers['retry-after'] = fault.retryAfter;
        res.writeHead(fault.status, { ...headers, date: this.date() });
        res.end(fault.body ?? JSON.stringify({ detail: `simulated ${fault.status}` }));
        return true;
      }
      case 'hang':
        return true;
      case 'close':
        req.socket.destroy();
        return true;
      case 'body':
        res.writeHead(200, { 'content-type': fault.contentType ?? 'application/json', date: this.date() });
        res.end(fault.body);
        return true;
      case 'trickle': {
        res.writeHead(200, { 'content-type': 'application/json', date: this.date() });
        const timer = setInterval(() => res.write(' '), fault.intervalMs);
        res.on('close', () => clearInterval(timer));
        return true;
      }
    }
  }

  private date(): string {
    return new Date(Date.now() + this.dateOffsetMs).toUTCString();
  }

  private send(res: ServerResponse, status: number, body: unknown): void {
    res.writeHead(status, { 'content-type': 'application/json', date: this.date() });
    res.end(JSON.stringify(body));
  }

  private login(text: string, res: ServerResponse): void {
    this.counters.logins += 1;
    let body: { email?: unknown; password?: unknown } = {};
    try {
      body = JSON.parse(text) as typeof body;
    } catch {
      this.counters.failedLogins += 1;
      return this.send(res, 400, { detail: 'JSON parse error' });
    }
    if (body.email !== this.email || body.password !== this.password) {
      this.counters.failedLogins += 1;
      return this.send(res, 400, { non_field_errors: ['Unable to log in with provided credentials.'] });
    }
    const token = randomBytes(20).toString('hex');
    this.tokens.add(token);
    this.issuedTokens.push(token);
    this.send(res, 200, { access_token: token, user_name: 'myterneo', is_timezone_chosen: true });
  }

  private deviceList(req: IncomingMessage, url: URL, res: ServerResponse): void {
    this.counters.deviceRequests += 1;
    const auth = /^Token (\S+)$/.exec(req.headers.authorization ?? '');
    if (!auth || !this.tokens.has(auth[1])) {
      this.counters.unauthorized += 1;
      return this.send(res, this.rejectTokensWith, { detail: 'Invalid token.' });
    }
    const pageNumber = Number(url.searchParams.get('page') ?? '1');
    const start = (pageNumber - 1) * this.pageSize;
    const results = this.devices.slice(start, start + this.pageSize);
    const pageUrl = (n: number) => `http://127.0.0.1:${this.port}/api/device/?page=${n}`;
    const page: Record<string, unknown> = {
      count: this.devices.length,
      next: start + this.pageSize < this.devices.length ? pageUrl(pageNumber + 1) : null,
      previous: pageNumber > 1 ? pageUrl(pageNumber - 1) : null,
      results,
    };
    this.send(res, 200, this.pageHook ? this.pageHook(page, pageNumber) : page);
  }
}
