// Prometheus exposition for watch mode (prom-client, private Registry).
//
// Everything is set at scrape time from the connection table: aggregates per
// port (never dropped), per-connection series for at most `maxConnections`
// connections (most stalled first, then most active), and self metrics.
// A closed connection is a candidate in exactly one more scrape (with its
// final figures), then its series are gone.
import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { Connection, ConnectionTable } from '../model/connections.js';
import type { OwnerResolver } from '../model/owners.js';

/** Point-in-time figures of the agent itself, read at scrape time. */
export interface SelfSnapshot {
  polls: number;
  pollErrors: number;
  parseErrors: { dump: number; destroy: number };
  dumpInterrupted: number;
  socketsSeen: number;
  destroyFeedUp: boolean;
  destroyedSockets: number;
  destroyFeedLost: number;
  ownerScans: number;
}

export interface MetricsOptions {
  maxConnections: number;
  info: { version: string; kernel: string; destroyFeed: string };
}

/** Chronographs are whole microseconds: round away float summing noise. */
const us = (seconds: number): number => Math.round(seconds * 1e6) / 1e6;

type Labels = { port: string; remote: string; pid: string; comm: string };

export class WatchMetrics {
  readonly registry = new Registry();
  readonly pollDuration: Histogram;
  /** Connections left out by the cap at the last scrape. */
  lastDropped = 0;
  private previous = new Set<number | string>();

  private readonly agg: {
    busy: Counter;
    rwnd: Counter;
    sndbuf: Counter;
    acked: Counter;
    retrans: Counter;
    open: Gauge;
    closed: Counter;
  };
  private readonly conn: {
    busy: Counter;
    rwnd: Counter;
    sndbuf: Counter;
    acked: Counter;
    retrans: Counter;
    rate: Gauge;
    rtt: Gauge;
    peerRwnd: Gauge;
  };
  private readonly self: {
    polls: Counter;
    pollErrors: Counter;
    parseErrors: Counter;
    interrupted: Counter;
    seen: Gauge;
    tracked: Gauge;
    dropped: Gauge;
    feedUp: Gauge;
    destroyed: Counter;
    feedLost: Counter;
    ownerScans: Counter;
  };

  constructor(
    private readonly table: ConnectionTable,
    private readonly owners: OwnerResolver | undefined,
    private readonly selfSnapshot: () => SelfSnapshot,
    private readonly opts: MetricsOptions,
  ) {
    const r = [this.registry];
    const counter = (name: string, help: string, labelNames: string[] = []): Counter =>
      new Counter({ name, help, labelNames, registers: r });
    const gauge = (name: string, help: string, labelNames: string[] = []): Gauge =>
      new Gauge({ name, help, labelNames, registers: r });
    const P = ['port'];
    this.agg = {
      busy: counter('tcp_chrono_busy_seconds_total', 'Time connections had data in flight or queued to send (tcpi_busy_time), by local port.', P),
      rwnd: counter('tcp_chrono_rwnd_limited_seconds_total', "Busy time limited by the peer's receive window (tcpi_rwnd_limited), by local port.", P),
      sndbuf: counter('tcp_chrono_sndbuf_limited_seconds_total', 'Busy time limited by the send buffer (tcpi_sndbuf_limited), by local port.', P),
      acked: counter('tcp_chrono_bytes_acked_total', 'Bytes acknowledged by peers (tcpi_bytes_acked), by local port.', P),
      retrans: counter('tcp_chrono_bytes_retrans_total', 'Bytes retransmitted (tcpi_bytes_retrans, Linux 4.19+), by local port.', P),
      open: gauge('tcp_chrono_connections', 'Watched connections open now, by local port.', P),
      closed: counter('tcp_chrono_connections_closed_total', 'Watched connections that closed, by local port.', P),
    };
    const C = ['port', 'remote', 'pid', 'comm'];
    this.conn = {
      busy: counter('tcp_chrono_connection_busy_seconds_total', 'Busy time of one connection (capped set, see tcp_chrono_agent_dropped_connection_series).', C),
      rwnd: counter('tcp_chrono_connection_rwnd_limited_seconds_total', "Busy time of one connection limited by the peer's receive window.", C),
      sndbuf: counter('tcp_chrono_connection_sndbuf_limited_seconds_total', 'Busy time of one connection limited by the send buffer.', C),
      acked: counter('tcp_chrono_connection_bytes_acked_total', 'Bytes of one connection acknowledged by the peer.', C),
      retrans: counter('tcp_chrono_connection_bytes_retrans_total', 'Bytes of one connection retransmitted.', C),
      rate: gauge('tcp_chrono_connection_delivery_rate_bytes_per_second', 'Most recent delivery rate sample of one connection (tcpi_delivery_rate).', C),
      rtt: gauge('tcp_chrono_connection_rtt_seconds', 'Smoothed round-trip time of one connection.', C),
      peerRwnd: gauge('tcp_chrono_connection_peer_rwnd_bytes', "The peer's advertised receive window (tcpi_snd_wnd, Linux 5.4+).", C),
    };
    this.self = {
      polls: counter('tcp_chrono_agent_polls_total', 'sock_diag polls completed.'),
      pollErrors: counter('tcp_chrono_agent_poll_errors_total', 'sock_diag polls that failed.'),
      parseErrors: counter('tcp_chrono_agent_parse_errors_total', 'Netlink messages that could not be decoded, by source (dump, destroy).', ['source']),
      interrupted: counter('tcp_chrono_agent_dump_interrupted_total', 'Dumps repeated because the socket tables changed mid-dump (NLM_F_DUMP_INTR).'),
      seen: gauge('tcp_chrono_agent_sockets_seen', 'Sockets the kernel returned in the last poll (before the agent-side filters).'),
      tracked: gauge('tcp_chrono_agent_connections_tracked', 'Connections in the table (open, watched).'),
      dropped: gauge('tcp_chrono_agent_dropped_connection_series', 'Connections left out of the per-connection series at the last scrape by --max-connections (aggregates still count them).'),
      feedUp: gauge('tcp_chrono_agent_destroy_feed_up', '1 if the sock_diag destroy feed is subscribed (closed connections counted exactly), 0 if closed connections keep their last polled figures.'),
      destroyed: counter('tcp_chrono_agent_destroyed_sockets_total', 'Destroyed-socket messages received from the kernel and kept by the filters.'),
      feedLost: counter('tcp_chrono_agent_destroy_feed_overruns_total', 'Times the destroy feed receive queue overflowed (messages lost).'),
      ownerScans: counter('tcp_chrono_agent_owner_scans_total', 'Scans of /proc for socket owners.'),
    };
    this.pollDuration = new Histogram({
      name: 'tcp_chrono_agent_poll_duration_seconds',
      help: 'Time of one poll: sock_diag dump, decoding and table update.',
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
      registers: r,
    });
    const info = gauge('tcp_chrono_agent_info', 'Agent build and kernel facts (value is always 1).', ['version', 'kernel', 'destroy_feed']);
    info.set({ version: opts.info.version, kernel: opts.info.kernel, destroy_feed: opts.info.destroyFeed }, 1);
  }

  get contentType(): string {
    return this.registry.contentType;
  }

  /** Sets every series from the table and renders the exposition. */
  async render(): Promise<string> {
    this.update();
    return this.registry.metrics();
  }

  /**
   * The per-connection series to export now: open connections and those
   * closed since the last scrape, ranked, capped. Consumes the closed ones.
   */
  selectExported(): Connection[] {
    const candidates = [...this.table.open.values(), ...this.table.takeClosed()];
    const cap = this.opts.maxConnections;
    let chosen = candidates;
    if (candidates.length > cap) {
      // Exported last time counts double: keeps the set (and the series) steady.
      const weight = (c: Connection): number => (this.previous.has(c.key) ? 2 : 1);
      chosen = candidates
        .map((c) => ({ c, stall: c.recentStall * weight(c), bytes: c.recentBytes * weight(c) }))
        .sort((a, b) => b.stall - a.stall || b.bytes - a.bytes)
        .slice(0, cap)
        .map((x) => x.c);
    }
    this.lastDropped = candidates.length - chosen.length;
    this.previous = new Set(chosen.map((c) => c.key));
    return chosen;
  }

  private update(): void {
    const { agg, conn, self } = this;
    for (const m of [agg.busy, agg.rwnd, agg.sndbuf, agg.acked, agg.retrans, agg.closed, agg.open]) m.reset();
    for (const [port, a] of this.table.aggregates) {
      const l = { port };
      agg.busy.inc(l, us(a.busy));
      agg.rwnd.inc(l, us(a.rwndLimited));
      agg.sndbuf.inc(l, us(a.sndbufLimited));
      agg.acked.inc(l, a.bytesAcked);
      agg.retrans.inc(l, a.bytesRetrans);
      agg.closed.inc(l, a.closed);
    }
    for (const [port, n] of this.table.openCounts()) agg.open.set({ port }, n);

    for (const m of Object.values(conn)) m.reset();
    const seen = new Set<string>();
    for (const c of this.selectExported()) {
      c.owner ??= this.owners?.lookup(c.inode);
      const l: Labels = {
        port: String(c.localPort),
        remote: c.remote,
        pid: c.owner !== undefined ? String(c.owner.pid) : '',
        comm: c.owner?.comm ?? '',
      };
      // Two sockets with one label set (same peer on two local addresses, or
      // a peer port reused right after a close) would add up: keep the first.
      const id = `${l.port}\u0000${l.remote}\u0000${l.pid}\u0000${l.comm}`;
      if (seen.has(id)) {
        this.lastDropped++;
        continue;
      }
      seen.add(id);
      conn.busy.inc(l, us(c.busy));
      conn.rwnd.inc(l, us(c.rwndLimited));
      conn.sndbuf.inc(l, us(c.sndbufLimited));
      conn.acked.inc(l, c.bytesAcked);
      conn.retrans.inc(l, c.bytesRetrans);
      if (Number.isFinite(c.deliveryRate)) conn.rate.set(l, c.deliveryRate);
      conn.rtt.set(l, c.rtt);
      if (c.peerRwnd !== undefined) conn.peerRwnd.set(l, c.peerRwnd);
    }

    const s = this.selfSnapshot();
    for (const m of Object.values(self)) m.reset();
    self.polls.inc(s.polls);
    self.pollErrors.inc(s.pollErrors);
    self.parseErrors.inc({ source: 'dump' }, s.parseErrors.dump);
    self.parseErrors.inc({ source: 'destroy' }, s.parseErrors.destroy);
    self.interrupted.inc(s.dumpInterrupted);
    self.seen.set(s.socketsSeen);
    self.tracked.set(this.table.open.size);
    self.dropped.set(this.lastDropped);
    self.feedUp.set(s.destroyFeedUp ? 1 : 0);
    self.destroyed.inc(s.destroyedSockets);
    self.feedLost.inc(s.destroyFeedLost);
    self.ownerScans.inc(s.ownerScans);
  }
}
