// Prometheus metrics for chunk records (prom-client), shared by every per-chunk
// source: the proxy, attach, and instrument() in a host application.
//
// A chunk is one unit of data (one response, or one write) followed from the
// write of its first byte to the ACK of its last. Delivered chunks feed the
// counters and histograms below; chunks reported as stalled (not acked within
// the stall timeout) are counted in tcp_chrono_chunk_stalls_total only.
//
// Labels are bounded by construction: `port` (the local, client-facing port),
// `mode` (proxy | attach | instrument), `limit` (rwnd | sndbuf | network | app
// | unknown), and `route` only where the user named a route (absent otherwise):
// never a raw URL, a peer address or a connection.
import { Counter, Histogram, type Registry } from 'prom-client';
import type { ChunkRecord } from '../model/chunks.js';

export interface ChunkLabels {
  /** Local port of the socket the chunk was written to. */
  port: string | number;
  /** Which source produced the record: proxy, attach, instrument. */
  mode: string;
  /** A route name chosen by the user (e.g. "segment"); omit when unmapped. */
  route?: string | undefined;
}

export interface ChunkMetricsOptions {
  /** Buckets of tcp_chrono_chunk_queue_seconds. */
  queueBuckets?: number[];
  /** Buckets of tcp_chrono_chunk_delivery_seconds. */
  deliveryBuckets?: number[];
}

// Queueing in TCP spans sub-millisecond (an idle connection) to seconds (a
// full receive window); delivery of a chunk from milliseconds to a minute.
export const QUEUE_BUCKETS = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];
export const DELIVERY_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64];

/** Chronographs are whole microseconds: round away float summing noise. */
const us = (seconds: number): number => Math.round(seconds * 1e6) / 1e6;

type Base = { port: string; mode: string; route?: string };

export class ChunkMetrics {
  readonly chunks: Counter;
  readonly stalls: Counter;
  readonly bytes: Counter;
  readonly queueDelay: Histogram;
  readonly delivery: Histogram;
  readonly busy: Counter;
  readonly rwnd: Counter;
  readonly sndbuf: Counter;
  readonly app: Counter;
  readonly retransmits: Counter;
  readonly inexact: Counter;

  constructor(registry: Registry, opts: ChunkMetricsOptions = {}) {
    const registers = [registry];
    const L = ['port', 'mode', 'route'];
    const LL = ['port', 'mode', 'route', 'limit'];
    const counter = (name: string, help: string, labelNames: string[]): Counter => new Counter({ name, help, labelNames, registers });
    this.chunks = counter(
      'tcp_chrono_chunks_total',
      'Chunks (one response, or one write) whose last byte was acknowledged, by what limited their delivery (limit: rwnd = the client read slowly, sndbuf = the send buffer was full, network = cwnd/pacing/loss, app = the sender had nothing to send, unknown = too short to tell).',
      LL,
    );
    this.stalls = counter('tcp_chrono_chunk_stalls_total', 'Chunks whose last byte was not acknowledged within the stall timeout (or before the connection closed), by what limited them until then.', LL);
    this.bytes = counter('tcp_chrono_chunk_bytes_total', 'Bytes of the chunks counted in tcp_chrono_chunks_total.', LL);
    this.queueDelay = new Histogram({
      name: 'tcp_chrono_chunk_queue_seconds',
      help: "Time a chunk's last byte waited in the TCP send queue: from its write to the kernel's SCHED timestamp.",
      labelNames: L,
      buckets: opts.queueBuckets ?? QUEUE_BUCKETS,
      registers,
    });
    this.delivery = new Histogram({
      name: 'tcp_chrono_chunk_delivery_seconds',
      help: "Time from a chunk's first byte written to its last byte acknowledged, by what limited it.",
      labelNames: LL,
      buckets: opts.deliveryBuckets ?? DELIVERY_BUCKETS,
      registers,
    });
    this.busy = counter('tcp_chrono_chunk_busy_seconds_total', 'Sender busy time (tcpi_busy_time) accrued during delivered chunks; includes the rwnd- and sndbuf-limited time.', L);
    this.rwnd = counter('tcp_chrono_chunk_rwnd_limited_seconds_total', "Time delivered chunks were limited by the client's receive window (tcpi_rwnd_limited).", L);
    this.sndbuf = counter('tcp_chrono_chunk_sndbuf_limited_seconds_total', 'Time delivered chunks were limited by the send buffer (tcpi_sndbuf_limited).', L);
    this.app = counter('tcp_chrono_chunk_app_limited_seconds_total', 'Time within delivered chunks when the sender had nothing in flight or queued (delivery time minus busy time).', L);
    this.retransmits = counter('tcp_chrono_chunk_retransmitted_segments_total', 'Segments retransmitted while delivered chunks were in flight.', L);
    this.inexact = counter(
      'tcp_chrono_chunk_inexact_total',
      "Delivered chunks timed by a later byte's record (writes coalesced by the kernel or a record dropped): their times are upper bounds.",
      ['port', 'mode'],
    );
  }

  /** Counts one chunk record (delivered or stalled). */
  observe(rec: ChunkRecord, labels: ChunkLabels): void {
    const base: Base = { port: String(labels.port), mode: labels.mode };
    if (labels.route !== undefined && labels.route !== '') base.route = labels.route;
    const withLimit = { ...base, limit: rec.limit };
    if (rec.stalled) {
      this.stalls.inc(withLimit);
      return;
    }
    this.chunks.inc(withLimit);
    this.bytes.inc(withLimit, rec.bytes);
    this.delivery.observe(withLimit, rec.deliveryTime);
    if (rec.queueDelay !== undefined) this.queueDelay.observe(base, rec.queueDelay);
    this.busy.inc(base, us(rec.busy));
    this.rwnd.inc(base, us(rec.rwndLimited));
    this.sndbuf.inc(base, us(rec.sndbufLimited));
    this.app.inc(base, us(rec.appLimited));
    this.retransmits.inc(base, rec.retransmits);
    if (!rec.exact) this.inexact.inc({ port: base.port, mode: base.mode });
  }
}
