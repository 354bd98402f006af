// What limited a span of sending time, from chronograph deltas.
//
// The kernel splits a socket's life into: busy (had data to send), of which
// rwnd-limited (peer's receive window full) and sndbuf-limited (own send
// buffer full, not cwnd-limited); everything else in a span is app-limited
// (nothing to send). The rest of busy time is network-limited: cwnd, pacing,
// loss recovery, i.e. the path.
//
// The verdict:
//  1. `unknown` when the span is shorter than `minSpan` (default four jiffies):
//     the chronographs tick in jiffies (4 ms at HZ=250), so each delta carries
//     up to a jiffy of error at each end.
//  2. `app` when the sender was idle for more than half the span.
//  3. Otherwise the cause of the busy time (busyLimit): `rwnd` or `sndbuf`
//     when the kernel named it for at least a third of busy time (the larger
//     of the two if both), else `network`. Why not the largest share: a
//     receiver-limited flow is not rwnd-limited all the time. Under BBR the
//     sender paces at the delivery rate it measured, i.e. the slow reader's
//     rate, and a pacing wait is counted as plain busy time: a slow reader
//     measured 49-58 % rwnd-limited, the rest "network" (lab/, README). A
//     healthy reader behind a network bottleneck stays under 10 %. A third
//     separates the two with room on both sides; sndbuf-limited time is held
//     back the same way by cwnd-limited periods (tcp_cwnd_validate()).
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

/** Share of busy time the kernel must name a limit for before it is the verdict. */
export const NAMED_LIMIT_SHARE = 1 / 3;

/** The cause of busy time: rwnd or sndbuf when named for a third of it or more, else network. */
export function busyLimit(busy: number, rwndLimited: number, sndbufLimited: number): 'rwnd' | 'sndbuf' | 'network' {
  if (!(busy > 0)) return 'network';
  const rwnd = rwndLimited / busy;
  const sndbuf = sndbufLimited / busy;
  if (rwnd < NAMED_LIMIT_SHARE && sndbuf < NAMED_LIMIT_SHARE) return 'network';
  return rwnd >= sndbuf ? 'rwnd' : 'sndbuf';
}

export function classify(d: ChronoDelta, opts: ClassifyOptions = {}): Limit {
  const resolution = opts.resolution ?? DEFAULT_RESOLUTION;
  const minSpan = opts.minSpan ?? 4 * resolution;
  if (!(d.span >= minSpan)) return 'unknown';
  const busy = Math.min(Math.max(d.busy, 0), d.span);
  if (d.span - busy > busy) return 'app';
  return busyLimit(busy, d.rwndLimited, d.sndbufLimited);
}
