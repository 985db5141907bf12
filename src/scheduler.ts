// Timing: the window timer that fires at every code boundary, aligned to the wall clock, and the
// cron schedule of device-list refreshes.
import { createTask, type ScheduledTask } from 'node-cron';
import { windowAt, type TotpSettings, type Window } from './totp.js';

export interface Clock {
  /** Wall-clock Unix milliseconds. */
  now(): number;
  /** A clock that never jumps, for telling a wall-clock step from elapsed time. */
  monotonic(): number;
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

export const systemClock: Clock = {
  now: () => Date.now(),
  monotonic: () => performance.now(),
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  clearTimeout: (handle) => clearTimeout(handle as NodeJS.Timeout),
};

/** The timer wakes at least this often, so a wall-clock step is noticed within this time. */
export const MAX_SLEEP_MS = 1000;
/** A wall clock that moved this much more or less than the monotonic one has been stepped. */
const JUMP_THRESHOLD_MS = 500;

export interface WindowEvents {
  /** A new window began (or the clock jumped into another one). */
  window(window: Window): void;
  /** The wall clock was stepped by `deltaMs` (NTP step, suspend/resume). */
  clockJump?(deltaMs: number): void;
}

/**
 * Fires `window` once per code window, at its first millisecond. Sleeping to the boundary is
 * computed from the wall clock on every wake, so the timer cannot drift, and wakes at least every
 * MAX_SLEEP_MS, so a stepped clock re-aligns it instead of skipping or repeating windows.
 */
export class WindowTimer {
  private handle: unknown = null;
  private current: Window | null = null;
  private lastWall = 0;
  private lastMono = 0;

  constructor(
    private readonly settings: Pick<TotpSettings, 'period' | 'epoch'>,
    private readonly clock: Clock,
    private readonly events: WindowEvents,
  ) {}

  /** The window in effect now. */
  get window(): Window {
    return windowAt(this.clock.now(), this.settings);
  }

  start(): void {
    this.stop();
    this.current = this.window;
    this.lastWall = this.clock.now();
    this.lastMono = this.clock.monotonic();
    this.arm();
  }

  stop(): void {
    if (this.handle !== null) this.clock.clearTimeout(this.handle);
    this.handle = null;
  }

  private arm(): void {
    const untilBoundary = (this.current?.validUntilMs ?? 0) - this.clock.now();
    this.handle = this.clock.setTimeout(() => this.wake(), Math.max(0, Math.min(untilBoundary, MAX_SLEEP_MS)));
  }

  private wake(): void {
    const wall = this.clock.now();
    const mono = this.clock.monotonic();
    const drift = wall - this.lastWall - (mono - this.lastMono);
    this.lastWall = wall;
    this.lastMono = mono;
    if (Math.abs(drift) > JUMP_THRESHOLD_MS) this.events.clockJump?.(drift);
    const now = windowAt(wall, this.settings);
    if (now.counter !== this.current?.counter) {
      this.current = now;
      this.events.window(now);
    }
    this.arm();
  }
}

export interface RefreshSchedule {
  stop(): void;
}

/** Runs `refresh` on the cron expression; a run that overlaps the previous one is skipped. */
export function scheduleRefresh(expression: string, refresh: () => Promise<void>): RefreshSchedule {
  const task: ScheduledTask = createTask(expression, () => refresh(), { noOverlap: true, name: 'hmarex-refresh' });
  void task.start();
  return {
    stop: () => {
      void task.destroy();
    },
  };
}
