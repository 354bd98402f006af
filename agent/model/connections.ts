// The connection table: every watched TCP connection keyed by its socket
// cookie, with what changed since the previous observation, and per-port
// aggregates that nothing is ever subtracted from.
//
// Aggregates are built from deltas: each observation of a connection (a poll
// or its destroy message) adds what grew since the one before. So a counter
// never goes backwards when a connection closes, a destroy message that
// arrives after the connection already vanished from a dump adds only the
// remainder (tombstones), and a connection born and gone between two polls
// is counted whole from its destroy message.
import { TCP_CLOSE, formatEndpoint, stateName, type InetDiagSocket } from '../parse/inet_diag.js';
import type { TcpInfo } from '../parse/tcp_info.js';
import type { Owner } from './owners.js';

/** Cumulative figures of one connection, in base units. */
export interface Figures {
  busy: number;
  rwndLimited: number;
  sndbufLimited: number;
  bytesAcked: number;
  bytesRetrans: number;
}

const ZERO: Figures = { busy: 0, rwndLimited: 0, sndbufLimited: 0, bytesAcked: 0, bytesRetrans: 0 };

export interface Aggregate extends Figures {
  /** Connections of this port that have closed (destroyed or gone from the dump). */
  closed: number;
}

export type CloseHow = 'destroyed' | 'vanished';

export interface Connection extends Figures {
  key: number | string;
  cookie: bigint;
  family: 4 | 6;
  localAddress: string;
  localPort: number;
  remoteAddress: string;
  remotePort: number;
  /** `ip:port` of the peer. */
  remote: string;
  /** Aggregate label: the local port, or "ephemeral" for outbound connections (see portLabel). */
  port: string;
  state: number;
  inode: number;
  uid: number;
  cgroupId?: bigint;
  cong?: string;
  /** Epoch milliseconds. */
  firstSeen: number;
  lastSeen: number;
  bytesSent: number;
  /** Point-in-time figures of the last observation. */
  deliveryRate: number;
  rtt: number;
  /** The peer's advertised receive window (tcpi_snd_wnd, Linux 5.4+). */
  peerRwnd: number | undefined;
  cwnd: number;
  notsentBytes: number;
  appLimited: boolean;
  /** Growth between the last two observations (`seconds` of wall time apart). */
  delta: Figures & { seconds: number };
  /** Exponentially decayed stall (rwnd + sndbuf) and bytes: what the cardinality cap ranks by. */
  recentStall: number;
  recentBytes: number;
  owner?: Owner;
  closed?: { at: number; how: CloseHow };
  /** When the connection was first missing from a dump (waiting for its destroy message). */
  missingSince?: number;
}

export interface TableOptions {
  /**
   * How long a connection missing from a dump waits for its destroy message
   * before it is closed with its last polled figures. 0 without a feed.
   */
  closeGraceMs: number;
  /** How long a closed connection's figures are remembered for late destroy messages. */
  tombstoneMs?: number;
  /** Closed connections kept for their one last scrape (older ones drop first). */
  maxClosedPending?: number;
  /** The user chose the ports: label every connection with its local port. */
  portsChosen?: boolean;
  /** Time constant of the decayed activity used by the cardinality cap. */
  recentTauSeconds?: number;
}

interface Tombstone extends Figures {
  expires: number;
}

export class ConnectionTable {
  readonly open = new Map<number | string, Connection>();
  readonly aggregates = new Map<string, Aggregate>();
  /** Ports with a listener at the last poll. */
  listening = new Set<number>();
  private closedPending: Connection[] = [];
  private readonly tombstones = new Map<number | string, Tombstone>();
  private readonly opts: Required<TableOptions>;

  constructor(opts: TableOptions) {
    this.opts = {
      tombstoneMs: 120_000,
      maxClosedPending: 10_000,
      portsChosen: false,
      recentTauSeconds: 60,
      ...opts,
    };
  }

  setCloseGrace(ms: number): void {
    this.opts.closeGraceMs = ms;
  }

  /**
   * Aggregate label. Without a --port filter, a connection whose local port
   * has no listener is outbound, and its local port is ephemeral: one label
   * per such port would grow without bound, so they share "ephemeral".
   */
  portLabel(localPort: number): string {
    if (this.opts.portsChosen || this.listening.has(localPort)) return String(localPort);
    return 'ephemeral';
  }

  /**
   * Applies one poll. `complete` is false when the dump may have missed
   * sockets (interrupted): then nothing is closed for being absent.
   */
  applyPoll(sockets: readonly InetDiagSocket[], now: number, listening: Set<number>, complete = true): void {
    this.listening = listening;
    const seen = new Set<number | string>();
    for (const s of sockets) {
      if (s.info === undefined) continue;
      seen.add(s.key);
      let c = this.open.get(s.key);
      if (c === undefined) {
        c = this.create(s, now);
        this.open.set(s.key, c);
      }
      delete c.missingSince;
      this.observe(c, s, now);
    }
    if (complete) {
      for (const c of this.open.values()) {
        if (seen.has(c.key)) continue;
        c.missingSince ??= now;
        if (now - c.missingSince >= this.opts.closeGraceMs) this.close(c, now, 'vanished');
      }
    }
    this.purgeTombstones(now);
  }

  /** Applies final figures from the destroy feed (sockets already filtered by identity). */
  applyDestroyed(sockets: readonly InetDiagSocket[], now: number): void {
    for (const s of sockets) {
      if (s.info === undefined) continue;
      const c = this.open.get(s.key);
      if (c !== undefined) {
        this.observe(c, s, now);
        this.close(c, now, 'destroyed');
        continue;
      }
      const t = this.tombstones.get(s.key);
      if (t !== undefined) {
        // Closed already (vanished from the dump first): add only what grew since.
        const f = figuresOf(s.info);
        addTo(this.aggregate(this.portLabel(s.localPort)), growth(t, f));
        Object.assign(t, maxFigures(t, f));
        continue;
      }
      // Born and gone between two polls. Sockets that never carried data
      // (failed connects, listeners) are not connections worth counting.
      if (!(s.info.bytesAcked > 0 || (s.info.bytesReceived ?? 0) > 0)) continue;
      const fresh = this.create(s, now);
      this.observe(fresh, s, now);
      this.close(fresh, now, 'destroyed');
    }
  }

  /** Closed connections not yet exported; each is returned by exactly one call. */
  takeClosed(): Connection[] {
    const out = this.closedPending;
    this.closedPending = [];
    return out;
  }

  /** Closed connections waiting for their last scrape (not consumed). */
  peekClosed(): readonly Connection[] {
    return this.closedPending;
  }

  /** Open connections per aggregate label, every known label present (0 if none open). */
  openCounts(): Map<string, number> {
    const counts = new Map<string, number>();
    for (const port of this.aggregates.keys()) counts.set(port, 0);
    for (const c of this.open.values()) counts.set(c.port, (counts.get(c.port) ?? 0) + 1);
    return counts;
  }

  get tombstoneCount(): number {
    return this.tombstones.size;
  }

  private aggregate(port: string): Aggregate {
    let a = this.aggregates.get(port);
    if (a === undefined) {
      a = { ...ZERO, closed: 0 };
      this.aggregates.set(port, a);
    }
    return a;
  }

  private create(s: InetDiagSocket, now: number): Connection {
    return {
      key: s.key,
      cookie: s.cookie,
      family: s.family,
      localAddress: s.localAddress,
      localPort: s.localPort,
      remoteAddress: s.remoteAddress,
      remotePort: s.remotePort,
      remote: formatEndpoint(s.remoteAddress, s.remotePort),
      port: this.portLabel(s.localPort),
      state: s.state,
      inode: s.inode,
      uid: s.uid,
      firstSeen: now,
      lastSeen: now,
      ...ZERO,
      bytesSent: 0,
      deliveryRate: 0,
      rtt: 0,
      peerRwnd: undefined,
      cwnd: 0,
      notsentBytes: 0,
      appLimited: false,
      delta: { ...ZERO, seconds: 0 },
      recentStall: 0,
      recentBytes: 0,
    };
  }

  private observe(c: Connection, s: InetDiagSocket, now: number): void {
    const info = s.info!;
    const f = figuresOf(info);
    const d = growth(c, f);
    addTo(this.aggregate(c.port), d);
    const seconds = (now - c.lastSeen) / 1000;
    c.delta = { ...d, seconds };
    // Decay by wall time so the ranking does not depend on the poll interval.
    const keep = seconds > 0 ? Math.exp(-seconds / this.opts.recentTauSeconds) : 1;
    c.recentStall = c.recentStall * keep + d.rwndLimited + d.sndbufLimited;
    c.recentBytes = c.recentBytes * keep + d.bytesAcked;
    Object.assign(c, maxFigures(c, f));
    c.lastSeen = now;
    // A destroyed socket reports state close; keep the last live state for display.
    if (s.state !== TCP_CLOSE) c.state = s.state;
    if (s.inode !== 0) c.inode = s.inode;
    if (s.cgroupId !== undefined) c.cgroupId = s.cgroupId;
    if (s.cong !== undefined) c.cong = s.cong;
    c.bytesSent = info.bytesSent ?? c.bytesSent;
    c.deliveryRate = info.deliveryRate ?? 0;
    c.rtt = info.rtt;
    c.peerRwnd = info.sndWnd;
    c.cwnd = info.sndCwnd;
    c.notsentBytes = info.notsentBytes ?? 0;
    c.appLimited = info.appLimited ?? false;
  }

  private close(c: Connection, now: number, how: CloseHow): void {
    c.closed = { at: now, how };
    this.open.delete(c.key);
    this.aggregate(c.port).closed++;
    this.tombstones.set(c.key, { ...pickFigures(c), expires: now + this.opts.tombstoneMs });
    this.closedPending.push(c);
    if (this.closedPending.length > this.opts.maxClosedPending) this.closedPending.shift();
  }

  private purgeTombstones(now: number): void {
    // Insertion order is expiry order, so stop at the first live one.
    for (const [key, t] of this.tombstones) {
      if (t.expires > now) break;
      this.tombstones.delete(key);
    }
  }
}

export function figuresOf(info: TcpInfo): Figures {
  return {
    busy: info.busyTime ?? 0,
    rwndLimited: info.rwndLimited ?? 0,
    sndbufLimited: info.sndbufLimited ?? 0,
    bytesAcked: info.bytesAcked,
    bytesRetrans: info.bytesRetrans ?? 0,
  };
}

function pickFigures(f: Figures): Figures {
  return {
    busy: f.busy,
    rwndLimited: f.rwndLimited,
    sndbufLimited: f.sndbufLimited,
    bytesAcked: f.bytesAcked,
    bytesRetrans: f.bytesRetrans,
  };
}

/** What grew from a to b (a counter that went down contributes nothing). */
function growth(a: Figures, b: Figures): Figures {
  return {
    busy: Math.max(0, b.busy - a.busy),
    rwndLimited: Math.max(0, b.rwndLimited - a.rwndLimited),
    sndbufLimited: Math.max(0, b.sndbufLimited - a.sndbufLimited),
    bytesAcked: Math.max(0, b.bytesAcked - a.bytesAcked),
    bytesRetrans: Math.max(0, b.bytesRetrans - a.bytesRetrans),
  };
}

function maxFigures(a: Figures, b: Figures): Figures {
  return {
    busy: Math.max(a.busy, b.busy),
    rwndLimited: Math.max(a.rwndLimited, b.rwndLimited),
    sndbufLimited: Math.max(a.sndbufLimited, b.sndbufLimited),
    bytesAcked: Math.max(a.bytesAcked, b.bytesAcked),
    bytesRetrans: Math.max(a.bytesRetrans, b.bytesRetrans),
  };
}

function addTo(a: Figures, d: Figures): void {
  a.busy += d.busy;
  a.rwndLimited += d.rwndLimited;
  a.sndbufLimited += d.sndbufLimited;
  a.bytesAcked += d.bytesAcked;
  a.bytesRetrans += d.bytesRetrans;
}

/** Share of busy time spent rwnd-limited (0 when never busy). */
export function rwndShare(c: Figures): number {
  return c.busy > 0 ? c.rwndLimited / c.busy : 0;
}

/** JSON view of a connection for /api/connections. */
export function connectionJson(c: Connection): Record<string, unknown> {
  return {
    id: String(c.cookie),
    port: c.port,
    local: formatEndpoint(c.localAddress, c.localPort),
    remote: c.remote,
    state: c.closed !== undefined ? 'closed' : stateName(c.state),
    pid: c.owner?.pid ?? null,
    comm: c.owner?.comm ?? null,
    firstSeen: new Date(c.firstSeen).toISOString(),
    lastSeen: new Date(c.lastSeen).toISOString(),
    closed: c.closed !== undefined ? { at: new Date(c.closed.at).toISOString(), how: c.closed.how } : null,
    busySeconds: c.busy,
    rwndLimitedSeconds: c.rwndLimited,
    sndbufLimitedSeconds: c.sndbufLimited,
    stallSeconds: c.rwndLimited + c.sndbufLimited,
    rwndShare: rwndShare(c),
    sndbufShare: c.busy > 0 ? c.sndbufLimited / c.busy : 0,
    bytesAcked: c.bytesAcked,
    bytesRetrans: c.bytesRetrans,
    bytesSent: c.bytesSent,
    deliveryRateBytesPerSecond: c.deliveryRate,
    rttSeconds: c.rtt,
    peerRwndBytes: c.peerRwnd ?? null,
    cwndSegments: c.cwnd,
    notsentBytes: c.notsentBytes,
    appLimited: c.appLimited,
    congestionControl: c.cong ?? null,
    cgroupId: c.cgroupId !== undefined ? String(c.cgroupId) : null,
    lastInterval: {
      seconds: c.delta.seconds,
      busySeconds: c.delta.busy,
      rwndLimitedSeconds: c.delta.rwndLimited,
      sndbufLimitedSeconds: c.delta.sndbufLimited,
      bytesAcked: c.delta.bytesAcked,
    },
  };
}
