// Prometheus exposition for watch mode (prom-client, private Registry).
//
// Everything is set at scrape time from the connection table: aggregates per
// port (never dropped), per-connection series for at most `maxConnections`
// connections (most stalled first, then most active), and self metrics.
// A closed connection is a candidate in exactly one more scrape (with its
// final figures), then its series are gone.
import { performance } from 'node:perf_hooks';
import { Counter, Gauge, Histogram, Registry, type Metric } from 'prom-client';
import type { Aggregate, Connection, ConnectionTable, NetnsScope } from '../model/connections.js';
import type { OwnerResolver } from '../model/owners.js';
import { rankTopSync } from '../model/rank.js';
import { redactEndpoint } from './redact.js';

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
  /**
   * Poll slots skipped (watch's phase-aligned loop). Left out by loops that
   * do not count them: the counter is then not exported at all.
   */
  pollsMissed?: number;
  /** Network namespaces watched (watch --netns only; otherwise not exported). */
  namespaces?: number;
}

export interface MetricsOptions {
  maxConnections: number;
  info: { version: string; kernel: string; destroyFeed: string };
  /**
   * Labels beyond `netns` (watch --netns-labels): `pod_uid`, the pod of a
   * namespace (every series of a namespace, from podOf); `container_id`, the
   * container of a connection's owner process (per-connection series).
   */
  netnsLabels?: { podOf?: (scope: NetnsScope) => string; containers?: boolean };
}

/** Chronographs are whole microseconds: round away float summing noise. */
const us = (seconds: number): number => Math.round(seconds * 1e6) / 1e6;

/**
 * A metric whose samples are rebuilt from the table at every scrape and
 * handed to the prom-client Registry as they are. prom-client's own
 * Counter/Gauge hash the label set on every inc()/set(): ~5 µs a series,
 * half a second for 10k connections. The Registry only needs get().
 */
class SnapshotMetric<L extends Record<string, string>> {
  private values: { labels: L; value: number }[] = [];

  constructor(
    readonly name: string,
    readonly help: string,
    readonly type: 'counter' | 'gauge',
    registry: Registry,
  ) {
    registry.registerMetric(this as unknown as Metric);
  }

  reset(): void {
    this.values = [];
  }

  add(labels: L, value: number): void {
    this.values.push({ labels, value });
  }

  get(): { name: string; help: string; type: string; values: { labels: L; value: number }[]; aggregator: 'sum' } {
    return { name: this.name, help: this.help, type: this.type, values: this.values, aggregator: 'sum' };
  }
}

/** Aggregate labels: `netns` only with watch --netns, `pod_uid` only with --netns-labels pod_uid. */
type PortLabels = { netns?: string; pod_uid?: string; port: string };

/** Text-format escaping (exposition format 0.0.4). */
const escapeLabel = (v: string): string => (/[\\\n"]/.test(v) ? v.replace(/\\/g, '\\\\').replace(/\n/g, '\\n').replace(/"/g, '\\"') : v);
const formatValue = (v: number): string => (Number.isNaN(v) ? 'NaN' : v === Infinity ? '+Inf' : v === -Infinity ? '-Inf' : `${v}`);

/**
 * The per-connection families. Rendered by hand, not through prom-client:
 * its Registry spends ~8 µs formatting each series (label objects, escaping,
 * shared-label flattening), 0.7 s for 10k connections × 8 families, where a
 * string per connection reused across the families costs a tenth of that.
 */
const CONNECTION_FAMILIES: { name: string; help: string; type: 'counter' | 'gauge'; value: (c: Connection) => number | undefined }[] = [
  { name: 'tcp_chrono_connection_busy_seconds_total', help: 'Busy time of one connection (capped set, see tcp_chrono_agent_dropped_connection_series).', type: 'counter', value: (c) => us(c.busy) },
  { name: 'tcp_chrono_connection_rwnd_limited_seconds_total', help: "Busy time of one connection limited by the peer's receive window.", type: 'counter', value: (c) => us(c.rwndLimited) },
  { name: 'tcp_chrono_connection_sndbuf_limited_seconds_total', help: 'Busy time of one connection limited by the send buffer.', type: 'counter', value: (c) => us(c.sndbufLimited) },
  { name: 'tcp_chrono_connection_bytes_acked_total', help: 'Bytes of one connection acknowledged by the peer.', type: 'counter', value: (c) => c.bytesAcked },
  { name: 'tcp_chrono_connection_bytes_retrans_total', help: 'Bytes of one connection retransmitted.', type: 'counter', value: (c) => c.bytesRetrans },
  { name: 'tcp_chrono_connection_delivery_rate_bytes_per_second', help: 'Most recent delivery rate sample of one connection (tcpi_delivery_rate).', type: 'gauge', value: (c) => (Number.isFinite(c.deliveryRate) ? c.deliveryRate : undefined) },
  { name: 'tcp_chrono_connection_rtt_seconds', help: 'Smoothed round-trip time of one connection.', type: 'gauge', value: (c) => c.rtt },
  { name: 'tcp_chrono_connection_peer_rwnd_bytes', help: "The peer's advertised receive window (tcpi_snd_wnd, Linux 5.4+).", type: 'gauge', value: (c) => c.peerRwnd },
];

export class WatchMetrics {
  readonly registry = new Registry();
  readonly pollDuration: Histogram;
  /** Connections left out by the cap at the last scrape. */
  lastDropped = 0;
  private previous = new Set<number | string>();

  private readonly agg: Record<'busy' | 'rwnd' | 'sndbuf' | 'sndbufBound' | 'acked' | 'retrans' | 'open' | 'closed', SnapshotMetric<PortLabels>>;
  private readonly self: {
    polls: Counter;
    pollsMissed: Counter | undefined;
    namespaces: Gauge | undefined;
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
    memory: Gauge;
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
    const snap = <L extends Record<string, string>>(type: 'counter' | 'gauge') => (name: string, help: string): SnapshotMetric<L> =>
      new SnapshotMetric<L>(name, help, type, this.registry);
    const aggCounter = snap<PortLabels>('counter');
    const aggGauge = snap<PortLabels>('gauge');
    this.agg = {
      busy: aggCounter('tcp_chrono_busy_seconds_total', 'Time connections had data in flight or queued to send (tcpi_busy_time), by local port.'),
      rwnd: aggCounter('tcp_chrono_rwnd_limited_seconds_total', "Busy time limited by the peer's receive window (tcpi_rwnd_limited), by local port."),
      sndbuf: aggCounter('tcp_chrono_sndbuf_limited_seconds_total', 'Busy time limited by the send buffer (tcpi_sndbuf_limited), by local port.'),
      sndbufBound: aggCounter(
        'tcp_chrono_sndbuf_bound_seconds_total',
        'Busy time the kernel named neither rwnd- nor sndbuf-limited, in poll intervals where the send buffer was smaller than one congestion window and full: send-buffer-limited by inference (under BBR pacing the kernel undercounts it), by local port.',
      ),
      acked: aggCounter('tcp_chrono_bytes_acked_total', 'Bytes acknowledged by peers (tcpi_bytes_acked), by local port.'),
      retrans: aggCounter('tcp_chrono_bytes_retrans_total', 'Bytes retransmitted (tcpi_bytes_retrans, Linux 4.19+), by local port.'),
      open: aggGauge('tcp_chrono_connections', 'Watched connections open now, by local port.'),
      closed: aggCounter('tcp_chrono_connections_closed_total', 'Watched connections that closed, by local port.'),
    };
    this.self = {
      polls: counter('tcp_chrono_agent_polls_total', 'sock_diag polls completed.'),
      // Only where the loop counts them (watch); a loop that cannot would show a false 0.
      pollsMissed:
        selfSnapshot().pollsMissed !== undefined
          ? counter(
              'tcp_chrono_agent_polls_missed_total',
              'Poll slots skipped. Polls are due at every multiple of the interval since the loop started; ' +
                'a slot is skipped when no poll started in it because the previous poll, or other work on the ' +
                'event loop (a scrape, an owner scan), ran past its start. Each one is a gap of one extra interval ' +
                'between two polls; a poll that starts late but within its slot is not counted.',
            )
          : undefined,
      namespaces:
        selfSnapshot().namespaces !== undefined
          ? gauge('tcp_chrono_agent_namespaces', 'Network namespaces watched (--netns), each dumped every poll.')
          : undefined,
      pollErrors: counter('tcp_chrono_agent_poll_errors_total', 'sock_diag polls that failed (with --netns: dumps of one namespace that failed).'),
      parseErrors: counter('tcp_chrono_agent_parse_errors_total', 'Netlink messages that could not be decoded, by source (dump, destroy).', ['source']),
      interrupted: counter('tcp_chrono_agent_dump_interrupted_total', 'sock_diag dumps the kernel marked interrupted (NLM_F_DUMP_INTR: the socket tables changed mid-dump); each is retried, twice at most per family.'),
      seen: gauge('tcp_chrono_agent_sockets_seen', 'Sockets the kernel returned in the last poll (before the agent-side filters).'),
      tracked: gauge('tcp_chrono_agent_connections_tracked', 'Connections in the table (open, watched).'),
      dropped: gauge('tcp_chrono_agent_dropped_connection_series', 'Connections left out of the per-connection series at the last scrape by --max-connections (aggregates still count them).'),
      feedUp: gauge('tcp_chrono_agent_destroy_feed_up', '1 if the sock_diag destroy feed is subscribed (closed connections counted exactly), 0 if closed connections keep their last polled figures.'),
      destroyed: counter('tcp_chrono_agent_destroyed_sockets_total', 'Destroyed-socket messages received from the kernel and kept by the filters.'),
      feedLost: counter('tcp_chrono_agent_destroy_feed_overruns_total', 'Times the destroy feed receive queue overflowed (messages lost).'),
      ownerScans: counter('tcp_chrono_agent_owner_scans_total', 'Scans of /proc for socket owners.'),
      memory: gauge(
        'tcp_chrono_agent_memory_bytes',
        "The agent's memory at the scrape (process.memoryUsage()), by kind: rss (resident set), heap_used and heap_total (V8's JavaScript heap), external (memory outside the heap held by JavaScript objects, array_buffers included), array_buffers.",
        ['kind'],
      ),
    };
    this.pollDuration = new Histogram({
      name: 'tcp_chrono_agent_poll_duration_seconds',
      help: 'Time of one poll: sock_diag dump, decoding and table update.',
      // Finer from 0.1 s up: 50k connections poll in 0.2-0.6 s.
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1, 2.5],
      registers: r,
    });
    const info = gauge('tcp_chrono_agent_info', 'Agent build and kernel facts (value is always 1).', ['version', 'kernel', 'destroy_feed']);
    info.set({ version: opts.info.version, kernel: opts.info.kernel, destroy_feed: opts.info.destroyFeed }, 1);
  }

  get contentType(): string {
    return this.registry.contentType;
  }

  /**
   * Sets every series from the table and renders the exposition. The
   * per-connection part (tens of MB with 100k connections) is built in
   * slices of about RENDER_SLICE_MS, handing the event loop back between
   * them, so a scrape never holds the poll loop for longer than a slice.
   * A poll between two slices may move a connection's figures on: its later
   * series then show the newer (larger) values, as a later scrape would.
   */
  async render(): Promise<string> {
    const slice = new Slicer();
    const chosen = await this.chooseLabelled(slice);
    this.update();
    const head = await this.registry.metrics();
    return head + '\n' + (await this.renderConnections(chosen, slice));
  }

  private async renderConnections(chosen: { c: Connection; labels: string }[], slice: Slicer): Promise<string> {
    // Lines are joined 256 at a time: the final join is of a few hundred
    // pieces, not of every line (which took tens of ms in one go).
    const out: string[] = [];
    let lines: string[] = [];
    for (const f of CONNECTION_FAMILIES) {
      out.push(`# HELP ${f.name} ${f.help}\n# TYPE ${f.name} ${f.type}\n`);
      for (let i = 0; i < chosen.length; i++) {
        const { c, labels } = chosen[i]!;
        const v = f.value(c);
        if (v !== undefined) lines.push(`${f.name}{${labels}} ${formatValue(v)}\n`);
        if (lines.length === 256) {
          out.push(lines.join(''));
          lines = [];
          await slice.maybeYield();
        }
      }
    }
    out.push(lines.join(''));
    return out.join('');
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
      const w = (c: Connection): number => (this.previous.has(c.key) ? 2 : 1);
      chosen = rankTopSync(candidates, [(c) => c.recentStall * w(c), (c) => c.recentBytes * w(c)], cap);
    }
    this.lastDropped = candidates.length - chosen.length;
    this.previous = new Set(chosen.map((c) => c.key));
    return chosen;
  }

  /** The exported connections with their label sets (sliced: see render()). */
  private async chooseLabelled(slice: Slicer): Promise<{ c: Connection; labels: string }[]> {
    const exported = this.selectExported();
    let dropped = this.lastDropped;
    const chosen: { c: Connection; labels: string }[] = [];
    const seen = new Set<string>();
    const podOf = this.opts.netnsLabels?.podOf;
    const containers = this.opts.netnsLabels?.containers === true;
    for (let i = 0; i < exported.length; i++) {
      if ((i & 255) === 255) await slice.maybeYield();
      const c = exported[i]!;
      if (c.owner === undefined) this.owners?.request(c); // found by a later scan, best effort
      const pid = c.owner !== undefined ? String(c.owner.pid) : '';
      const sc = c.agg.scope;
      const netns = sc !== undefined ? `netns="${escapeLabel(sc.label)}",${podOf !== undefined ? `pod_uid="${escapeLabel(podOf(sc))}",` : ''}` : '';
      const container = containers ? `,container_id="${escapeLabel(c.owner?.containerId ?? '')}"` : '';
      const labels = `${netns}port="${c.localPort}",remote="${escapeLabel(redactEndpoint(c.remote))}",pid="${pid}",comm="${escapeLabel(c.owner?.comm ?? '')}"${container}`;
      // Two sockets with one label set (same peer on two local addresses, or
      // a peer port reused right after a close) would add up: keep the first.
      if (seen.has(labels)) {
        dropped++;
        continue;
      }
      seen.add(labels);
      chosen.push({ c, labels });
    }
    this.lastDropped = dropped;
    return chosen;
  }

  /** Aggregate and self series from the table (synchronous: a few series per port). */
  private update(): void {
    const { agg, self } = this;
    for (const m of [agg.busy, agg.rwnd, agg.sndbuf, agg.sndbufBound, agg.acked, agg.retrans, agg.closed, agg.open]) m.reset();
    const podOf = this.opts.netnsLabels?.podOf;
    const labelsOf = (a: Aggregate): PortLabels =>
      a.scope === undefined ? { port: a.port } : podOf !== undefined ? { netns: a.scope.label, pod_uid: podOf(a.scope), port: a.port } : { netns: a.scope.label, port: a.port };
    for (const a of this.table.aggregates.values()) {
      const l = labelsOf(a);
      agg.busy.add(l, us(a.busy));
      agg.rwnd.add(l, us(a.rwndLimited));
      agg.sndbuf.add(l, us(a.sndbufLimited));
      agg.sndbufBound.add(l, us(a.sndbufBound));
      agg.acked.add(l, a.bytesAcked);
      agg.retrans.add(l, a.bytesRetrans);
      agg.closed.add(l, a.closed);
    }
    for (const [key, n] of this.table.openCounts()) {
      const a = this.table.aggregates.get(key);
      if (a !== undefined) agg.open.add(labelsOf(a), n);
    }

    const s = this.selfSnapshot();
    for (const m of Object.values(self)) m?.reset();
    self.polls.inc(s.polls);
    self.pollsMissed?.inc(s.pollsMissed ?? 0);
    self.namespaces?.set(s.namespaces ?? 0);
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
    const mem = process.memoryUsage();
    self.memory.set({ kind: 'rss' }, mem.rss);
    self.memory.set({ kind: 'heap_used' }, mem.heapUsed);
    self.memory.set({ kind: 'heap_total' }, mem.heapTotal);
    self.memory.set({ kind: 'external' }, mem.external);
    self.memory.set({ kind: 'array_buffers' }, mem.arrayBuffers);
  }
}

/** Longest stretch a render runs before handing the event loop back. */
export const RENDER_SLICE_MS = 5;

/** Hands the event loop back (setImmediate: timers and I/O run first) once a slice has run long enough. */
class Slicer {
  private since = performance.now();
  async maybeYield(): Promise<void> {
    if (performance.now() - this.since < RENDER_SLICE_MS) return;
    await new Promise<void>((resolve) => setImmediate(resolve));
    this.since = performance.now();
  }
}
