// Messages between the benchmark and its subscriber process (over the fork IPC channel).

export interface WindowLags {
  /** The window's start, from the payloads' own `valid_from`. */
  validFromMs: number;
  /** Arrival minus `valid_from`, in ms, one per code received for that window. */
  lags: number[];
}

export type ToSubscriber = { type: 'status' } | { type: 'report' };

export type FromSubscriber =
  | { type: 'ready' }
  /** Wall-clock ms of the first code and of the first from the latest new thermostat; `topics`: thermostats heard from. */
  | { type: 'status'; firstAt: number | null; lastNewAt: number | null; topics: number }
  | { type: 'report'; windows: WindowLags[] };
