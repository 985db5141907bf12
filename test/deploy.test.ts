// Deployment without a Docker engine: the Dockerfile, docker-compose.yml, the mosquitto config and
// the env example are read and checked against the settings schema, and the image's own command
// and HEALTHCHECK are run outside a container with the environment the image and compose set.
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { chmodSync, copyFileSync, existsSync, mkdirSync, readFileSync, readdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import mqtt from 'mqtt';
import YAML from 'yaml';
import { describeSchema } from '../src/config.js';
import { SIM_EMAIL, SIM_PASSWORD, SimCloud } from '../src/simcloud.js';
import { Mosquitto, Recorder, ROOT, freePort, referenceHotp, tempDir, waitUntil } from './helpers.js';

const SCHEMA_ENV = new Set(describeSchema().map((row) => row.env));
/** Variables the program reads besides the settings. */
const OTHER_ENV = new Set(['HMAREX2MQTT_CONFIG', 'NODE_ENV']);

interface Instruction {
  op: string;
  args: string;
  stage: number;
}

/** Dockerfile instructions with continuation lines joined and comments dropped. */
function dockerfile(): Instruction[] {
  const text = readFileSync(join(ROOT, 'Dockerfile'), 'utf8').replace(/\\\n/g, ' ');
  let stage = -1;
  const out: Instruction[] = [];
  for (const line of text.split('\n')) {
    const match = /^\s*([A-Za-z]+)\s+(.*)$/.exec(line);
    if (!match || line.trim().startsWith('#')) continue;
    const op = match[1].toUpperCase();
    if (op === 'FROM') stage += 1;
    out.push({ op, args: match[2].trim(), stage });
  }
  return out;
}

/** `ENV A=1 B=2` lines of the final stage. */
function imageEnv(instructions: Instruction[]): Record<string, string> {
  const env: Record<string, string> = {};
  for (const { args } of instructions) {
    for (const pair of args.split(/\s+/)) {
      const eq = pair.indexOf('=');
      if (eq > 0) env[pair.slice(0, eq)] = pair.slice(eq + 1).replace(/^"|"$/g, '');
    }
  }
  return env;
}

/** The exec-form JSON array of CMD, ENTRYPOINT or HEALTHCHECK ... CMD. */
function execForm(args: string): string[] {
  const json = args.slice(args.indexOf('['));
  return JSON.parse(json) as string[];
}

/** `NAME=value` lines of an env file; commented `# NAME=value` lines are listed too (documented names). */
function envFile(path: string): { set: Record<string, string>; documented: string[] } {
  const set: Record<string, string> = {};
  const documented: string[] = [];
  for (const line of readFileSync(path, 'utf8').split('\n')) {
    const active = /^([A-Z][A-Z0-9_]*)=(.*)$/.exec(line);
    if (active) set[active[1]] = active[2];
    const commented = /^#\s*([A-Z][A-Z0-9_]*)=/.exec(line);
    if (active || commented) documented.push((active ?? commented)![1]);
  }
  return { set, documented };
}

interface ComposeService {
  image?: string;
  build?: string | { context: string; dockerfile?: string };
  restart?: string;
  profiles?: string[];
  env_file?: string[];
  environment?: Record<string, string>;
  secrets?: string[];
  volumes?: string[];
  ports?: string[];
  depends_on?: string[];
}
interface Compose {
  services: Record<string, ComposeService>;
  secrets: Record<string, { file: string }>;
  volumes: Record<string, unknown>;
}

const compose = YAML.parse(readFileSync(join(ROOT, 'docker-compose.yml'), 'utf8')) as Compose;

/** `source:target[:mode]` -> {source, target}. */
function mounts(service: ComposeService): Array<{ source: string; target: string; readOnly: boolean }> {
  return (service.volumes ?? []).map((spec) => {
    const [source, target, mode] = spec.split(':');
    return { source, target, readOnly: mode === 'ro' };
  });
}

function mosquittoConfLines(): string[] {
  return readFileSync(join(ROOT, 'config/mosquitto/mosquitto.conf'), 'utf8')
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '' && !l.startsWith('#'));
}

describe('Dockerfile', { timeout: 60_000 }, () => {
  const all = dockerfile();
  const finalStage = Math.max(...all.map((i) => i.stage));
  const final = all.filter((i) => i.stage === finalStage);
  const env = imageEnv(final.filter((i) => i.op === 'ENV'));

  it('is multi-stage on official Node.js 20 images', () => {
    const bases = all.filter((i) => i.op === 'FROM').map((i) => i.args.split(/\s+/)[0]);
    assert.ok(bases.length >= 2, `stages: ${bases.join(', ')}`);
    for (const base of bases) assert.match(base, /^node:20(-[a-z0-9.-]+)?$/, base);
  });

  it('ships production dependencies only, built in another stage', () => {
    const copies = final.filter((i) => i.op === 'COPY' && i.args.startsWith('--from='));
    const nodeModules = copies.find((i) => /node_modules/.test(i.args));
    assert.ok(nodeModules, 'node_modules copied from a build stage');
    const fromStage = /--from=(\S+)/.exec(nodeModules.args)![1];
    const stageIndex = all.find((i) => i.op === 'FROM' && new RegExp(`\\bAS\\s+${fromStage}$`, 'i').test(i.args))!.stage;
    const installs = all.filter((i) => i.stage === stageIndex && i.op === 'RUN' && /npm ci/.test(i.args));
    assert.ok(installs.length > 0 && installs.every((i) => /--omit=dev/.test(i.args)), 'npm ci --omit=dev in the stage node_modules comes from');
    assert.ok(!final.some((i) => i.op === 'RUN' && /npm (ci|install)/.test(i.args)), 'no install in the final stage');
    assert.ok(copies.some((i) => /\bdist\b/.test(i.args)), 'dist copied from the build stage');
  });

  it('needs nothing at run time that `npm ci --omit=dev` leaves out', () => {
    const { dependencies } = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { dependencies: Record<string, string> };
    const imported = new Set<string>();
    for (const file of readdirSync(join(ROOT, 'dist')).filter((f) => f.endsWith('.js'))) {
      const text = readFileSync(join(ROOT, 'dist', file), 'utf8');
      for (const m of text.matchAll(/(?:from\s+|import\s*\(\s*|import\s+)['"]([^'"]+)['"]/g)) {
        const spec = m[1];
        if (spec.startsWith('.') || spec.startsWith('node:')) continue;
        imported.add(spec.startsWith('@') ? spec.split('/').slice(0, 2).join('/') : spec.split('/')[0]);
      }
    }
    assert.ok(imported.has('mqtt'), 'the scan sees bare imports');
    for (const name of imported) assert.ok(name in dependencies, `${name} is a production dependency`);
  });

  it('runs as a non-root user under an init, with /app/config and /app/data', () => {
    const user = final.filter((i) => i.op === 'USER').at(-1)?.args;
    assert.ok(user && !/^(root|0)(:|$)/.test(user), `USER ${user}`);
    const entrypoint = execForm(final.find((i) => i.op === 'ENTRYPOINT')!.args);
    assert.match(entrypoint[0], /\/tini$/);
    assert.ok(final.some((i) => i.op === 'RUN' && /(apk add|apt-get install).*\btini\b/.test(i.args)), 'tini installed from the distribution');
    assert.equal(final.find((i) => i.op === 'WORKDIR')?.args, '/app');
    const run = final.filter((i) => i.op === 'RUN').map((i) => i.args).join(' ');
    assert.match(run, /mkdir -p \/app\/config \/app\/data/);
    assert.match(run, /chown node:node \/app\/data/);
    assert.equal(env.STATE_DIR, '/app/data');
    assert.ok(final.some((i) => i.op === 'VOLUME' && i.args.includes('/app/data')));
  });

  it('turns the health listener on and checks it with HEALTHCHECK', () => {
    assert.equal(env.HEALTH_PORT, '8080');
    assert.equal(env.HEALTH_HOST, '0.0.0.0');
    const check = final.find((i) => i.op === 'HEALTHCHECK');
    assert.ok(check, 'HEALTHCHECK');
    assert.deepEqual(execForm(check.args), ['node', 'dist/healthcheck.js']);
    for (const name of Object.keys(env)) assert.ok(SCHEMA_ENV.has(name) || OTHER_ENV.has(name), `ENV ${name} is a setting`);
  });

  it('copies only files that exist and that .dockerignore lets through', () => {
    const ignored = readFileSync(join(ROOT, '.dockerignore'), 'utf8')
      .split('\n')
      .map((l) => l.trim())
      .filter((l) => l !== '' && !l.startsWith('#'));
    for (const secret of ['node_modules', '.git', 'data', 'secrets', 'config/config.yaml', 'config/*.env']) {
      assert.ok(ignored.includes(secret), `.dockerignore leaves out ${secret}`);
    }
    const sources = all
      .filter((i) => i.op === 'COPY' && !i.args.startsWith('--from='))
      .flatMap((i) => i.args.split(/\s+/).slice(0, -1));
    assert.ok(sources.length > 0);
    for (const source of sources) {
      assert.ok(existsSync(join(ROOT, source)), `${source} exists`);
      assert.ok(!ignored.includes(source), `${source} is not ignored`);
    }
  });
});

describe('docker-compose.yml', { timeout: 60_000 }, () => {
  const app = compose.services.hmarex2mqtt;
  const image = imageEnv(dockerfile().filter((i) => i.op === 'ENV'));

  it('has mosquitto, hmarex2mqtt and a profile-gated Home Assistant', () => {
    assert.deepEqual(Object.keys(compose.services).sort(), ['hmarex2mqtt', 'homeassistant', 'mosquitto']);
    assert.match(compose.services.mosquitto.image ?? '', /^eclipse-mosquitto:2/);
    assert.ok(compose.services.homeassistant.profiles?.includes('homeassistant'));
    assert.equal(compose.services.mosquitto.profiles, undefined);
    assert.equal(app.profiles, undefined);
  });

  it('builds hmarex2mqtt from the Dockerfile and restarts it unless stopped', () => {
    const context = typeof app.build === 'string' ? app.build : app.build?.context;
    assert.equal(context, '.');
    assert.ok(existsSync(join(ROOT, context, 'Dockerfile')));
    assert.equal(app.restart, 'unless-stopped');
    assert.equal(compose.services.mosquitto.restart, 'unless-stopped');
    assert.ok(app.depends_on?.includes('mosquitto'));
  });

  it('names only variables the settings schema knows', () => {
    for (const name of Object.keys(app.environment ?? {})) assert.ok(SCHEMA_ENV.has(name), `environment ${name}`);
    assert.equal(app.environment?.HMAREX_PASSWORD, undefined, 'the password is a secret, not a variable');
    for (const file of app.env_file ?? []) {
      const example = join(ROOT, `${file}.example`);
      assert.ok(existsSync(example), `${file}.example ships`);
      const { set, documented } = envFile(example);
      for (const name of documented) assert.ok(SCHEMA_ENV.has(name), `${file}.example names ${name}`);
      assert.ok('HMAREX_EMAIL' in set, 'the example sets the account e-mail');
      assert.ok(!documented.includes('HMAREX_PASSWORD'), 'no password in the env file');
    }
  });

  it('passes the password as a compose secret through HMAREX_PASSWORD_FILE', () => {
    const path = app.environment?.HMAREX_PASSWORD_FILE ?? '';
    const match = /^\/run\/secrets\/([\w.-]+)$/.exec(path);
    assert.ok(match, `HMAREX_PASSWORD_FILE=${path}`);
    assert.ok(app.secrets?.includes(match[1]), 'the service is given the secret');
    assert.ok(compose.secrets[match[1]]?.file, 'the secret is defined from a file');
    assert.match(readFileSync(join(ROOT, '.gitignore'), 'utf8'), new RegExp(`^${compose.secrets[match[1]].file.replace(/^\.\//, '').split('/')[0]}/$`, 'm'), 'the secret file is ignored by git');
  });

  it('mounts settings and keeps data on named volumes where the programs look', () => {
    const appMounts = mounts(app);
    const data = appMounts.find((m) => m.target === (app.environment?.STATE_DIR ?? image.STATE_DIR));
    assert.ok(data && data.source in compose.volumes, 'STATE_DIR is a named volume');
    const config = appMounts.find((m) => m.target === '/app/config');
    assert.ok(config && config.source === './config' && config.readOnly, 'config folder mounted read-only');
    const mosquitto = mounts(compose.services.mosquitto);
    const conf = mosquitto.find((m) => m.target === '/mosquitto/config/mosquitto.conf');
    assert.ok(conf && existsSync(join(ROOT, conf.source)), 'mosquitto.conf mounted from the repository');
    const location = mosquittoConfLines().find((l) => l.startsWith('persistence_location'))?.split(/\s+/)[1];
    const store = mosquitto.find((m) => `${m.target}/` === location);
    assert.ok(store && store.source in compose.volumes, `persistence_location ${location} is a named volume`);
    for (const service of Object.values(compose.services)) {
      for (const m of mounts(service)) if (!m.source.startsWith('.')) assert.ok(m.source in compose.volumes, `volume ${m.source} declared`);
    }
  });

  it('points hmarex2mqtt at the mosquitto service and publishes the health port it listens on', () => {
    const url = new URL(app.environment?.MQTT_URL ?? '');
    assert.ok(url.hostname in compose.services, `${url.hostname} is a service`);
    assert.ok(mosquittoConfLines().includes(`listener ${url.port}`), `mosquitto listens on ${url.port}`);
    const healthPort = app.environment?.HEALTH_PORT ?? image.HEALTH_PORT;
    assert.ok(app.ports?.some((p) => p.endsWith(`:${healthPort}`)), `port ${healthPort} published`);
  });
});

describe('config/mosquitto/mosquitto.conf', { timeout: 60_000 }, () => {
  it('runs a real mosquitto that keeps retained messages across a restart', async () => {
    const store = tempDir('hmarex2mqtt-persist-');
    // The shipped file, with only the port and the store moved to this machine's loopback and temp.
    const lines = mosquittoConfLines().map((line) => {
      if (line.startsWith('persistence_location')) return `persistence_location ${store}/`;
      return line;
    });
    // mosquitto started as root drops to its own user, which must be able to write the store.
    chmodSync(store, 0o777);
    const persistence = lines.filter((l) => l.startsWith('persistence'));
    const broker = new Mosquitto({
      // The helper writes `persistence false` after the listener lines: the shipped ones go last.
      listenerConfig: (port) => lines.filter((l) => !persistence.includes(l)).map((l) => (l === 'listener 1883' ? `listener ${port} 127.0.0.1` : l)),
      config: persistence,
    });
    await broker.start();
    try {
      const pub = await mqtt.connectAsync(broker.url);
      await pub.publishAsync('persist/check', 'kept', { retain: true, qos: 1 });
      await pub.endAsync();
      await broker.stop('SIGTERM');
      assert.ok(existsSync(join(store, 'mosquitto.db')), 'the store was written');
      await broker.start();
      const sub = await Recorder.connect(broker.url, ['persist/check']);
      const kept = await sub.waitFor(() => true, 'the retained message after a restart');
      await sub.close();
      assert.equal(kept.payload, 'kept');
    } finally {
      await broker.dispose();
    }
  });
});

describe('the image command outside a container', { timeout: 60_000 }, () => {
  const instructions = dockerfile();
  const finalStage = Math.max(...instructions.map((i) => i.stage));
  const final = instructions.filter((i) => i.stage === finalStage);
  const cmd = execForm(final.find((i) => i.op === 'CMD')!.args);
  const healthcheck = execForm(final.find((i) => i.op === 'HEALTHCHECK')!.args);
  let cloud: SimCloud;
  let broker: Mosquitto;
  let app: string;
  let env: Record<string, string>;

  before(async () => {
    cloud = new SimCloud();
    await cloud.start();
    broker = await new Mosquitto().start();
    // An /app as the image lays it out: dist, node_modules, package.json and an empty config/.
    app = tempDir('hmarex2mqtt-app-');
    symlinkSync(join(ROOT, 'dist'), join(app, 'dist'));
    symlinkSync(join(ROOT, 'node_modules'), join(app, 'node_modules'));
    copyFileSync(join(ROOT, 'package.json'), join(app, 'package.json'));
    mkdirSync(join(app, 'config'));
    const secret = join(tempDir(), 'hmarex_password');
    writeFileSync(secret, `${SIM_PASSWORD}\n`, { mode: 0o600 });
    const service = compose.services.hmarex2mqtt;
    // The environment in the order Docker applies it: image ENV, env_file, compose environment;
    // then only what must differ on this machine (addresses, paths, the port).
    env = {
      PATH: process.env.PATH ?? '',
      ...imageEnv(final.filter((i) => i.op === 'ENV')),
      ...envFile(join(ROOT, `${service.env_file![0]}.example`)).set,
      ...service.environment,
      HMAREX_EMAIL: SIM_EMAIL,
      HMAREX_URL: cloud.url,
      HMAREX_PASSWORD_FILE: secret,
      MQTT_URL: broker.url,
      STATE_DIR: tempDir(),
      HEALTH_PORT: String(await freePort()),
      LOG_LEVEL: 'debug',
    };
  });
  after(async () => {
    await cloud.stop();
    await broker.dispose();
  });

  const runHealthcheck = () => spawnSync(healthcheck[0] === 'node' ? process.execPath : healthcheck[0], healthcheck.slice(1), { cwd: app, env, encoding: 'utf8', timeout: 10_000 });

  it('check-config and --version work with the image environment', () => {
    const checked = spawnSync(process.execPath, [cmd[1], 'check-config'], { cwd: app, env, encoding: 'utf8', timeout: 10_000 });
    assert.equal(checked.status, 0, checked.stderr);
    const settings = YAML.parse(checked.stdout.replace(/^#.*\n/, '')) as { hmarex: { password: string }; health: { port: number; host: string }; state: { dir: string } };
    assert.equal(settings.hmarex.password, '********', 'the secret file was read and is masked');
    assert.equal(settings.health.host, '0.0.0.0');
    assert.ok(!checked.stdout.includes(SIM_PASSWORD));
    const version = spawnSync(process.execPath, [cmd[1], '--version'], { cwd: app, env, encoding: 'utf8' });
    assert.equal(version.stdout.trim(), (JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string }).version);
  });

  it('runs the daemon: JSON log lines, HEALTHCHECK healthy, unhealthy without the broker, clean stop', async () => {
    const idle = runHealthcheck();
    assert.equal(idle.status, 1, 'unhealthy while nothing listens');
    assert.match(idle.stdout, /no answer/);
    const sub = await Recorder.connect(broker.url, ['hmarex2mqtt/#']);
    const child: ChildProcess = spawn(cmd[0] === 'node' ? process.execPath : cmd[0], cmd.slice(1), { cwd: app, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout?.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    try {
      const device = cloud.devices[0];
      const code = await sub.waitFor((m) => m.topic === `hmarex2mqtt/${device.sn}/totp` && m.payload !== '', 'a code', 10_000);
      const payload = JSON.parse(code.payload) as { auth: string; time: string };
      assert.equal(payload.auth, referenceHotp(Buffer.from(device.totp_key, 'ascii'), Number(payload.time) / 30, 9));

      const healthy = await waitUntil(() => {
        const r = runHealthcheck();
        return r.status === 0 ? r : null;
      }, 'HEALTHCHECK to pass', 10_000, 100);
      assert.match(healthy.stdout, /^healthy: .*"healthy":true/);

      await broker.stop();
      const down = await waitUntil(() => {
        const r = runHealthcheck();
        return r.status === 1 ? r : null;
      }, 'HEALTHCHECK to fail without the broker', 10_000, 100);
      assert.match(down.stdout, /unhealthy: .*MQTT broker/);

      child.kill('SIGTERM');
      assert.equal(await exited, 0);
      const lines = stdout.split('\n').filter((l) => l !== '');
      assert.ok(lines.length > 3, stdout);
      for (const line of lines) {
        const entry = JSON.parse(line) as { level: number; msg: string; time: number };
        assert.equal(typeof entry.level, 'number');
        assert.equal(typeof entry.msg, 'string');
      }
      const levels = new Set(lines.map((l) => (JSON.parse(l) as { level: number }).level));
      assert.ok(levels.has(20), 'LOG_LEVEL=debug lets debug lines through');
      assert.ok(!`${stdout}${stderr}`.includes(SIM_PASSWORD), 'no password in the output');
      assert.ok(!`${stdout}${stderr}`.includes(device.totp_key), 'no key in the output');
    } finally {
      child.kill('SIGKILL');
      await sub.close();
    }
  });
});

describe('logs', { timeout: 60_000 }, () => {
  // What cli.ts does: a logger at the configured level, on stdout, format chosen by the terminal.
  const program = `import('${join(ROOT, 'dist/log.js')}').then(({ createLogger }) => {
    const logger = createLogger({ level: 'info' });
    logger.info('visible line');
    logger.debug('hidden line');
  });`;

  it('are JSON lines when stdout is not a terminal', () => {
    const result = spawnSync(process.execPath, ['-e', program], { encoding: 'utf8', timeout: 10_000 });
    const lines = result.stdout.split('\n').filter((l) => l !== '');
    assert.equal(lines.length, 1, result.stdout);
    const entry = JSON.parse(lines[0]) as { level: number; msg: string; time: number };
    assert.equal(entry.level, 30);
    assert.equal(entry.msg, 'visible line');
    assert.ok(Math.abs(entry.time - Date.now()) < 10_000);
  });

  it('are readable colour lines on a terminal', () => {
    // util-linux `script` gives the program a pseudo-terminal.
    const result = spawnSync('script', ['-qec', `${process.execPath} -e "${program.replace(/"/g, '\\"')}"`, '/dev/null'], { encoding: 'utf8', timeout: 10_000 });
    assert.equal(result.status, 0, result.stderr);
    const text = result.stdout;
    assert.ok(text.includes('\u001b['), 'colour escapes');
    assert.match(text.replace(/\u001b\[[0-9;]*m/g, ''), /\d\d:\d\d:\d\d.*INFO.*: visible line/);
    assert.ok(!text.includes('hidden line'), 'below the level');
    assert.ok(!text.trimStart().startsWith('{'), 'not JSON');
  });
});
