// Prometheus recording and alerting rules.
//
// Recording rules roll the per-target series up by service and port:
// `by (namespace, job, port)`. In Kubernetes the scrape configuration in
// deploy/ sets `job` to the service (the pod's app.kubernetes.io/name) and
// adds `namespace`; elsewhere `job` is the scrape job and `namespace` is
// simply absent. Series of a watch --netns agent (one per node or host)
// also carry `netns` and, with --netns-labels pod_uid, `pod_uid`: there a
// port alone names no service (every pod may serve :8080), so the rollups
// and alerts keep both (NETNS_LABELS), and for a single-namespace agent,
// which has neither, they are what they were: the names stay
// `namespace_job_port:…`. Instances, pods and connections are aggregated away, so the
// rolled-up series number services × ports (ports are bounded: a listening
// port each, and outbound connections share port="ephemeral"), which is what
// federation or remote-write to long-term storage should carry.
//
// The shares are defined in promql.ts (the same definitions as the panels).
import { Chrono, connectionRwndShare, NETNS_LABELS, STALLED_SHARE } from './promql.js';

export interface RecordingRule {
  record: string;
  expr: string;
}

export interface AlertingRule {
  alert: string;
  expr: string;
  for?: string;
  labels: { severity: 'info' | 'warning' | 'critical' };
  annotations: { summary: string; description: string };
}

export interface RuleGroup {
  name: string;
  interval?: string;
  rules: (RecordingRule | AlertingRule)[];
}

export const WINDOW = '5m';
const SVC = ['namespace', 'job', ...NETNS_LABELS, 'port'];
const ON_SVC = `on (${SVC.join(', ')})`;
const BY_SVC = `sum by (${SVC.join(', ')})`;
const L = 'namespace_job_port';
const LL = 'namespace_job_port_limit';
const r = (name: string, op: string, level = L): string => `${level}:${name}:${op}`;

/** Names of the recorded series, for the alerts and for the README. */
export const REC = {
  busy: r('tcp_chrono_busy_seconds', `rate${WINDOW}`),
  rwnd: r('tcp_chrono_rwnd_limited_seconds', `rate${WINDOW}`),
  sndbuf: r('tcp_chrono_sndbuf_limited_seconds', `rate${WINDOW}`),
  network: r('tcp_chrono_network_limited_seconds', `rate${WINDOW}`),
  open: r('tcp_chrono_connections', `avg${WINDOW}`),
  app: r('tcp_chrono_app_limited_seconds', `rate${WINDOW}`),
  rwndShareBusy: r('tcp_chrono_rwnd_limited_share_of_busy', `ratio${WINDOW}`),
  sndbufShareBusy: r('tcp_chrono_sndbuf_limited_share_of_busy', `ratio${WINDOW}`),
  rwndShare: r('tcp_chrono_rwnd_limited_share', `ratio${WINDOW}`),
  sndbufShare: r('tcp_chrono_sndbuf_limited_share', `ratio${WINDOW}`),
  networkShare: r('tcp_chrono_network_limited_share', `ratio${WINDOW}`),
  appShare: r('tcp_chrono_app_limited_share', `ratio${WINDOW}`),
  acked: r('tcp_chrono_bytes_acked', `rate${WINDOW}`),
  retrans: r('tcp_chrono_bytes_retrans', `rate${WINDOW}`),
  closed: r('tcp_chrono_connections_closed', `rate${WINDOW}`),
  rwndConnections: r('tcp_chrono_rwnd_limited_connections', `count${WINDOW}`),
  chunks: r('tcp_chrono_chunks', `rate${WINDOW}`, LL),
  stalls: r('tcp_chrono_chunk_stalls', `rate${WINDOW}`, LL),
  chunkBytes: r('tcp_chrono_chunk_bytes', `rate${WINDOW}`, LL),
  deliveryBuckets: r('tcp_chrono_chunk_delivery_seconds_bucket', `rate${WINDOW}`, 'namespace_job_port_limit_le'),
  queueBuckets: r('tcp_chrono_chunk_queue_seconds_bucket', `rate${WINDOW}`, 'namespace_job_port_le'),
  queueP99: r('tcp_chrono_chunk_queue_seconds', `p99_${WINDOW}`),
};

function rollups(): RecordingRule[] {
  const c = new Chrono('', WINDOW, SVC);
  // Built on the recorded rates so each share is one division of recorded series.
  const total = `(${REC.busy} + ${REC.app})`;
  const sum = (metric: string, labels: string[]): string => `sum by (${labels.join(', ')}) (rate(${metric}[${WINDOW}]))`;
  return [
    { record: REC.busy, expr: c.busy },
    { record: REC.rwnd, expr: c.rwnd },
    { record: REC.sndbuf, expr: c.sndbuf },
    { record: REC.network, expr: `clamp_min(${REC.busy} - ${REC.rwnd} - ${REC.sndbuf}, 0)` },
    { record: REC.open, expr: c.open },
    { record: REC.app, expr: `clamp_min(${REC.open} - ${REC.busy}, 0)` },
    { record: REC.rwndShareBusy, expr: `${REC.rwnd} / (${REC.busy} > 0)` },
    { record: REC.sndbufShareBusy, expr: `${REC.sndbuf} / (${REC.busy} > 0)` },
    { record: REC.rwndShare, expr: `${REC.rwnd} / (${total} > 0)` },
    { record: REC.sndbufShare, expr: `${REC.sndbuf} / (${total} > 0)` },
    { record: REC.networkShare, expr: `${REC.network} / (${total} > 0)` },
    { record: REC.appShare, expr: `${REC.app} / (${total} > 0)` },
    { record: REC.acked, expr: c.acked },
    { record: REC.retrans, expr: c.retrans },
    { record: REC.closed, expr: c.closed },
    // A lower bound: only connections the agent exports per connection (capped) are counted.
    { record: REC.rwndConnections, expr: `count by (${SVC.join(', ')}) (${connectionRwndShare('', WINDOW)} > ${STALLED_SHARE})` },
    { record: REC.chunks, expr: sum('tcp_chrono_chunks_total', [...SVC, 'limit']) },
    { record: REC.stalls, expr: sum('tcp_chrono_chunk_stalls_total', [...SVC, 'limit']) },
    { record: REC.chunkBytes, expr: sum('tcp_chrono_chunk_bytes_total', [...SVC, 'limit']) },
    // Histogram buckets rolled up (17 buckets × 5 limits per service and port), so fleet-wide quantiles stay computable.
    { record: REC.deliveryBuckets, expr: sum('tcp_chrono_chunk_delivery_seconds_bucket', [...SVC, 'limit', 'le']) },
    { record: REC.queueBuckets, expr: sum('tcp_chrono_chunk_queue_seconds_bucket', [...SVC, 'le']) },
    { record: REC.queueP99, expr: `histogram_quantile(0.99, ${REC.queueBuckets})` },
  ];
}

/** Busy time below this (seconds per second: a tenth of one connection busy on average) is too little to judge. */
export const MIN_BUSY = 0.1;
export const RWND_SHARE = 0.5;
export const SNDBUF_SHARE = 0.1;
export const STALL_SHARE = 0.05;

function alerts(): AlertingRule[] {
  const where =
    '{{ $labels.job }} port {{ $labels.port }}{{ with $labels.namespace }} (namespace {{ . }}){{ end }}' +
    '{{ with $labels.netns }} in network namespace {{ . }}{{ end }}{{ with $labels.pod_uid }} (pod {{ . }}){{ end }}';
  const agent = '{{ $labels.instance }} ({{ $labels.job }})';
  return [
    {
      alert: 'TCPChronoReceiveWindowLimited',
      expr: `${REC.rwndShareBusy} > ${RWND_SHARE} and ${ON_SVC} ${REC.busy} > ${MIN_BUSY}`,
      for: '10m',
      labels: { severity: 'warning' },
      annotations: {
        summary: `${where}: {{ $value | humanizePercentage }} of sending time is limited by clients' receive windows`,
        description:
          "For 10 minutes, more than half of the time this service had data to send, its clients' receive windows were full: clients are not reading as fast as the service sends. " +
          'The network and the server are not the bottleneck; the receivers are. ' +
          'Open the "Receive-window stalls" dashboard to see which connections (remote address, process) and whether their advertised window is near 0. ' +
          'Many clients at once: a client-side cause (player buffer full and pacing itself — normal for video players —, client CPU or disk, a small SO_RCVBUF or tcp_rmem on the clients). ' +
          'A few clients: those clients. Sending faster will not help; sending less (lower bitrate) or earlier (prefetch) will.',
      },
    },
    {
      alert: 'TCPChronoSendBufferLimited',
      expr: `${REC.sndbufShareBusy} > ${SNDBUF_SHARE} and ${ON_SVC} ${REC.busy} > ${MIN_BUSY}`,
      for: '15m',
      labels: { severity: 'warning' },
      annotations: {
        summary: `${where}: {{ $value | humanizePercentage }} of sending time is limited by the send buffer`,
        description:
          "For 15 minutes, more than 10 % of this service's sending time was spent with its socket send buffer full while the congestion window could take more: the buffer is too small for the path's bandwidth × RTT. " +
          'Raise the maximum of net.ipv4.tcp_wmem (autotuning grows buffers up to it), or the SO_SNDBUF the server sets (setting SO_SNDBUF turns autotuning off: prefer not setting it). ' +
          'Long-RTT clients need the largest buffers. Check memory: each connection may then hold up to that many bytes.',
      },
    },
    {
      alert: 'TCPChronoChunkStalls',
      expr: `${BY_SVC} (${REC.stalls}) / (${BY_SVC} (${REC.chunks}) + ${BY_SVC} (${REC.stalls})) > ${STALL_SHARE}`,
      for: '10m',
      labels: { severity: 'warning' },
      annotations: {
        summary: `${where}: {{ $value | humanizePercentage }} of chunks stall`,
        description:
          'For 10 minutes, more than 5 % of the chunks (responses or writes) this service sent were not acknowledged within the stall timeout. ' +
          'The "Chunk delivery" dashboard shows by which limit: rwnd = clients stopped reading (paused players, dead clients that still hold the connection), ' +
          'network = the path (loss, a congested link). Stalled chunks are the ones users notice as rebuffering.',
      },
    },
    {
      alert: 'TCPChronoDestroyFeedUnavailable',
      expr: 'max by (namespace, job, instance) (tcp_chrono_agent_info{destroy_feed="unavailable"}) == 1',
      for: '15m',
      labels: { severity: 'info' },
      annotations: {
        summary: `tcp-chronograph agent ${agent} cannot see the kernel's TCP destroy feed`,
        description:
          "The kernel refused the agent's subscription to its TCP destroy notifications (sock_diag, SKNLGRP_INET_TCP_DESTROY). " +
          'Connections that open and close between two polls are missed, and a closed connection keeps the figures of its last poll: the per-port totals undercount short connections. ' +
          "The agent's log says why at start (\"destroy feed unavailable\"). On kernels that ask for it, give the container CAP_NET_ADMIN (see deploy/); or shorten --interval.",
      },
    },
    {
      alert: 'TCPChronoDestroyFeedOverruns',
      expr: 'sum by (namespace, job, instance) (increase(tcp_chrono_agent_destroy_feed_overruns_total[10m])) > 0',
      labels: { severity: 'info' },
      annotations: {
        summary: `tcp-chronograph agent ${agent} lost destroy-feed messages`,
        description:
          "The receive queue of the agent's destroy-feed socket overflowed in the last 10 minutes: closed connections were missed, so per-port totals undercount. " +
          'It happens when many connections close at once and the agent is short of CPU: give the agent container more CPU, or narrow what it watches (--port, --remote-cidr).',
      },
    },
    {
      alert: 'TCPChronoConnectionSeriesDropped',
      expr: 'max by (namespace, job, instance) (tcp_chrono_agent_dropped_connection_series) > 0',
      for: '30m',
      labels: { severity: 'info' },
      annotations: {
        summary: `tcp-chronograph agent ${agent} drops per-connection series for {{ $value }} connections`,
        description:
          'For 30 minutes the agent has had more connections than --max-connections, so it exports per-connection series only for the most stalled and most active ones. ' +
          'Per-port aggregates still count every connection; only the per-connection table is partial. ' +
          'If the connections you need are missing, raise --max-connections (each series costs scrape time and Prometheus memory) or narrow what is watched (--port, --remote-cidr).',
      },
    },
    {
      alert: 'TCPChronoAgentPollErrors',
      expr: `sum by (namespace, job, instance) (rate(tcp_chrono_agent_poll_errors_total[${WINDOW}])) > 0`,
      for: '10m',
      labels: { severity: 'warning' },
      annotations: {
        summary: `tcp-chronograph agent ${agent} fails to poll the kernel`,
        description:
          'For 10 minutes sock_diag dumps have been failing: the agent does not see the connections and its figures are stale. ' +
          "The agent's log and /healthz give the error. Usual causes: the container is not in the server's network namespace, or a seccomp or LSM policy denies netlink sockets.",
      },
    },
    {
      alert: 'TCPChronoAttachRecordsDropped',
      expr: `sum by (namespace, job, instance) (rate(tcp_chrono_attach_records_dropped_total[${WINDOW}])) > 0`,
      for: '10m',
      labels: { severity: 'warning' },
      annotations: {
        summary: `tcp-chronograph agent ${agent} drops attach records: it cannot keep up`,
        description:
          "For 10 minutes the attach agent has been throwing away timestamp records it drained from the target's sockets because it fell behind: chunk records and their metrics are missing (the target itself is not affected more than usual). " +
          'Give the agent container more CPU, use --records ack (one record per send instead of two), or attach to fewer connections (--port, --max-sockets).',
      },
    },
    {
      alert: 'TCPChronoAgentParseErrors',
      expr: 'sum by (namespace, job, instance, source) (increase(tcp_chrono_agent_parse_errors_total[10m])) > 0',
      labels: { severity: 'info' },
      annotations: {
        summary: `tcp-chronograph agent ${agent} cannot decode {{ $labels.source }} messages`,
        description:
          'Netlink messages from the kernel could not be decoded in the last 10 minutes: those sockets are missing from the figures. ' +
          'This is a bug or a kernel the agent does not know: report it with the kernel version (tcp_chrono_agent_info) and the agent version.',
      },
    },
  ];
}

export function ruleGroups(): RuleGroup[] {
  return [
    { name: 'tcp-chronograph.rules', rules: rollups() },
    { name: 'tcp-chronograph.alerts', rules: alerts() },
  ];
}
