// PromQL shared by the dashboards and the rules, so that a share means the
// same thing on a panel, in a recording rule and in an alert.
//
// Definitions (every figure is a rate: seconds of time per second of wall
// clock, summed over connections, i.e. "average number of connections in
// this state"):
//
//   busy     = rate(tcp_chrono_busy_seconds_total)            (kernel: tcpi_busy_time)
//   rwnd     = rate(tcp_chrono_rwnd_limited_seconds_total)    (part of busy)
//   sndbuf   = rate(tcp_chrono_sndbuf_limited_seconds_total)  (part of busy)
//            + rate(tcp_chrono_sndbuf_bound_seconds_total)    (the agent's inference: a send buffer
//                                                               smaller than the window, see README;
//                                                               0 from agents that do not export it)
//   network  = max(busy - rwnd - sndbuf, 0)                   (cwnd, pacing, loss)
//   open     = avg_over_time(tcp_chrono_connections)          (connections open, averaged)
//   app      = max(open - busy, 0)                            (open but nothing to send)
//   total    = busy + app                                     (connection time)
//
// The kernel has no per-port app-limited counter: `app` is derived from the
// connections gauge, which the agent samples once per poll. Connections
// shorter than a poll add busy time but are never in the gauge, so `open`
// undercounts them and `app` is clamped at 0; with long-lived streams (what
// the agent is for) the error is one poll per connection.
//
// Two kinds of share:
//   share of busy time        x / busy   (what limited sending while there was data to send; the alerts)
//   share of connection time  x / total  (rwnd + sndbuf + network + app = 1; the stacked panels)

/** A label matcher list, e.g. `job=~"$job", port=~"$port"`. Empty string: no matcher. */
export type Matchers = string;

const sel = (metric: string, m: Matchers): string => (m === '' ? metric : `${metric}{${m}}`);

/** A connection counts as stalled by its client when more than this share of its busy time is rwnd-limited. */
export const STALLED_SHARE = 0.5;
const by = (labels: readonly string[]): string => (labels.length === 0 ? 'sum' : `sum by (${labels.join(', ')})`);

/** Builds the expressions for one selection (matchers), window and grouping. */
export class Chrono {
  constructor(
    readonly matchers: Matchers,
    readonly window: string,
    readonly groupBy: readonly string[],
  ) {}

  private rate(metric: string): string {
    return `${by(this.groupBy)} (rate(${sel(metric, this.matchers)}[${this.window}]))`;
  }

  get busy(): string {
    return this.rate('tcp_chrono_busy_seconds_total');
  }
  get rwnd(): string {
    return this.rate('tcp_chrono_rwnd_limited_seconds_total');
  }
  get sndbuf(): string {
    const kernel = this.rate('tcp_chrono_sndbuf_limited_seconds_total');
    return `(${kernel} + (${this.rate('tcp_chrono_sndbuf_bound_seconds_total')} or ${kernel} * 0))`;
  }
  get network(): string {
    return `clamp_min(${this.busy} - ${this.rwnd} - ${this.sndbuf}, 0)`;
  }
  get open(): string {
    return `${by(this.groupBy)} (avg_over_time(${sel('tcp_chrono_connections', this.matchers)}[${this.window}]))`;
  }
  get app(): string {
    return `clamp_min(${this.open} - ${this.busy}, 0)`;
  }
  get total(): string {
    return `(${this.busy} + ${this.app})`;
  }
  /** x as a share of connection time (NaN-free: nothing where no connection was open). */
  shareOfTotal(x: string): string {
    return `${x} / (${this.total} > 0)`;
  }
  /** x as a share of busy time (nothing where nothing was busy). */
  shareOfBusy(x: string): string {
    return `${x} / (${this.busy} > 0)`;
  }
  get acked(): string {
    return this.rate('tcp_chrono_bytes_acked_total');
  }
  get retrans(): string {
    return this.rate('tcp_chrono_bytes_retrans_total');
  }
  get closed(): string {
    return this.rate('tcp_chrono_connections_closed_total');
  }
}

/**
 * The labels that name a network namespace (watch --netns: `netns`, and
 * `pod_uid` with --netns-labels pod_uid, a function of netns). Absent from a
 * single-namespace agent's series, where grouping by them changes nothing;
 * with --netns, ports alone no longer name a service, so every per-port
 * grouping keeps them.
 */
export const NETNS_LABELS = ['netns', 'pod_uid'] as const;

/** The label set that names one exported connection (the same 4-tuple may be in two namespaces). */
export const CONNECTION_LABELS = ['job', 'instance', 'netns', 'port', 'remote', 'pid', 'comm'] as const;

/** Per-connection rates (no aggregation: one series per exported connection). */
export function connectionRate(metric: string, m: Matchers, window: string): string {
  return `rate(${sel(metric, m)}[${window}])`;
}

/** Per-connection share of busy time limited by the receive window. */
export function connectionRwndShare(m: Matchers, window: string): string {
  return `${connectionRate('tcp_chrono_connection_rwnd_limited_seconds_total', m, window)} / (${connectionRate('tcp_chrono_connection_busy_seconds_total', m, window)} > 0)`;
}

/** histogram_quantile over a histogram's buckets, grouped. */
export function quantile(q: number, metric: string, m: Matchers, window: string, groupBy: readonly string[] = []): string {
  const labels = ['le', ...groupBy].join(', ');
  return `histogram_quantile(${q}, sum by (${labels}) (rate(${sel(`${metric}_bucket`, m)}[${window}])))`;
}

export { sel, by };
