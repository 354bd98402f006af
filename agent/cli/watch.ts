// `tcp-chronograph watch`: the sidecar. Polls sock_diag for every TCP
// connection in this network namespace (touching none of them), keeps the
// connection table, listens to the destroy feed where allowed, and serves
// /metrics, /healthz and /api/connections.
import { readlinkSync } from 'node:fs';
import { release } from 'node:os';
import { performance } from 'node:perf_hooks';
import { TCP_STATES, stateName, type PortRange, type TcpChrono } from '../parse/inet_diag.js';
import { DiagSource, parseCidr } from '../sources/diag.js';
import { DiagPoller, dumpFailure, type PollTarget } from '../sources/diag_poller.js';
import { DestroyFeed } from '../sources/destroy.js';
import { NetnsSet, parseNetnsChoice, type WatchedNamespace } from '../sources/netns.js';
import { ConnectionTable, type NetnsScope } from '../model/connections.js';
import { OwnerResolver } from '../model/owners.js';
import { WatchMetrics, type SelfSnapshot } from '../export/metrics.js';
import { connectionRoutes } from '../export/http.js';
import type { Command } from './command.js';
import { applyRedaction, intervalFlag, listenFlag, portFlag, REDACT_FLAGS, SERVE_FLAGS, serveSecurity } from './common_flags.js';
import { formatHelp, parseChoice, parseFlags, parseIntIn, UsageError, type FlagSpec } from './flags.js';
import { LOG_FORMAT_FLAG, configureLog, log, logOnce } from './log.js';
import { privileges } from './privileges.js';
import { serveMode } from './runtime.js';
import { version } from './version.js';

const SUMMARY =
  'Export busy, rwnd-limited and sndbuf-limited time of every TCP connection in this\n' +
  'network namespace to Prometheus, per local port and per connection (capped).';

function parseState(text: string): number {
  const s = TCP_STATES[text.toLowerCase() as keyof typeof TCP_STATES];
  const usable = Object.keys(TCP_STATES).filter((k) => !['listen', 'time-wait', 'close', 'syn-recv'].includes(k));
  if (s === undefined || !usable.includes(text.toLowerCase())) throw new Error(`expected one of ${usable.join(', ')}`);
  return s;
}

export const FLAGS = {
  interval: intervalFlag('How often to dump the sockets (one sock_diag dump, ~1 µs per socket in the kernel).'),
  port: portFlag(
    'Watch only connections whose local port is one of these (filtered in the kernel).\nDefault: every port but its own --listen port; outbound connections are\nthen aggregated as port="ephemeral".',
  ),
  remoteCidr: {
    name: 'remote-cidr',
    arg: 'CIDR',
    multiple: true,
    help: 'Watch only connections whose peer address is in one of these prefixes (10.0.0.0/8, 2001:db8::/32).',
    parse: (t: string) => {
      parseCidr(t);
      return t;
    },
  } satisfies FlagSpec<string>,
  netns: {
    name: 'netns',
    arg: 'all|PATH',
    multiple: true,
    help:
      'Watch other network namespaces too, one agent per host: all (every namespace of a process\n' +
      'or under /run/netns, re-discovered every interval), or /run/netns/NAME, /proc/PID/ns/net.\n' +
      'Series and API rows then carry netns (the /run/netns name, else inode:N). Needs CAP_SYS_ADMIN.\n' +
      "Default: this process's namespace only, without a netns label.",
    parse: parseNetnsChoice,
  } satisfies FlagSpec<string>,
  netnsLabels: {
    name: 'netns-labels',
    arg: 'LABEL',
    multiple: true,
    help:
      'With --netns, labels for what runs in the namespaces, read from cgroup paths (kubelet,\n' +
      'containerd, CRI-O, Docker, podman): pod_uid, the Kubernetes pod whose namespace it is (on\n' +
      "every series of the namespace; empty outside pods); container_id, the container of the process\n" +
      "that owns the connection (per-connection series; needs --owners on). Default: none.",
    parse: parseChoice(['pod_uid', 'container_id'] as const),
  } satisfies FlagSpec<'pod_uid' | 'container_id'>,
  state: {
    name: 'state',
    arg: 'STATE',
    multiple: true,
    default: 'established,fin-wait-1,fin-wait-2,close-wait,last-ack,closing',
    help: 'TCP states to watch. Outside established, only connections that carried data are kept.',
    parse: parseState,
  } satisfies FlagSpec<number>,
  listen: listenFlag('listen', 'Address of the HTTP server (/metrics, /healthz, /api/connections).', '127.0.0.1:9465'),
  maxConnections: {
    name: 'max-connections',
    arg: 'N',
    default: '200',
    help: 'At most N connections get per-connection series (most stalled, then most active);\nthe others are still in the per-port aggregates. 0 turns per-connection series off.',
    parse: parseIntIn(0, 100_000),
  } satisfies FlagSpec<number>,
  destroyFeed: {
    name: 'destroy-feed',
    arg: 'auto|on|off',
    default: 'auto',
    help: "Subscribe to the kernel's TCP destroy notifications so connections shorter than a poll\nare counted exactly. auto: use it if the kernel allows; on: fail if it does not.",
    parse: parseChoice(['auto', 'on', 'off'] as const),
  } satisfies FlagSpec<'auto' | 'on' | 'off'>,
  owners: {
    name: 'owners',
    arg: 'on|off',
    default: 'on',
    help: 'Look up the pid and command of each exported connection in /proc (best effort, cached).',
    parse: parseChoice(['on', 'off'] as const),
  } satisfies FlagSpec<'on' | 'off'>,
  logFormat: LOG_FORMAT_FLAG,
  ...SERVE_FLAGS,
  ...REDACT_FLAGS,
};

function netnsId(): string {
  try {
    return readlinkSync('/proc/self/ns/net');
  } catch {
    return 'unknown';
  }
}

async function runWatch(argv: readonly string[]): Promise<number> {
  const { values: o, help } = parseFlags('watch', FLAGS, argv);
  if (help) {
    process.stdout.write(formatHelp('watch', SUMMARY, FLAGS));
    return 0;
  }
  if (o.netnsLabels.length > 0 && o.netns.length === 0) throw new UsageError('--netns-labels labels the namespaces of --netns: give --netns all (or the namespaces) too');
  const podLabel = o.netnsLabels.includes('pod_uid');
  const containerLabel = o.netnsLabels.includes('container_id');
  if (containerLabel && o.owners === 'off') throw new UsageError('--netns-labels container_id is read from the owner process of each connection: drop --owners off');
  configureLog({ format: o.logFormat });
  const security = serveSecurity(o, 'watch');
  applyRedaction(o);
  const intervalMs = o.interval * 1000;
  const source = new DiagSource({ ports: o.port.length > 0 ? o.port : allPortsBut(o.listen.port), remoteCidrs: o.remoteCidr, states: o.state });
  const owners = o.owners === 'on' ? new OwnerResolver({ containers: containerLabel }) : undefined;
  const table = new ConnectionTable({
    closeGraceMs: 0,
    portsChosen: o.port.length > 0,
    onNew: owners !== undefined ? (c) => owners.request(c) : undefined,
  });
  const degraded: string[] = [];
  const poller = new DiagPoller(source, table);
  const stats = poller.stats;
  let pollsMissed = 0;

  // --netns: every namespace's destroy feed is subscribed as it is found,
  // before its first dump (the first ones here, before the first poll).
  // Another namespace's services may use the agent's own --listen port.
  const namespaces =
    o.netns.length > 0
      ? watchNamespaces(o.netns, table, poller, source, o.port.length > 0 ? source : new DiagSource({ ports: [], remoteCidrs: o.remoteCidr, states: o.state }), o.destroyFeed, podLabel)
      : undefined;

  // Destroy feed first, so a connection closing during the first poll is not missed.
  let feed: DestroyFeed | undefined;
  let feedState = 'off';
  if (o.destroyFeed === 'off') {
    degraded.push('destroy feed off (--destroy-feed off): connections closed between two polls keep the figures of their last poll');
  } else if (namespaces !== undefined) {
    const failed = namespaces.feedsFailed();
    feedState = failed === 0 ? 'on' : 'unavailable';
    if (failed < namespaces.set.size) table.setCloseGrace(Math.max(2 * intervalMs, 2000));
    if (failed > 0) degraded.push(`destroy feed unavailable in ${failed} of ${namespaces.set.size} network namespaces: their connections closed between two polls keep the figures of their last poll`);
  } else {
    const started = DestroyFeed.start(
      (sockets) => table.applyDestroyed(sockets, Date.now()),
      (h) => source.filter.matchesDestroyed(h),
    );
    if (started.ok) {
      feed = started.feed;
      feedState = 'on';
      // A vanished connection waits this long for its final figures.
      table.setCloseGrace(Math.max(2 * intervalMs, 2000));
    } else if (o.destroyFeed === 'on') {
      throw new Error(`--destroy-feed on: ${started.reason}`);
    } else {
      feedState = 'unavailable';
      degraded.push(`destroy feed unavailable (${started.code}): ${started.reason}`);
    }
  }

  const metrics = new WatchMetrics(
    table,
    owners,
    (): SelfSnapshot => ({
      polls: stats.polls,
      pollsMissed,
      pollErrors: stats.pollErrors,
      parseErrors: { dump: stats.dumpParseErrors, destroy: namespaces?.feedCounts().parseErrors ?? feed?.counters.parseErrors ?? 0 },
      dumpInterrupted: stats.dumpInterrupted,
      socketsSeen: stats.socketsSeen,
      destroyFeedUp: namespaces !== undefined ? o.destroyFeed !== 'off' && namespaces.feedsFailed() === 0 : feed !== undefined,
      destroyedSockets: namespaces?.feedCounts().sockets ?? feed?.counters.sockets ?? 0,
      destroyFeedLost: namespaces?.feedCounts().overruns ?? feed?.nativeStats().overruns ?? 0,
      ownerScans: owners?.stats.scans ?? 0,
      ...(namespaces !== undefined && { namespaces: namespaces.set.size }),
    }),
    {
      maxConnections: o.maxConnections,
      info: { version: version(), kernel: release(), destroyFeed: feedState },
      ...(namespaces !== undefined && (podLabel || containerLabel) && { netnsLabels: { ...(podLabel && { podOf: namespaces.podOf }), containers: containerLabel } }),
    },
  );

  let firstSample: TcpChrono | undefined;
  const pollOnce = (): void => {
    const r = namespaces !== undefined ? namespaces.poll(metrics.pollDuration) : poller.poll(metrics.pollDuration);
    if (r.firstParseError !== undefined) {
      if (r.firstParseError.startsWith('tcp_info') && r.firstParseError.includes('need at least')) {
        logOnce('old-kernel', 'error', 'this kernel is too old for the sender chronographs: they need Linux 4.10 or newer', {
          kernel: release(),
          detail: r.firstParseError,
        });
      } else {
        logOnce('parse', 'warn', 'some sock_diag messages could not be decoded; they are counted in tcp_chrono_agent_parse_errors_total', {
          first: r.firstParseError,
        });
      }
    }
    const sample = r.sample;
    firstSample ??= sample;
    if (sample !== undefined) {
      if (sample.sndWnd === undefined) {
        logOnce('snd-wnd', 'warn', 'tcp_chrono_connection_peer_rwnd_bytes needs Linux 5.4 or newer (tcpi_snd_wnd); not exported', { kernel: release() });
      }
      if (sample.bytesRetrans === undefined) {
        logOnce('retrans', 'warn', 'retransmitted bytes need Linux 4.19 or newer (tcpi_bytes_retrans); reported as 0', { kernel: release() });
      }
    }
    void owners?.flush();
  };

  // The first poll runs before anything is announced: if it cannot work, say why and stop.
  try {
    pollOnce();
  } catch (e) {
    feed?.close();
    namespaces?.close();
    throw new Error(dumpFailure(e));
  }

  // Phase-aligned: polls are due at loopStart + k·interval (slot k), so a
  // slow poll never shifts the ones after it. A poll that ends past the next
  // slot's start (or starts late because the event loop was busy) leaves that
  // slot without a poll: counted in stats.pollsMissed, never made up for (a
  // burst of catch-up polls would only add load when the agent is behind).
  let timer: NodeJS.Timeout | undefined;
  let stopping = false;
  let slot = 0; // the slot of the poll that ran last (0: the first poll, above)
  const schedule = (): void => {
    const now = performance.now();
    // At least the next slot: a timer firing a hair early never polls a slot twice.
    const next = Math.max(slot + 1, Math.floor((now - loopStart) / intervalMs) + 1);
    const skipped = next - slot - 1;
    if (skipped > 0) {
      pollsMissed += skipped;
      logOnce('polls-missed', 'warn', 'a poll was skipped: the previous poll or other work on the event loop ran past the interval; counted in tcp_chrono_agent_polls_missed_total', {
        interval: o.interval,
        connections: table.open.size,
        lastPollSeconds: Math.round(now - pollStarted) / 1000,
      });
    }
    slot = next;
    timer = setTimeout(tick, loopStart + next * intervalMs - now);
  };
  const loopStart = performance.now();
  let pollStarted = loopStart;
  const tick = (): void => {
    if (stopping) return;
    pollStarted = performance.now();
    try {
      pollOnce();
    } catch (e) {
      stats.pollErrors++;
      stats.lastError = dumpFailure(e);
      logOnce(`poll:${stats.lastError}`, 'warn', 'poll failed; retrying every interval', { error: stats.lastError });
    }
    schedule();
  };
  schedule();

  const routes = connectionRoutes({
    table,
    owners,
    ...(namespaces !== undefined && podLabel && { podOf: namespaces.podOf }),
  });
  return serveMode({
    command: 'watch',
    listen: o.listen,
    listenFlag: '--listen',
    listenField: 'listen',
    security,
    metrics,
    health: () => {
      const age = (Date.now() - stats.lastOk) / 1000;
      const ok = age <= 3 * o.interval + 1;
      return {
        ok,
        lastPollAgeSeconds: age,
        lastError: stats.lastError ?? null,
        destroyFeed: feedState,
        connections: table.open.size,
        ...(namespaces !== undefined && { namespaces: namespaces.set.size }),
      };
    },
    routes: (app) => app.use(routes),
    paths: ['/api/connections', '/api/overview', '/'],
    startMessage: 'watching',
    startFields: () => ({
      netns: netnsId(),
      ...(namespaces !== undefined && { watchNetns: o.netns, namespaces: namespaces.set.size, netnsLabels: o.netnsLabels }),
      interval: o.interval,
      ports: o.port.length > 0 ? o.port.map((r) => (r.from === r.to ? `${r.from}` : `${r.from}-${r.to}`)) : o.listen.port > 0 ? `all but ${o.listen.port}` : 'all',
      remoteCidrs: o.remoteCidr.length > 0 ? o.remoteCidr : 'all',
      states: o.state.map(stateName),
      maxConnections: o.maxConnections,
      destroyFeed: feedState,
      owners: o.owners,
      connections: table.open.size,
      privileges: privileges(),
      // What this kernel's tcp_info carries (unknown until a connection is seen).
      kernelFeatures:
        firstSample === undefined
          ? 'unknown until a connection is seen'
          : { chronographs: true, peerWindow: firstSample.sndWnd !== undefined, bytesRetrans: firstSample.bytesRetrans !== undefined },
    }),
    degraded,
    drop: { owners: owners !== undefined, netns: namespaces !== undefined },
    abort: async () => {
      stopping = true;
      if (timer !== undefined) clearTimeout(timer);
      feed?.close();
      namespaces?.close();
    },
    stop: async () => {
      stopping = true;
      if (timer !== undefined) clearTimeout(timer);
      feed?.close();
      namespaces?.close();
      return { polls: stats.polls };
    },
    stopDeadlineMs: 5000,
  });
}

/** What goes with one watched network namespace. */
interface NamespaceData {
  scope: NetnsScope;
  source: DiagSource;
  feed: DestroyFeed | undefined;
}

/** The pod_uid label of a scope's series: its namespace's pod (NetnsSet with pods), '' while unknown. */
function podLabelOf(namespaceOf: WeakMap<NetnsScope, WatchedNamespace>): (scope: NetnsScope) => string {
  return (scope) => namespaceOf.get(scope)?.pod ?? '';
}

/**
 * watch --netns: the namespaces (agent/sources/netns.ts), each a scope of
 * the table (its connections keyed apart, its aggregates labelled) with its
 * own destroy feed. Found again before every poll; one that goes away has
 * its last destroy messages read, then its connections closed. The first
 * discovery runs here: a namespace given by path that is not there, or
 * setns refused (no CAP_SYS_ADMIN), stops the start with a sentence.
 */
function watchNamespaces(
  choices: readonly string[],
  table: ConnectionTable,
  poller: DiagPoller,
  ownSource: DiagSource,
  otherSource: DiagSource,
  feedMode: 'auto' | 'on' | 'off',
  pods = false,
) {
  const feedless = new Set<NamespaceData>();
  // A namespace gone keeps its pod on the aggregates it leaves for scopeRetentionMs.
  const namespaceOf = new WeakMap<NetnsScope, WatchedNamespace>();
  // Counts of the feeds of namespaces gone (self metrics are counters).
  const gone = { sockets: 0, parseErrors: 0, overruns: 0 };
  const set = new NetnsSet<NamespaceData>(choices, {
    added: (ns: WatchedNamespace): NamespaceData => {
      const scope = table.addScope(ns.label);
      namespaceOf.set(scope, ns);
      const source = ns.own ? ownSource : otherSource;
      const data: NamespaceData = { scope, source, feed: undefined };
      if (feedMode !== 'off') {
        const started = DestroyFeed.start(
          (sockets) => table.applyDestroyed(sockets, Date.now(), scope),
          (h) => source.filter.matchesDestroyed(h),
          undefined,
          ns.nsFd,
        );
        if (started.ok) data.feed = started.feed;
        else if (feedMode === 'on') throw new Error(`--destroy-feed on: ${started.reason}`);
        else {
          feedless.add(data);
          logOnce(`netns-feed:${started.code}`, 'warn', 'destroy feed unavailable in a network namespace: its connections closed between two polls keep the figures of their last poll', {
            netns: ns.label,
            reason: started.reason,
          });
        }
      }
      return data;
    },
    removed: (_ns, data) => {
      if (data.feed !== undefined) {
        gone.overruns += data.feed.nativeStats().overruns;
        data.feed.close(true); // what it still holds counts
        gone.sockets += data.feed.counters.sockets;
        gone.parseErrors += data.feed.counters.parseErrors;
      }
      feedless.delete(data);
      table.removeScope(data.scope, Date.now());
    },
    relabel: (_ns, data, label) => table.relabelScope(data.scope, label),
  }, undefined, undefined, { pods });

  const refresh = (first: boolean): void => {
    const r = set.refresh();
    if (first) {
      const fatal = r.missing.map((m) => `--netns ${m.path}: ${m.reason}`);
      const allOnly = choices.every((c) => c === 'all');
      for (const f of r.refused) if (!allOnly || f.code === 'EPERM' || f.code === 'EACCES' || f.reason.includes('--destroy-feed on')) fatal.push(f.reason);
      if (fatal.length > 0) {
        set.close();
        throw new Error(fatal[0]);
      }
    }
    for (const f of r.refused) logOnce(`netns-refused:${f.label}`, 'warn', 'a network namespace is not watched', { netns: f.label, reason: f.reason });
    if (!first) {
      for (const label of r.added) log('info', 'watching a new network namespace', { netns: label });
      for (const label of r.removed) log('info', 'a network namespace went away: its connections are closed', { netns: label });
    }
  };
  refresh(true);

  return {
    set,
    feedsFailed: (): number => feedless.size,
    podOf: podLabelOf(namespaceOf),
    feedCounts: (): { sockets: number; parseErrors: number; overruns: number } => {
      const c = { ...gone };
      for (const { data } of set.entries()) {
        if (data.feed === undefined) continue;
        c.sockets += data.feed.counters.sockets;
        c.parseErrors += data.feed.counters.parseErrors;
        c.overruns += data.feed.nativeStats().overruns;
      }
      return c;
    },
    /** Discovery (but before the first poll: done above), then one dump per namespace. */
    poll: (() => {
      let first = true;
      return (duration: { observe(seconds: number): void }) => {
        if (!first) refresh(false);
        first = false;
        const targets: PollTarget[] = [];
        for (const { ns, data } of set.entries()) {
          const ready = set.ensureDumpSocket(ns);
          if (ready !== true) {
            logOnce(`netns-socket:${ns.label}`, 'warn', 'a network namespace is not dumped; retrying every interval', { netns: ns.label, reason: ready.reason });
            continue; // its connections stay as they were: nothing closes for being absent
          }
          targets.push({
            label: ns.label,
            source: data.source,
            fd: ns.dumpFd,
            families: set.tcpFamilies(ns), // none: no TCP socket there, nothing to dump
            enter: (listening) => table.enterScope(data.scope, listening),
            leave: (complete) => table.leaveScope(complete),
            failed: (_e, sentence) => {
              set.dumpFailed(ns);
              logOnce(`netns-poll:${ns.label}`, 'warn', 'poll of a network namespace failed; retrying every interval', { netns: ns.label, error: sentence });
            },
          });
        }
        return poller.pollScoped(targets, duration);
      };
    })(),
    close: (): void => set.close(),
  };
}

/**
 * Every local port but the agent's own listener (0: none to leave out).
 * Scrapes and the live page are not the service being watched, and a flood
 * on the metrics port should cost the HTTP guard, not the connection table.
 */
function allPortsBut(port: number): PortRange[] {
  if (port === 0) return [];
  return [
    ...(port > 1 ? [{ from: 1, to: port - 1 }] : []),
    ...(port < 65535 ? [{ from: port + 1, to: 65535 }] : []),
  ];
}

export const watchCommand: Command = {
  name: 'watch',
  summary: 'Export chronographs of every TCP connection in this network namespace to Prometheus',
  run: runWatch,
};
