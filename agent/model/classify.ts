// What limited a span of sending time, from chronograph deltas.
//
// The kernel splits a socket's life into: busy (had data to send), of which
// rwnd-limited (peer's receive window full) and sndbuf-limited (own send
// buffer full, not cwnd-limited); everything else in a span is app-limited
// (nothing to send). The rest of busy time is network-limited: cwnd, pacing,
// loss recovery, i.e. the path. The verdict is the largest of the four shares.
//
// The chronographs tick in jiffies (4 ms at HZ=250), so each delta carries up to
// one jiffy of error at each end. A span shorter than `minSpan` (default four
// jiffies) gives no meaningful shares: the verdict is 'unknown'.

export type Limit = 'rwnd' | 'sndbuf' | 'network' | 'app' | 'unknown';

export const LIMITS: readonly Limit[] = ['rwnd', 'sndbuf', 'network', 'app', 'unknown'];

export interface ChronoDelta {
  /** Wall-clock length of the span, seconds. */
  span: number;
  /** Chronograph deltas over the span, seconds (busy includes rwnd and sndbuf). */
  busy: number;
  rwndLimited: number;
  sndbufLimited: number;
}

export interface Shares {
  rwnd: number;
  sndbuf: number;
  network: number;
  app: number;
}

export interface ClassifyOptions {
  /** Chronograph resolution in seconds (one jiffy). */
  resolution?: number;
  /** Spans shorter than this are 'unknown'. Default: 4 × resolution. */
  minSpan?: number;
}

export const DEFAULT_RESOLUTION = 0.004;

const clamp01 = (x: number): number => (x < 0 ? 0 : x > 1 ? 1 : x);

/** Shares of the span, each in [0, 1]; they add up to 1 when the inputs are consistent. */
export function shares(d: ChronoDelta): Shares {
  if (!(d.span > 0)) return { rwnd: 0, sndbuf: 0, network: 0, app: 0 };
  // Jiffy rounding can make busy exceed the span by a tick: cap it.
  const busy = Math.min(Math.max(d.busy, 0), d.span);
  const rwnd = Math.min(Math.max(d.rwndLimited, 0), busy);
  const sndbuf = Math.min(Math.max(d.sndbufLimited, 0), busy - rwnd);
  return {
    rwnd: clamp01(rwnd / d.span),
    sndbuf: clamp01(sndbuf / d.span),
    network: clamp01((busy - rwnd - sndbuf) / d.span),
    app: clamp01((d.span - busy) / d.span),
  };
}

export function classify(d: ChronoDelta, opts: ClassifyOptions = {}): Limit {
  const resolution = opts.resolution ?? DEFAULT_RESOLUTION;
  const minSpan = opts.minSpan ?? 4 * resolution;
  if (!(d.span >= minSpan)) return 'unknown';
  const s = shares(d);
  // Iterating in this order, ties go to the more specific cause.
  let best: keyof Shares = 'rwnd';
  for (const k of ['sndbuf', 'network', 'app'] as const) if (s[k] > s[best]) best = k;
  return best;
}
