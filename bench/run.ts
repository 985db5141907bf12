// `npm run bench`: the real bridge (`node dist/main.js run`) against the simulated cloud and a
// mosquitto of its own, side by side with the floor (bare mqtt.js) and the naive script (oathtool +
// mosquitto_pub), for N = 10, 1,000 and 10,000 thermostats. Prints a table and writes
// bench/results/latest.json. Loopback only; every process it starts is ended by its pid.
import { execFileSync, fork, spawn, type ChildProcess } from 'node:child_process';
import { closeSync, mkdirSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, totalmem } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { SIM_EMAIL, SIM_PASSWORD, SimCloud, simDevice } from '../src/simcloud.js';
import type { BridgeInfo } from '../src/topics.js';
import { windowAt } from '../src/totp.js';
import { Mosquitto, ROOT, Recorder, tempDir, waitUntil, type Received } from '../test/helpers.js';
import { cpuMs, peakRssMB, quantile } from './proc.js';
import type { FromSubscriber, ToSubscriber, WindowLags } from './protocol.js';

const PERIOD_S = 2;
const WINDOWS = 10;
/** Windows let pass before measuring: start-up bursts over, the JIT warm (a daemon runs for days). */
const WARMUP_WINDOWS = 3;
const PAGE_SIZE = 100;
/** `npm run bench -- 1000` measures one size only (quicker when working on one). */
const SIZES = process.argv.length > 2 ? process.argv.slice(2).map(Number) : [10, 1000, 10_000];
if (!SIZES.every((n) => Number.isInteger(n) && n > 0)) {
  process.stderr.write('usage: npm run bench [-- N ...]   (N: numbers of thermostats; default 10 1000 10000)\n');
  process.exit(2);
}
/** The naive loop takes seconds per pass at 1,000 and minutes at 10,000: fewer passes, then extrapolation. */
const NAIVE_PASSES = new Map([
  [10, WINDOWS],
  [1000, 1],
]);
const DEADLINE_MS = 9 * 60_000;
const TOTP = { period: PERIOD_S, epoch: '2000' as const };
const PERIOD_MS = PERIOD_S * 1000;
const BENCH = join(ROOT, 'bench');
/** The floor and the subscriber, compiled: under tsx a process spends some 9 ms of CPU a second idle. */
const COMPILED = join(ROOT, 'node_modules', '.cache', 'hmarex2mqtt-bench');

type Contender = 'floor' | 'bridge' | 'naive';

interface Row {
  n: number;
  contender: Contender;
  lagMs: { p50: number; p99: number; max: number };
  delivered: number;
  expected: number;
  cpuPerWindowMs: number;
  peakRssMB: number | null;
  /** From process start to the first code / to a code of every thermostat, at the subscriber. */
  firstCodeMs: number | null;
  allCodesMs: number | null;
  refresh: { ms: number; pages: number } | null;
  note?: string;
}

// ---- processes: every one is tracked and killed by its pid, also when the benchmark fails.
const children = new Set<ChildProcess>();
const brokers = new Set<Mosquitto>();
const dirs = new Set<string>();

function track<T extends ChildProcess>(child: T): T {
  children.add(child);
  child.once('exit', () => children.delete(child));
  return child;
}

process.on('exit', () => {
  for (const child of children) child.kill('SIGKILL');
  for (const broker of brokers) {
    void broker.stop();
    rmSync(broker.dir, { recursive: true, force: true });
  }
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
});
for (const signal of ['SIGINT', 'SIGTERM'] as const) process.on(signal, () => process.exit(130));
setTimeout(() => {
  process.stderr.write(`benchmark: over its ${DEADLINE_MS / 60_000} min limit; stopped\n`);
  process.exit(1);
}, DEADLINE_MS).unref();

function exited(child: ChildProcess, timeoutMs: number): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`process ${child.pid} did not exit within ${timeoutMs} ms`)), timeoutMs);
    child.once('exit', () => {
      clearTimeout(timer);
      resolve();
    });
  });
}

/** SIGTERM, then SIGKILL if it has not gone within a few seconds. */
async function stop(child: ChildProcess): Promise<void> {
  child.kill('SIGTERM');
  await exited(child, 8000).catch(() => child.kill('SIGKILL'));
}

function scratchDir(): string {
  const dir = tempDir('hmarex2mqtt-bench-');
  dirs.add(dir);
  return dir;
}

const wallNow = () => performance.timeOrigin + performance.now();

async function sleepUntil(wallMs: number): Promise<void> {
  const wait = wallMs - Date.now();
  if (wait > 0) await sleep(wait);
}

function pidOf(child: ChildProcess): number {
  if (child.pid === undefined) throw new Error('a child process did not start');
  return child.pid;
}

// ---- the subscriber process
class Subscriber {
  private constructor(private readonly child: ChildProcess) {}

  static async start(url: string, filter: string): Promise<Subscriber> {
    // execArgv: not the benchmark's own `--import tsx`, which fork would pass on.
    const child = track(fork(join(COMPILED, 'bench', 'subscriber.js'), [url, filter], { execArgv: [] }));
    const subscriber = new Subscriber(child);
    await subscriber.next('ready');
    return subscriber;
  }

  private next<T extends FromSubscriber['type']>(type: T, request?: ToSubscriber): Promise<Extract<FromSubscriber, { type: T }>> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`subscriber: no ${type} within 20 s`)), 20_000);
      this.child.once('message', (message: FromSubscriber) => {
        clearTimeout(timer);
        if (message.type === type) resolve(message as Extract<FromSubscriber, { type: T }>);
        else reject(new Error(`subscriber: ${message.type} instead of ${type}`));
      });
      if (request) this.child.send(request);
    });
  }

  status() {
    return this.next('status', { type: 'status' });
  }

  async windows(): Promise<WindowLags[]> {
    return (await this.next('report', { type: 'report' })).windows;
  }

  async close(): Promise<void> {
    this.child.disconnect();
    await exited(this.child, 5000).catch(() => this.child.kill('SIGKILL'));
  }
}

// ---- measurement
function lagStats(windows: WindowLags[]): { lagMs: Row['lagMs']; delivered: number } {
  const lags = windows.flatMap((w) => w.lags).sort((a, b) => a - b);
  return { lagMs: { p50: quantile(lags, 0.5), p99: quantile(lags, 0.99), max: lags.at(-1) ?? Number.NaN }, delivered: lags.length };
}

/**
 * WINDOWS boundaries after WARMUP_WINDOWS. CPU is read in mid-window (the bridge prepares the next
 * window's codes then: the reading is taken a little after that, at 3/4 of the window).
 */
async function measureWindows(pid: number, subscriber: Subscriber, n: number) {
  const first = windowAt(Date.now(), TOTP).validUntilMs + WARMUP_WINDOWS * PERIOD_MS;
  const end = first + WINDOWS * PERIOD_MS;
  await sleepUntil(first - PERIOD_MS / 4);
  const cpuStart = cpuMs(pid);
  await sleepUntil(end - PERIOD_MS / 4);
  const cpuPerWindowMs = (cpuMs(pid) - cpuStart) / WINDOWS;
  // Late codes of the last window still count; the next window's do not.
  await sleepUntil(end + PERIOD_MS / 4);
  const windows = (await subscriber.windows()).filter((w) => w.validFromMs >= first && w.validFromMs < end);
  return { ...lagStats(windows), expected: n * WINDOWS, cpuPerWindowMs };
}

async function waitForAll(subscriber: Subscriber, n: number, what: string) {
  return waitUntil(
    async () => {
      const status = await subscriber.status();
      return status.topics >= n && status.firstAt !== null && status.lastNewAt !== null ? { firstAt: status.firstAt, allAt: status.lastNewAt } : null;
    },
    `${what}: a code of each of ${n} thermostats`,
    90_000,
    10,
  );
}

async function runFloor(broker: Mosquitto, n: number): Promise<Row> {
  const subscriber = await Subscriber.start(broker.url, 'floor/+/totp');
  const floor = track(fork(join(COMPILED, 'bench', 'floor.js'), [broker.url, 'floor', String(n), String(PERIOD_S)], { execArgv: [] }));
  try {
    await waitForAll(subscriber, n, 'floor');
    const measured = await measureWindows(pidOf(floor), subscriber, n);
    return { n, contender: 'floor', ...measured, peakRssMB: peakRssMB(pidOf(floor)), firstCodeMs: null, allCodesMs: null, refresh: null };
  } finally {
    floor.disconnect();
    await exited(floor, 5000).catch(() => floor.kill('SIGKILL'));
    await subscriber.close();
  }
}

/** A refresh asked for over MQTT, timed from the request to the `bridge/info` it ends with. */
async function timeRefresh(broker: Mosquitto, base: string, cloud: SimCloud): Promise<{ ms: number; pages: number }> {
  const recorder = await Recorder.connect(broker.url, [`${base}/bridge/info`]);
  try {
    const lastRefresh = (m: Received) => (JSON.parse(m.payload) as BridgeInfo).last_refresh;
    const before = lastRefresh(await recorder.waitFor((m) => m.retain, 'retained bridge/info'));
    const from = recorder.messages.length;
    const pages = cloud.counters.deviceRequests;
    const start = Date.now();
    await recorder.client.publishAsync(`${base}/bridge/request/refresh`, 'bench');
    const after = await recorder.waitFor((m) => lastRefresh(m) !== before, 'bridge/info after the refresh', 60_000, from);
    return { ms: after.at - start, pages: cloud.counters.deviceRequests - pages };
  } finally {
    await recorder.close();
  }
}

async function runBridge(broker: Mosquitto, n: number): Promise<Row> {
  const base = 'hmarex2mqtt';
  const cloud = new SimCloud({ devices: Array.from({ length: n }, (_, i) => simDevice(i + 1)), pageSize: PAGE_SIZE });
  await cloud.start();
  const subscriber = await Subscriber.start(broker.url, `${base}/+/totp`);
  // Its own working directory, so that no config/config.yaml of the checkout is read.
  const dir = scratchDir();
  const logPath = join(dir, 'bridge.log');
  const log = openSync(logPath, 'w');
  const env = {
    PATH: process.env.PATH ?? '/usr/bin:/bin',
    HMAREX_URL: cloud.url,
    HMAREX_EMAIL: SIM_EMAIL,
    HMAREX_PASSWORD: SIM_PASSWORD,
    // No scheduled refresh during the run: the only one is the one timed below.
    HMAREX_REFRESH: '0 0 1 1 *',
    MQTT_URL: broker.url,
    STATE_DIR: join(dir, 'state'),
    TOTP_PERIOD: String(PERIOD_S),
    LOG_LEVEL: 'info',
  };
  const startedAt = wallNow();
  const bridge = track(spawn(process.execPath, [join(ROOT, 'dist/main.js'), 'run'], { cwd: dir, env, stdio: ['ignore', log, log] }));
  closeSync(log);
  try {
    const { firstAt, allAt } = await waitForAll(subscriber, n, 'bridge');
    const measured = await measureWindows(pidOf(bridge), subscriber, n);
    const refresh = await timeRefresh(broker, base, cloud);
    return { n, contender: 'bridge', ...measured, peakRssMB: peakRssMB(pidOf(bridge)), firstCodeMs: firstAt - startedAt, allCodesMs: allAt - startedAt, refresh };
  } catch (error) {
    const tail = readFileSync(logPath, 'utf8').split('\n').slice(-15).join('\n');
    throw new Error(`bridge at N=${n}: ${(error as Error).message}\n--- bridge log (tail) ---\n${tail}`);
  } finally {
    await stop(bridge);
    await subscriber.close();
    await cloud.stop();
  }
}

/** bash's `times`: shell user, shell sys, children user, children sys. */
function timesMs(output: string): number {
  return [...output.matchAll(/(\d+)m([\d.]+)s/g)].reduce((sum, m) => sum + (Number(m[1]) * 60 + Number(m[2])) * 1000, 0);
}

async function runNaive(broker: Mosquitto, n: number, passes: number): Promise<Row> {
  const subscriber = await Subscriber.start(broker.url, 'naive/+/totp');
  const file = join(scratchDir(), 'devices.txt');
  writeFileSync(file, Array.from({ length: n }, (_, i) => simDevice(i + 1)).map((d) => `${d.sn} ${Buffer.from(d.totp_key, 'latin1').toString('hex')}\n`).join(''));
  const script = track(spawn('bash', [join(BENCH, 'naive.sh'), '127.0.0.1', String(broker.port), 'naive', String(PERIOD_S), String(passes), file], { stdio: ['ignore', 'pipe', 'pipe'] }));
  let output = '';
  script.stdout.on('data', (d: Buffer) => (output += d.toString()));
  script.stderr.on('data', (d: Buffer) => (output += d.toString()));
  try {
    await exited(script, passes * (PERIOD_MS + n * 50) + 30_000);
    if (script.exitCode !== 0) throw new Error(`naive script failed (exit ${script.exitCode}): ${output.slice(-500)}`);
    await sleep(200);
    const measured = lagStats(await subscriber.windows());
    return {
      n,
      contender: 'naive',
      ...measured,
      expected: n * passes,
      cpuPerWindowMs: timesMs(output) / passes,
      peakRssMB: null,
      firstCodeMs: null,
      allCodesMs: null,
      refresh: null,
      note: `${passes} pass(es); CPU of bash and every oathtool/mosquitto_pub it ran`,
    };
  } finally {
    if (script.exitCode === null) await stop(script);
    await subscriber.close();
  }
}

/** The naive loop is linear in N: lag quantiles and CPU scaled from the largest N measured. */
function extrapolate(row: Row, n: number): Row {
  const k = n / row.n;
  return {
    ...row,
    n,
    lagMs: { p50: row.lagMs.p50 * k, p99: row.lagMs.p99 * k, max: row.lagMs.max * k },
    delivered: 0,
    expected: 0,
    cpuPerWindowMs: row.cpuPerWindowMs * k,
    note: `extrapolated x${k} from N=${row.n}: one pass would take ~${((row.lagMs.max * k) / 1000).toFixed(0)} s`,
  };
}

// ---- report
const ms = (v: number | null) => (v === null || Number.isNaN(v) ? '-' : v >= 100 ? `${v.toFixed(0)} ms` : `${v.toFixed(1)} ms`);
const times = (x: number) => (Number.isFinite(x) ? `${x < 0.01 ? x.toExponential(1) : x.toFixed(2)}x` : '-');

function table(rows: Row[]): string {
  const head = ['N', 'contender', 'lag p50', 'lag p99', 'lag max', 'delivered', 'CPU/window', 'peak RSS', 'first code', 'all codes', 'refresh (pages)'];
  const lines = rows.map((r) => [
    r.n.toLocaleString('en'),
    r.contender,
    ms(r.lagMs.p50),
    ms(r.lagMs.p99),
    ms(r.lagMs.max),
    r.expected === 0 ? 'extrap.' : `${r.delivered}/${r.expected}`,
    ms(r.cpuPerWindowMs),
    r.peakRssMB === null ? '-' : `${r.peakRssMB.toFixed(0)} MB`,
    ms(r.firstCodeMs),
    ms(r.allCodesMs),
    r.refresh ? `${ms(r.refresh.ms)} (${r.refresh.pages})` : '-',
  ]);
  const all = [head, ...lines];
  const widths = head.map((_, c) => Math.max(...all.map((l) => l[c].length)));
  return all.map((l) => `| ${l.map((cell, c) => cell.padEnd(widths[c])).join(' | ')} |`).join('\n');
}

interface Check {
  target: string;
  value: string;
  met: boolean;
}

function checks(rows: Row[]): Check[] {
  const get = (n: number, c: Contender) => rows.find((r) => r.n === n && r.contender === c);
  const result: Check[] = [];
  const b1k = get(1000, 'bridge');
  const f1k = get(1000, 'floor');
  const b10k = get(10_000, 'bridge');
  if (b1k && f1k) {
    result.push({ target: 'p99 lag at 1,000 within 1.5x the floor', value: `${ms(b1k.lagMs.p99)} vs ${ms(f1k.lagMs.p99)} (${times(b1k.lagMs.p99 / f1k.lagMs.p99)})`, met: b1k.lagMs.p99 <= 1.5 * f1k.lagMs.p99 });
  }
  if (b1k) {
    result.push({ target: 'p99 lag at 1,000 under 50 ms', value: ms(b1k.lagMs.p99), met: b1k.lagMs.p99 < 50 });
    result.push({ target: 'peak RSS at 1,000 under 80 MB', value: `${b1k.peakRssMB?.toFixed(1)} MB`, met: (b1k.peakRssMB ?? Infinity) < 80 });
  }
  if (b10k) {
    result.push({ target: 'p99 lag at 10,000 under 500 ms', value: ms(b10k.lagMs.p99), met: b10k.lagMs.p99 < 500 });
    result.push({ target: 'peak RSS at 10,000 under 150 MB', value: `${b10k.peakRssMB?.toFixed(1)} MB`, met: (b10k.peakRssMB ?? Infinity) < 150 });
  }
  for (const r of rows.filter((row) => row.contender === 'bridge')) {
    result.push({ target: `first code within 1 s of start at ${r.n.toLocaleString('en')}`, value: ms(r.firstCodeMs), met: (r.firstCodeMs ?? Infinity) < 1000 });
  }
  return result;
}

function mosquittoVersion(): string {
  try {
    return /mosquitto version (\S+)/.exec(execFileSync('mosquitto', ['-h'], { encoding: 'utf8' }))?.[1] ?? 'unknown';
  } catch (error) {
    // `mosquitto -h` exits 3 after printing its usage.
    const out = String((error as { stdout?: unknown }).stdout ?? '');
    return /mosquitto version (\S+)/.exec(out)?.[1] ?? 'unknown';
  }
}

// ---- main
execFileSync(process.execPath, [join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', join(BENCH, 'tsconfig.json')], { stdio: 'inherit' });
// Below node_modules, Node looks no further up for the package's "type": say it here.
writeFileSync(join(COMPILED, 'package.json'), '{ "type": "module" }\n');
const loadBefore = loadavg();
const startedAt = new Date();
process.stdout.write(`hmarex2mqtt benchmark: TOTP period ${PERIOD_S} s, ${WINDOWS} windows per run, cloud pages of ${PAGE_SIZE}\n`);
const rows: Row[] = [];
for (const n of SIZES) {
  const broker = await new Mosquitto().start();
  brokers.add(broker);
  try {
    rows.push(await runFloor(broker, n));
    process.stdout.write(`  N=${n}: floor done\n`);
    rows.push(await runBridge(broker, n));
    process.stdout.write(`  N=${n}: bridge done\n`);
    const passes = NAIVE_PASSES.get(n);
    const measuredNaive = rows.filter((r) => r.contender === 'naive').at(-1);
    if (passes !== undefined) rows.push(await runNaive(broker, n, passes));
    else if (measuredNaive) rows.push(extrapolate(measuredNaive, n));
    process.stdout.write(`  N=${n}: naive done\n`);
  } finally {
    await broker.dispose();
    brokers.delete(broker);
  }
}

const ratios = SIZES.flatMap((n) => {
  const [floor, bridge, naive] = (['floor', 'bridge', 'naive'] as const).map((c) => rows.find((r) => r.n === n && r.contender === c));
  if (!floor || !bridge || !naive) return [];
  return [
    {
      n,
      bridgeOverFloor: { lagP50: bridge.lagMs.p50 / floor.lagMs.p50, lagP99: bridge.lagMs.p99 / floor.lagMs.p99, cpu: bridge.cpuPerWindowMs / floor.cpuPerWindowMs },
      bridgeOverNaive: { lagP50: bridge.lagMs.p50 / naive.lagMs.p50, lagP99: bridge.lagMs.p99 / naive.lagMs.p99, cpu: bridge.cpuPerWindowMs / naive.cpuPerWindowMs },
    },
  ];
});
const machine = {
  nproc: cpus().length,
  cpu: cpus()[0]?.model ?? 'unknown',
  memoryGiB: Math.round(totalmem() / 2 ** 30),
  node: process.version,
  mosquitto: mosquittoVersion(),
  loadavgBefore: loadBefore.map((l) => Number(l.toFixed(2))),
  loadavgAfter: loadavg().map((l) => Number(l.toFixed(2))),
};
const targetChecks = checks(rows);
const result = {
  date: startedAt.toISOString(),
  machine,
  settings: { totpPeriodS: PERIOD_S, windows: WINDOWS, cloudPageSize: PAGE_SIZE, naivePasses: Object.fromEntries(NAIVE_PASSES) },
  rows,
  ratios,
  targets: targetChecks,
};
const resultsDir = join(BENCH, 'results');
mkdirSync(resultsDir, { recursive: true });
writeFileSync(join(resultsDir, 'latest.json'), `${JSON.stringify(result, null, 2)}\n`);

const out: string[] = [
  '',
  `${startedAt.toISOString().slice(0, 16).replace('T', ' ')} UTC; ${machine.nproc} cores (${machine.cpu}), ${machine.memoryGiB} GiB; node ${machine.node}; mosquitto ${machine.mosquitto}; load ${machine.loadavgBefore.join(' ')} before, ${machine.loadavgAfter.join(' ')} after`,
  '',
  table(rows),
  '',
  ...ratios.map(
    (r) =>
      `N=${r.n.toLocaleString('en')}: bridge/floor lag p50 ${times(r.bridgeOverFloor.lagP50)}, p99 ${times(r.bridgeOverFloor.lagP99)}, CPU ${times(r.bridgeOverFloor.cpu)}; ` +
      `bridge/naive lag p50 ${times(r.bridgeOverNaive.lagP50)}, p99 ${times(r.bridgeOverNaive.lagP99)}, CPU ${times(r.bridgeOverNaive.cpu)}`,
  ),
  '',
  ...rows.filter((r) => r.note).map((r) => `note (${r.contender}, N=${r.n.toLocaleString('en')}): ${r.note}`),
  'lag: payload valid_from to arrival at a subscriber process; CPU: all threads of the process (schedstat), per window; refresh: request on bridge/request/refresh to bridge/info, pages read',
  '',
  ...targetChecks.map((c) => `${c.met ? 'met   ' : 'MISSED'}  ${c.target}: ${c.value}`),
  '',
  `written to ${join('bench', 'results', 'latest.json')}`,
];
process.stdout.write(`${out.join('\n')}\n`);
