// Fleet overview: where sending time goes, per service (job) and port.
import type * as dashboard from '@grafana/grafana-foundation-sdk/dashboard';
import { buildDashboard, PORT_LEGEND, RATE, TARGET_PORT, tablePanel, timeseriesPanel } from './panels.js';
import { Chrono, NETNS_LABELS } from './promql.js';

const SHARES_HELP =
  'Shares of connection time (they add up to 1): rwnd-limited = the peer’s receive window was full (the client is not reading); ' +
  'sndbuf-limited = the send buffer was full while the network could take more (tune SO_SNDBUF / tcp_wmem); ' +
  'network-limited = busy minus those two (congestion window, pacing, loss); ' +
  'app-limited = connections open minus busy (the server had nothing to send; derived from the connections gauge, see dashboards/README.md).';

export function fleetDashboard(): dashboard.Dashboard {
  const all = new Chrono(TARGET_PORT, RATE, []);
  // Per job and port, and per network namespace where the agents watch several (watch --netns).
  const byPort = new Chrono(TARGET_PORT, RATE, ['job', ...NETNS_LABELS, 'port']);
  const overRange = new Chrono(TARGET_PORT, '$__range', ['job', ...NETNS_LABELS, 'port']);

  return buildDashboard({
    uid: 'tcp-chrono-fleet',
    title: 'TCP chronograph / Fleet overview',
    description: 'Where TCP sending time goes per service (job) and local port: receive window, send buffer, network, application.',
    port: true,
    rows: [
      {
        title: 'Where sending time goes',
        panels: [
          timeseriesPanel({
            title: 'Share of connection time by limit',
            description: `${SHARES_HELP} Summed over the selected jobs, instances and ports.`,
            unit: 'percentunit',
            stack: true,
            min: 0,
            max: 1,
            w: 12,
            h: 9,
            queries: [
              { expr: all.shareOfTotal(all.rwnd), legend: 'rwnd-limited (client not reading)' },
              { expr: all.shareOfTotal(all.sndbuf), legend: 'sndbuf-limited (send buffer full)' },
              { expr: all.shareOfTotal(all.network), legend: 'network-limited (cwnd, pacing, loss)' },
              { expr: all.shareOfTotal(all.app), legend: 'app-limited (nothing to send)' },
            ],
          }),
          tablePanel({
            title: 'By service and port (over the time range)',
            description: `${SHARES_HELP} Over the whole selected time range, one row per job and port (and network namespace, with its pod, for watch --netns agents).`,
            w: 12,
            h: 9,
            labels: ['job', ...NETNS_LABELS, 'port'],
            sortBy: 'rwnd-limited',
            columns: [
              { name: 'connections (avg)', unit: 'short', query: { expr: overRange.open } },
              { name: 'rwnd-limited', unit: 'percentunit', query: { expr: overRange.shareOfTotal(overRange.rwnd) } },
              { name: 'sndbuf-limited', unit: 'percentunit', query: { expr: overRange.shareOfTotal(overRange.sndbuf) } },
              { name: 'network-limited', unit: 'percentunit', query: { expr: overRange.shareOfTotal(overRange.network) } },
              { name: 'app-limited', unit: 'percentunit', query: { expr: overRange.shareOfTotal(overRange.app) } },
              { name: 'acked', unit: 'Bps', query: { expr: overRange.acked } },
            ],
          }),
          timeseriesPanel({
            title: 'Receive-window-limited share of busy time',
            description:
              'Of the time connections had data to send, the share the peer’s receive window was full, per job and port. ' +
              'The TCPChronoReceiveWindowLimited alert fires above the dashed line (0.5) for 10 minutes.',
            unit: 'percentunit',
            min: 0,
            max: 1,
            threshold: 0.5,
            w: 12,
            h: 8,
            queries: [{ expr: byPort.shareOfBusy(byPort.rwnd), legend: PORT_LEGEND }],
          }),
          timeseriesPanel({
            title: 'Send-buffer-limited share of busy time',
            description:
              'Of the time connections had data to send, the share the socket send buffer was full while the congestion window was not, per job and port. ' +
              'The TCPChronoSendBufferLimited alert fires above the dashed line (0.1) for 15 minutes: raise SO_SNDBUF or net.ipv4.tcp_wmem.',
            unit: 'percentunit',
            min: 0,
            max: 1,
            threshold: 0.1,
            w: 12,
            h: 8,
            queries: [{ expr: byPort.shareOfBusy(byPort.sndbuf), legend: PORT_LEGEND }],
          }),
        ],
      },
      {
        title: 'Connections',
        panels: [
          timeseriesPanel({
            title: 'Connections open',
            description: 'Connections the agents watch, open at each poll, per job and port.',
            unit: 'short',
            min: 0,
            w: 8,
            h: 8,
            queries: [{ expr: `sum by (job, ${NETNS_LABELS.join(', ')}, port) (tcp_chrono_connections{${TARGET_PORT}})`, legend: PORT_LEGEND }],
          }),
          timeseriesPanel({
            title: 'Connections closed per second',
            description: 'Watched connections that closed, per job and port (with the destroy feed, connections shorter than a poll are counted too).',
            unit: 'cps',
            min: 0,
            w: 8,
            h: 8,
            queries: [{ expr: byPort.closed, legend: PORT_LEGEND }],
          }),
          timeseriesPanel({
            title: 'Busy connections by limit',
            description: 'Seconds per second of each limit, i.e. the average number of connections in that state, summed over the selection.',
            unit: 'short',
            stack: true,
            min: 0,
            w: 8,
            h: 8,
            queries: [
              { expr: all.rwnd, legend: 'rwnd-limited' },
              { expr: all.sndbuf, legend: 'sndbuf-limited' },
              { expr: all.network, legend: 'network-limited' },
            ],
          }),
        ],
      },
      {
        title: 'Bytes',
        panels: [
          timeseriesPanel({
            title: 'Bytes acknowledged per second',
            description: 'Bytes the peers acknowledged (tcpi_bytes_acked), per job and port: goodput.',
            unit: 'Bps',
            min: 0,
            w: 8,
            h: 8,
            queries: [{ expr: byPort.acked, legend: PORT_LEGEND }],
          }),
          timeseriesPanel({
            title: 'Bytes retransmitted per second',
            description: 'Bytes retransmitted (tcpi_bytes_retrans), per job and port.',
            unit: 'Bps',
            min: 0,
            w: 8,
            h: 8,
            queries: [{ expr: byPort.retrans, legend: PORT_LEGEND }],
          }),
          timeseriesPanel({
            title: 'Retransmitted share of bytes',
            description: 'Bytes retransmitted per byte acknowledged, per job and port: loss on the path (network-limited time with a high share here is loss, not a slow link).',
            unit: 'percentunit',
            min: 0,
            w: 8,
            h: 8,
            queries: [{ expr: `${byPort.retrans} / (${byPort.acked} > 0)`, legend: PORT_LEGEND }],
          }),
        ],
      },
    ],
  });
}
