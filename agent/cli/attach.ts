// `tcp-chronograph attach --pid PID`: per-chunk delivery records for a running
// server in any language, without a proxy and without restarting it. The
// agent duplicates the target's TCP connections (pidfd_getfd), turns kernel
// timestamping on for them, and drains their error queues from a dedicated
// thread. Chunks are the target's own sendmsg calls. On exit (SIGTERM, SIGINT,
// or the target exiting) timestamping is turned off again and the queues
// drained. See agent/attach/attacher.ts for the rules that keep the target safe.
import { closeSync } from 'node:fs';
import type { Request, Response } from 'express';
import { Attacher, type AttachedSocket, type SkipReason } from '../attach/attacher.js';
import { detectGo } from '../attach/golang.js';
import { registerAttachMetrics } from '../attach/metrics.js';
import { AttachError, explainTargetError, KERNEL_TOO_OLD, Target } from '../attach/target.js';
import { nowSeconds } from '../clock.js';
import type { ChunkRecord } from '../model/chunks.js';
import { attachBinding, isSystemError } from '../native.js';
import type { Command } from './command.js';
import { diagFlag, durationIn, EVENTS_FLAG, intervalFlag, listenFlag, maxConnectionSeriesFlag, portFlag, stallAfterFlag } from './common_flags.js';
import { formatHelp, parseBool, parseChoice, parseFlags, parseIntIn, UsageError, type FlagSpec } from './flags.js';
import { ChunkOutputs } from './chunk_mode.js';
import type { PortWatch } from './port_watch.js';
import { catchSignals, serveMode } from './runtime.js';
import { applyRedaction, REDACT_FLAGS, SERVE_FLAGS, serveSecurity } from './common_flags.js';
import { log, logOnce } from './log.js';
import { version } from './version.js';

const SUMMARY =
  'Attach to a running server (any language) and explain, per chunk (each of its sendmsg calls),\n' +
  "why delivery to each client was slow: the client's receive window, the send buffer, or the network.\n" +
  'The server is not restarted or proxied: the agent turns kernel timestamping on for its TCP\n' +
  'connections (pidfd_getfd, Linux 5.6+, CAP_SYS_PTRACE over the target) and turns it off on exit.\n' +
  '\n' +
  'RISK: while attached, the target\'s event loop sees extra EPOLLERR wake-ups (one per timestamp\n' +
  'record the kernel queues, until the agent\'s drainer thread empties the queue) and its sends pay\n' +
  'for the kernel statistics in each record: expect more CPU in the target (measure it with\n' +
  'bench/attach). Go programs are refused (their netpoller can fail a read on a bare EPOLLERR)\n' +
  'unless --force. Sockets that already use SO_TIMESTAMPING or SO_ZEROCOPY are left alone.\n' +
  'If the agent is killed (SIGKILL), timestamping stays on until the next `attach` (or\n' +
  '`attach --cleanup-only`) for the same process turns it off.';

export const FLAGS = {
  pid: {
    name: 'pid',
    arg: 'PID',
    help: 'The server process to attach to. Required.',
    parse: parseIntIn(1, 4_194_304),
  } satisfies FlagSpec<number>,
  port: portFlag(
    "Attach to the target's connections whose local port is one of these.\nDefault: the ports the target listens on (all its connections if it listens on none).",
  ),
  interval: intervalFlag("How often to look for new and closed connections (the target's fd table and one sock_diag dump)."),
  metricsListen: listenFlag('metrics-listen', 'Address of the HTTP server (/metrics, /healthz, /api/chunks, /api/sockets, /api/connections).', '127.0.0.1:9465'),
  diag: diagFlag(
    "Also export watch's per-port and per-connection chronograph metrics (sock_diag) for the\nattached ports (--port, else the ports the target listens on).",
  ),
  maxConnectionSeries: maxConnectionSeriesFlag('With --diag on: at most N connections get per-connection series; 0 turns them off.'),
  records: {
    name: 'records',
    arg: 'sched+ack|ack',
    default: 'sched+ack',
    help: "sched+ack: two records per sendmsg (a chunk's clock starts when the previous chunk left TCP);\nack: one record per sendmsg, half the wake-ups and statistics cost in the target (the clock starts\nat the previous chunk's ACK).",
    parse: parseChoice(['sched+ack', 'ack'] as const),
  } satisfies FlagSpec<'sched+ack' | 'ack'>,
  stallAfter: stallAfterFlag('Report a chunk as stalled when its last byte left TCP but was not acknowledged this long after.'),
  detachTimeout: {
    name: 'detach-timeout',
    arg: 'DURATION',
    default: '10s',
    help: 'On exit, wait at most this long for the bytes written while timestamping was on to be\nacknowledged (the kernel still reports them; a report after the agent left would wake the\ntarget until its connection closes).',
    parse: durationIn(0, 600, 'must be from 0 to 10m'),
  } satisfies FlagSpec<number>,
  maxSockets: {
    name: 'max-sockets',
    arg: 'N',
    default: '10000',
    help: 'Attach to at most N connections at once; more are left alone (and counted).',
    parse: parseIntIn(1, 1_000_000),
  } satisfies FlagSpec<number>,
  batch: {
    name: 'batch',
    arg: 'DURATION',
    default: '10ms',
    help: "How often the drainer thread hands records to the agent. (It empties the target's queues\nat once regardless.)",
    parse: durationIn(0, 1, 'must be from 0 to 1s'),
  } satisfies FlagSpec<number>,
  events: EVENTS_FLAG,
  force: {
    name: 'force',
    help: "Attach even to a Go program (its reads may fail with \"not pollable\" on a bare EPOLLERR).",
    parse: parseBool,
  } satisfies FlagSpec<boolean>,
  cleanupOnly: {
    name: 'cleanup-only',
    help: "Only turn off (and drain) timestamping that a killed agent left on the target's sockets, then exit.",
    parse: parseBool,
  } satisfies FlagSpec<boolean>,
  ...SERVE_FLAGS,
  ...REDACT_FLAGS,
};

/** Fails early, with the right sentence, on a kernel without pidfd_getfd. */
function checkKernel(): void {
  const b = attachBinding();
  let pidfd: number;
  try {
    pidfd = b.pidfdOpen(process.pid);
  } catch (e) {
    if (isSystemError(e) && e.code === 'ENOSYS') throw new AttachError(KERNEL_TOO_OLD, 'kernel');
    throw e;
  }
  try {
    closeSync(b.pidfdGetfd(pidfd, pidfd));
  } catch (e) {
    if (isSystemError(e) && e.code === 'ENOSYS') throw new AttachError(KERNEL_TOO_OLD, 'kernel');
    // anything else (e.g. a seccomp profile) shows up again on the target, with its own sentence
  } finally {
    closeSync(pidfd);
  }
}

async function runAttach(argv: readonly string[]): Promise<number> {
  const { values: o, help } = parseFlags('attach', FLAGS, argv);
  if (help) {
    process.stdout.write(formatHelp('attach', SUMMARY, FLAGS));
    return 0;
  }
  const security = serveSecurity(o, 'attach');
  applyRedaction(o);
  if (o.pid === undefined) throw new UsageError('--pid is required, e.g. --pid $(pidof nginx | cut -d" " -f1) (see `tcp-chronograph attach --help`)');
  const force = o.force === true;
  const cleanupOnly = o.cleanupOnly === true;

  checkKernel();
  const target = new Target(o.pid);
  try {
    if (!target.sameNetns()) {
      throw new AttachError(
        `pid ${o.pid} (${target.comm}) is in another network namespace; run the agent in it (e.g. nsenter --target ${o.pid} --net tcp-chronograph attach --pid ${o.pid})`,
        'netns',
      );
    }
    if (!force && !cleanupOnly) {
      let go;
      try {
        go = detectGo(target.exe);
      } catch (e) {
        throw explainTargetError(o.pid, 'read the executable', e);
      }
      if (go.go) {
        throw new AttachError(
          `pid ${o.pid} (${target.comm}) is a Go program (${go.reason}); Go's netpoller can fail a read with "not pollable" on the extra EPOLLERR events attach causes (golang/go#59545), so it is refused: use \`tcp-chronograph proxy\`, or --force at your own risk`,
          'go',
        );
      }
    }
  } catch (e) {
    target.close();
    throw e;
  }

  // Connection metrics of `watch` for the attached ports (sock_diag, started
  // below once the target's ports are known); their table is also the
  // sndbuf-bound evidence of the chunk records.
  let portWatch: PortWatch | undefined;
  const attacher = new Attacher(target, {
    bufferBound: (inode) => portWatch?.bufferBound(inode) ?? false,
    ports: o.port,
    sched: o.records === 'sched+ack',
    stallAfter: o.stallAfter,
    maxSockets: cleanupOnly ? 0 : o.maxSockets,
    maxPendingChunks: 1024,
    batchMs: Math.round(o.batch * 1000),
    attach: !cleanupOnly,
  });
  attacher.on('skipped', (reason: SkipReason, port: number, peer: string, detail: string) => {
    logOnce(`skip:${reason}`, 'warn', 'a connection was left alone (logged once per reason, counted in tcp_chrono_attach_sockets_skipped_total)', { reason, port, peer, detail });
  });

  // A bug must not leave the target with timestamping on: off, drained, then die.
  const die = (e: unknown): void => {
    const n = attacher.emergencyOff();
    process.stderr.write(`tcp-chronograph: internal error, timestamping turned off on ${n} sockets without waiting for acknowledgements: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
    process.exit(1);
  };
  process.on('uncaughtException', die);
  process.on('unhandledRejection', die);
  // Signals are taken from here on (a SIGTERM during start-up must still detach).
  catchSignals();

  let first;
  try {
    first = attacher.rescan(nowSeconds());
  } catch (e) {
    await attacher.detachAll(0);
    target.close();
    throw e;
  }
  if (cleanupOnly) {
    const r = await attacher.cleanupDone();
    await attacher.detachAll(0);
    target.close();
    log('info', 'cleanup done', { pid: o.pid, comm: target.comm, staleSockets: attacher.counters.staleCleaned, timedOut: r.timedOut });
    return 0;
  }
  if (first.tcp === 0) {
    await attacher.detachAll(0);
    target.close();
    throw new AttachError(`pid ${o.pid} (${target.comm}) has no TCP sockets (no listener, no connection) in this network namespace`, 'no-sockets');
  }

  // Connection metrics of `watch` for the attached ports (sock_diag), where the kernel allows.
  const diagPorts = o.port.length > 0 ? o.port : [...attacher.listeningPorts].map((p) => ({ from: p, to: p }));
  let out: ChunkOutputs;
  try {
    out = await ChunkOutputs.open({ events: o.events, diag: o.diag === 'on' ? { ports: diagPorts, intervalSeconds: o.interval, maxSeries: o.maxConnectionSeries } : undefined });
  } catch (e) {
    await attacher.detachAll(0);
    target.close();
    throw e;
  }
  portWatch = out.portWatch;
  const degraded = [...out.degraded];
  if (o.diag === 'on' && diagPorts.length === 0) degraded.push('connection metrics off: the target listens on no port and --port was not given');
  registerAttachMetrics(out.registry, attacher, { version: version(), pid: o.pid, comm: target.comm, records: o.records }, { eventsDropped: () => out.events.dropped });
  attacher.on('chunk', (c: ChunkRecord, s: AttachedSocket) => {
    // Extra fields go on the record itself (no copy per chunk; the record is ours).
    out.record(c, { port: s.localPort, mode: 'attach' }, { mode: 'attach', pid: o.pid, port: s.localPort, peer: s.peer });
  });
  if (attacher.markerSupported === false) {
    degraded.push('this kernel lacks SOF_TIMESTAMPING_OPT_RX_FILTER (Linux 6.12): timestamping left by a killed agent cannot be recognised later; stop the agent with SIGTERM, not SIGKILL');
  }

  let lastRescanError: string | undefined;
  let requestStop: (why: string) => void = () => undefined;
  const timer = setInterval(() => {
    try {
      attacher.rescan(nowSeconds());
      lastRescanError = undefined;
    } catch (e) {
      attacher.counters.rescanErrors++;
      lastRescanError = e instanceof Error ? e.message : String(e);
      if (!target.alive()) requestStop('target-exit');
      else logOnce(`rescan:${lastRescanError}`, 'warn', 'rescan failed; retrying every interval', { error: lastRescanError });
    }
  }, o.interval * 1000);

  const detach = async (timeoutMs: number) => {
    clearInterval(timer);
    const report = await attacher.detachAll(timeoutMs);
    await out.close();
    target.close();
    return report;
  };

  return serveMode({
    command: 'attach',
    listen: o.metricsListen,
    listenFlag: '--metrics-listen',
    listenField: 'metrics',
    security,
    metrics: out.metrics,
    health: () => {
      const h = out.healthFields();
      return {
        ...h,
        ok: h.ok && lastRescanError === undefined,
        pid: o.pid,
        comm: target.comm,
        sockets: attacher.attachedCount,
        listeningPorts: [...attacher.listeningPorts],
        ...(lastRescanError !== undefined && { rescanError: lastRescanError }),
      };
    },
    routes: (app) => {
      app.get('/api/sockets', (_req: Request, res: Response) => {
        res.json(attacher.list());
      });
      out.routes(app);
    },
    paths: ['/api/sockets', ...out.paths],
    startMessage: 'attaching',
    startFields: () => ({
      pid: o.pid,
      comm: target.comm,
      sockets: attacher.attachedCount,
      connections: first.found,
      listeningPorts: [...attacher.listeningPorts],
      ports: o.port.map((r) => (r.from === r.to ? String(r.from) : `${r.from}-${r.to}`)),
      records: o.records,
      idTcp: attacher.idTcp ?? null,
      staleMarker: attacher.markerSupported ?? null,
      diag: out.portWatch !== undefined ? 'on' : 'off',
      force,
    }),
    degraded,
    abort: async () => {
      await detach(o.detachTimeout * 1000);
    },
    stop: async () => {
      const report = await detach(o.detachTimeout * 1000);
      const drainer = attacher.drainerCounters();
      if (report.timedOut > 0) {
        log('warn', 'some connections still had bytes written while timestamping was on unacknowledged at the detach timeout; their late records will wake the target until it reads them or the connection closes', {
          sockets: report.timedOut,
        });
      }
      return {
        pid: o.pid,
        sockets: report.sockets,
        closedByTarget: report.closed,
        timedOut: report.timedOut,
        leftOn: report.leftOn,
        detachSeconds: Number(report.seconds.toFixed(3)),
        attachedTotal: attacher.counters.attached,
        records: attacher.counters.records,
        lostRecords: attacher.lostRecords,
        chunks: attacher.counters.chunks,
        stalls: attacher.counters.stalls,
        drains: drainer.drains,
        wakeups: drainer.wakeups,
      };
    },
    stopMessage: 'detached',
    reasonField: 'reason',
    stopDeadlineMs: o.detachTimeout * 1000 + 5000,
    onStopRequest: (stop) => {
      requestStop = stop;
      attacher.on('target-exit', () => stop('target-exit'));
    },
  });
}

export const attachCommand: Command = {
  name: 'attach',
  summary: 'Attach to a running server process (any language but Go) and export per-chunk delivery records',
  run: runAttach,
};
