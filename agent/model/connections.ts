// The connection table: every watched TCP connection keyed by its socket
// cookie, with what changed since the previous observation, and per-port
// aggregates that nothing is ever subtracted from. With network namespaces
// (watch --netns), every connection belongs to one NetnsScope: keys are made
// unique per namespace, and aggregates are per (namespace, port).
//
// Aggregates are built from deltas: each observation of a connection (a poll
// or its destroy message) adds what grew since the one before. So a counter
// never goes backwards when a connection closes, a destroy message that
// arrives after the connection already vanished from a dump adds only the
// remainder (tombstones), and a connection born and gone between two polls
// is counted whole from its destroy message.
import { TCP_CLOSE, formatEndpoint, stateName, type InetDiagSocket, type TcpChrono } from '../parse/inet_diag.js';
import { sendBufferBound, unnamedBusy } from './classify.js';
import type { Owner } from './owners.js';

/** Cumulative figures of one connection, in base units. */
export interface Figures {
  busy: number;
  rwndLimited: number;
  sndbufLimited: number;
  bytesAcked: number;
  bytesRetrans: number;
}


export interface Aggregate extends Figures {
  /** Connections of this port that have closed (destroyed or gone from the dump). */
  closed: number;
  /** Inferred sndbuf-limited seconds (Connection.sndbufBound). */
  sndbufBound: number;
  /** Its key in ConnectionTable.aggregates: the port label, or `netns/port` in a namespace. */
  key: string;
  /** The port label (Connection.port). */
  port: string;
  /** The network namespace (watch --netns only). */
  scope: NetnsScope | undefined;
}

/**
 * One network namespace whose connections the table keeps (watch --netns).
 * A connection's namespace is its aggregate's (Connection.agg.scope): no
 * field per connection.
 */
export class NetnsScope {
  /** Ports with a listener in this namespace, at the last poll and the one before. */
  listening = new Set<number>();
  prevListening = new Set<number>();
  /** Generation of the last table poll that dumped this namespace completely. */
  completeGen = -1;
  /** When the namespace went away (undefined: watched). */
  goneAt: number | undefined = undefined;
  /** Keys of the aggregates created for it. */
  readonly aggregateKeys: string[] = [];
  /**
   * Added to cookie keys: before Linux 5.11 cookies were numbered per
   * namespace, so two namespaces may hold the same one. Undefined: keys are
   * `slot/cookie` strings (past MAX_NUMERIC_SCOPES scopes).
   */
  readonly keyBase: number | undefined;

  constructor(
    /** The series label: the name under /run/netns, else inode:<number>. */
    public label: string,
    readonly slot: number,
  ) {
    this.keyBase = slot < MAX_NUMERIC_SCOPES ? slot * KEY_SPAN : undefined;
  }
}

/** Cookies below this are offset by a scope's keyBase (2^40: a trillion sockets). */
const KEY_SPAN = 2 ** 40;
/** Scopes whose keys stay numbers (keyBase + cookie < 2^53). */
const MAX_NUMERIC_SCOPES = 2 ** 13 - 1;

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
  /** sk_sndbuf at the last busy observation (0: not seen), and whether the buffer was bound then. */
  sndbuf: number;
  bufferBound: boolean;
  /**
   * Busy seconds the kernel named neither rwnd- nor sndbuf-limited in poll
   * intervals that began or ended with the send buffer bound (classify.ts,
   * sendBufferBound: smaller than one congestion window, and at least half
   * full). Inferred; the kernel's sndbufLimited is untouched.
   */
  sndbufBound: number;
  /** Growth between the last two observations (`seconds` of wall time apart). */
  delta: Figures & { seconds: number; sndbufBound: number };
  /** Exponentially decayed stall (rwnd + sndbuf) and bytes: what the cardinality cap ranks by. */
  recentStall: number;
  recentBytes: number;
  owner?: Owner;
  closed?: { at: number; how: CloseHow };
  /** When the connection was first missing from a dump (waiting for its destroy message). */
  missingSince: number | undefined;
  /** Internal: poll generation that last saw it, and its port aggregate. */
  seenGen: number;
  agg: Aggregate;
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
  /** Called for each connection a poll sees for the first time (e.g. to look up its owner). */
  onNew?: (c: Connection) => void;
  /** How long the aggregates of a namespace that went away are still exported (so their last figures are scraped). */
  scopeRetentionMs?: number;
}

interface Tombstone extends Figures {
  expires: number;
  agg: Aggregate;
}

export class ConnectionTable {
  readonly open = new Map<number | string, Connection>();
  readonly aggregates = new Map<string, Aggregate>();
  /** Ports with a listener at the last poll. */
  listening = new Set<number>();
  private closedPending: Connection[] = [];
  private readonly tombstones = new Map<number | string, Tombstone>();
  private readonly opts: Required<TableOptions>;
  private generation = 0;
  private pollNow = 0;
  private prevListening = new Set<number>();
  /** The namespace of the sockets being tracked or destroyed now (undefined: no namespaces). */
  private scope: NetnsScope | undefined = undefined;
  private scopeSlots = 0;
  private readonly retired: NetnsScope[] = [];

  constructor(opts: TableOptions) {
    this.opts = {
      tombstoneMs: 120_000,
      maxClosedPending: 10_000,
      portsChosen: false,
      recentTauSeconds: 60,
      scopeRetentionMs: 300_000,
      ...opts,
      onNew: opts.onNew ?? (() => undefined),
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
    if (this.opts.portsChosen) return String(localPort);
    const sc = this.scope;
    if (sc === undefined ? this.listening.has(localPort) || this.prevListening.has(localPort) : sc.listening.has(localPort) || sc.prevListening.has(localPort)) {
      return String(localPort);
    }
    return 'ephemeral';
  }

  // ---- network namespaces (watch --netns) ----

  /** A namespace whose sockets will come through enterScope() and applyDestroyed(). */
  addScope(label: string): NetnsScope {
    return new NetnsScope(label, this.scopeSlots++);
  }

  /**
   * Renames a scope, while it has no aggregate yet (its label is in no
   * series): false otherwise.
   */
  relabelScope(scope: NetnsScope, label: string): boolean {
    if (scope.aggregateKeys.length > 0) return false;
    scope.label = label;
    return true;
  }

  /**
   * Within a poll (beginPoll/endPoll), the sockets track() is given next are
   * the namespace's, and `listening` its listener ports. Namespaces left
   * out of a poll, or not left with complete = true, close nothing for
   * being absent.
   */
  enterScope(scope: NetnsScope, listening: Set<number>): void {
    scope.prevListening = scope.listening;
    scope.listening = listening;
    this.scope = scope;
  }

  leaveScope(complete: boolean): void {
    if (complete && this.scope !== undefined) this.scope.completeGen = this.generation;
    this.scope = undefined;
  }

  /**
   * The namespace went away: its open connections close now (gone from
   * the dump), and its aggregates are dropped scopeRetentionMs later.
   */
  removeScope(scope: NetnsScope, now: number): void {
    for (const c of this.open.values()) if (c.agg.scope === scope) this.close(c, now, 'vanished');
    scope.goneAt = now;
    this.retired.push(scope);
  }

  /** The table key of a cookie key in the current scope. */
  private keyOf(key: number | string): number | string {
    const sc = this.scope;
    if (sc === undefined) return key;
    if (sc.keyBase !== undefined && typeof key === 'number' && key < KEY_SPAN) return sc.keyBase + key;
    return `${sc.slot}/${key}`;
  }

  private purgeRetired(now: number): void {
    for (let i = this.retired.length - 1; i >= 0; i--) {
      const sc = this.retired[i]!;
      if (now - sc.goneAt! < this.opts.scopeRetentionMs) continue;
      // A namespace of the same name since then has taken over its aggregates (a.scope).
      for (const key of sc.aggregateKeys) if (this.aggregates.get(key)?.scope === sc) this.aggregates.delete(key);
      this.retired.splice(i, 1);
    }
  }

  /**
   * Applies one poll. `complete` is false when the dump may have missed
   * sockets (interrupted): then nothing is closed for being absent.
   */
  applyPoll(sockets: readonly InetDiagSocket[], now: number, listening: Set<number>, complete = true): void {
    this.beginPoll(now, listening);
    for (const s of sockets) this.track(s);
    this.endPoll(complete);
  }

  /**
   * Starts a poll whose sockets arrive one by one through track() (the
   * streaming form of applyPoll). `listening` may still grow during the poll.
   */
  beginPoll(now: number, listening: Set<number>): void {
    this.prevListening = this.listening;
    this.listening = listening;
    this.pollNow = now;
    this.generation++;
  }

  /** One socket of the current poll (idempotent within a poll). */
  track(s: InetDiagSocket): void {
    const ch = s.chrono;
    if (ch === undefined) return;
    const key = this.keyOf(s.key);
    let c = this.open.get(key);
    if (c === undefined) {
      // Closed already: its destroy message overtook a dump that still held
      // the socket. Cookies are never reused, so this is the same connection:
      // add what grew, never count it open (and closed) a second time.
      if (this.addToTombstone(key, ch)) return;
      c = this.create(s, this.pollNow, key);
      this.open.set(key, c);
      this.opts.onNew(c);
    }
    c.seenGen = this.generation;
    c.missingSince = undefined;
    this.observe(c, s, ch, this.pollNow);
  }

  /**
   * Ends the poll. `complete` is false when the dump may have missed
   * sockets (interrupted): then nothing is closed for being absent.
   */
  endPoll(complete = true): void {
    const now = this.pollNow;
    if (complete) {
      for (const c of this.open.values()) {
        if (c.seenGen === this.generation) continue;
        // Its namespace was not dumped (completely) in this poll.
        const sc = c.agg.scope;
        if (sc !== undefined && sc.completeGen !== this.generation) continue;
        c.missingSince ??= now;
        if (now - c.missingSince >= this.opts.closeGraceMs) this.close(c, now, 'vanished');
      }
    }
    this.purgeTombstones(now);
    if (this.retired.length > 0) this.purgeRetired(now);
  }

  /**
   * Applies final figures from the destroy feed (sockets already filtered
   * by identity); `scope`: the namespace whose feed sent them.
   */
  applyDestroyed(sockets: readonly InetDiagSocket[], now: number, scope?: NetnsScope): void {
    const outer = this.scope;
    this.scope = scope;
    try {
      for (const s of sockets) {
        const ch = s.chrono;
        if (ch === undefined) continue;
        const key = this.keyOf(s.key);
        const c = this.open.get(key);
        if (c !== undefined) {
          this.observe(c, s, ch, now);
          this.close(c, now, 'destroyed');
          continue;
        }
        // Closed already (vanished from the dump first): add only what grew since.
        if (this.addToTombstone(key, ch)) continue;
        // Born and gone between two polls. Sockets that never carried data
        // (failed connects, listeners) are not connections worth counting.
        if (!(ch.bytesAcked > 0 || ch.bytesReceived > 0)) continue;
        const fresh = this.create(s, now, key);
        this.observe(fresh, s, ch, now);
        this.close(fresh, now, 'destroyed');
      }
    } finally {
      this.scope = outer;
    }
  }

  /** Adds a closed connection's late growth to its aggregate; false when `key` has no tombstone. */
  private addToTombstone(key: number | string, ch: TcpChrono): boolean {
    const t = this.tombstones.get(key);
    if (t === undefined) return false;
    const f = figuresOf(ch);
    addTo(t.agg, growth(t, f));
    Object.assign(t, maxFigures(t, f));
    return true;
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
    for (const c of this.open.values()) counts.set(c.agg.key, (counts.get(c.agg.key) ?? 0) + 1);
    return counts;
  }

  get tombstoneCount(): number {
    return this.tombstones.size;
  }

  private aggregate(port: string): Aggregate {
    const sc = this.scope;
    const key = sc === undefined ? port : `${sc.label}/${port}`;
    let a = this.aggregates.get(key);
    if (a === undefined) {
      a = { busy: 0, rwndLimited: 0, sndbufLimited: 0, bytesAcked: 0, bytesRetrans: 0, closed: 0, sndbufBound: 0, key, port, scope: sc };
      this.aggregates.set(key, a);
      sc?.aggregateKeys.push(key);
    } else if (a.scope !== sc && sc !== undefined) {
      // A namespace of a name that went away (its aggregates still
      // retained): the series go on, counted from where they were.
      a.scope = sc;
      sc.aggregateKeys.push(key);
    }
    return a;
  }

  private create(s: InetDiagSocket, now: number, key: number | string): Connection {
    const port = this.portLabel(s.localPort);
    // Every field set here, in one order: one hidden class for all connections.
    return {
      key,
      cookie: s.cookie,
      family: s.family,
      localAddress: s.localAddress,
      localPort: s.localPort,
      remoteAddress: s.remoteAddress,
      remotePort: s.remotePort,
      remote: formatEndpoint(s.remoteAddress, s.remotePort),
      port,
      state: s.state,
      inode: s.inode,
      uid: s.uid,
      cgroupId: s.cgroupId,
      cong: s.cong,
      firstSeen: now,
      lastSeen: now,
      // Spelled out: a spread here would leave the object in slow (dictionary) mode.
      busy: 0,
      rwndLimited: 0,
      sndbufLimited: 0,
      bytesAcked: 0,
      bytesRetrans: 0,
      bytesSent: 0,
      deliveryRate: 0,
      rtt: 0,
      peerRwnd: undefined,
      cwnd: 0,
      notsentBytes: 0,
      appLimited: false,
      sndbuf: 0,
      bufferBound: false,
      sndbufBound: 0,
      delta: { busy: 0, rwndLimited: 0, sndbufLimited: 0, bytesAcked: 0, bytesRetrans: 0, seconds: 0, sndbufBound: 0 },
      recentStall: 0,
      recentBytes: 0,
      owner: undefined,
      closed: undefined,
      missingSince: undefined,
      seenGen: 0,
      agg: this.aggregate(port),
    };
  }

  // The per-poll hot path (50k connections a second): arithmetic in place, no allocation.
  private observe(c: Connection, s: InetDiagSocket, ch: TcpChrono, now: number): void {
    const busy = ch.busyTime - c.busy;
    const rwnd = ch.rwndLimited - c.rwndLimited;
    const sndbuf = ch.sndbufLimited - c.sndbufLimited;
    const acked = ch.bytesAcked - c.bytesAcked;
    const retrans = (ch.bytesRetrans ?? 0) - c.bytesRetrans;
    const d = c.delta;
    d.seconds = (now - c.lastSeen) / 1000;
    // A counter that went down (never, but bytes are bytes) contributes nothing.
    d.busy = busy > 0 ? busy : 0;
    d.rwndLimited = rwnd > 0 ? rwnd : 0;
    d.sndbufLimited = sndbuf > 0 ? sndbuf : 0;
    d.bytesAcked = acked > 0 ? acked : 0;
    d.bytesRetrans = retrans > 0 ? retrans : 0;
    d.sndbufBound = this.bound(c, s, ch, d);
    const a = c.agg;
    a.sndbufBound += d.sndbufBound;
    c.sndbufBound += d.sndbufBound;
    a.busy += d.busy;
    a.rwndLimited += d.rwndLimited;
    a.sndbufLimited += d.sndbufLimited;
    a.bytesAcked += d.bytesAcked;
    a.bytesRetrans += d.bytesRetrans;
    c.busy += d.busy;
    c.rwndLimited += d.rwndLimited;
    c.sndbufLimited += d.sndbufLimited;
    c.bytesAcked += d.bytesAcked;
    c.bytesRetrans += d.bytesRetrans;
    // Decay by wall time so the ranking does not depend on the poll interval.
    const keep = d.seconds > 0 ? Math.exp(-d.seconds / this.opts.recentTauSeconds) : 1;
    c.recentStall = c.recentStall * keep + d.rwndLimited + d.sndbufLimited + d.sndbufBound;
    c.recentBytes = c.recentBytes * keep + d.bytesAcked;
    c.lastSeen = now;
    // A destroyed socket reports state close; keep the last live state for display.
    if (s.state !== TCP_CLOSE) c.state = s.state;
    if (s.inode !== 0) c.inode = s.inode;
    c.bytesSent = ch.bytesSent ?? c.bytesSent;
    c.deliveryRate = ch.deliveryRate;
    c.rtt = ch.rtt;
    c.peerRwnd = ch.sndWnd;
    c.cwnd = ch.sndCwnd;
    c.notsentBytes = ch.notsentBytes;
    c.appLimited = ch.appLimited;
  }

  /**
   * The interval's busy time counted sndbuf-limited by inference: all the
   * time the kernel left unnamed, when the buffer was bound at either end of
   * the interval (a snapshot in the gap between two writes finds it empty;
   * an interval across a change of SO_SNDBUF is mostly one or the other).
   * skmem is decoded only for connections with unnamed busy time (idle ones,
   * most of a big table, cost nothing).
   */
  private bound(c: Connection, s: InetDiagSocket, ch: TcpChrono, d: Figures): number {
    const before = c.bufferBound;
    c.bufferBound = false;
    const rest = unnamedBusy(d.busy, d.rwndLimited, d.sndbufLimited);
    const m = rest > 0 ? s.skmem : undefined;
    if (m === undefined) return 0;
    c.sndbuf = m.sndbuf;
    c.bufferBound = sendBufferBound({ sndbuf: m.sndbuf, cwnd: ch.sndCwnd, mss: ch.sndMss, full: m.wmemQueued >= m.sndbuf / 2 });
    return c.bufferBound || before ? rest : 0;
  }

  private close(c: Connection, now: number, how: CloseHow): void {
    c.closed = { at: now, how };
    this.open.delete(c.key);
    c.agg.closed++;
    this.tombstones.set(c.key, { ...pickFigures(c), expires: now + this.opts.tombstoneMs, agg: c.agg });
    this.closedPending.push(c);
    // Nobody scraping: drop the oldest half at once (shift() per close would be quadratic).
    if (this.closedPending.length > this.opts.maxClosedPending) {
      this.closedPending.splice(0, this.closedPending.length >> 1);
    }
  }

  private purgeTombstones(now: number): void {
    // Insertion order is expiry order, so stop at the first live one.
    for (const [key, t] of this.tombstones) {
      if (t.expires > now) break;
      this.tombstones.delete(key);
    }
  }
}

export function figuresOf(ch: TcpChrono): Figures {
  return {
    busy: ch.busyTime,
    rwndLimited: ch.rwndLimited,
    sndbufLimited: ch.sndbufLimited,
    bytesAcked: ch.bytesAcked,
    bytesRetrans: ch.bytesRetrans ?? 0,
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

/**
 * JSON view of a connection for /api/connections. With watch --netns-labels:
 * `podUid` (podOf, from the namespace) and `containerId` (the owner's, when
 * looked up), as the series have them.
 */
export function connectionJson(c: Connection, podOf?: (scope: NetnsScope) => string): Record<string, unknown> {
  return {
    id: String(c.cookie),
    ...(c.agg.scope !== undefined && { netns: c.agg.scope.label }),
    ...(c.agg.scope !== undefined && podOf !== undefined && { podUid: podOf(c.agg.scope) }),
    ...(c.owner?.containerId !== undefined && { containerId: c.owner.containerId }),
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
    sndbufBoundSeconds: c.sndbufBound,
    sndbufBytes: c.sndbuf,
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
      sndbufBoundSeconds: c.delta.sndbufBound,
      bytesAcked: c.delta.bytesAcked,
    },
  };
}
