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
//  4. Busy time the kernel left unnamed counts as sndbuf-limited when the
//     send buffer was *bound* over the span (sendBufferBound: smaller than one
//     congestion window, and full). Why: the kernel starts the sndbuf
//     chronograph only when the write queue has just emptied and the socket is
//     not cwnd-limited. Under BBR a capped buffer caps the delivery rate, BBR
//     paces at that rate, and the paced data waiting in the write queue keeps
//     the chronograph off: a 32 KiB buffer behind a 20 Mbit/s, 40 ms path
//     measured 0.1-0.4 of busy sndbuf-limited from run to run while the
//     buffer, not the path, set the rate (8 Mbit/s; lab/ `mixed-sndbuf`).
export type Limit = 'rwnd' | 'sndbuf' | 'network' | 'app' | 'unknown';

export const LIMITS: readonly Limit[] = ['rwnd', 'sndbuf', 'network', 'app', 'unknown'];

export interface ChronoDelta {
  /** Wall-clock length of the span, seconds. */
  span: number;
  /** Chronograph deltas over the span, seconds (busy includes rwnd and sndbuf). */
  busy: number;
  rwndLimited: number;
  sndbufLimited: number;
  /**
   * Busy seconds, not counted rwnd- or sndbuf-limited by the kernel, during
   * which the send buffer was bound (sendBufferBound): sndbuf-limited in fact.
   * Inferred by the agent, never part of the kernel's sndbufLimited.
   */
  sndbufBound?: number;
}

/** What the agent knows of a socket's send buffer at one instant. */
export interface SendBuffer {
  /** sk_sndbuf, bytes (SO_SNDBUF; SK_MEMINFO_SNDBUF). */
  sndbuf: number;
  /** Congestion window, segments, and the sending MSS, bytes. */
  cwnd: number;
  mss: number;
  /** The buffer was full: the application had more to write than it could hold. */
  full: boolean;
}

/**
 * The send buffer, not the congestion window, bounds what is in flight: it
 * cannot hold one window of data, and the application filled it. Autotuning
 * keeps an unlocked buffer at 2-3 windows (tcp_sndbuf_expand(), counting
 * per-packet overhead), so only SO_SNDBUF or net.ipv4.tcp_wmem[2] hold one
 * below a window; measured in the lab: 32 KiB against a 100-segment window
 * (0.22 of one) when capped, 1.4 MiB against 146 segments (7 windows) when not.
 */
export function sendBufferBound(b: SendBuffer): boolean {
  return b.full && b.sndbuf > 0 && b.cwnd > 0 && b.mss > 0 && b.sndbuf < b.cwnd * b.mss;
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
  const sndbuf = Math.min(Math.max(d.sndbufLimited, 0) + Math.max(d.sndbufBound ?? 0, 0), busy - rwnd);
  return {
    rwnd: clamp01(rwnd / d.span),
    sndbuf: clamp01(sndbuf / d.span),
    network: clamp01((busy - rwnd - sndbuf) / d.span),
    app: clamp01((d.span - busy) / d.span),
  };
}

/** Share of a span the sender must be idle (not busy) for the verdict to be app. */
export const APP_IDLE_SHARE = 0.5;

/** Share of busy time the kernel must name a limit for before it is the verdict. */
export const NAMED_LIMIT_SHARE = 1 / 3;

/**
 * The cause of busy time: rwnd or sndbuf when named for a third of it or more,
 * else network. `sndbufBound`: inferred sndbuf-limited seconds (ChronoDelta).
 */
export function busyLimit(busy: number, rwndLimited: number, sndbufLimited: number, sndbufBound = 0): 'rwnd' | 'sndbuf' | 'network' {
  if (!(busy > 0)) return 'network';
  const rwnd = rwndLimited / busy;
  const sndbuf = (sndbufLimited + Math.max(sndbufBound, 0)) / busy;
  if (rwnd < NAMED_LIMIT_SHARE && sndbuf < NAMED_LIMIT_SHARE) return 'network';
  return rwnd >= sndbuf ? 'rwnd' : 'sndbuf';
}

export function classify(d: ChronoDelta, opts: ClassifyOptions = {}): Limit {
  const resolution = opts.resolution ?? DEFAULT_RESOLUTION;
  const minSpan = opts.minSpan ?? 4 * resolution;
  if (!(d.span >= minSpan)) return 'unknown';
  const busy = Math.min(Math.max(d.busy, 0), d.span);
  if (d.span - busy > APP_IDLE_SHARE * d.span) return 'app';
  return busyLimit(busy, d.rwndLimited, d.sndbufLimited, d.sndbufBound);
}

/**
 * The busy seconds of a span that sendBufferBound() moves to sndbuf: what the
 * kernel named neither rwnd- nor sndbuf-limited, when the buffer was bound.
 */
export function boundSeconds(busy: number, rwndLimited: number, sndbufLimited: number, buffer: SendBuffer | undefined): number {
  return buffer !== undefined && sendBufferBound(buffer) ? unnamedBusy(busy, rwndLimited, sndbufLimited) : 0;
}

/** Busy seconds the kernel named neither rwnd- nor sndbuf-limited. */
export function unnamedBusy(busy: number, rwndLimited: number, sndbufLimited: number): number {
  const rest = busy - Math.max(rwndLimited, 0) - Math.max(sndbufLimited, 0);
  return rest > 0 ? rest : 0;
}
