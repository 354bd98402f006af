// `tcp-chronograph trace`: per-chunk delivery records for every TCP
// connection of the processes in a cgroup-v2 subtree, from BPF TX
// timestamping (Linux 6.15+). The kernel calls the program at each write and
// at its SCHED/ACK moments; the server (nginx, Go, Java, …) is not touched:
// no proxy hop, no ptrace, no error queue. See native/bpf/trace.bpf.c for
// the kernel side and agent/model/trace_chunks.ts for how records become
// chunks.
import { release } from 'node:os';
import type { Registry } from 'prom-client';
import { nowSeconds } from '../clock.js';
import type { TraceCounters } from '../parse/trace_event.js';
import { selfMetrics } from '../export/self_metrics.js';
import { TraceChunker, type TraceChunkerCounters, type TraceChunkRecord } from '../model/trace_chunks.js';
import { cgroup2Mount, MAX_PORT_RANGES, traceLoadFailure, TraceSource, traceUnavailable, type TraceChunkMode } from '../sources/trace.js';
import { ChunkOutputs } from './chunk_mode.js';
import type { Command } from './command.js';
import { applyRedaction, diagFlag, durationIn, EVENTS_FLAG, intervalFlag, listenFlag, maxConnectionSeriesFlag, portFlag, REDACT_FLAGS, SERVE_FLAGS, serveSecurity, stallAfterFlag } from './common_flags.js';
import { formatHelp, parseDuration, parseFlags, parseIntIn, UsageError, type FlagSpec } from './flags.js';
import { LOG_FORMAT_FLAG, configureLog, logOnce } from './log.js';
import { serveMode } from './runtime.js';
import { version } from './version.js';

const SUMMARY =
  'Explain, per response (or per write), why delivery to each client was slow, for every TCP\n' +
  'connection of the processes in a cgroup-v2 subtree: BPF TX timestamping (Linux 6.15+) follows\n' +
  'each write to its acknowledgement inside the kernel. The servers are not touched (no proxy,\n' +
  'no ptrace, nothing in their error queues). Needs CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON (root).\n' +
  'Connections already open when it starts are followed from their next write.';

function parseChunks(text: string): TraceChunkMode {
  if (text === 'response') return { kind: 'response' };
  if (text === 'write') return { kind: 'write' };
  const m = /^idle=(.+)$/.exec(text);
  if (m !== null) {
    const seconds = parseDuration(m[1]!);
    if (!(seconds > 0) || seconds > 60) throw new Error('idle=DURATION must be from 1ms to 60s');
    return { kind: 'idle', seconds };
  }
  throw new Error('expected response, write or idle=DURATION (e.g. idle=50ms)');
}

/** A power of two from 64 KiB to 256 MiB: "4m", "1048576". */
function parseRingBytes(text: string): number {
  const m = /^(\d+)([kKmM]?)$/.exec(text);
  if (m === null) throw new Error('expected a size like 4m or 1048576');
  const n = Number(m[1]) * (m[2] === '' ? 1 : m[2]!.toLowerCase() === 'k' ? 1024 : 1024 * 1024);
  if (n < 65536 || n > 256 * 1024 * 1024 || (n & (n - 1)) !== 0) throw new Error('must be a power of two from 64k to 256m');
  return n;
}

export const FLAGS = {
  cgroup: {
    name: 'cgroup',
    arg: 'PATH',
    help: 'Follow the connections of the processes in this cgroup-v2 directory and below.\nDefault: the root of the cgroup-v2 mount (every process of the host), found in /proc/self/mountinfo.',
    parse: (t: string) => {
      if (t === '') throw new Error('expected a directory of the cgroup-v2 hierarchy');
      return t;
    },
  } satisfies FlagSpec<string>,
  port: portFlag(`Follow only connections whose local port is one of these (at most ${MAX_PORT_RANGES} ranges; filtered in the kernel).\nDefault: every port.`),
  pid: {
    name: 'pid',
    arg: 'PID',
    help: 'Only writes made by this process (its threads included); filtered in the kernel.',
    parse: parseIntIn(1, 4_194_304),
  } satisfies FlagSpec<number>,
  chunks: {
    name: 'chunks',
    arg: 'response|write|idle=DURATION',
    default: 'response',
    help:
      'response: the writes between two requests (an increase of the bytes received), one chunk per\n' +
      'HTTP/1.x response, TLS included; write: each sendmsg/sendfile hand-over; idle=D: writes\n' +
      'separated by less than D of sender idleness (push streams, HTTP/2).',
    parse: parseChunks,
  } satisfies FlagSpec<TraceChunkMode>,
  sample: {
    name: 'sample',
    arg: 'N',
    default: '1',
    help: 'Timestamp every Nth chunk of each connection; the others cost one kernel callback per write.',
    parse: parseIntIn(1, 1_000_000),
  } satisfies FlagSpec<number>,
  interval: intervalFlag('How often to scan the followed connections for quiet and stalled chunks. (The ring buffer is read as records arrive, in batches every 100 ms, or every DURATION if shorter.)'),
  stallAfter: stallAfterFlag('Report a chunk as stalled when its last byte is not acknowledged this long after its first write.'),
  quiet: {
    name: 'quiet',
    arg: 'DURATION',
    default: '2s',
    help: "A chunk all acknowledged is reported when the connection's next chunk begins, or after this\nlong without a write (a player between segments).",
    parse: durationIn(0.05, 3600, 'must be from 50ms to 1h'),
  } satisfies FlagSpec<number>,
  listen: listenFlag('listen', 'Address of the HTTP server (/metrics, /healthz, /api/chunks, /api/connections).', '127.0.0.1:9466'),
  maxSockets: {
    name: 'max-sockets',
    arg: 'N',
    default: '65536',
    help: 'Most connections followed at once (the kernel map); more are counted, not followed.',
    parse: parseIntIn(16, 4_000_000),
  } satisfies FlagSpec<number>,
  ringBuffer: {
    name: 'ring-buffer',
    arg: 'BYTES',
    default: '4m',
    help: 'Size of the ring buffer the kernel hands records through (a power of two); records that do\nnot fit are counted in tcp_chrono_trace_records_lost_total.',
    parse: parseRingBytes,
  } satisfies FlagSpec<number>,
  diag: diagFlag(
    "With --port: also export watch's per-port and per-connection chronograph metrics (sock_diag)\nfor those ports, and /api/connections.",
  ),
  maxConnectionSeries: maxConnectionSeriesFlag('With --diag on: at most N connections get per-connection series; 0 turns them off.'),
  events: EVENTS_FLAG,
  logFormat: LOG_FORMAT_FLAG,
  ...SERVE_FLAGS,
  ...REDACT_FLAGS,
};

/** What trace's own metrics read at each scrape. */
export interface TraceMetricsReads {
  /** Connections followed at the last scan. */
  connections(): number;
  counters(): TraceCounters;
  chunker(): TraceChunkerCounters;
  /** Batches whose handling failed. */
  callbackErrors(): number;
  eventsDropped(): number;
}

/** trace's own metrics (tcp_chrono_trace_*, events dropped) in `registry`; values read through `r` at each scrape. */
export function registerTraceMetrics(registry: Registry, r: TraceMetricsReads, info: { version: string; cgroup: string; chunks: string; sample: string }): void {
  const self = selfMetrics(registry);
  self.gauge('tcp_chrono_trace_connections', 'Connections followed by the BPF program now (passes of the last scan).', r.connections);
  self.counter('tcp_chrono_trace_connections_total', 'Connections the BPF program switched TX timestamping on for.', () => r.counters().sockets);
  self.counter('tcp_chrono_trace_writes_total', 'Writes (sendmsg/sendfile hand-overs) seen on followed connections.', () => r.counters().writes);
  self.counter('tcp_chrono_trace_records_total', 'Records the BPF program handed to the ring buffer.', () => r.counters().records);
  self.counterBy(
    'tcp_chrono_trace_records_lost_total',
    'Records or connections lost, by reason (ringbuf: the ring buffer was full; map_full: --max-sockets connections were followed; enable_failed: the kernel refused timestamping; malformed: undecodable; callback: the agent failed handling a batch).',
    'reason',
    () => {
      const counters = r.counters();
      return { ringbuf: counters.ringbufLost, map_full: counters.mapFull, enable_failed: counters.enableFailed, malformed: counters.malformed, callback: r.callbackErrors() };
    },
  );
  self.counter('tcp_chrono_trace_chunks_unsampled_total', 'Chunks not timestamped because of --sample.', () => r.counters().unsampled);
  self.counter('tcp_chrono_trace_chunks_superseded_total', 'Chunks given up because two later ones began before their last byte was acknowledged (pipelining); reported as stalls.', () => r.chunker().superseded);
  self.counter('tcp_chrono_trace_chunks_late_total', 'Writes to a chunk already reported (stalled, or quiet for --quiet): their bytes are not in any record.', () => r.chunker().late);
  self.eventsDropped(r.eventsDropped);
  self.info('tcp_chrono_trace_info', 'The trace configuration (value is always 1).', { version: info.version, cgroup: info.cgroup, chunks: info.chunks, sample: info.sample });
}

/** CLOCK_MONOTONIC nanoseconds now (the clock of bpf_ktime_get_ns). */
const monoNs = (): bigint => process.hrtime.bigint();

async function runTrace(argv: readonly string[]): Promise<number> {
  const { values: o, help } = parseFlags('trace', FLAGS, argv);
  if (help) {
    process.stdout.write(formatHelp('trace', SUMMARY, FLAGS));
    return 0;
  }
  configureLog({ format: o.logFormat });
  const security = serveSecurity(o, 'trace');
  applyRedaction(o);
  if (o.port.length > MAX_PORT_RANGES) throw new UsageError(`--port: at most ${MAX_PORT_RANGES} ports or ranges (the kernel filter's size)`);
  const cgroup = o.cgroup ?? cgroup2Mount();
  if (cgroup === undefined) throw new Error('no cgroup-v2 hierarchy is mounted (none in /proc/self/mountinfo); mount one (mount -t cgroup2 none /sys/fs/cgroup) or give --cgroup (under `ip netns exec`, which remounts /sys, run trace outside it: it follows every network namespace anyway)');
  const why = traceUnavailable(cgroup);
  if (why !== undefined) throw new Error(why);

  let source: TraceSource;
  try {
    source = new TraceSource({ cgroup, chunks: o.chunks, sample: o.sample, ports: o.port, pid: o.pid ?? 0, maxSockets: o.maxSockets, ringBytes: o.ringBuffer });
  } catch (e) {
    throw new Error(traceLoadFailure(e));
  }
  let adopted: ReturnType<TraceSource['adoptExisting']>;
  try {
    adopted = source.adoptExisting();
  } catch (e) {
    source.close();
    throw new Error(`cannot follow the connections already open: ${e instanceof Error ? e.message : String(e)}`);
  }

  let out: ChunkOutputs;
  try {
    out = await ChunkOutputs.open({
      events: o.events,
      diag: o.diag === 'on' && o.port.length > 0 ? { ports: o.port, intervalSeconds: o.interval, maxSeries: o.maxConnectionSeries } : undefined,
    });
  } catch (e) {
    source.close();
    throw e;
  }
  const degraded = [...out.degraded];
  if (adopted.failed.length > 0) {
    const f = adopted.failed[0]!;
    degraded.push(
      `connections already open in ${adopted.failed.length} network namespace(s) are not followed, only new ones (${f.reason}${adopted.failed.length > 1 ? ', …' : ''})`,
    );
  }

  // CLOCK_MONOTONIC → CLOCK_REALTIME, re-based at every pass (drift stays well under a jiffy).
  let offset = 0;
  const rebase = (): bigint => {
    const mono = monoNs();
    offset = nowSeconds() - Number(mono) / 1e9;
    return mono;
  };
  rebase();
  const chunker = new TraceChunker({ stallAfter: o.stallAfter, quiet: o.quiet }, (ns) => Number(ns) / 1e9 + offset, (r: TraceChunkRecord) =>
    out.record(r, { port: r.port, mode: 'trace' }, { mode: 'trace' }),
  );

  const c = () => source.counters();
  let counters = c();
  registerTraceMetrics(
    out.registry,
    { connections: () => lastScan, counters: () => (source.open ? c() : counters), chunker: () => chunker.counters, callbackErrors: () => callbackErrors, eventsDropped: () => out.events.dropped },
    { version: version(), cgroup, chunks: o.chunks.kind === 'idle' ? `idle=${o.chunks.seconds}s` : o.chunks.kind, sample: String(o.sample) },
  );

  let lastScan = 0;
  let callbackErrors = 0;
  let lastError: string | undefined;
  // Reads the ring buffer (and, with scan, the followed connections);
  // returns the records read, -1 when reading failed.
  const pass = (scan: boolean): number => {
    try {
      const now = rebase();
      const events = source.consume();
      chunker.onEvents(events);
      if (scan) {
        const conns = source.connections();
        lastScan = conns.length;
        chunker.onScan(conns, now);
        counters = c();
      }
      lastError = undefined;
      return events.length;
    } catch (e) {
      callbackErrors++;
      lastError = e instanceof Error ? e.message : String(e);
      logOnce(`trace:${lastError}`, 'error', 'reading the trace program failed; retrying (counted in tcp_chrono_trace_records_lost_total{reason="callback"})', { error: lastError });
      return -1;
    }
  };
  // Records arrive as chunks end. The ring is read when the kernel wakes the
  // agent for its first record, then every 100 ms for as long as records
  // keep coming (batches), and the agent sleeps again once a read finds
  // none: an idle agent does not wake ten times a second (a wake-up costs
  // about 0.2 ms of CPU on the project's VM). After a failed read the timer
  // retries (a ring that stays readable would re-wake at once); if the wake-up
  // itself fails, the timer reads from then on, as it did before wake-ups.
  const drainMs = Math.min(100, o.interval * 1000);
  let drain: NodeJS.Timeout | undefined;
  let wakeups = true;
  const wakeupFailed = (e: unknown): void => {
    wakeups = false; // nothing is lost: the timer reads the ring from now on
    const error = typeof e === 'number' ? `libuv error ${e}` : e instanceof Error ? e.message : String(e);
    logOnce('trace:wakeup', 'warn', `the ring buffer cannot wake the agent; it is read every ${drainMs} ms instead`, { error });
  };
  const drainCycle = (status = 0): void => {
    drain = undefined;
    if (status < 0) wakeupFailed(status);
    if (pass(false) !== 0 || !wakeups) drain = setTimeout(drainCycle, drainMs);
    else if (source.open) {
      try {
        source.watch(drainCycle);
      } catch (e) {
        wakeupFailed(e);
        drain = setTimeout(drainCycle, drainMs);
      }
    }
  };
  drainCycle();
  const scan = setInterval(() => pass(true), o.interval * 1000);

  const stopAll = async (): Promise<void> => {
    clearTimeout(drain);
    clearInterval(scan);
    pass(true); // what the kernel has now, before the program goes
    source.close();
    await out.close();
  };

  return serveMode({
    command: 'trace',
    listen: o.listen,
    listenFlag: '--listen',
    listenField: 'listen',
    security,
    metrics: out.metrics,
    health: () => {
      const h = out.healthFields();
      return { ...h, ok: h.ok && lastError === undefined && source.open, connections: lastScan, ...(lastError !== undefined && { error: lastError }) };
    },
    routes: (app) => out.routes(app),
    paths: out.paths,
    startMessage: 'tracing',
    startFields: () => ({
      kernel: release(),
      cgroup,
      ports: o.port.length > 0 ? o.port.map((r) => (r.from === r.to ? `${r.from}` : `${r.from}-${r.to}`)) : 'all',
      pid: o.pid ?? 'all',
      chunks: o.chunks.kind === 'idle' ? `idle=${o.chunks.seconds}s` : o.chunks.kind,
      sample: o.sample,
      maxSockets: o.maxSockets,
      ringBuffer: o.ringBuffer,
      existingConnections: counters.existing,
      namespacesScanned: adopted.namespaces,
      diag: out.portWatch !== undefined ? 'on' : 'off',
      events: o.events ?? null,
    }),
    degraded,
    abort: stopAll,
    stop: async () => {
      await stopAll();
      return { chunks: chunker.counters.chunks, stalls: chunker.counters.stalls, records: counters.records, recordsLost: counters.ringbufLost };
    },
  });
}

export const traceCommand: Command = {
  name: 'trace',
  summary: 'Per-response delivery records for every connection of a cgroup, from BPF TX timestamping (Linux 6.15+)',
  run: runTrace,
};
