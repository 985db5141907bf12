// Readings of a measured process from /proc: its own CPU time and peak memory, whatever the
// benchmark process itself is doing.
import { readFileSync, readdirSync } from 'node:fs';

/**
 * CPU time of all threads of `pid`, in ms. The scheduler's nanosecond counters (schedstat) are
 * used rather than utime+stime, whose 10 ms ticks are coarser than one window's work at small N.
 */
export function cpuMs(pid: number): number {
  let ns = 0;
  for (const task of readdirSync(`/proc/${pid}/task`)) {
    try {
      ns += Number(readFileSync(`/proc/${pid}/task/${task}/schedstat`, 'utf8').split(' ')[0]);
    } catch {
      // The thread ended between the listing and the read: its time is gone with it.
    }
  }
  return ns / 1e6;
}

/** Peak resident set size of `pid` (VmHWM), in MB (10^6 bytes). */
export function peakRssMB(pid: number): number {
  const match = /^VmHWM:\s+(\d+) kB$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  if (!match) throw new Error(`no VmHWM for process ${pid}`);
  return (Number(match[1]) * 1024) / 1e6;
}

/** The q-quantile (0..1) of ascending `sorted`, nearest-rank. */
export function quantile(sorted: readonly number[], q: number): number {
  if (sorted.length === 0) return Number.NaN;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))];
}
