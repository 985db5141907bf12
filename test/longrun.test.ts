// A long run on a fake clock: thousands of code windows, with broker restarts, refreshes, token
// failures and HA births mixed in, against a real mosquitto and the simulated cloud. Memory (heap
// after a full gc), timers and listeners are sampled at checkpoints and must stay flat.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { setImmediate as tick } from 'node:timers/promises';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import mqtt from 'mqtt';
import { simDevice } from '../src/simcloud.js';
import { FakeClock } from './fakeclock.js';
import { startRig, waitUntil, writeFigures } from './helpers.js';

setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;

const WINDOWS = 15_000;
const CHECKPOINT_EVERY = 1500;

interface Sample {
  windows: number;
  heapUsed: number;
  timeouts: number;
  handles: number;
  fakeTimers: number;
  listeners: number;
}

function countTimeouts(): { timeouts: number; handles: number } {
  const resources = process.getActiveResourcesInfo();
  return { timeouts: resources.filter((r) => r === 'Timeout').length, handles: resources.length };
}

describe('long run (fake clock)', { timeout: 120_000 }, () => {
  it('keeps memory, timers and listeners flat over thousands of windows, reconnects and refreshes', async (t) => {
    // Starts on a boundary: fake time stands still while the rig starts, and a start in a
    // window's last moments would wait for a boundary that never comes.
    const clock = new FakeClock(Math.floor(Date.now() / 1000) * 1000);
    const devices = Array.from({ length: 5 }, (_, i) => simDevice(i + 1));
    const rig = await startRig({
      cloud: { devices },
      env: { TOTP_PERIOD: '1', MQTT_RECONNECT_MIN_MS: '20', MQTT_RECONNECT_MAX_MS: '100' },
      bridge: { clock, readbackTimeoutMs: 200, haBirthDelayMs: [100, 300] },
    });
    // Counts what arrives without keeping it: the test itself must not grow.
    const sub = await mqtt.connectAsync(rig.broker.url, { protocolVersion: 5, reconnectPeriod: 50 });
    sub.on('error', () => undefined);
    let received = 0;
    sub.on('message', (topic) => {
      if (topic.endsWith('/totp')) received += 1;
    });
    await sub.subscribeAsync('hmarex2mqtt/+/totp');
    const samples: Sample[] = [];
    let restarts = 0;
    let refreshes = 0;
    let births = 0;
    const loginsAtStart = rig.cloud.counters.logins;
    let codesAtStart = 0;
    let tokenFailures = 0;
    try {
      await waitUntil(() => rig.bridge.deviceRecords.length === devices.length && rig.bridge.health().healthy && received > 0, 'serving');
      codesAtStart = received;
      for (let w = 1; w <= WINDOWS; w += 1) {
        clock.advance(1000);
        // Lets the next window's payloads be prepared and the publishes leave.
        await tick();
        // Paced by delivery: every window's codes arrive before the run goes on.
        if (w % 50 === 0) await waitUntil(() => received >= codesAtStart + w * devices.length, `codes of window ${w}`, 5000, 1);
        if (w % 500 === 250) {
          await rig.broker.restart();
          restarts += 1;
          await waitUntil(() => rig.bridge.health().healthy && sub.connected, `reconnect ${restarts}`, 5000, 5);
          // Subscribed again before the next windows pass (they pass much faster than real ones).
          await sub.subscribeAsync('hmarex2mqtt/+/totp');
        }
        if (w % 200 === 0) {
          if (w % 1000 === 0) {
            rig.cloud.revokeTokens();
            tokenFailures += 1;
          }
          await rig.bridge.refresh('request');
          refreshes += 1;
        }
        if (w % 300 === 0) {
          await sub.publishAsync('homeassistant/status', 'online');
          births += 1;
        }
        if (w % CHECKPOINT_EVERY === 0) {
          // Publishes of the last windows delivered, the read-back of the last reconnect over.
          await waitUntil(() => received > 0 && rig.bridge.health().healthy, 'quiet', 5000, 5);
          rig.log.lines.length = 0;
          gc();
          samples.push({ windows: w, heapUsed: process.memoryUsage().heapUsed, ...countTimeouts(), fakeTimers: clock.pending, listeners: rig.bridge.mqttListenerCount });
        }
      }
      assert.equal(rig.bridge.info.cloud, 'online');
      assert.equal(rig.cloud.counters.logins - loginsAtStart, tokenFailures, 'one login per token failure over the run');
      assert.ok(received >= WINDOWS * devices.length, `${received} codes received, ${WINDOWS * devices.length} windows x thermostats`);
    } finally {
      await sub.endAsync(true);
      await rig.dispose();
    }

    // The heap settles over the first few thousand windows (JIT, pools; it then wavers by about
    // half a MiB, as runs of 40,000 windows show): compare from there on.
    const base = samples[2];
    const last = samples[samples.length - 1];
    const heapGrowth = last.heapUsed - base.heapUsed;
    const perWindow = heapGrowth / (last.windows - base.windows);
    const mb = (n: number) => (n / 1024 / 1024).toFixed(2);
    for (const s of samples) {
      t.diagnostic(`window ${s.windows}: heap ${mb(s.heapUsed)} MiB, Timeouts ${s.timeouts}, handles ${s.handles}, bridge timers ${s.fakeTimers}, MQTT listeners ${s.listeners}`);
    }
    t.diagnostic(`long run: ${WINDOWS} windows, ${restarts} broker restarts, ${refreshes} refreshes, ${tokenFailures} token failures, ${births} HA births; heap ${mb(base.heapUsed)} -> ${mb(last.heapUsed)} MiB (${perWindow.toFixed(1)} B/window)`);
    writeFigures(
      'longrun.json',
      { windows: WINDOWS, restarts, refreshes, token_failures: tokenFailures, births, heap_growth_bytes: heapGrowth, heap_bytes_per_window: perWindow, samples, measured_at: new Date().toISOString() },
    );

    // A leak of 100 bytes a window would add up to 1 MiB here.
    assert.ok(heapGrowth < 1024 * 1024, `heap grew ${mb(heapGrowth)} MiB over ${last.windows - base.windows} windows`);
    for (const s of samples.slice(1)) {
      assert.ok(s.timeouts <= base.timeouts + 1, `Timeouts ${s.timeouts} at window ${s.windows}, ${base.timeouts} before`);
      assert.ok(s.handles <= base.handles + 2, `handles ${s.handles} at window ${s.windows}, ${base.handles} before`);
      assert.ok(s.fakeTimers <= 2, `${s.fakeTimers} bridge timers pending at window ${s.windows}`);
      assert.equal(s.listeners, base.listeners, `MQTT listeners at window ${s.windows}`);
    }
  });
});
