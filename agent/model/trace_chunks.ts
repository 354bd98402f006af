// Chunk records from the trace program's kernel records (agent/parse/
// trace_event.ts). The kernel sends a chunk when its connection begins the
// next one or closes; a chunk whose bytes are all acknowledged and then
// stays quiet (an HLS player between segments) is taken from the
// connection map instead, once it has been quiet for `quiet` seconds, and
// chunks not acknowledged after `stallAfter` are reported as stalls from the
// same scan. Each chunk is reported once: delivered, or stalled.
import type { TraceChunk, TraceConn, TraceConnId, TraceEvent } from '../parse/trace_event.js';
import { TRACE_EV } from '../parse/trace_event.js';
import { usToSeconds } from '../parse/units.js';
import { chunkFigures, type ChunkRecord } from './chunks.js';
import { boundSeconds, classify, type ChronoDelta, type ClassifyOptions } from './classify.js';

/** A chunk record with the connection and the writer it belongs to. */
export interface TraceChunkRecord extends ChunkRecord {
  port: number;
  local: string;
  peer: string;
  pid: number;
  comm: string;
}

export interface TraceChunkerOptions extends ClassifyOptions {
  /** Seconds after its first write an unacknowledged chunk is reported stalled. */
  stallAfter: number;
  /** Seconds a fully acknowledged chunk stays quiet before it is taken from the map. */
  quiet: number;
}

export interface TraceChunkerCounters {
  chunks: number;
  stalls: number;
  /** Chunks the kernel gave up (two later ones began first: pipelining), reported as stalls. */
  superseded: number;
  /** A chunk already reported (stalled, or quiet) was written to again: its later bytes are not reported. */
  late: number;
}

const nonNeg = (x: number): number => (x > 0 ? x : 0);
const TWO32 = 2 ** 32;

interface Seen {
  /** Last key reported per chunk id (a handful of recent chunks per connection). */
  chunks: Map<number, number>;
  /** Scans since the connection was last in the map. */
  absent: number;
}

export class TraceChunker {
  readonly counters: TraceChunkerCounters = { chunks: 0, stalls: 0, superseded: 0, late: 0 };
  private readonly seen = new Map<bigint, Seen>();

  constructor(
    private readonly opts: TraceChunkerOptions,
    /** CLOCK_MONOTONIC nanoseconds → CLOCK_REALTIME seconds. */
    private readonly realtime: (monoNs: bigint) => number,
    private readonly emit: (r: TraceChunkRecord) => void,
  ) {}

  /** Kernel records, in ring-buffer order. */
  onEvents(events: readonly TraceEvent[]): void {
    for (const e of events) {
      if (e.kind === TRACE_EV.acked) this.report(e, e.c, false, e.nowNs);
      else {
        if (e.kind === TRACE_EV.superseded) this.counters.superseded++;
        this.report(e, e.c, true, e.nowNs);
      }
      if (e.kind === TRACE_EV.closed) this.seen.delete(e.cookie);
    }
  }

  /** One scan of the followed connections at CLOCK_MONOTONIC `nowNs`: quiet chunks and stalls. */
  onScan(conns: readonly TraceConn[], nowNs: bigint): void {
    const quietNs = BigInt(Math.round(this.opts.quiet * 1e9));
    const stallNs = BigInt(Math.round(this.opts.stallAfter * 1e9));
    const present = new Set<bigint>();
    for (const c of conns) {
      present.add(c.cookie);
      if (c.hasPrev && c.prev.sampled && nowNs - c.prev.firstWriteNs > stallNs) this.report(c, c.prev, true, nowNs);
      const cur = c.cur;
      if (!cur.sampled || cur.writes === 0) continue;
      if (cur.ackNs !== 0n) {
        if (nowNs - cur.ackNs > quietNs) this.report(c, cur, false, nowNs);
      } else if (nowNs - cur.firstWriteNs > stallNs) this.report(c, cur, true, nowNs);
    }
    // Connections gone from the map (closed; their last records came through the ring) are forgotten after two scans.
    for (const [cookie, s] of this.seen) {
      if (present.has(cookie)) s.absent = 0;
      else if (++s.absent > 2) this.seen.delete(cookie);
    }
  }

  private report(id: TraceConnId, c: TraceChunk, stalled: boolean, nowNs: bigint): void {
    let s = this.seen.get(id.cookie);
    if (s === undefined) {
      s = { chunks: new Map(), absent: 0 };
      this.seen.set(id.cookie, s);
    }
    const before = s.chunks.get(c.chunk);
    if (before !== undefined) {
      if (before !== c.lastKey) this.counters.late++;
      return;
    }
    s.chunks.set(c.chunk, c.lastKey);
    if (s.chunks.size > 8) s.chunks.delete(s.chunks.keys().next().value as number);
    this.emit(this.record(id, c, stalled, nowNs));
  }

  private record(id: TraceConnId, c: TraceChunk, stalled: boolean, nowNs: bigint): TraceChunkRecord {
    const bytes = (c.lastKey - c.startKey + TWO32) % TWO32;
    const writeTime = this.realtime(c.firstWriteNs);
    const lastWriteTime = this.realtime(c.lastWriteNs);
    const delivered = !stalled && c.ackNs !== 0n;
    const endNs = delivered ? c.ackNs : nowNs;
    const span = nonNeg(Number(endNs - c.firstWriteNs) / 1e9);
    const ended = c.busy1 > 0 || c.cwnd1 > 0; // an end snapshot was taken (at the ACK, or at close)
    const busy = ended ? usToSeconds(nonNeg(c.busy1 - c.busy0)) : 0;
    const rwndLimited = ended ? usToSeconds(nonNeg(c.rwnd1 - c.rwnd0)) : 0;
    const sndbufLimited = ended ? usToSeconds(nonNeg(c.sndbuf1Us - c.sndbuf0Us)) : 0;
    const delta: ChronoDelta = { span, busy, rwndLimited, sndbufLimited };
    if (c.sndbuf0 > 0 && c.cwnd0 > 0 && c.mss0 > 0) {
      delta.sndbufBound = boundSeconds(busy, rwndLimited, sndbufLimited, { sndbuf: c.sndbuf0, cwnd: c.cwnd0, mss: c.mss0, full: bytes > c.sndbuf0 });
    }
    const end = ended
      ? {
          busy,
          rwndLimited,
          sndbufLimited,
          totalRetrans: c.retrans1,
          cwnd: c.cwnd1,
          srtt: usToSeconds(c.srtt1Us),
          ...(c.rateInterval1Us > 0 && { deliveryRate: (c.rateDelivered1 * c.mss1 * 1e6) / c.rateInterval1Us }),
        }
      : undefined;
    const schedTime = c.schedNs !== 0n ? this.realtime(c.schedNs) : undefined;
    if (stalled) this.counters.stalls++;
    else this.counters.chunks++;
    return {
      id: c.chunk,
      bytes,
      offset: 0,
      writeTime,
      lastWriteTime,
      ...(schedTime !== undefined && { schedTime, queueDelay: nonNeg(schedTime - lastWriteTime) }),
      ...(delivered && { ackTime: this.realtime(c.ackNs) }),
      deliveryTime: span,
      ...chunkFigures(delta, ended ? nonNeg(c.retrans1 - c.retrans0) : 0, end, classify(delta, this.opts)),
      stalled,
      exact: delivered,
      port: id.localPort,
      local: id.local,
      peer: id.remote,
      pid: c.pid,
      comm: c.comm,
    };
  }
}
