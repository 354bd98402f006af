// Chunk delivery (per-chunk modes: proxy, attach, instrument()): one chunk is
// one response or one write, followed from its first byte written to its last
// byte acknowledged.
import type * as dashboard from '@grafana/grafana-foundation-sdk/dashboard';
import { buildDashboard, RATE, TARGET_PORT, timeseriesPanel } from './panels.js';
import { quantile, sel } from './promql.js';

const rate = (metric: string, groupBy: string[] = []): string =>
  `${groupBy.length === 0 ? 'sum' : `sum by (${groupBy.join(', ')})`} (rate(${sel(metric, TARGET_PORT)}[${RATE}]))`;

export function chunksDashboard(): dashboard.Dashboard {
  const chunks = rate('tcp_chrono_chunks_total', ['limit']);
  const allChunks = rate('tcp_chrono_chunks_total');
  const allStalls = rate('tcp_chrono_chunk_stalls_total');
  const busy = rate('tcp_chrono_chunk_busy_seconds_total');
  const rwnd = rate('tcp_chrono_chunk_rwnd_limited_seconds_total');
  const sndbuf = rate('tcp_chrono_chunk_sndbuf_limited_seconds_total');
  const app = rate('tcp_chrono_chunk_app_limited_seconds_total');
  const total = `((${busy} + ${app}) > 0)`;
  const q = (p: number, metric: string, groupBy: string[] = []): string => quantile(p, metric, TARGET_PORT, RATE, groupBy);

  return buildDashboard({
    uid: 'tcp-chrono-chunks',
    title: 'TCP chronograph / Chunk delivery',
    description: 'Per-chunk delivery (proxy, attach, instrument()): time in the TCP send queue, delivery time and its limit, stalls.',
    port: true,
    rows: [
      {
        title: 'Chunks',
        panels: [
          timeseriesPanel({
            title: 'Chunks delivered per second by limit',
            description: 'Chunks whose last byte was acknowledged, by what limited their delivery (rwnd, sndbuf, network, app; unknown = shorter than 4 jiffies, too short to tell).',
            unit: 'short',
            stack: true,
            min: 0,
            w: 12,
            h: 8,
            queries: [{ expr: chunks, legend: '{{limit}}' }],
          }),
          timeseriesPanel({
            title: 'Share of chunks by limit',
            description: 'The same, as shares of all delivered chunks.',
            unit: 'percentunit',
            stack: true,
            min: 0,
            max: 1,
            w: 12,
            h: 8,
            queries: [{ expr: `${chunks} / ignoring (limit) group_left ${allChunks}`, legend: '{{limit}}' }],
          }),
          timeseriesPanel({
            title: 'Bytes delivered per second by limit',
            description: 'Bytes of the delivered chunks, by limit.',
            unit: 'Bps',
            stack: true,
            min: 0,
            w: 12,
            h: 8,
            queries: [{ expr: rate('tcp_chrono_chunk_bytes_total', ['limit']), legend: '{{limit}}' }],
          }),
          timeseriesPanel({
            title: 'Time within chunks by limit',
            description:
              'Shares of the time chunks were in delivery (from the chronographs accrued during each chunk): rwnd, sndbuf, network (busy minus those two) and app (delivery time minus busy).',
            unit: 'percentunit',
            stack: true,
            min: 0,
            max: 1,
            w: 12,
            h: 8,
            queries: [
              { expr: `${rwnd} / ${total}`, legend: 'rwnd-limited' },
              { expr: `${sndbuf} / ${total}`, legend: 'sndbuf-limited' },
              { expr: `clamp_min(${busy} - ${rwnd} - ${sndbuf}, 0) / ${total}`, legend: 'network-limited' },
              { expr: `${app} / ${total}`, legend: 'app-limited' },
            ],
          }),
        ],
      },
      {
        title: 'Latency',
        panels: [
          timeseriesPanel({
            title: 'Queue time in TCP',
            description: 'How long a chunk’s last byte waited in the send buffers (write to the kernel’s SCHED timestamp): p50, p90, p99.',
            unit: 's',
            min: 0,
            w: 12,
            h: 8,
            queries: [0.5, 0.9, 0.99].map((p) => ({ expr: q(p, 'tcp_chrono_chunk_queue_seconds'), legend: `p${Math.round(p * 100)}` })),
          }),
          timeseriesPanel({
            title: 'Queue time in TCP by route, p90',
            description: 'p90 queue time per route (routes are names chosen with --route; unmapped requests have no route label).',
            unit: 's',
            min: 0,
            w: 12,
            h: 8,
            queries: [{ expr: q(0.9, 'tcp_chrono_chunk_queue_seconds', ['route']), legend: '{{route}}' }],
          }),
          timeseriesPanel({
            title: 'Delivery time by limit, p50 and p99',
            description: 'From a chunk’s first byte written to its last byte acknowledged, by what limited it.',
            unit: 's',
            min: 0,
            w: 12,
            h: 8,
            queries: [
              { expr: q(0.5, 'tcp_chrono_chunk_delivery_seconds', ['limit']), legend: 'p50 {{limit}}' },
              { expr: q(0.99, 'tcp_chrono_chunk_delivery_seconds', ['limit']), legend: 'p99 {{limit}}' },
            ],
          }),
          timeseriesPanel({
            title: 'Mean delivery time by limit',
            description: 'Average delivery time of the chunks of each limit (sum / count of the histogram).',
            unit: 's',
            min: 0,
            w: 12,
            h: 8,
            queries: [
              {
                expr: `${rate('tcp_chrono_chunk_delivery_seconds_sum', ['limit'])} / (${rate('tcp_chrono_chunk_delivery_seconds_count', ['limit'])} > 0)`,
                legend: '{{limit}}',
              },
            ],
          }),
        ],
      },
      {
        title: 'Stalls and accuracy',
        panels: [
          timeseriesPanel({
            title: 'Stalled chunks per second by limit',
            description: 'Chunks whose last byte was not acknowledged within the stall timeout (or before the connection closed), by what limited them until then.',
            unit: 'short',
            min: 0,
            w: 8,
            h: 8,
            queries: [{ expr: rate('tcp_chrono_chunk_stalls_total', ['limit']), legend: '{{limit}}' }],
          }),
          timeseriesPanel({
            title: 'Stalled share of chunks',
            description: 'Stalled chunks per chunk (delivered or stalled). The TCPChronoChunkStalls alert fires above the dashed line (0.05) for 10 minutes.',
            unit: 'percentunit',
            min: 0,
            threshold: 0.05,
            w: 8,
            h: 8,
            queries: [{ expr: `${allStalls} / ((${allChunks} + ${allStalls}) > 0)`, legend: 'stalled' }],
          }),
          timeseriesPanel({
            title: 'Retransmitted segments and inexact chunks per second',
            description:
              'Segments retransmitted while chunks were in flight; chunks timed by a later byte’s record (writes coalesced by the kernel, or a record dropped), whose times are upper bounds.',
            unit: 'short',
            min: 0,
            w: 8,
            h: 8,
            queries: [
              { expr: rate('tcp_chrono_chunk_retransmitted_segments_total'), legend: 'retransmitted segments' },
              { expr: rate('tcp_chrono_chunk_inexact_total'), legend: 'inexact chunks' },
            ],
          }),
        ],
      },
    ],
  });
}
