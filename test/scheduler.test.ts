// The window timer under a fake clock (boundaries, wall-clock steps both ways) and the backoff.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Backoff } from '../src/backoff.js';
import { MAX_SLEEP_MS, WindowTimer } from '../src/scheduler.js';
import { windowAt, type Window } from '../src/totp.js';
import { FakeClock } from './fakeclock.js';

const SETTINGS = { period: 2, epoch: '2000' as const };
const PERIOD_MS = SETTINGS.period * 1000;

/** Advances 1 ms at a time until the timer has noticed the step; fails after one sleep. */
function advanceUntilNoticed(clock: FakeClock, jumps: number[]): void {
  for (let waited = 0; jumps.length === 0; waited += 1) {
    assert.ok(waited <= MAX_SLEEP_MS, 'the step is noticed within one sleep');
    clock.advance(1);
  }
}

interface Fired {
  window: Window;
  at: number;
}

function timerOn(clock: FakeClock): { timer: WindowTimer; fired: Fired[]; jumps: number[] } {
  const fired: Fired[] = [];
  const jumps: number[] = [];
  const timer = new WindowTimer(SETTINGS, clock, {
    window: (window) => fired.push({ window, at: clock.now() }),
    clockJump: (delta) => jumps.push(delta),
  });
  return { timer, fired, jumps };
}

/** Each window once, in order, each at its first millisecond. */
function assertOnBoundaries(fired: Fired[]): void {
  for (const [i, f] of fired.entries()) {
    assert.equal(f.at, f.window.validFromMs, `window ${f.window.counter} fired ${f.at - f.window.validFromMs} ms off its boundary`);
    if (i > 0) assert.equal(f.window.counter, fired[i - 1].window.counter + 1, 'no window skipped or repeated');
  }
}

describe('window timer', { timeout: 10_000 }, () => {
  it('fires once per window, on the boundary, however the clock is advanced', () => {
    const clock = new FakeClock(Date.UTC(2026, 0, 1, 12, 0, 0, 737));
    const { timer, fired, jumps } = timerOn(clock);
    timer.start();
    for (let i = 0; i < 40; i += 1) clock.advance(137 + (i % 7) * 50);
    clock.advance(10 * PERIOD_MS);
    timer.stop();
    assert.ok(fired.length >= 14, `${fired.length} windows`);
    assertOnBoundaries(fired);
    assert.deepEqual(jumps, []);
    assert.equal(clock.pending, 0, 'stop leaves no timer');
  });

  it('re-aligns after a forward step of the wall clock, without replaying the skipped windows', () => {
    const clock = new FakeClock(Date.UTC(2026, 0, 1, 12, 0, 0, 300));
    const { timer, fired, jumps } = timerOn(clock);
    timer.start();
    clock.advance(3 * PERIOD_MS);
    const before = fired.length;
    // A resume after an hour and a bit: the new time is not on the old phase.
    clock.jump(3_600_000 + 700);
    advanceUntilNoticed(clock, jumps);
    assert.ok(Math.abs(jumps[0] - 3_600_700) < 50, `step of ${jumps[0]} ms reported`);
    assert.equal(fired.length, before + 1, 'one window event for the new time, none for the hour skipped');
    assert.equal(fired[before].window.counter, windowAt(clock.now(), SETTINGS).counter);
    const afterJump = fired.length;
    clock.advance(5 * PERIOD_MS);
    timer.stop();
    assertOnBoundaries(fired.slice(afterJump));
    assert.equal(fired.length - afterJump, 5);
  });

  it('re-aligns after a backward step instead of sleeping until the old boundary', () => {
    const clock = new FakeClock(Date.UTC(2026, 0, 1, 12, 0, 0, 300));
    const { timer, fired, jumps } = timerOn(clock);
    timer.start();
    clock.advance(2 * PERIOD_MS);
    const before = fired.length;
    clock.jump(-3_600_000 - 1300);
    advanceUntilNoticed(clock, jumps);
    assert.ok(jumps[0] < -3_600_000, `step of ${jumps[0]} ms reported`);
    assert.equal(fired.length, before + 1, 'the earlier window is announced at once');
    assert.equal(fired[before].window.counter, windowAt(clock.now(), SETTINGS).counter);
    const afterJump = fired.length;
    clock.advance(4 * PERIOD_MS);
    timer.stop();
    assert.equal(fired.length - afterJump, 4, 'windows go on at the period, not an hour later');
    assertOnBoundaries(fired.slice(afterJump));
  });

  it('takes a small correction within a window for no step', () => {
    const clock = new FakeClock(Date.UTC(2026, 0, 1, 12, 0, 0, 100));
    const { timer, fired, jumps } = timerOn(clock);
    timer.start();
    clock.advance(PERIOD_MS);
    clock.jump(200);
    clock.advance(3 * PERIOD_MS);
    timer.stop();
    assert.deepEqual(jumps, []);
    assert.equal(new Set(fired.map((f) => f.window.counter)).size, fired.length, 'no window twice');
  });
});

describe('backoff', { timeout: 10_000 }, () => {
  it('doubles from the minimum up to the cap, and starts again after a reset', () => {
    const top = new Backoff(100, 1000, () => 1);
    assert.deepEqual(Array.from({ length: 7 }, () => top.next()), [100, 200, 400, 800, 1000, 1000, 1000]);
    const bottom = new Backoff(100, 1000, () => 0);
    assert.deepEqual(Array.from({ length: 6 }, () => bottom.next()), [50, 100, 200, 400, 500, 500]);
    assert.equal(bottom.failures, 6);
    bottom.reset();
    assert.equal(bottom.next(), 50);
  });

  it('jitters between half and all of each step', () => {
    const ceilings = [5000, 10_000, 20_000, 40_000, 80_000, 160_000, 320_000, 640_000, 900_000, 900_000];
    const seen = ceilings.map(() => new Set<number>());
    for (let run = 0; run < 200; run += 1) {
      const backoff = new Backoff(5000, 900_000);
      for (const [i, ceiling] of ceilings.entries()) {
        const delay = backoff.next();
        assert.ok(delay >= ceiling / 2 && delay <= ceiling, `try ${i}: ${delay} outside [${ceiling / 2}, ${ceiling}]`);
        seen[i].add(delay);
      }
    }
    for (const [i, values] of seen.entries()) assert.ok(values.size > 100, `try ${i} is spread (${values.size} distinct delays)`);
  });

  it('survives a very long outage without overflowing', () => {
    const backoff = new Backoff(1000, 60_000, () => 1);
    for (let i = 0; i < 10_000; i += 1) backoff.next();
    assert.equal(backoff.next(), 60_000);
  });
});
