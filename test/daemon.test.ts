// The daemon as a process: signals, the last will, and the cron schedule.
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { SIM_EMAIL, SIM_PASSWORD, SimCloud, simDevice } from '../src/simcloud.js';
import { Mosquitto, Recorder, ROOT, tempDir } from './helpers.js';

let broker: Mosquitto;
let cloud: SimCloud;

before(async () => {
  broker = await new Mosquitto().start();
  cloud = new SimCloud();
  await cloud.start();
});
after(async () => {
  await cloud.stop();
  await broker.dispose();
});

function startDaemon(env: Record<string, string> = {}): ChildProcess {
  return spawn(process.execPath, [join(ROOT, 'dist/main.js'), 'run'], {
    cwd: tempDir(),
    env: {
      PATH: process.env.PATH,
      HMAREX_URL: cloud.url,
      HMAREX_EMAIL: SIM_EMAIL,
      HMAREX_PASSWORD: SIM_PASSWORD,
      MQTT_URL: broker.url,
      STATE_DIR: tempDir(),
      LOG_LEVEL: 'warn',
      ...env,
    },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
}

const exitOf = (child: ChildProcess) =>
  new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));

describe('daemon process', () => {
  for (const signal of ['SIGTERM', 'SIGINT'] as const) {
    it(`${signal}: publishes offline, clears the retained codes and exits 0`, async () => {
      const sub = await Recorder.connect(broker.url, ['hmarex2mqtt/#']);
      const child = startDaemon();
      try {
        const sn = cloud.devices[0].sn;
        await sub.waitFor((m) => m.topic === `hmarex2mqtt/${sn}/totp` && m.payload !== '', 'a code', 10_000);
        const from = sub.messages.length;
        const exited = exitOf(child);
        child.kill(signal);
        assert.deepEqual(await exited, { code: 0, signal: null });
        await sub.waitFor((m) => m.topic === 'hmarex2mqtt/bridge/state' && m.payload === 'offline', 'offline', 5000, from);
        await sub.waitFor((m) => m.topic === `hmarex2mqtt/${sn}/totp` && m.payload === '', 'code cleared', 5000, from);
      } finally {
        child.kill('SIGKILL');
        await sub.close();
      }
    });
  }

  it('a crash leaves the retained last will: offline', async () => {
    const sub = await Recorder.connect(broker.url, ['hmarex2mqtt/bridge/state']);
    const child = startDaemon();
    try {
      await sub.waitFor((m) => m.payload === 'online', 'online', 10_000);
      const from = sub.messages.length;
      const exited = exitOf(child);
      child.kill('SIGKILL');
      await exited;
      await sub.waitFor((m) => m.payload === 'offline', 'the last will', 5000, from);
      const late = await Recorder.connect(broker.url, ['hmarex2mqtt/bridge/state']);
      const retained = await late.waitFor(() => true, 'retained state');
      await late.close();
      assert.deepEqual([retained.payload, retained.retain], ['offline', true]);
    } finally {
      await sub.close();
    }
  });

  it('re-reads the device list on the cron schedule', async () => {
    const sub = await Recorder.connect(broker.url, ['hmarex2mqtt/+/info']);
    // node-cron accepts a seconds field: every second.
    const child = startDaemon({ HMAREX_REFRESH: '* * * * * *' });
    try {
      await sub.waitFor((m) => m.topic === `hmarex2mqtt/${cloud.devices[0].sn}/info`, 'first info', 10_000);
      const added = simDevice(42, { name: 'Garage' });
      cloud.devices = [...cloud.devices, added];
      await sub.waitFor((m) => m.topic === `hmarex2mqtt/${added.sn}/info` && m.payload.includes('Garage'), 'the added thermostat, with no request', 10_000);
    } finally {
      cloud.devices = cloud.devices.filter((d) => d.id !== 18842);
      const exited = exitOf(child);
      child.kill('SIGTERM');
      await exited;
      await sub.close();
    }
  });
});
