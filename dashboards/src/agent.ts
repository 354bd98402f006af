// Agent health: is the agent seeing what it should, and what does it cost.
import type * as dashboard from '@grafana/grafana-foundation-sdk/dashboard';
import { buildDashboard, RATE, statPanel, TARGET, tablePanel, timeseriesPanel } from './panels.js';
import { quantile } from './promql.js';

const per = (metric: string, groupBy = 'job, instance'): string => `sum by (${groupBy}) (rate(${metric}{${TARGET}}[${RATE}]))`;

export function agentDashboard(): dashboard.Dashboard {
  return buildDashboard({
    uid: 'tcp-chrono-agent',
    title: 'TCP chronograph / Agent health',
    description: 'The agents themselves: poll duration, errors, dropped series, destroy feed, scrape size.',
    port: false,
    rows: [
      {
        title: 'Agents',
        panels: [
          tablePanel({
            title: 'Agents',
            description: 'One row per agent: version, kernel, destroy feed state (on; off = turned off or proxy mode; unavailable = the kernel refused it).',
            w: 16,
            h: 6,
            labels: ['job', 'instance', 'version', 'kernel', 'destroy_feed'],
            sortBy: 'instance',
            columns: [{ name: 'up', unit: 'short', query: { expr: `tcp_chrono_agent_info{${TARGET}}` } }],
          }),
          statPanel({
            title: 'Destroy feed',
            description: 'Per agent: 1 when the kernel’s TCP destroy feed is subscribed (connections shorter than a poll counted exactly).',
            unit: 'none',
            w: 8,
            h: 6,
            query: { expr: `tcp_chrono_agent_destroy_feed_up{${TARGET}}`, legend: '{{instance}}' },
            mappings: [{ type: 'value' as dashboard.MappingType, options: { '0': { text: 'off', index: 0 }, '1': { text: 'on', index: 1 } } } as dashboard.ValueMapping],
            redAtOrBelow: 0,
          }),
        ],
      },
      {
        title: 'Polling',
        panels: [
          timeseriesPanel({
            title: 'Poll duration',
            description: 'One sock_diag dump, its decoding and the table update (about 1 µs per socket in the kernel): p50 and p99 per agent.',
            unit: 's',
            min: 0,
            w: 8,
            h: 8,
            queries: [
              { expr: quantile(0.5, 'tcp_chrono_agent_poll_duration_seconds', TARGET, RATE, ['job', 'instance']), legend: 'p50 {{instance}}' },
              { expr: quantile(0.99, 'tcp_chrono_agent_poll_duration_seconds', TARGET, RATE, ['job', 'instance']), legend: 'p99 {{instance}}' },
            ],
          }),
          timeseriesPanel({
            title: 'Polls and errors per second',
            description: 'Polls completed, polls that failed, dumps repeated because the socket tables changed mid-dump.',
            unit: 'short',
            min: 0,
            w: 8,
            h: 8,
            queries: [
              { expr: per('tcp_chrono_agent_polls_total'), legend: 'polls {{instance}}' },
              { expr: per('tcp_chrono_agent_poll_errors_total'), legend: 'errors {{instance}}' },
              { expr: per('tcp_chrono_agent_dump_interrupted_total'), legend: 'interrupted {{instance}}' },
            ],
          }),
          timeseriesPanel({
            title: 'Parse errors per second',
            description: 'Netlink messages that could not be decoded, by source (dump, destroy). Anything above 0 is a bug or an unexpected kernel: report it with the kernel version.',
            unit: 'short',
            min: 0,
            w: 8,
            h: 8,
            queries: [{ expr: per('tcp_chrono_agent_parse_errors_total', 'job, instance, source'), legend: '{{source}} {{instance}}' }],
          }),
          timeseriesPanel({
            title: 'Sockets seen and connections tracked',
            description: 'Sockets the kernel returned in the last poll (before the agent’s filters), and connections in the table.',
            unit: 'short',
            min: 0,
            w: 8,
            h: 8,
            queries: [
              { expr: `sum by (job, instance) (tcp_chrono_agent_sockets_seen{${TARGET}})`, legend: 'seen {{instance}}' },
              { expr: `sum by (job, instance) (tcp_chrono_agent_connections_tracked{${TARGET}})`, legend: 'tracked {{instance}}' },
            ],
          }),
          timeseriesPanel({
            title: 'Network namespaces watched',
            description:
              'watch --netns agents: the namespaces each one watches (found again before every poll). Each with TCP sockets costs one sock_diag dump per poll, which walks the host’s whole TCP hash table (docs/modes.md). Empty for single-namespace agents.',
            unit: 'short',
            min: 0,
            w: 8,
            h: 8,
            queries: [{ expr: `sum by (job, instance) (tcp_chrono_agent_namespaces{${TARGET}})`, legend: '{{instance}}' }],
          }),
          timeseriesPanel({
            title: 'Per-connection series dropped',
            description:
              'Connections left out of the per-connection series by --max-connections at the last scrape (the per-port aggregates still count them). Raise the cap or narrow --port / --remote-cidr.',
            unit: 'short',
            min: 0,
            w: 8,
            h: 8,
            queries: [{ expr: `sum by (job, instance) (tcp_chrono_agent_dropped_connection_series{${TARGET}})`, legend: '{{instance}}' }],
          }),
          timeseriesPanel({
            title: 'Destroy feed per second',
            description: 'Destroyed-socket messages kept, and overruns of the feed’s receive queue (messages lost: short connections missed).',
            unit: 'short',
            min: 0,
            w: 8,
            h: 8,
            queries: [
              { expr: per('tcp_chrono_agent_destroyed_sockets_total'), legend: 'destroyed {{instance}}' },
              { expr: per('tcp_chrono_agent_destroy_feed_overruns_total'), legend: 'overruns {{instance}}' },
            ],
          }),
        ],
      },
      {
        title: 'Attach mode',
        panels: [
          timeseriesPanel({
            title: 'Attached connections',
            description: 'Target connections with timestamping turned on by the agent now, and connections left alone per second, by reason (timestamping / zerocopy: the application owns its error queue; error; limit: --max-sockets).',
            unit: 'short',
            min: 0,
            w: 8,
            h: 8,
            queries: [
              { expr: `sum by (job, instance) (tcp_chrono_attach_sockets{${TARGET}})`, legend: 'attached {{instance}}' },
              { expr: per('tcp_chrono_attach_sockets_skipped_total', 'job, instance, reason'), legend: 'skipped {{reason}} {{instance}}' },
            ],
          }),
          timeseriesPanel({
            title: 'Attach records per second',
            description:
              'Timestamp records read from the target, by kind; records lost (error-queue overflow in the target, or skbs merged on retransmission) and records dropped because the agent fell behind (the TCPChronoAttachRecordsDropped alert).',
            unit: 'short',
            min: 0,
            w: 8,
            h: 8,
            queries: [
              { expr: per('tcp_chrono_attach_records_total', 'job, instance, kind'), legend: '{{kind}} {{instance}}' },
              { expr: per('tcp_chrono_attach_records_lost_total'), legend: 'lost {{instance}}' },
              { expr: per('tcp_chrono_attach_records_dropped_total'), legend: 'dropped {{instance}}' },
            ],
          }),
          timeseriesPanel({
            title: 'Attach rescans',
            description: 'Duration of the last pass over the target’s fd table and socket dump, and failed passes per second.',
            unit: 's',
            min: 0,
            w: 8,
            h: 8,
            queries: [
              { expr: `max by (job, instance) (tcp_chrono_attach_rescan_duration_seconds{${TARGET}})`, legend: 'duration {{instance}}' },
              { expr: per('tcp_chrono_attach_rescan_errors_total'), legend: 'errors/s {{instance}}' },
            ],
          }),
        ],
      },
      {
        title: 'Scrapes and per-chunk records',
        panels: [
          timeseriesPanel({
            title: 'Scrape size',
            description: 'Samples per scrape of each agent (Prometheus’s scrape_samples_scraped): per-connection series are most of it.',
            unit: 'short',
            min: 0,
            w: 8,
            h: 8,
            queries: [{ expr: `scrape_samples_scraped{${TARGET}}`, legend: '{{instance}}' }],
          }),
          timeseriesPanel({
            title: 'Scrape duration',
            description: 'Time Prometheus took to scrape each agent (scrape_duration_seconds).',
            unit: 's',
            min: 0,
            w: 8,
            h: 8,
            queries: [{ expr: `scrape_duration_seconds{${TARGET}}`, legend: '{{instance}}' }],
          }),
          timeseriesPanel({
            title: 'Timestamp records per second',
            description: 'Proxy mode: records read from the error queues, records that could not be decoded; every per-chunk mode: chunk events dropped by --events / /api/chunks followers.',
            unit: 'short',
            min: 0,
            w: 8,
            h: 8,
            queries: [
              { expr: per('tcp_chrono_agent_timestamp_records_total'), legend: 'records {{instance}}' },
              { expr: per('tcp_chrono_agent_timestamp_records_malformed_total'), legend: 'malformed {{instance}}' },
              { expr: per('tcp_chrono_agent_events_dropped_total'), legend: 'events dropped {{instance}}' },
            ],
          }),
        ],
      },
    ],
  });
}
