// Receive-window stalls: which connections (clients) are not reading, and how
// that shows in per-chunk delivery times.
import type * as dashboard from '@grafana/grafana-foundation-sdk/dashboard';
import { buildDashboard, heatmapPanel, PORT_LEGEND, RATE, TARGET_PORT, tablePanel, timeseriesPanel } from './panels.js';
import { Chrono, CONNECTION_LABELS, connectionRate, connectionRwndShare, NETNS_LABELS, STALLED_SHARE } from './promql.js';

const TOP = 20;

export function rwndDashboard(): dashboard.Dashboard {
  const share = connectionRwndShare(TARGET_PORT, RATE);
  const top = `topk(${TOP}, ${share})`;
  const onTop = (expr: string): string => `${expr} and on (${CONNECTION_LABELS.join(', ')}) ${top}`;
  const byPort = new Chrono(TARGET_PORT, RATE, ['job', ...NETNS_LABELS, 'port']);
  const delivery = (limit: string): string =>
    `sum by (le) (rate(tcp_chrono_chunk_delivery_seconds_bucket{${TARGET_PORT}, limit="${limit}"}[${RATE}]))`;

  return buildDashboard({
    uid: 'tcp-chrono-rwnd',
    title: 'TCP chronograph / Receive-window stalls',
    description: 'Connections whose clients do not read fast enough: the peer’s receive window is full and the sender waits.',
    port: true,
    rows: [
      {
        title: 'Connections now',
        panels: [
          tablePanel({
            title: `Top ${TOP} connections by receive-window-limited share`,
            description:
              'Per-connection series (capped by the agent’s --max-connections, most stalled first): the share of busy time the peer’s window was full, ' +
              'with the window the peer advertises now, the last delivery-rate sample and the smoothed RTT. A window near 0 with a high share is a client that stopped reading.',
            w: 24,
            h: 10,
            // netns, pod_uid, container_id: watch --netns (and --netns-labels) agents only; empty columns otherwise.
            labels: ['instance', 'netns', 'pod_uid', 'port', 'remote', 'comm', 'pid', 'container_id'],
            sortBy: 'rwnd-limited share',
            columns: [
              { name: 'rwnd-limited share', unit: 'percentunit', query: { expr: top } },
              { name: 'rwnd-limited s/s', unit: 'short', query: { expr: onTop(connectionRate('tcp_chrono_connection_rwnd_limited_seconds_total', TARGET_PORT, RATE)) } },
              { name: 'peer window', unit: 'bytes', query: { expr: onTop(`tcp_chrono_connection_peer_rwnd_bytes{${TARGET_PORT}}`) } },
              { name: 'delivery rate', unit: 'Bps', query: { expr: onTop(`tcp_chrono_connection_delivery_rate_bytes_per_second{${TARGET_PORT}}`) } },
              { name: 'RTT', unit: 's', query: { expr: onTop(`tcp_chrono_connection_rtt_seconds{${TARGET_PORT}}`) } },
              { name: 'acked', unit: 'Bps', query: { expr: onTop(connectionRate('tcp_chrono_connection_bytes_acked_total', TARGET_PORT, RATE)) } },
            ],
          }),
        ],
      },
      {
        title: 'Stall episodes over time',
        panels: [
          timeseriesPanel({
            title: 'Connections mostly receive-window limited',
            description: `Connections (among the exported ones) whose busy time was more than ${STALLED_SHARE * 100} % rwnd-limited over the rate window, per job and port: each bump is a stall episode.`,
            unit: 'short',
            min: 0,
            w: 8,
            h: 8,
            queries: [{ expr: `count by (job, ${NETNS_LABELS.join(', ')}, port) (${share} > ${STALLED_SHARE})`, legend: PORT_LEGEND }],
          }),
          timeseriesPanel({
            title: 'Receive-window-limited time per second',
            description: 'Seconds per second of rwnd-limited time, i.e. the average number of connections waiting for their client, per job and port (all connections, not only the exported ones).',
            unit: 'short',
            min: 0,
            w: 8,
            h: 8,
            queries: [{ expr: byPort.rwnd, legend: PORT_LEGEND }],
          }),
          timeseriesPanel({
            title: 'Smallest peer receive windows',
            description: 'The 10 smallest windows peers advertise (tcpi_snd_wnd): 0 means the sender may not send at all.',
            unit: 'bytes',
            min: 0,
            w: 8,
            h: 8,
            queries: [{ expr: `bottomk(10, tcp_chrono_connection_peer_rwnd_bytes{${TARGET_PORT}})`, legend: '{{remote}} {{comm}} {{netns}}' }],
          }),
          timeseriesPanel({
            title: 'Stalled chunks per second by limit',
            description: 'Per-chunk modes (proxy, attach, instrument()): chunks whose last byte was not acknowledged within the stall timeout, by what limited them until then.',
            unit: 'short',
            min: 0,
            w: 24,
            h: 7,
            queries: [{ expr: `sum by (job, port, limit) (rate(tcp_chrono_chunk_stalls_total{${TARGET_PORT}}[${RATE}]))`, legend: '{{job}} :{{port}} {{limit}}' }],
          }),
        ],
      },
      {
        title: 'Chunk delivery time by limit (per-chunk modes)',
        panels: [
          heatmapPanel({
            title: 'Delivery time: rwnd-limited chunks',
            description: 'Chunks the client’s receive window held up: from the first byte written to the last byte acknowledged.',
            expr: delivery('rwnd'),
            unit: 's',
            w: 6,
            h: 9,
          }),
          heatmapPanel({
            title: 'Delivery time: network-limited chunks',
            description: 'Chunks limited by the congestion window, pacing or loss.',
            expr: delivery('network'),
            unit: 's',
            w: 6,
            h: 9,
          }),
          heatmapPanel({
            title: 'Delivery time: sndbuf-limited chunks',
            description: 'Chunks limited by a full send buffer (raise SO_SNDBUF / tcp_wmem).',
            expr: delivery('sndbuf'),
            unit: 's',
            w: 6,
            h: 9,
          }),
          heatmapPanel({
            title: 'Delivery time: app-limited chunks',
            description: 'Chunks whose time went mostly to the sender having nothing to send (the application wrote slowly).',
            expr: delivery('app'),
            unit: 's',
            w: 6,
            h: 9,
          }),
        ],
      },
    ],
  });
}
