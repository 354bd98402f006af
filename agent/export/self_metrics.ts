// Self metrics of a mode (proxy, attach): prom-client Counters and Gauges
// whose value is read from the mode's own counters at scrape time, so the
// hot path only increments plain numbers.
import { Counter, Gauge, type Registry } from 'prom-client';

export interface SelfMetrics {
  /** A counter set to `read()` at each scrape. */
  counter(name: string, help: string, read: () => number): void;
  /** A counter with one label, one series per key of `read()`. */
  counterBy(name: string, help: string, label: string, read: () => Record<string, number>): void;
  /** A gauge set to `read()` at each scrape. */
  gauge(name: string, help: string, read: () => number): void;
  /** tcp_chrono_agent_events_dropped_total, when the mode has a chunk event stream (agent/export/chunk_events.ts). */
  eventsDropped(read: (() => number) | undefined): void;
  /** An `_info` gauge: value 1, the configuration in its labels. */
  info(name: string, help: string, labels: Record<string, string>): void;
}

export function selfMetrics(registry: Registry): SelfMetrics {
  const registers = [registry];
  const counter = (name: string, help: string, read: () => number): void => {
    new Counter({
      name,
      help,
      registers,
      collect() {
        this.reset();
        this.inc(read());
      },
    });
  };
  return {
    counter,
    counterBy(name, help, label, read) {
      new Counter({
        name,
        help,
        labelNames: [label],
        registers,
        collect() {
          this.reset();
          for (const [k, v] of Object.entries(read())) this.inc({ [label]: k }, v);
        },
      });
    },
    gauge(name, help, read) {
      new Gauge({
        name,
        help,
        registers,
        collect() {
          this.set(read());
        },
      });
    },
    eventsDropped(read) {
      if (read === undefined) return;
      counter('tcp_chrono_agent_events_dropped_total', 'Chunk events not written to --events or to /api/chunks followers because they could not keep up.', read);
    },
    info(name, help, labels) {
      new Gauge({ name, help, labelNames: Object.keys(labels), registers }).set(labels, 1);
    },
  };
}
