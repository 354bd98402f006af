// `tcp-chronograph proxy`: a TCP relay in front of a server, for servers in
// any language. Every client-facing socket is instrumented (instrument()), so
// each response (HTTP/1.x) or relay write becomes a chunk record: what limited
// its delivery (the client's window, the send buffer, the network) and how
// long it took. Serves /metrics (chunk metrics, proxy self metrics and, with
// --diag on, the sock_diag connection metrics of `watch` for the proxy's
// port), /healthz, /api/chunks and /api/connections.
import { registerProxyMetrics } from '../proxy/metrics.js';
import { TcpProxy, type HostPort, type ProxyChunkRecord, type UpstreamErrorReason } from '../proxy/relay.js';
import { RouteMap, parseRoute, type Route } from '../proxy/routes.js';
import type { Command } from './command.js';
import { diagFlag, durationIn, EVENTS_FLAG, intervalFlag, listenFlag, maxConnectionSeriesFlag, stallAfterFlag } from './common_flags.js';
import { formatHelp, parseChoice, parseFlags, parseIntIn, UsageError, type FlagSpec } from './flags.js';
import { ChunkOutputs } from './chunk_mode.js';
import { serveMode } from './runtime.js';
import { hostPort, listenFailure } from './serve.js';
import { applyRedaction, REDACT_FLAGS, SERVE_FLAGS, serveSecurity } from './common_flags.js';
import { logOnce } from './log.js';
import { version } from './version.js';

const SUMMARY =
  'Relay TCP from --listen to --upstream and explain, per response (HTTP/1.x) or per relay\n' +
  'write, why delivery to each client was slow: its receive window, the send buffer, or the\n' +
  'network. Works for a server in any language; the server sees the proxy as its client\n' +
  '(use --proxy-protocol to pass the client address on).';

/** "host:port" or "[v6]:port" with a host (names allowed). */
function parseUpstream(text: string): HostPort {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]\s]+)):(\d+)$/.exec(text);
  if (m === null) throw new Error('expected host:port, e.g. 127.0.0.1:8080, [::1]:8080 or backend.local:8080');
  const port = Number(m[3]);
  if (port < 1 || port > 65535) throw new Error('port must be from 1 to 65535');
  return { host: (m[1] ?? m[2])!, port };
}

function parseSample(text: string): number {
  const n = Number(text);
  if (!Number.isFinite(n) || !(n > 0) || (n >= 1 && !Number.isInteger(n))) {
    throw new Error('expected a whole number N >= 1 (every Nth chunk) or a probability between 0 and 1');
  }
  return n;
}

/** "65536", "64k", "1m" (binary units), from 4 KiB to 64 MiB. */
function parseBytes(text: string): number {
  const m = /^(\d+)([kKmM]?)$/.exec(text);
  if (m === null) throw new Error('expected a size like 65536, 256k or 1m');
  const n = Number(m[1]) * (m[2] === '' ? 1 : m[2]!.toLowerCase() === 'k' ? 1024 : 1024 * 1024);
  if (n < 4096 || n > 64 * 1024 * 1024) throw new Error('must be from 4k to 64m');
  return n;
}

export const FLAGS = {
  listen: listenFlag('listen', 'Where clients connect (the address the server used to have). Required.'),
  upstream: {
    name: 'upstream',
    arg: 'HOST:PORT',
    help: 'The server the proxy connects to, one connection per client. Required.',
    parse: parseUpstream,
  } satisfies FlagSpec<HostPort>,
  metricsListen: listenFlag('metrics-listen', 'Address of the HTTP server (/metrics, /healthz, /api/chunks, /api/connections).', '127.0.0.1:9465'),
  route: {
    name: 'route',
    arg: 'NAME=PATH_PREFIX',
    multiple: true,
    help: 'Label the chunks of HTTP requests whose path starts with PATH_PREFIX with route="NAME"\n(longest prefix wins). Unmatched requests get no route label: raw paths never become labels.',
    parse: parseRoute,
  } satisfies FlagSpec<Route>,
  proxyProtocol: {
    name: 'proxy-protocol',
    arg: 'off|v1|v2',
    default: 'off',
    help: "Send a PROXY protocol header (HAProxy's, v1 text or v2 binary) to the upstream first, so\nthe server sees the client's address. The server must expect it (nginx: listen ... proxy_protocol).",
    parse: parseChoice(['off', 'v1', 'v2'] as const),
  } satisfies FlagSpec<'off' | 'v1' | 'v2'>,
  http: {
    name: 'http',
    arg: 'auto|off',
    default: 'auto',
    help: "auto: recognise HTTP/1.x responses in the upstream's bytes, one chunk per response (anything\nelse, or garbage, falls back to one chunk per write); off: one chunk per relay write.",
    parse: parseChoice(['auto', 'off'] as const),
  } satisfies FlagSpec<'auto' | 'off'>,
  sample: {
    name: 'sample',
    arg: 'N',
    default: '1',
    help: 'Record every Nth chunk of each connection (or a probability in (0, 1)). Records with kernel\nstatistics cost CPU: for non-HTTP bulk streams (a chunk per 64 KiB write) consider 16.',
    parse: parseSample,
  } satisfies FlagSpec<number>,
  stallAfter: stallAfterFlag('Report a chunk as stalled when its last byte is not acknowledged this long after it was written.'),
  connectTimeout: {
    name: 'connect-timeout',
    arg: 'DURATION',
    default: '5s',
    help: 'Give up connecting to the upstream after this long (the client connection is then reset).',
    parse: durationIn(0.01, 600, 'must be from 10ms to 10m'),
  } satisfies FlagSpec<number>,
  idleTimeout: {
    name: 'idle-timeout',
    arg: 'DURATION',
    default: '0',
    help: 'Reset both sides of a connection that relayed nothing either way for this long; 0: never.',
    parse: durationIn(1, 86_400, 'must be 0 (never) or from 1s to 24h', true),
  } satisfies FlagSpec<number>,
  halfCloseTimeout: {
    name: 'half-close-timeout',
    arg: 'DURATION',
    default: '60s',
    help: "After a client closes its side (FIN), reset both sides if the upstream then relays nothing for\nthis long: a client that gave up on a hung upstream would otherwise hold two sockets until the\nupstream closes. 0: never.",
    parse: durationIn(1, 86_400, 'must be 0 (never) or from 1s to 24h', true),
  } satisfies FlagSpec<number>,
  maxConnections: {
    name: 'max-connections',
    arg: 'N',
    default: '10000',
    help: 'Most client connections at once; more are closed at accept (and counted).',
    parse: parseIntIn(1, 1_000_000),
  } satisfies FlagSpec<number>,
  events: EVENTS_FLAG,
  diag: diagFlag(
    "Also export watch's per-port and per-connection chronograph metrics (sock_diag) for the\nclient connections of --listen's port.",
  ),
  interval: intervalFlag('How often --diag on dumps the client connections.'),
  maxConnectionSeries: maxConnectionSeriesFlag('With --diag on: at most N client connections get per-connection series; 0 turns them off.'),
  bufferSize: {
    name: 'buffer-size',
    arg: 'BYTES',
    default: '256k',
    help: "Bytes read from the upstream at once, into one buffer per connection; reading waits until the\nclient's socket has taken them (memory per connection is about this plus 80 KiB).",
    parse: parseBytes,
  } satisfies FlagSpec<number>,
  instrument: {
    name: 'instrument',
    arg: 'on|off',
    default: 'on',
    help: 'off: relay only, no chunk records (to measure what instrumentation costs).',
    parse: parseChoice(['on', 'off'] as const),
  } satisfies FlagSpec<'on' | 'off'>,
  ...SERVE_FLAGS,
  ...REDACT_FLAGS,
};

async function runProxy(argv: readonly string[]): Promise<number> {
  const { values: o, help } = parseFlags('proxy', FLAGS, argv);
  if (help) {
    process.stdout.write(formatHelp('proxy', SUMMARY, FLAGS));
    return 0;
  }
  const security = serveSecurity(o, 'proxy');
  applyRedaction(o);
  if (o.listen === undefined) throw new UsageError('--listen is required, e.g. --listen :8080 (see `tcp-chronograph proxy --help`)');
  if (o.upstream === undefined) throw new UsageError('--upstream is required, e.g. --upstream 127.0.0.1:8081 (see `tcp-chronograph proxy --help`)');
  const upstream = o.upstream;
  const routeNames = new Map<string, string>();
  for (const r of o.route) {
    const seen = routeNames.get(r.prefix);
    if (seen !== undefined && seen !== r.name) throw new UsageError(`--route: the prefix ${r.prefix} is mapped to both ${seen} and ${r.name}; map it once`);
    routeNames.set(r.prefix, r.name);
  }

  const proxy = new TcpProxy({
    listen: o.listen,
    upstream,
    proxyProtocol: o.proxyProtocol === 'off' ? undefined : o.proxyProtocol,
    routes: new RouteMap(o.route),
    http: o.http,
    instrument: { sample: o.sample, stallAfterMs: o.stallAfter * 1000 },
    connectTimeoutMs: o.connectTimeout * 1000,
    idleTimeoutMs: o.idleTimeout * 1000,
    halfCloseTimeoutMs: o.halfCloseTimeout * 1000,
    maxConnections: o.maxConnections,
    instrumentClients: o.instrument === 'on',
    readBufferBytes: o.bufferSize,
  });

  let listening: HostPort;
  try {
    listening = await proxy.start();
  } catch (e) {
    throw listenFailure('clients', o.listen, '--listen', e);
  }
  let out: ChunkOutputs;
  try {
    out = await ChunkOutputs.open({
      events: o.events,
      // Connection metrics of `watch` for the proxy's clients (sock_diag), where the kernel allows.
      diag: o.diag === 'on' ? { ports: [{ from: listening.port, to: listening.port }], intervalSeconds: o.interval, maxSeries: o.maxConnectionSeries } : undefined,
    });
  } catch (e) {
    await proxy.close(0);
    throw e;
  }
  registerProxyMetrics(
    out.registry,
    proxy,
    { version: version(), upstream: hostPort(upstream), proxyProtocol: o.proxyProtocol, http: o.http },
    { eventsDropped: () => out.events.dropped },
  );

  const onRecord = (c: ProxyChunkRecord): void => out.record(c, { port: c.port, mode: 'proxy', route: c.route }, { mode: 'proxy' });
  proxy.on('chunk', onRecord);
  proxy.on('stall', onRecord);
  proxy.on('upstream-error', (e: NodeJS.ErrnoException, reason: UpstreamErrorReason) => {
    const what =
      reason === 'truncated'
        ? 'the upstream closed in the middle of an HTTP response (or with a request unanswered); the client connection was closed'
        : 'upstream connection failed; the client connection was reset';
    logOnce(`upstream:${reason}:${e.code ?? ''}`, 'warn', `${what} (logged once per reason, counted in tcp_chrono_proxy_upstream_errors_total)`, {
      upstream: hostPort(upstream),
      reason,
      error: e.message,
    });
  });
  proxy.on('uninstrumented', (e: unknown) => {
    logOnce('uninstrumented', 'warn', 'a client connection could not be instrumented and is relayed without chunk records (counted in tcp_chrono_proxy_uninstrumented_connections_total)', {
      error: e instanceof Error ? e.message : String(e),
    });
  });
  proxy.on('error', (e: Error) => logOnce(`accept:${e.message}`, 'warn', 'accepting a client connection failed', { error: e.message }));

  return serveMode({
    command: 'proxy',
    listen: o.metricsListen,
    listenFlag: '--metrics-listen',
    listenField: 'metrics',
    security,
    metrics: out.metrics,
    health: () => ({
      ...out.healthFields(),
      listen: hostPort(listening),
      upstream: hostPort(upstream),
      connections: proxy.counters.open,
      upstreamErrors: proxy.counters.upstreamErrors,
    }),
    routes: (app) => out.routes(app),
    paths: out.paths,
    startMessage: 'proxying',
    startFields: () => ({
      listen: hostPort(listening),
      upstream: hostPort(upstream),
      http: o.http,
      routes: o.route.map((r) => `${r.name}=${r.prefix}`),
      proxyProtocol: o.proxyProtocol,
      sample: o.sample,
      bufferSize: o.bufferSize,
      instrument: o.instrument,
      diag: out.portWatch !== undefined ? 'on' : 'off',
      events: o.events ?? null,
    }),
    degraded: out.degraded,
    abort: async () => {
      await proxy.close(0);
      await out.close();
    },
    // Stop accepting, let open connections finish for a moment, then reset them.
    stop: async () => {
      await proxy.close(3000);
      await out.close();
      return { connections: proxy.counters.accepted, bytesToClient: proxy.counters.bytesToClient };
    },
  });
}

export const proxyCommand: Command = {
  name: 'proxy',
  summary: 'Relay TCP to a server in any language and export per-response (per-chunk) delivery records',
  run: runProxy,
};
