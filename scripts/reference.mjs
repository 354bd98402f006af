// Generates docs/reference.md from the code itself (issue #13): the commands
// and their flag specs (agent/cli/*.ts FLAGS, flags.ts withCommon/envName),
// the metrics of every mode read from real prom-client registries built the
// way the modes build them (nothing is started: no socket, no BPF), and the
// HTTP paths each mode serves. Imports the built agent (dist/): run through
// `npm run reference`, which builds first. test/docs/reference.test.ts
// regenerates it in memory and fails when the checked-in file differs.
//
// What the code does not say in a machine-readable way is kept here, small,
// and checked by the test: the one-line meaning of each HTTP path
// (ENDPOINTS), the paths a mode lists literally in its ModeSpec
// (OWN_PATHS), and the conditions under which a mode's optional metrics
// appear (HTTP_MODES). "since" versions: scripts/reference-since.json.
import { readFileSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const ROOT = new URL('../', import.meta.url);
const OUT = new URL('docs/reference.md', ROOT);
const agent = (path) => import(new URL(`dist/agent/${path}`, ROOT).href);

// ---- what has no machine-readable source ----

/** What each HTTP path is; every path a mode serves needs an entry (the test and the generator check). */
export const ENDPOINTS = {
  '/metrics': 'Prometheus text exposition of the mode\'s metrics (see [Metrics](#metrics)); concurrent scrapes share one render.',
  '/healthz': 'JSON health of the mode: 200 when healthy, 503 when not; the one route that needs no token with `--auth-token-file`.',
  '/api/connections': 'JSON: the open connections with their figures, ranked by `?sort=` (SORTS), at most `?limit=`.',
  '/api/overview': 'JSON data of the live page: worst connections and per-port time shares over recent polls.',
  '/': 'The live page (HTML, with its /app.js and /style.css).',
  '/api/chunks': 'Recent chunk records as JSON lines (`?limit=`); `?follow=1` keeps streaming new ones (as `--events` writes them).',
  '/api/sockets': "JSON: the target's connections attach has timestamping on for (fd, inode, port, peer, records, pending chunks).",
};

/** Served by serveMode (agent/cli/runtime.ts) for every mode, before the mode's own paths. */
export const RUNTIME_PATHS = ['/metrics', '/healthz'];

/**
 * The paths a mode writes literally in the `paths` of its ModeSpec (the rest
 * comes from ChunkOutputs.paths). The test compares these with the sources
 * and, for watch, with the running agent's 404 answer.
 */
export const OWN_PATHS = { watch: ['/api/connections', '/api/overview', '/'], trace: [], proxy: [], attach: ['/api/sockets'] };

/**
 * The commands that serve HTTP (serveMode), how their registry is made, and
 * the flag that adds optional metrics and paths ("variant"). Commands
 * without HTTP are listed in NO_HTTP; a command in neither stops the generator.
 */
export const HTTP_MODES = {
  watch: { kind: 'watch', variant: '--netns' },
  trace: { kind: 'chunk', variant: 'diag' },
  proxy: { kind: 'chunk', variant: 'diag' },
  attach: { kind: 'chunk', variant: 'diag' },
};
/** What a variant means, for the page. */
export const VARIANTS = {
  '--netns': 'only with `watch --netns` (`pod_uid`, `container_id`: only with `--netns-labels` too)',
  diag: "only with the mode's connection view (sock_diag): `--diag on`, the default (trace: with `--port` too)",
};
export const NO_HTTP = ['top', 'diagnose'];

// ---- helpers ----

/** A table cell: one line, pipes escaped. */
const cell = (s) => String(s).replace(/\s*\n\s*/g, ' ').replace(/\|/g, '\\|');
/** Text outside a table: one line. */
const oneLine = (s) => String(s).replace(/\s*\n\s*/g, ' ');
const code = (s) => (s === undefined || s === '' ? '' : `\`${cell(s)}\``);
const row = (cells) => `| ${cells.join(' | ')} |`;
const table = (head, rows) => [row(head), row(head.map(() => '---')), ...rows.map(row)].join('\n');

export function since() {
  return JSON.parse(readFileSync(new URL('scripts/reference-since.json', ROOT), 'utf8'));
}

/** "watch; trace, proxy, attach (diag)": modes without a condition, then those with one, grouped. */
function modeText(uses) {
  const plain = uses.filter((u) => u.variant === undefined).map((u) => u.mode);
  const byVariant = new Map();
  for (const u of uses) if (u.variant !== undefined) byVariant.set(u.variant, [...(byVariant.get(u.variant) ?? []), u.mode]);
  return [plain.join(', '), ...[...byVariant].map(([v, ms]) => `${ms.join(', ')} (${v})`)].filter((t) => t !== '').join('; ');
}

// ---- commands and flags ----

/** Every command with its flags (those every command of its kind takes included), in the CLI's order. */
export async function commandFlags() {
  const { commands } = await agent('cli/commands.js');
  const { envName, withCommon } = await agent('cli/flags.js');
  const out = [];
  for (const cmd of commands) {
    const mod = await agent(`cli/${cmd.name}.js`);
    if (mod.FLAGS === undefined) throw new Error(`agent/cli/${cmd.name}.ts exports no FLAGS: export its flag table (the reference reads it)`);
    const flags = Object.values(withCommon(cmd.name, mod.FLAGS)).map((s) => ({
      name: s.name,
      short: s.short,
      arg: s.arg,
      default: s.default,
      multiple: s.multiple === true,
      env: envName(cmd.name, s.name),
      help: s.help,
    }));
    out.push({ name: cmd.name, summary: cmd.summary, flags });
  }
  return out;
}

// ---- metrics ----

/** A connection for the synthetic tables: every family then has a series, so its labels show. */
function syntheticSocket() {
  return {
    family: 4,
    state: 1,
    timer: 0,
    retrans: 0,
    localAddress: '10.0.0.1',
    localPort: 8080,
    remoteAddress: '10.0.0.2',
    remotePort: 40000,
    ifindex: 0,
    cookie: 1n,
    key: 1,
    rqueue: 0,
    wqueue: 0,
    uid: 0,
    inode: 1,
    chrono: {
      state: 1,
      busyTime: 1,
      rwndLimited: 0.5,
      sndbufLimited: 0.25,
      bytesAcked: 1000,
      bytesReceived: 10,
      bytesSent: 1000,
      bytesRetrans: 0,
      deliveryRate: 1e6,
      rtt: 0.001,
      sndCwnd: 10,
      sndMss: 1448,
      unacked: 0,
      totalRetrans: 0,
      notsentBytes: 0,
      appLimited: false,
      sndWnd: 65535,
    },
  };
}

/** A connection table holding one connection; `scoped`: in a network namespace (watch --netns). */
async function syntheticTable({ scoped, portsChosen }) {
  const { ConnectionTable } = await agent('model/connections.js');
  const table = new ConnectionTable({ closeGraceMs: 0, portsChosen });
  const now = Date.now();
  if (scoped) {
    const scope = table.addScope('ns');
    table.beginPoll(now, new Set());
    table.enterScope(scope, new Set([8080]));
    table.track(syntheticSocket());
    table.leaveScope(true);
    table.endPoll(true);
  } else {
    table.applyPoll([syntheticSocket()], now, new Set([8080]));
  }
  return table;
}

/**
 * The metric families of a registry: name, type, help and labels from the
 * prom-client objects; families it does not hold (the per-connection ones
 * WatchMetrics writes itself) and labels of metrics without labelNames
 * (its per-port snapshots) from the rendered text, when given.
 */
async function families(registry, text) {
  const fams = new Map();
  if (text !== undefined) {
    const unescape = (s) => s.replace(/\\(n|\\)/g, (_m, c) => (c === 'n' ? '\n' : '\\'));
    for (const line of text.split('\n')) {
      let m = /^# HELP (\S+) (.*)$/.exec(line);
      if (m !== null) {
        fams.set(m[1], { name: m[1], type: '', help: unescape(m[2]), labels: [] });
        continue;
      }
      m = /^# TYPE (\S+) (\S+)$/.exec(line);
      if (m !== null) {
        fams.get(m[1]).type = m[2];
        continue;
      }
      m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)\{(.*)\} /.exec(line);
      if (m === null) continue;
      const f = fams.get(m[1]) ?? fams.get(m[1].replace(/_(bucket|sum|count)$/, ''));
      if (f === undefined) throw new Error(`a series of ${m[1]} without its # HELP line`);
      for (const [, l] of m[2].matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="(?:[^"\\]|\\.)*"/g)) if (l !== 'le' && !f.labels.includes(l)) f.labels.push(l);
    }
  }
  for (const m of registry.getMetricsAsArray()) {
    const prev = fams.get(m.name);
    fams.set(m.name, {
      name: m.name,
      type: m.type,
      help: m.help,
      labels: Array.isArray(m.labelNames) ? [...m.labelNames] : (prev?.labels ?? []),
    });
  }
  return fams;
}

/** watch's metrics (agent/cli/watch.ts: WatchMetrics, polls missed always counted, namespaces with --netns) and the guard's. */
async function watchFamilies({ netns }) {
  const { WatchMetrics } = await agent('export/metrics.js');
  const { registerGuardMetrics } = await agent('export/http_guard.js');
  const snapshot = () => ({
    polls: 0,
    pollErrors: 0,
    parseErrors: { dump: 0, destroy: 0 },
    dumpInterrupted: 0,
    socketsSeen: 0,
    destroyFeedUp: false,
    destroyedSockets: 0,
    destroyFeedLost: 0,
    ownerScans: 0,
    pollsMissed: 0,
    ...(netns && { namespaces: 1 }),
  });
  const table = await syntheticTable({ scoped: netns, portsChosen: false });
  const metrics = new WatchMetrics(table, undefined, snapshot, {
    maxConnections: 10,
    info: { version: '', kernel: '', destroyFeed: 'off' },
    ...(netns && { netnsLabels: { podOf: () => '', containers: true } }),
  });
  registerGuardMetrics(metrics.registry);
  return families(metrics.registry, await metrics.render());
}

/** The connection view of a chunk mode with --diag on (agent/cli/port_watch.ts portWatchMetrics). */
async function portWatchFamilies() {
  const { portWatchMetrics } = await agent('cli/port_watch.js');
  const { newPollStats } = await agent('sources/diag_poller.js');
  const metrics = portWatchMetrics(await syntheticTable({ scoped: false, portsChosen: true }), newPollStats(), 10);
  return families(metrics.registry, await metrics.render());
}

/** A chunk mode's registry: ChunkOutputs' (chunk metrics), the mode's own metrics, the guard's. */
async function chunkModeFamilies(mode) {
  const { ChunkOutputs } = await agent('cli/chunk_mode.js');
  const { registerGuardMetrics } = await agent('export/http_guard.js');
  const out = await ChunkOutputs.open({});
  const registry = out.registry;
  const eventsDropped = () => 0;
  if (mode === 'trace') {
    const { registerTraceMetrics } = await agent('cli/trace.js');
    registerTraceMetrics(registry, { connections: () => 0, counters: () => ({}), chunker: () => ({}), callbackErrors: () => 0, eventsDropped }, { version: '', cgroup: '', chunks: '', sample: '' });
  } else if (mode === 'proxy') {
    const { registerProxyMetrics } = await agent('proxy/metrics.js');
    registerProxyMetrics(registry, { counters: {} }, { version: '', upstream: '', proxyProtocol: '', http: '' }, { eventsDropped });
  } else if (mode === 'attach') {
    const { registerAttachMetrics } = await agent('attach/metrics.js');
    registerAttachMetrics(registry, { counters: {} }, { version: '', pid: 0, comm: '', records: '' }, { eventsDropped });
  } else {
    throw new Error(`no metrics known for chunk mode ${mode}: add it to scripts/reference.mjs`);
  }
  registerGuardMetrics(registry);
  await out.close();
  return families(registry);
}

/** ChunkOutputs.paths without and with the connection view (a getter of the real class, on a stand-in). */
async function chunkPaths(withView) {
  const { ChunkOutputs } = await agent('cli/chunk_mode.js');
  const get = Object.getOwnPropertyDescriptor(ChunkOutputs.prototype, 'paths').get;
  return get.call({ portWatch: withView ? {} : undefined });
}

/** Every command: its HTTP paths and metric families, always and with its variant flag. */
export async function modes() {
  const cmds = await commandFlags();
  const out = [];
  for (const { name } of cmds) {
    if (NO_HTTP.includes(name)) continue;
    const m = HTTP_MODES[name];
    if (m === undefined) throw new Error(`command ${name} is in neither HTTP_MODES nor NO_HTTP of scripts/reference.mjs: say whether it serves HTTP and how its metrics are made`);
    let base, extra, paths, extraPaths;
    if (m.kind === 'watch') {
      base = await watchFamilies({ netns: false });
      extra = await watchFamilies({ netns: true });
      paths = [...RUNTIME_PATHS, ...OWN_PATHS[name]];
      extraPaths = paths;
    } else {
      base = await chunkModeFamilies(name);
      extra = new Map([...base, ...(await portWatchFamilies())]);
      paths = [...RUNTIME_PATHS, ...OWN_PATHS[name], ...(await chunkPaths(false))];
      extraPaths = [...RUNTIME_PATHS, ...OWN_PATHS[name], ...(await chunkPaths(true))];
    }
    out.push({ name, variant: m.variant, base, extra, paths, extraPaths });
  }
  return out;
}

/** Every metric: name, type, help, labels (those only with a mode's variant flagged), modes, since. */
export async function metricList() {
  const s = since();
  const all = new Map();
  for (const mode of await modes()) {
    for (const [name, f] of new Map([...mode.base, ...mode.extra])) {
      const b = mode.base.get(name);
      const e = all.get(name) ?? { name, type: f.type, help: f.help, labels: new Map(), modes: [] };
      if (e.type !== f.type || e.help !== f.help) throw new Error(`metric ${name} has a different type or help in ${mode.name}`);
      for (const l of f.labels) {
        const conditional = b === undefined || !b.labels.includes(l);
        const seen = e.labels.get(l);
        e.labels.set(l, seen === undefined ? (conditional ? mode.variant : null) : seen === null || !conditional ? null : seen);
      }
      e.modes.push(b !== undefined ? { mode: mode.name } : { mode: mode.name, variant: mode.variant });
      all.set(name, e);
    }
  }
  for (const name of Object.keys(s.metrics)) if (!all.has(name)) throw new Error(`scripts/reference-since.json names ${name}, which no mode exposes: remove it`);
  return [...all.values()]
    .sort((a, b) => (a.name < b.name ? -1 : 1))
    .map((e) => ({
      name: e.name,
      type: e.type,
      help: e.help,
      labels: [...e.labels].map(([l, cond]) => (cond === null ? l : `${l} (${cond})`)),
      modes: e.modes,
      since: s.metrics[e.name] ?? s.default,
    }));
}

/** Every HTTP path: the modes that serve it (with the flag where only then). */
export async function endpointList() {
  const { SORTS } = await agent('export/http.js');
  const all = new Map();
  for (const mode of await modes()) {
    for (const p of mode.extraPaths) {
      if (!Object.hasOwn(ENDPOINTS, p)) throw new Error(`${mode.name} serves ${p}, which has no meaning in ENDPOINTS of scripts/reference.mjs: add one line`);
      const e = all.get(p) ?? { path: p, modes: [] };
      e.modes.push(mode.paths.includes(p) ? { mode: mode.name } : { mode: mode.name, variant: mode.variant });
      all.set(p, e);
    }
  }
  return [...all.values()].map((e) => ({ ...e, meaning: ENDPOINTS[e.path].replace('SORTS', Object.keys(SORTS).join(', ')) }));
}

// ---- the page ----

export async function generateReference() {
  const cmds = await commandFlags();
  const metrics = await metricList();
  const endpoints = await endpointList();
  const L = [];
  L.push('# tcp-chronograph reference', '');
  L.push('Generated from the code by `scripts/reference.mjs`: do not edit; run `npm run reference`.', '');
  L.push('## Contents', '');
  L.push('- [Commands and flags](#commands-and-flags)');
  for (const c of cmds) L.push(`  - [${c.name}](#${c.name})`);
  L.push('- [Metrics](#metrics)', '- [HTTP endpoints](#http-endpoints)', '- [Environment variables](#environment-variables)', '');

  L.push('## Commands and flags', '');
  L.push('`tcp-chronograph [COMMAND] [flags]`; without a command, `watch`. A flag takes its value from the command line, else its environment variable, else its default. Every command also takes `-h, --help`.', '');
  for (const c of cmds) {
    L.push(`### ${c.name}`, '', oneLine(c.summary), '');
    L.push(
      table(
        ['Flag', 'Argument', 'Default', 'Environment variable', 'Description'],
        c.flags.map((f) => [
          code(`${f.short !== undefined ? `-${f.short}, ` : ''}--${f.name}`),
          f.arg === undefined ? '(switch)' : `${code(f.arg)}${f.multiple ? ' (repeatable or comma-separated)' : ''}`,
          code(f.default),
          code(f.env),
          cell(f.help),
        ]),
      ),
      '',
    );
  }

  L.push('## Metrics', '');
  L.push(
    'Every metric each mode can expose (`top` and `diagnose` export none). Per-connection series are capped (`--max-connections`, `--max-connection-series`). A mode or label with a mark appears only then:',
    '',
  );
  for (const [v, text] of Object.entries(VARIANTS)) L.push(`- (${v}): ${text}.`);
  L.push('');
  L.push(
    table(
      ['Name', 'Type', 'Labels', 'Modes', 'Since', 'Help'],
      metrics.map((m) => [code(m.name), m.type, m.labels.map(code).join(', '), cell(modeText(m.modes)), m.since, cell(m.help)]),
    ),
    '',
  );

  L.push('## HTTP endpoints', '');
  const servers = [];
  for (const c of cmds) {
    if (!Object.hasOwn(HTTP_MODES, c.name)) continue;
    const f = c.flags.find((x) => x.help.startsWith('Address of the HTTP server'));
    if (f === undefined) throw new Error(`${c.name} has no flag whose help begins "Address of the HTTP server"`);
    servers.push(`\`${c.name} --${f.name}\``);
  }
  L.push(`Served at the address of ${servers.join(', ')}. With \`--auth-token-file\`, every path but /healthz needs the token. Marks as in [Metrics](#metrics).`, '');
  L.push(table(['Path', 'Modes', 'Meaning'], endpoints.map((e) => [code(e.path), cell(modeText(e.modes)), cell(e.meaning)])), '');

  L.push('## Environment variables', '');
  L.push('One per flag of each command, used when the flag is not given (an empty value counts as not set); defaults are in [Commands and flags](#commands-and-flags).', '');
  const vars = new Map();
  for (const c of cmds) {
    for (const f of c.flags) {
      const v = vars.get(f.env) ?? { env: f.env, flag: f.name, uses: [] };
      v.uses.push(`[${c.name}](#${c.name})`);
      vars.set(f.env, v);
    }
  }
  L.push(
    table(
      ['Variable', 'Flag', 'Commands'],
      [...vars.values()].sort((a, b) => (a.env < b.env ? -1 : 1)).map((v) => [code(v.env), code(`--${v.flag}`), v.uses.join(', ')]),
    ),
  );
  return L.join('\n') + '\n';
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  writeFileSync(OUT, await generateReference());
  process.stdout.write(`wrote ${fileURLToPath(OUT)}\n`);
}
