// `hmarex2mqtt demo`, run as a newcomer would: it must publish real codes with no account.
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { simDevice } from '../src/simcloud.js';
import { Mosquitto, Recorder, ROOT, referenceHotp, waitUntil } from './helpers.js';

function startDemo(env: Record<string, string | undefined>): { child: ChildProcess; output: () => string } {
  let output = '';
  const child = spawn(process.execPath, [join(ROOT, 'dist/main.js'), 'demo'], {
    cwd: ROOT,
    env: { ...process.env, MQTT_URL: undefined, TOTP_PERIOD: '2', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  child.stdout?.on('data', (d: Buffer) => (output += d.toString()));
  child.stderr?.on('data', (d: Buffer) => (output += d.toString()));
  return { child, output: () => output };
}

async function stopDemo(child: ChildProcess): Promise<number | null> {
  if (child.exitCode !== null) return child.exitCode;
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  child.kill('SIGINT');
  return exited;
}

describe('demo', () => {
  it('runs the pipeline on an embedded broker, prints the publishes and how to watch them', async () => {
    const demo = startDemo({});
    try {
      const port = Number((await waitUntil(() => /embedded MQTT broker on 127\.0\.0\.1:(\d+)/.exec(demo.output()), 'the broker line', 15_000))[1]);
      assert.match(demo.output(), new RegExp(`mosquitto_sub -h 127\\.0\\.0\\.1 -p ${port} `));
      const sub = await Recorder.connect(`mqtt://127.0.0.1:${port}`, ['hmarex2mqtt/#'], { protocolVersion: 4 });
      try {
        const device = simDevice(1);
        const m = await sub.waitFor((x) => x.topic === `hmarex2mqtt/${device.sn}/totp` && x.payload !== '', 'a demo code', 10_000);
        const payload = JSON.parse(m.payload) as { time: string; auth: string };
        assert.equal(payload.auth, referenceHotp(Buffer.from(device.totp_key), Number(payload.time) / 2, 9));
      } finally {
        await sub.close();
      }
      await waitUntil(() => /\/totp: code \d{9} for time \d+/.test(demo.output()), 'a printed code', 10_000);
      // aedes may deliver the QoS 1 discovery after the QoS 0 codes: wait for it too.
      await waitUntil(() => /Home Assistant discovery for "Living room"/.test(demo.output()), 'the printed discovery', 10_000);
    } finally {
      assert.equal(await stopDemo(demo.child), 0, demo.output());
    }
  });

  it('uses the broker in MQTT_URL when set', async () => {
    const broker = await new Mosquitto().start();
    const sub = await Recorder.connect(broker.url, ['hmarex2mqtt/+/totp']);
    const demo = startDemo({ MQTT_URL: broker.url });
    try {
      await sub.waitFor((m) => m.payload.includes('"auth"'), 'a code on the external broker', 15_000);
      assert.match(demo.output(), /broker: mqtt:\/\/127\.0\.0\.1:\d+ \(from MQTT_URL\)/);
    } finally {
      assert.equal(await stopDemo(demo.child), 0, demo.output());
      await sub.close();
      await broker.dispose();
    }
  });
});
