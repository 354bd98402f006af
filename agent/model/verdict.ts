// Verdicts over a window: where each connection's and each port's time went
// over the life of `top` or the `--for` of `diagnose`. The sentences that say
// what to do about it are the views' (agent/cli/report.ts).
//
// A window is built from the per-poll deltas the connection table already
// computes, so it needs no baseline snapshot: a connection's first poll
// (delta over 0 s) starts its window, every later poll adds its growth. The
// input is a neutral snapshot (ConnSample), made either from a live
// Connection (in-process poller) or from a running agent's /api/connections.
import { busyLimit, classify, shares, type Limit, type Shares } from './classify.js';
import { stateName } from '../parse/inet_diag.js';
import type { Connection } from './connections.js';

/** One observation of a connection, whatever it came from. */
export interface ConnSample {
  id: string;
  /** Aggregate label: local port or "ephemeral". */
  port: string;
  remote: string;
  state: string;
  pid: number | null;
  comm: string | null;
  /** Epoch ms of the observation. */
  lastSeen: number;
  deliveryRate: number;
  rtt: number;
  peerRwnd: number | null;
  bytesAcked: number;
  /** Growth since the previous observation, over `seconds` (0 on a first observation). */
  delta: { seconds: number; busy: number; rwndLimited: number; sndbufLimited: number; sndbufBound: number; bytesAcked: number; bytesRetrans: number };
  /** sk_sndbuf at the last busy observation, bytes (0: unknown). */
  sndbuf: number;
  closed: boolean;
}

export function sampleOfConnection(c: Connection): ConnSample {
  return {
    id: String(c.cookie),
    port: c.port,
    remote: c.remote,
    state: c.closed !== undefined ? 'closed' : stateName(c.state),
    pid: c.owner?.pid ?? null,
    comm: c.owner?.comm ?? null,
    lastSeen: c.lastSeen,
    deliveryRate: c.deliveryRate,
    rtt: c.rtt,
    peerRwnd: c.peerRwnd ?? null,
    bytesAcked: c.bytesAcked,
    delta: { ...c.delta },
    sndbuf: c.sndbuf,
    closed: c.closed !== undefined,
  };
}

/** The JSON of GET /api/connections (connectionJson) back into a sample. */
export function sampleOfApi(j: Record<string, unknown>): ConnSample {
  const li = (j.lastInterval ?? {}) as Record<string, number>;
  const num = (v: unknown): number => (typeof v === 'number' && Number.isFinite(v) ? v : 0);
  return {
    id: String(j.id),
    port: String(j.port),
    remote: String(j.remote),
    state: String(j.state),
    pid: typeof j.pid === 'number' ? j.pid : null,
    comm: typeof j.comm === 'string' ? j.comm : null,
    lastSeen: Date.parse(String(j.lastSeen)) || 0,
    deliveryRate: num(j.deliveryRateBytesPerSecond),
    rtt: num(j.rttSeconds),
    peerRwnd: typeof j.peerRwndBytes === 'number' ? j.peerRwndBytes : null,
    bytesAcked: num(j.bytesAcked),
    delta: {
      seconds: num(li.seconds),
      busy: num(li.busySeconds),
      rwndLimited: num(li.rwndLimitedSeconds),
      sndbufLimited: num(li.sndbufLimitedSeconds),
      sndbufBound: num(li.sndbufBoundSeconds),
      bytesAcked: num(li.bytesAcked),
      bytesRetrans: 0,
    },
    sndbuf: num(j.sndbufBytes),
    closed: j.closed !== null && j.closed !== undefined,
  };
}

/** Figures summed over a window. */
export interface WindowFigures {
  /** Connection-seconds observed (wall time × connections). */
  seconds: number;
  busy: number;
  rwndLimited: number;
  sndbufLimited: number;
  /** Inferred sndbuf-limited seconds (classify.ts, sendBufferBound). */
  sndbufBound: number;
  bytesAcked: number;
  bytesRetrans: number;
  /** Seconds of polls that ended with the peer advertising a zero window. */
  zeroWindowSeconds: number;
}

export interface ConnWindow extends WindowFigures {
  last: ConnSample;
  minPeerRwnd: number | null;
}

export const zeroFigures = (): WindowFigures => ({ seconds: 0, busy: 0, rwndLimited: 0, sndbufLimited: 0, sndbufBound: 0, bytesAcked: 0, bytesRetrans: 0, zeroWindowSeconds: 0 });

type Span = { seconds: number; busy: number; rwndLimited: number; sndbufLimited: number; sndbufBound?: number };

/** Shares of a window (or of one interval), as the classifier defines them. */
export function windowShares(f: Span): Shares {
  return shares({ span: f.seconds, busy: f.busy, rwndLimited: f.rwndLimited, sndbufLimited: f.sndbufLimited, sndbufBound: f.sndbufBound ?? 0 });
}

export function windowLimit(f: Span): Limit {
  return classify({ span: f.seconds, busy: f.busy, rwndLimited: f.rwndLimited, sndbufLimited: f.sndbufLimited, sndbufBound: f.sndbufBound ?? 0 });
}

/** Accumulates per-connection windows from successive observations. */
export class WindowTracker {
  readonly conns = new Map<string, ConnWindow>();
  polls = 0;
  started: number | undefined;
  ended: number | undefined;

  /** Feeds one observation (idempotent per lastSeen). */
  observe(s: ConnSample): void {
    let w = this.conns.get(s.id);
    if (w !== undefined && s.lastSeen <= w.last.lastSeen) return;
    if (w === undefined) {
      w = { ...zeroFigures(), last: s, minPeerRwnd: s.peerRwnd };
      this.conns.set(s.id, w);
    }
    w.last = s;
    if (s.peerRwnd !== null) w.minPeerRwnd = w.minPeerRwnd === null ? s.peerRwnd : Math.min(w.minPeerRwnd, s.peerRwnd);
    const d = s.delta;
    if (!(d.seconds > 0)) return; // a first observation: the window starts here
    w.seconds += d.seconds;
    w.busy += d.busy;
    w.rwndLimited += d.rwndLimited;
    w.sndbufLimited += d.sndbufLimited;
    w.sndbufBound += d.sndbufBound;
    w.bytesAcked += d.bytesAcked;
    w.bytesRetrans += d.bytesRetrans;
    if (s.peerRwnd === 0) w.zeroWindowSeconds += d.seconds;
  }

  /** Feeds one poll's connections (and those it closed). */
  observeAll(samples: Iterable<ConnSample>, now = Date.now()): void {
    this.polls++;
    this.started ??= now;
    this.ended = now;
    for (const s of samples) this.observe(s);
  }

  /** Forgets closed connections not seen for `ms` (top keeps running for hours). */
  prune(now: number, ms: number): void {
    for (const [id, w] of this.conns) if (w.last.closed && now - w.last.lastSeen > ms) this.conns.delete(id);
  }

  /** Per-port sums (connections that carried nothing in the window are left out). */
  ports(): Map<string, WindowFigures & { connections: number }> {
    const out = new Map<string, WindowFigures & { connections: number }>();
    for (const w of this.conns.values()) {
      if (!(w.seconds > 0)) continue;
      let p = out.get(w.last.port);
      if (p === undefined) {
        p = { ...zeroFigures(), connections: 0 };
        out.set(w.last.port, p);
      }
      p.connections++;
      p.seconds += w.seconds;
      p.busy += w.busy;
      p.rwndLimited += w.rwndLimited;
      p.sndbufLimited += w.sndbufLimited;
      p.sndbufBound += w.sndbufBound;
      p.bytesAcked += w.bytesAcked;
      p.bytesRetrans += w.bytesRetrans;
      p.zeroWindowSeconds += w.zeroWindowSeconds;
    }
    return out;
  }
}

// ---- sentences ----

/** How bad a connection is, for ranking: stalled time first, then network-limited time. */
export function badness(w: WindowFigures): number {
  const stalled = w.rwndLimited + w.sndbufLimited + w.sndbufBound;
  return stalled + 0.5 * Math.max(0, w.busy - stalled);
}

/**
 * A port's verdict is about its *sending* time (busyLimit, the classifier's
 * rule for busy time), because idle keep-alive connections would otherwise
 * drown a stalled one. It is `app` only when the port's connections were busy
 * less than 10 % of their time, and `unknown` when they were busy less than
 * four jiffies in all. (A single connection's verdict is classify() over its span.)
 */
export function portLimit(f: WindowFigures): Limit {
  if (!(f.busy >= 0.016)) return f.seconds > 0 && f.busy === 0 ? 'app' : 'unknown';
  if (f.busy < 0.1 * f.seconds) return 'app';
  return busyLimit(f.busy, f.rwndLimited, f.sndbufLimited, f.sndbufBound);
}
