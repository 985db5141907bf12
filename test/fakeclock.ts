// A Clock whose time moves only when the test says, for checks over thousands of windows and for
// wall-clock steps that a real clock cannot be made to take.
import type { Clock } from '../src/scheduler.js';

interface FakeTimer {
  id: number;
  /** Due on the monotonic clock, as Node's own timers are. */
  due: number;
  fn: () => void;
}

export class FakeClock implements Clock {
  private wall: number;
  private mono = 0;
  private nextId = 1;
  private readonly timers = new Map<number, FakeTimer>();

  constructor(startMs = Date.now()) {
    this.wall = startMs;
  }

  now(): number {
    return this.wall;
  }

  monotonic(): number {
    return this.mono;
  }

  setTimeout(fn: () => void, ms: number): number {
    const id = this.nextId++;
    this.timers.set(id, { id, due: this.mono + Math.max(0, ms), fn });
    return id;
  }

  clearTimeout(handle: unknown): void {
    if (typeof handle === 'number') this.timers.delete(handle);
  }

  /** Timers set and not yet run or cleared. */
  get pending(): number {
    return this.timers.size;
  }

  /** Delays of the timers still pending, due first. */
  pendingDelays(): number[] {
    return [...this.timers.values()].map((t) => t.due - this.mono).sort((a, b) => a - b);
  }

  /** Moves both clocks forward by `ms`, running every timer that falls due, in order. */
  advance(ms: number): void {
    const target = this.mono + ms;
    for (;;) {
      let next: FakeTimer | undefined;
      for (const timer of this.timers.values()) if (timer.due <= target && (!next || timer.due < next.due)) next = timer;
      if (!next) break;
      this.wall += next.due - this.mono;
      this.mono = next.due;
      this.timers.delete(next.id);
      next.fn();
    }
    this.wall += target - this.mono;
    this.mono = target;
  }

  /** Steps the wall clock alone, as an NTP step or a resume from suspend does. */
  jump(ms: number): void {
    this.wall += ms;
  }
}
