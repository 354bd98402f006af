// Unit tests of the rules for `promtool test rules`, written here so that the
// long alert descriptions are taken from the rules (they contain no
// templates) while everything under test — input series, evaluation times,
// expected labels, values and expanded summaries — is written out by hand.
//
// Every alert has a case where it fires and cases where it does not
// (below its threshold, still pending, too little traffic to judge).
import { ruleGroups, type AlertingRule } from './rules.js';

interface ExpAlert {
  labels: Record<string, string>;
  summary: string;
}

interface AlertCase {
  at: string;
  alert: string;
  firing: ExpAlert[];
}

interface TestGroup {
  name: string;
  interval: string;
  series: Record<string, string>;
  alerts: AlertCase[];
  exprs?: { at: string; expr: string; samples: { labels: string; value: number }[] }[];
}

const S = (name: string, labels: Record<string, string>): string =>
  `${name}{${Object.entries(labels)
    .map(([k, v]) => `${k}="${v}"`)
    .join(', ')}}`;

const svc = (port: string): Record<string, string> => ({ namespace: 'video', job: 'streamer', instance: '10.0.0.1:9465', port });
const agent = (instance: string): Record<string, string> => ({ namespace: 'video', job: 'streamer', instance });
const out = (port: string): Record<string, string> => ({ namespace: 'video', job: 'streamer', port });
// A per-node agent (deploy/daemonset.yaml): its own job and namespace, each pod's namespace and UID on the series.
const node = (netns: string, podUid: string): Record<string, string> => ({ namespace: 'monitoring', job: 'tcp-chronograph', instance: '10.0.0.9:9465', netns, pod_uid: podUid, port: '8080' });
const nodeOut = (netns: string, podUid: string): Record<string, string> => ({ namespace: 'monitoring', job: 'tcp-chronograph', netns, pod_uid: podUid, port: '8080' });

const groups: TestGroup[] = [
  {
    name: 'receive-window limited: a port whose busy time is 75 % rwnd-limited fires after 10 minutes; 10 %, or too little traffic, never',
    interval: '1m',
    series: {
      // port 8080: one connection always busy (60 s a minute), 45 s of it rwnd-limited.
      [S('tcp_chrono_busy_seconds_total', svc('8080'))]: '0+60x40',
      [S('tcp_chrono_rwnd_limited_seconds_total', svc('8080'))]: '0+45x40',
      [S('tcp_chrono_sndbuf_limited_seconds_total', svc('8080'))]: '0x40',
      [S('tcp_chrono_connections', svc('8080'))]: '1x40',
      // port 8081: busy, 10 % rwnd-limited.
      [S('tcp_chrono_busy_seconds_total', svc('8081'))]: '0+60x40',
      [S('tcp_chrono_rwnd_limited_seconds_total', svc('8081'))]: '0+6x40',
      [S('tcp_chrono_sndbuf_limited_seconds_total', svc('8081'))]: '0x40',
      [S('tcp_chrono_connections', svc('8081'))]: '2x40',
      // port 8082: all of its busy time rwnd-limited, but only 3 s a minute (0.05 connections busy): too little to judge.
      [S('tcp_chrono_busy_seconds_total', svc('8082'))]: '0+3x40',
      [S('tcp_chrono_rwnd_limited_seconds_total', svc('8082'))]: '0+3x40',
      [S('tcp_chrono_sndbuf_limited_seconds_total', svc('8082'))]: '0x40',
      [S('tcp_chrono_connections', svc('8082'))]: '1x40',
    },
    alerts: [
      { at: '8m', alert: 'TCPChronoReceiveWindowLimited', firing: [] },
      {
        at: '20m',
        alert: 'TCPChronoReceiveWindowLimited',
        firing: [{ labels: { severity: 'warning', ...out('8080') }, summary: "streamer port 8080 (namespace video): 75% of sending time is limited by clients' receive windows" }],
      },
    ],
    exprs: [
      // The four shares of connection time add up to 1; app-limited = open − busy.
      {
        at: '20m',
        expr: 'namespace_job_port:tcp_chrono_rwnd_limited_share:ratio5m',
        samples: [
          { labels: S('namespace_job_port:tcp_chrono_rwnd_limited_share:ratio5m', out('8080')), value: 0.75 },
          { labels: S('namespace_job_port:tcp_chrono_rwnd_limited_share:ratio5m', out('8081')), value: 0.05 },
          { labels: S('namespace_job_port:tcp_chrono_rwnd_limited_share:ratio5m', out('8082')), value: 0.05 },
        ],
      },
      {
        at: '20m',
        expr: 'namespace_job_port:tcp_chrono_app_limited_share:ratio5m',
        samples: [
          { labels: S('namespace_job_port:tcp_chrono_app_limited_share:ratio5m', out('8080')), value: 0 },
          { labels: S('namespace_job_port:tcp_chrono_app_limited_share:ratio5m', out('8081')), value: 0.5 },
          { labels: S('namespace_job_port:tcp_chrono_app_limited_share:ratio5m', out('8082')), value: 0.95 },
        ],
      },
      {
        at: '20m',
        expr: 'namespace_job_port:tcp_chrono_network_limited_share:ratio5m{port="8081"}',
        samples: [{ labels: S('namespace_job_port:tcp_chrono_network_limited_share:ratio5m', out('8081')), value: 0.45 }],
      },
      {
        at: '20m',
        expr:
          'namespace_job_port:tcp_chrono_rwnd_limited_share:ratio5m + namespace_job_port:tcp_chrono_sndbuf_limited_share:ratio5m + namespace_job_port:tcp_chrono_network_limited_share:ratio5m + namespace_job_port:tcp_chrono_app_limited_share:ratio5m',
        samples: [
          { labels: S('', out('8080')), value: 1 },
          { labels: S('', out('8081')), value: 1 },
          { labels: S('', out('8082')), value: 1 },
        ],
      },
    ],
  },
  {
    name: 'one agent per node (watch --netns): two pods serve port 8080 on one node; only the one whose clients do not read fires, under its netns and pod_uid, and the rollups keep them apart',
    interval: '1m',
    series: {
      // pod a: one connection always busy, 45 s a minute rwnd-limited.
      [S('tcp_chrono_busy_seconds_total', node('cni-a', 'uid-a'))]: '0+60x40',
      [S('tcp_chrono_rwnd_limited_seconds_total', node('cni-a', 'uid-a'))]: '0+45x40',
      [S('tcp_chrono_sndbuf_limited_seconds_total', node('cni-a', 'uid-a'))]: '0x40',
      [S('tcp_chrono_connections', node('cni-a', 'uid-a'))]: '1x40',
      // pod b, same port: busy, never rwnd-limited (summed with a, the port would be 37.5 %: no alert for anyone).
      [S('tcp_chrono_busy_seconds_total', node('cni-b', 'uid-b'))]: '0+60x40',
      [S('tcp_chrono_rwnd_limited_seconds_total', node('cni-b', 'uid-b'))]: '0x40',
      [S('tcp_chrono_sndbuf_limited_seconds_total', node('cni-b', 'uid-b'))]: '0x40',
      [S('tcp_chrono_connections', node('cni-b', 'uid-b'))]: '1x40',
    },
    alerts: [
      {
        at: '20m',
        alert: 'TCPChronoReceiveWindowLimited',
        firing: [
          {
            labels: { severity: 'warning', ...nodeOut('cni-a', 'uid-a') },
            summary: "tcp-chronograph port 8080 (namespace monitoring) in network namespace cni-a (pod uid-a): 75% of sending time is limited by clients' receive windows",
          },
        ],
      },
    ],
    exprs: [
      {
        at: '20m',
        expr: 'namespace_job_port:tcp_chrono_rwnd_limited_share_of_busy:ratio5m',
        samples: [
          { labels: S('namespace_job_port:tcp_chrono_rwnd_limited_share_of_busy:ratio5m', nodeOut('cni-a', 'uid-a')), value: 0.75 },
          { labels: S('namespace_job_port:tcp_chrono_rwnd_limited_share_of_busy:ratio5m', nodeOut('cni-b', 'uid-b')), value: 0 },
        ],
      },
    ],
  },
  {
    name: 'send-buffer limited: 20 % of busy time fires after 15 minutes, counting the inferred sndbuf-bound time (8082); 5 % never (8081: no bound series, an older agent)',
    interval: '1m',
    series: {
      [S('tcp_chrono_busy_seconds_total', svc('8080'))]: '0+60x40',
      [S('tcp_chrono_rwnd_limited_seconds_total', svc('8080'))]: '0x40',
      [S('tcp_chrono_sndbuf_limited_seconds_total', svc('8080'))]: '0+12x40',
      [S('tcp_chrono_connections', svc('8080'))]: '1x40',
      [S('tcp_chrono_busy_seconds_total', svc('8081'))]: '0+60x40',
      [S('tcp_chrono_rwnd_limited_seconds_total', svc('8081'))]: '0x40',
      [S('tcp_chrono_sndbuf_limited_seconds_total', svc('8081'))]: '0+3x40',
      [S('tcp_chrono_connections', svc('8081'))]: '1x40',
      // BBR behind a capped buffer: the kernel names 5 %, the agent infers 15 % more.
      [S('tcp_chrono_busy_seconds_total', svc('8082'))]: '0+60x40',
      [S('tcp_chrono_rwnd_limited_seconds_total', svc('8082'))]: '0x40',
      [S('tcp_chrono_sndbuf_limited_seconds_total', svc('8082'))]: '0+3x40',
      [S('tcp_chrono_sndbuf_bound_seconds_total', svc('8082'))]: '0+9x40',
      [S('tcp_chrono_connections', svc('8082'))]: '1x40',
    },
    alerts: [
      { at: '12m', alert: 'TCPChronoSendBufferLimited', firing: [] },
      {
        at: '20m',
        alert: 'TCPChronoSendBufferLimited',
        firing: [
          { labels: { severity: 'warning', ...out('8080') }, summary: 'streamer port 8080 (namespace video): 20% of sending time is limited by the send buffer' },
          { labels: { severity: 'warning', ...out('8082') }, summary: 'streamer port 8082 (namespace video): 20% of sending time is limited by the send buffer' },
        ],
      },
      { at: '20m', alert: 'TCPChronoReceiveWindowLimited', firing: [] },
    ],
  },
  {
    name: 'chunk stalls: 10 stalls per 100 delivered chunks fire after 10 minutes; 1 per 100 never',
    interval: '1m',
    series: {
      [S('tcp_chrono_chunks_total', { ...svc('8080'), mode: 'proxy', limit: 'network' })]: '0+100x40',
      [S('tcp_chrono_chunk_stalls_total', { ...svc('8080'), mode: 'proxy', limit: 'rwnd' })]: '0+10x40',
      [S('tcp_chrono_chunks_total', { ...svc('8081'), mode: 'proxy', limit: 'network' })]: '0+100x40',
      [S('tcp_chrono_chunk_stalls_total', { ...svc('8081'), mode: 'proxy', limit: 'rwnd' })]: '0+1x40',
    },
    alerts: [
      { at: '5m', alert: 'TCPChronoChunkStalls', firing: [] },
      {
        at: '20m',
        alert: 'TCPChronoChunkStalls',
        firing: [{ labels: { severity: 'warning', ...out('8080') }, summary: 'streamer port 8080 (namespace video): 9.091% of chunks stall' }],
      },
    ],
  },
  {
    name: 'destroy feed unavailable fires after 15 minutes; feed on, or turned off on purpose (off, proxy mode), never',
    interval: '1m',
    series: {
      [S('tcp_chrono_agent_info', { ...agent('10.0.0.1:9465'), version: '0.1.0', kernel: '5.10.0', destroy_feed: 'unavailable' })]: '1x40',
      [S('tcp_chrono_agent_info', { ...agent('10.0.0.2:9465'), version: '0.1.0', kernel: '6.18.0', destroy_feed: 'on' })]: '1x40',
      [S('tcp_chrono_agent_info', { ...agent('10.0.0.3:9466'), version: '0.1.0', kernel: '6.18.0', destroy_feed: 'off' })]: '1x40',
    },
    alerts: [
      { at: '10m', alert: 'TCPChronoDestroyFeedUnavailable', firing: [] },
      {
        at: '20m',
        alert: 'TCPChronoDestroyFeedUnavailable',
        firing: [{ labels: { severity: 'info', ...agent('10.0.0.1:9465') }, summary: "tcp-chronograph agent 10.0.0.1:9465 (streamer) cannot see the kernel's TCP destroy feed" }],
      },
    ],
  },
  {
    name: 'destroy feed overruns fire while the counter rose in the last 10 minutes',
    interval: '1m',
    series: {
      [S('tcp_chrono_agent_destroy_feed_overruns_total', agent('10.0.0.1:9465'))]: '0x10 3x30',
      [S('tcp_chrono_agent_destroy_feed_overruns_total', agent('10.0.0.2:9465'))]: '0x40',
    },
    alerts: [
      { at: '5m', alert: 'TCPChronoDestroyFeedOverruns', firing: [] },
      {
        at: '15m',
        alert: 'TCPChronoDestroyFeedOverruns',
        firing: [{ labels: { severity: 'info', ...agent('10.0.0.1:9465') }, summary: 'tcp-chronograph agent 10.0.0.1:9465 (streamer) lost destroy-feed messages' }],
      },
      { at: '30m', alert: 'TCPChronoDestroyFeedOverruns', firing: [] },
    ],
  },
  {
    name: 'per-connection series dropped for 30 minutes fire; a shorter burst never',
    interval: '1m',
    series: {
      [S('tcp_chrono_agent_dropped_connection_series', agent('10.0.0.1:9465'))]: '0x10 25x40',
      [S('tcp_chrono_agent_dropped_connection_series', agent('10.0.0.2:9465'))]: '0x10 40x10 0x30',
    },
    alerts: [
      { at: '30m', alert: 'TCPChronoConnectionSeriesDropped', firing: [] },
      {
        at: '45m',
        alert: 'TCPChronoConnectionSeriesDropped',
        firing: [{ labels: { severity: 'info', ...agent('10.0.0.1:9465') }, summary: 'tcp-chronograph agent 10.0.0.1:9465 (streamer) drops per-connection series for 25 connections' }],
      },
    ],
  },
  {
    name: 'poll errors for 10 minutes fire; none, never',
    interval: '1m',
    series: {
      [S('tcp_chrono_agent_poll_errors_total', agent('10.0.0.1:9465'))]: '0x5 0+6x30',
      [S('tcp_chrono_agent_poll_errors_total', agent('10.0.0.2:9465'))]: '0x40',
    },
    alerts: [
      { at: '10m', alert: 'TCPChronoAgentPollErrors', firing: [] },
      {
        at: '25m',
        alert: 'TCPChronoAgentPollErrors',
        firing: [{ labels: { severity: 'warning', ...agent('10.0.0.1:9465') }, summary: 'tcp-chronograph agent 10.0.0.1:9465 (streamer) fails to poll the kernel' }],
      },
    ],
  },
  {
    name: 'attach records dropped for 10 minutes fire; none, never',
    interval: '1m',
    series: {
      [S('tcp_chrono_attach_records_dropped_total', agent('10.0.0.1:9467'))]: '0x5 0+100x30',
      [S('tcp_chrono_attach_records_dropped_total', agent('10.0.0.2:9467'))]: '0x40',
    },
    alerts: [
      { at: '10m', alert: 'TCPChronoAttachRecordsDropped', firing: [] },
      {
        at: '25m',
        alert: 'TCPChronoAttachRecordsDropped',
        firing: [{ labels: { severity: 'warning', ...agent('10.0.0.1:9467') }, summary: 'tcp-chronograph agent 10.0.0.1:9467 (streamer) drops attach records: it cannot keep up' }],
      },
    ],
  },
  {
    name: 'parse errors fire while the counter rose in the last 10 minutes, per source',
    interval: '1m',
    series: {
      [S('tcp_chrono_agent_parse_errors_total', { ...agent('10.0.0.1:9465'), source: 'destroy' })]: '0x10 1x30',
      [S('tcp_chrono_agent_parse_errors_total', { ...agent('10.0.0.1:9465'), source: 'dump' })]: '0x40',
    },
    alerts: [
      { at: '5m', alert: 'TCPChronoAgentParseErrors', firing: [] },
      {
        at: '15m',
        alert: 'TCPChronoAgentParseErrors',
        firing: [{ labels: { severity: 'info', ...agent('10.0.0.1:9465'), source: 'destroy' }, summary: 'tcp-chronograph agent 10.0.0.1:9465 (streamer) cannot decode destroy messages' }],
      },
      { at: '30m', alert: 'TCPChronoAgentParseErrors', firing: [] },
    ],
  },
];

/** The `promtool test rules` document. */
export function rulesTestDocument(rulesFile: string): unknown {
  const alerts = new Map<string, AlertingRule>();
  for (const g of ruleGroups()) for (const r of g.rules) if ('alert' in r) alerts.set(r.alert, r);
  return {
    rule_files: [rulesFile],
    evaluation_interval: '1m',
    tests: groups.map((g) => ({
      name: g.name,
      interval: g.interval,
      input_series: Object.entries(g.series).map(([series, values]) => ({ series, values })),
      alert_rule_test: g.alerts.map((c) => {
        const rule = alerts.get(c.alert);
        if (rule === undefined) throw new Error(`test of unknown alert ${c.alert}`);
        return {
          eval_time: c.at,
          alertname: c.alert,
          exp_alerts: c.firing.map((a) => ({
            exp_labels: a.labels,
            exp_annotations: { summary: a.summary, description: rule.annotations.description },
          })),
        };
      }),
      ...(g.exprs !== undefined
        ? { promql_expr_test: g.exprs.map((e) => ({ expr: e.expr, eval_time: e.at, exp_samples: e.samples.map((s) => ({ labels: s.labels, value: s.value })) })) }
        : {}),
    })),
  };
}
