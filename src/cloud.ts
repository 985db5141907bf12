// The Hmarex cloud client: login, the paginated device list, one shared re-login when the token
// stops working. Every answer is untrusted: size, time, host and shape are checked at this edge.
import { Agent, request, type Dispatcher } from 'undici';
import { dedupeBySerial, parseDevicePage, printable, type DeviceRecord } from './devices.js';

export type CloudErrorKind = 'auth_failed' | 'unavailable' | 'rate_limited' | 'bad_response';

export class CloudError extends Error {
  constructor(
    readonly kind: CloudErrorKind,
    message: string,
    readonly retryAfterMs?: number,
  ) {
    super(message);
    this.name = 'CloudError';
  }
}

export type RequestOutcome = 'ok' | 'unauthorized' | 'rate_limited' | 'server_error' | 'client_error' | 'network_error' | 'bad_response';

export interface CloudHooks {
  request?(endpoint: 'login' | 'device', outcome: RequestOutcome): void;
  login?(): void;
  /** The cloud's Date header minus the local clock, in ms (whole-second resolution). */
  clockSkew?(skewMs: number): void;
}

export interface CloudOptions {
  baseUrl: string;
  email: string;
  password: string;
  timeoutMs: number;
  maxBodyBytes?: number;
  maxPages?: number;
  hooks?: CloudHooks;
  now?: () => number;
  /** For tests that need their own connection behaviour. */
  dispatcher?: Dispatcher;
}

export interface DeviceList {
  devices: DeviceRecord[];
  problems: string[];
  /** Serial numbers whose records were refused (see DevicePage.refused). */
  refused: string[];
}

/** A clock difference from the cloud's above this makes codes fail near window edges: warn. */
export const CLOCK_SKEW_WARN_MS = 5000;

const DEFAULT_MAX_BODY_BYTES = 8 * 1024 * 1024;
const DEFAULT_MAX_PAGES = 1000;

interface Response {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Buffer;
}

function header(headers: Response['headers'], name: string): string | undefined {
  const value = headers[name];
  return Array.isArray(value) ? value[0] : value;
}

/** Retry-After in seconds or as an HTTP date. */
export function parseRetryAfter(value: string | undefined, nowMs: number): number | undefined {
  if (!value) return undefined;
  if (/^\d+$/.test(value.trim())) return Number(value.trim()) * 1000;
  const date = Date.parse(value);
  return Number.isNaN(date) ? undefined : Math.max(0, date - nowMs);
}

function networkErrorText(error: unknown): string {
  const err = error as { code?: string; name?: string; cause?: { code?: string } };
  const code = err.code ?? err.cause?.code;
  if (err.name === 'TimeoutError' || err.name === 'AbortError' || code === 'UND_ERR_HEADERS_TIMEOUT' || code === 'UND_ERR_BODY_TIMEOUT') {
    return 'no complete answer within the time limit (hmarex.timeout_ms)';
  }
  if (code === 'ECONNREFUSED') return 'connection refused';
  if (code === 'ENOTFOUND' || code === 'EAI_AGAIN') return 'host name not found (DNS)';
  if (code === 'UND_ERR_SOCKET' || code === 'ECONNRESET') return 'connection closed by the server';
  return code ? `network error ${code}` : 'network error';
}

export class CloudClient {
  private token: string | null = null;
  /** Kept only so that an error text echoing it can be recognised and dropped. */
  private previousToken: string | null = null;
  private loginInFlight: Promise<string> | null = null;
  private readonly base: URL;
  private readonly dispatcher: Dispatcher;
  private readonly ownsDispatcher: boolean;
  private readonly now: () => number;

  constructor(private readonly options: CloudOptions) {
    this.base = new URL(options.baseUrl.endsWith('/') ? options.baseUrl : `${options.baseUrl}/`);
    this.now = options.now ?? Date.now;
    this.ownsDispatcher = !options.dispatcher;
    this.dispatcher =
      options.dispatcher ??
      new Agent({ connect: { timeout: options.timeoutMs }, keepAliveTimeout: 10_000, headersTimeout: options.timeoutMs, bodyTimeout: options.timeoutMs });
  }

  async close(): Promise<void> {
    // destroy, not close: a request hanging on a dead cloud must not hold up a stop.
    if (this.ownsDispatcher) await this.dispatcher.destroy();
  }

  /** Every device of the account, all pages, duplicates and bad records reported, not thrown. */
  async listDevices(): Promise<DeviceList> {
    const devices: DeviceRecord[] = [];
    const problems: string[] = [];
    const refused: string[] = [];
    let url: URL | null = new URL('device/', this.base);
    for (let page = 1; url; page += 1) {
      if (page > (this.options.maxPages ?? DEFAULT_MAX_PAGES)) {
        throw new CloudError('bad_response', `device list: more than ${this.options.maxPages ?? DEFAULT_MAX_PAGES} pages, stopped following "next"`);
      }
      const body = await this.authorizedJson(url, `device list page ${page}`);
      let parsed;
      try {
        parsed = parseDevicePage(body, devices.length + problems.length);
      } catch (error) {
        throw new CloudError('bad_response', `${(error as Error).message} (page ${page})`);
      }
      devices.push(...parsed.devices);
      problems.push(...parsed.problems);
      refused.push(...parsed.refused);
      url = parsed.next ? this.sameOrigin(parsed.next, url) : null;
    }
    const deduped = dedupeBySerial(devices);
    return { devices: deduped.devices, problems: [...problems, ...deduped.problems], refused };
  }

  /** The token must only ever go to the configured host: a `next` elsewhere is refused. */
  private sameOrigin(next: string, current: URL): URL {
    let url: URL;
    try {
      url = new URL(next, current);
    } catch {
      throw new CloudError('bad_response', 'device list: "next" is not a URL');
    }
    if (url.origin !== this.base.origin) {
      throw new CloudError('bad_response', `device list: "next" points to another host (${url.host}); refused to send the token there`);
    }
    return url;
  }

  private async authorizedJson(url: URL, what: string): Promise<unknown> {
    const token = this.token ?? (await this.renewToken(null));
    let response = await this.send('device', url, 'GET', token);
    if (response.status === 401 || response.status === 403) {
      const fresh = await this.renewToken(token);
      response = await this.send('device', url, 'GET', fresh);
      if (response.status === 401 || response.status === 403) {
        this.forgetToken();
        throw new CloudError('auth_failed', `${what}: HTTP ${response.status} even with a fresh token; the account may lack access`);
      }
    }
    return this.json(response, what);
  }

  /**
   * One login shared by every caller whose token `stale` failed: a caller that arrives after
   * someone else already renewed gets the new token without another login.
   */
  private renewToken(stale: string | null): Promise<string> {
    if (this.token !== null && this.token !== stale) return Promise.resolve(this.token);
    this.forgetToken();
    this.loginInFlight ??= this.login().finally(() => {
      this.loginInFlight = null;
    });
    return this.loginInFlight;
  }

  private forgetToken(): void {
    this.previousToken = this.token ?? this.previousToken;
    this.token = null;
  }

  private async login(): Promise<string> {
    this.options.hooks?.login?.();
    const body = JSON.stringify({ email: this.options.email, password: this.options.password });
    const response = await this.send('login', new URL('login/', this.base), 'POST', null, body);
    if (response.status === 400 || response.status === 401 || response.status === 403) {
      throw new CloudError(
        'auth_failed',
        `login refused (HTTP ${response.status}${this.detail(response)}): check hmarex.email and hmarex.password`,
      );
    }
    const parsed = this.json(response, 'login');
    const token = typeof parsed === 'object' && parsed !== null ? (parsed as Record<string, unknown>).access_token : undefined;
    if (typeof token !== 'string' || token === '') throw new CloudError('bad_response', 'login: the answer has no access_token');
    this.token = token;
    return token;
  }

  /** A short reason from a DRF error body, never echoing what we sent. */
  private detail(response: Response): string {
    try {
      const parsed = JSON.parse(response.body.toString('utf8')) as unknown;
      const first = typeof parsed === 'object' && parsed !== null ? Object.values(parsed)[0] : undefined;
      const text = Array.isArray(first) ? first[0] : first;
      if (typeof text !== 'string') return '';
      // Checked on the whole text: a cut could leave half a secret behind.
      const secrets = [this.options.password, this.options.email, this.token, this.previousToken];
      if (secrets.some((s) => s && text.includes(s))) return '';
      return `: ${printable(text, 120)}`;
    } catch {
      return '';
    }
  }

  private json(response: Response, what: string): unknown {
    const { status } = response;
    if (status === 429) {
      const retryAfter = parseRetryAfter(header(response.headers, 'retry-after'), this.now());
      throw new CloudError('rate_limited', `${what}: HTTP 429 too many requests`, retryAfter);
    }
    if (status >= 500) throw new CloudError('unavailable', `${what}: HTTP ${status} from the cloud`);
    if (status < 200 || status >= 300) throw new CloudError('bad_response', `${what}: HTTP ${status}${this.detail(response)}`);
    try {
      return JSON.parse(response.body.toString('utf8')) as unknown;
    } catch {
      const type = header(response.headers, 'content-type') ?? 'no content type';
      throw new CloudError('bad_response', `${what}: the answer is not JSON (${printable(type.split(';')[0], 60)})`);
    }
  }

  private async send(endpoint: 'login' | 'device', url: URL, method: 'GET' | 'POST', token: string | null, body?: string): Promise<Response> {
    const headers: Record<string, string> = { accept: 'application/json', 'accept-language': 'en' };
    if (body !== undefined) headers['content-type'] = 'application/json';
    if (token) headers.authorization = `Token ${token}`;
    const limit = this.options.maxBodyBytes ?? DEFAULT_MAX_BODY_BYTES;
    const signal = AbortSignal.timeout(this.options.timeoutMs);
    let response: Response;
    try {
      const res = await request(url, { method, headers, body, signal, dispatcher: this.dispatcher });
      const chunks: Buffer[] = [];
      let size = 0;
      for await (const chunk of res.body) {
        size += (chunk as Buffer).length;
        if (size > limit) {
          res.body.destroy();
          this.options.hooks?.request?.(endpoint, 'bad_response');
          throw new CloudError('bad_response', `${endpoint}: the answer is larger than ${limit} bytes`);
        }
        chunks.push(chunk as Buffer);
      }
      response = { status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks) };
    } catch (error) {
      if (error instanceof CloudError) throw error;
      this.options.hooks?.request?.(endpoint, 'network_error');
      throw new CloudError('unavailable', `${endpoint}: ${networkErrorText(error)}`);
    }
    this.noteServerDate(header(response.headers, 'date'));
    this.options.hooks?.request?.(endpoint, outcomeOf(response.status));
    return response;
  }

  private noteServerDate(date: string | undefined): void {
    if (!date) return;
    const server = Date.parse(date);
    // The header is truncated to the second: its midpoint is the best estimate.
    if (!Number.isNaN(server)) this.options.hooks?.clockSkew?.(server + 500 - this.now());
  }
}

function outcomeOf(status: number): RequestOutcome {
  if (status === 401 || status === 403) return 'unauthorized';
  if (status === 429) return 'rate_limited';
  if (status >= 500) return 'server_error';
  if (status >= 400) return 'client_error';
  return 'ok';
}
