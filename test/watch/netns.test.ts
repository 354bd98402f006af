// watch --netns, real kernel: twenty namespaces made here (ip netns add, only
// loopback), each with a python server and its client on the same port
// number, watched by one agent in the host namespace. And, on synthetic
// sockets, the table's namespaces: keys apart, aggregates per (netns, port).
import { execFile, execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLI, ensureBuilt, runCli } from '../helpers/cli.js';
import { eventually, stopChild, waitForLine } from '../../lab/lab.js';
import type { InetDiagSocket, TcpChrono } from '../../agent/parse/inet_diag.js';
import { syntheticSocket } from '../helpers/synthetic.js';
import { ConnectionTable, connectionJson } from '../../agent/model/connections.js';
import { AF_INET } from '../../agent/parse/inet_diag.js';
import { NetnsSet } from '../../agent/sources/netns.js';
import { WatchMetrics, type SelfSnapshot } from '../../agent/export/metrics.js';

const run = promisify(execFile);
const PEERS = fileURLToPath(new URL('./peers.py', import.meta.url));

const N = 20;
const PORT = 5001; // every namespace's service, the same number
const SHORT_PORT = 5003; // connections shorter than a poll, in one namespace
const SLOW = 7; // the namespace whose client is a slow reader
const DOOMED = 3; // the namespace deleted during the test
const SHORT = 11; // the namespace of the short connections

/** Value of the first sample of `name` whose labels include all of `labels`. */
function sample(text: string, name: string, labels: Record<string, string> = {}): number | undefined {
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${name}{`) && !line.startsWith(`${name} `)) continue;
    if (Object.entries(labels).every(([k, v]) => line.includes(`${k}="${v}"`))) return Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return undefined;
}

/** Sum of every sample of `name` whose labels include all of `labels`. */
function sum(text: string, name: string, labels: Record<string, string>): number {
  let total = 0;
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${name}{`)) continue;
    if (Object.entries(labels).every(([k, v]) => line.includes(`${k}="${v}"`))) total += Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return total;
}

interface Row {
  id: string;
  netns?: string;
  port: string;
  local: string;
  remote: string;
  state: string;
  busySeconds: number;
  rwndLimitedSeconds: number;
  rwndShare: number;
}

// ---- namespaces made by this file, deleted in afterAll (and on exit, as a last resort) ----

const made = new Set<string>();
const children = new Set<ChildProcess>();

function sweepStale(): void {
  let names: string[] = [];
  try {
    names = execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' }).split('\n').map((l) => l.split(' ')[0] ?? '');
  } catch {
    return;
  }
  for (const name of names) {
    const m = /^tcn-(\d+)-/.exec(name);
    if (m === null || Number(m[1]) === process.pid) continue;
    try {
      process.kill(Number(m[1]), 0);
      continue; // its run is still going
    } catch {
      // gone: its namespaces are left over
    }
    try {
      execFileSync('ip', ['netns', 'del', name], { stdio: 'ignore' });
    } catch {
      // raced
    }
  }
}

function cleanupSync(): void {
  for (const c of children) c.kill('SIGKILL');
  for (const ns of made) {
    try {
      execFileSync('ip', ['netns', 'del', ns], { stdio: 'ignore' });
    } catch {
      // already gone
    }
  }
  made.clear();
}

async function addNamespace(name: string): Promise<void> {
  made.add(name);
  await run('ip', ['netns', 'add', name]);
  await run('ip', ['-n', name, 'link', 'set', 'dev', 'lo', 'up']);
}

async function deleteNamespace(name: string): Promise<void> {
  await run('ip', ['netns', 'del', name]).catch(() => undefined);
  made.delete(name);
}

function spawnIn(ns: string | undefined, cmd: string[]): ChildProcess {
  const child = ns === undefined ? spawn(cmd[0]!, cmd.slice(1), { stdio: ['ignore', 'pipe', 'pipe'] }) : spawn('ip', ['netns', 'exec', ns, ...cmd], { stdio: ['ignore', 'pipe', 'pipe'] });
  children.add(child);
  child.once('exit', () => children.delete(child));
  return child;
}

interface Pair {
  ns: string;
  server: ChildProcess;
  client: ChildProcess;
  /** The client's local address: the server-side connection's remote. */
  clientAddr: string;
}

/** A server on PORT in ns (a slow-reader pair streams; the others are paced, app-limited) and its client. */
async function startPair(ns: string, slow: boolean): Promise<Pair> {
  const server = spawnIn(
    ns,
    slow
      ? ['python3', PEERS, 'server', '--port', String(PORT), '--lifetime', '150']
      : ['python3', PEERS, 'paced-server', '--port', String(PORT), '--bytes', '20000', '--every', '0.1', '--lifetime', '150'],
  );
  // Twenty pairs start at once, each python under `ip netns exec`: on a loaded 2-core machine that is seconds.
  await waitForLine(server, /^listening/, 45_000);
  const client = spawnIn(ns, ['python3', PEERS, 'client', '--host', '127.0.0.1', '--port', String(PORT), '--seconds', '140', ...(slow ? ['--rcvbuf', '4096', '--rate', '20000'] : [])]);
  const clientAddr = (await waitForLine(client, /^connected/, 45_000)).split(' ')[1]!;
  return { ns, server, client, clientAddr };
}

interface Agent {
  child: ChildProcess;
  address: string;
  log: () => string;
  start: Record<string, unknown>;
}

async function startAgent(args: string[]): Promise<Agent> {
  const child = spawnIn(undefined, ['node', CLI, 'watch', '--listen', '127.0.0.1:0', '--owners', 'off', ...args]);
  let out = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  let err = '';
  child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  const line = await waitForLine(child, /"msg":"watching"/, 20_000).catch((e: unknown) => {
    throw new Error(`${String(e)}; stderr: ${err}`);
  });
  const start = JSON.parse(line) as Record<string, unknown>;
  return { child, address: String(start.listen).replace(/^http:\/\//, ''), log: () => out, start };
}

async function get(agent: Agent, path: string): Promise<string> {
  const r = await fetch(`http://${agent.address}${path}`);
  expect(r.status).toBe(200);
  return r.text();
}

const rowsOf = async (agent: Agent): Promise<Row[]> => (JSON.parse(await get(agent, '/api/connections?limit=100000')) as { connections: Row[] }).connections;

describe('watch --netns all: twenty namespaces, one service port number', () => {
  const id = randomBytes(2).toString('hex');
  const names = Array.from({ length: N }, (_, i) => `tcn-${process.pid}-${id}-${i}`);
  const late = `tcn-${process.pid}-${id}-late`;
  const pairs: Pair[] = [];
  let agent: Agent;

  beforeAll(async () => {
    ensureBuilt();
    sweepStale();
    process.once('exit', cleanupSync);
    await Promise.all(names.map(addNamespace));
    pairs.push(...(await Promise.all(names.map((ns, i) => startPair(ns, i === SLOW)))));
    const short = spawnIn(names[SHORT], ['python3', PEERS, 'server', '--port', String(SHORT_PORT), '--bytes', '200000', '--lifetime', '150']);
    await waitForLine(short, /^listening/);
    agent = await startAgent(['--netns', 'all', '--interval', '1s', '--max-connections', '5000']);
  }, 90_000);

  afterAll(async () => {
    process.off('exit', cleanupSync);
    await Promise.all([...children].map((c) => stopChild(c, 3000)));
    await Promise.all([...made].map(deleteNamespace));
  }, 60_000);

  it('starts watching every namespace, and keeps CAP_SYS_ADMIN', async () => {
    expect(agent.start).toMatchObject({ watchNetns: ['all'], destroyFeed: 'on', degraded: [] });
    expect(agent.start.namespaces).toBeGreaterThanOrEqual(N + 1); // and the host's own
    const line = await eventually(async () => agent.log().split('\n').find((l) => l.includes('"msg":"capabilities dropped"')), 5000);
    const dropped = JSON.parse(line) as { kept: string[] };
    expect(dropped.kept).toContain('sys_admin');
  });

  it('reports every connection under its own netns label: the same 4-tuple in twenty namespaces is twenty connections', async () => {
    const rows = await eventually(async () => {
      const r = await rowsOf(agent);
      return names.every((ns) => r.some((c) => c.netns === ns && c.local === `127.0.0.1:${PORT}`)) ? r : undefined;
    }, 10_000);
    for (const p of pairs) {
      const server = rows.filter((c) => c.netns === p.ns && c.local === `127.0.0.1:${PORT}`);
      expect(server, p.ns).toHaveLength(1);
      expect(server[0]).toMatchObject({ port: String(PORT), remote: p.clientAddr, state: 'established' });
      const client = rows.filter((c) => c.netns === p.ns && c.remote === `127.0.0.1:${PORT}`);
      expect(client, p.ns).toHaveLength(1);
      expect(client[0]!.port).toBe('ephemeral'); // no listener on its port in its namespace
    }
    const text = await get(agent, '/metrics');
    for (const ns of names) expect(sample(text, 'tcp_chrono_connections', { netns: ns, port: String(PORT) }), ns).toBe(1);
    // Per-connection series carry it too, and the aggregates have no netns-less twin.
    expect(sample(text, 'tcp_chrono_connection_busy_seconds_total', { netns: names[0]!, port: String(PORT), remote: pairs[0]!.clientAddr })).toBeGreaterThanOrEqual(0);
    expect(text.split('\n').filter((l) => l.startsWith('tcp_chrono_connections{') && !l.includes('netns='))).toEqual([]);
    expect(sample(text, 'tcp_chrono_agent_namespaces')).toBeGreaterThanOrEqual(N + 1);
  });

  it('the slow reader is rwnd-limited in its namespace only', async () => {
    const slowNs = names[SLOW]!;
    const rows = await eventually(async () => {
      const r = await rowsOf(agent);
      const slow = r.find((c) => c.netns === slowNs && c.local === `127.0.0.1:${PORT}`);
      return slow !== undefined && slow.rwndLimitedSeconds >= 2 ? r : undefined;
    }, 20_000);
    const slow = rows.find((c) => c.netns === slowNs && c.local === `127.0.0.1:${PORT}`)!;
    expect(slow.rwndShare).toBeGreaterThan(0.6);
    for (const ns of names) {
      if (ns === slowNs) continue;
      const c = rows.find((r) => r.netns === ns && r.local === `127.0.0.1:${PORT}`);
      if (ns === names[DOOMED] && c === undefined) continue; // (deleted by a test that ran first)
      expect(c!.rwndLimitedSeconds, ns).toBeLessThan(0.05);
    }
    const text = await get(agent, '/metrics');
    const labels = { netns: slowNs, port: String(PORT), remote: pairs[SLOW]!.clientAddr };
    expect(sample(text, 'tcp_chrono_connection_rwnd_limited_seconds_total', labels)).toBeGreaterThanOrEqual(2);
    expect(sample(text, 'tcp_chrono_connection_peer_rwnd_bytes', labels)).toBeLessThan(64 * 1024);
    expect(sample(text, 'tcp_chrono_rwnd_limited_seconds_total', { netns: slowNs, port: String(PORT) })).toBeGreaterThanOrEqual(2);
    for (const ns of names) {
      if (ns !== slowNs) expect(sample(text, 'tcp_chrono_rwnd_limited_seconds_total', { netns: ns, port: String(PORT) }) ?? 0, ns).toBeLessThan(0.05);
    }
  });

  it('a namespace created after the start is watched within one interval', async () => {
    await addNamespace(late);
    const pair = await startPair(late, false);
    const t0 = Date.now();
    const row = await eventually(async () => (await rowsOf(agent)).find((c) => c.netns === late && c.local === `127.0.0.1:${PORT}`), 10_000, 100);
    const took = Date.now() - t0;
    expect(row.remote).toBe(pair.clientAddr);
    expect(took).toBeLessThan(1000 + 1500); // one interval, and slack for a loaded machine
    expect(agent.log()).toMatch(new RegExp(`"msg":"watching a new network namespace","netns":"${late}"`));
  });

  it("a deleted namespace's connections end closed: its closed count is what was opened there, and its series end", async () => {
    const ns = names[DOOMED]!;
    const pair = pairs[DOOMED]!;
    const opened = new Set((await rowsOf(agent)).filter((c) => c.netns === ns).map((c) => c.id));
    expect(opened.size).toBe(2); // the server's side and the client's
    await Promise.all([stopChild(pair.client), stopChild(pair.server)]);
    await deleteNamespace(ns);
    const text = await eventually(async () => {
      const t = await get(agent, '/metrics');
      return sum(t, 'tcp_chrono_connections_closed_total', { netns: ns }) === opened.size ? t : undefined;
    }, 10_000);
    expect(sum(text, 'tcp_chrono_connections', { netns: ns })).toBe(0);
    expect((await rowsOf(agent)).filter((c) => c.netns === ns)).toEqual([]);
    await eventually(async () => (agent.log().includes(`"msg":"a network namespace went away: its connections are closed","netns":"${ns}"`) ? true : undefined), 5000);
    // A closed connection's series are in one more scrape; then they are gone.
    await get(agent, '/metrics');
    const after = await get(agent, '/metrics');
    expect(after.split('\n').filter((l) => l.startsWith('tcp_chrono_connection_') && l.includes(`netns="${ns}"`))).toEqual([]);
    // The aggregates stay (for a while) with their final figures.
    expect(sum(after, 'tcp_chrono_connections_closed_total', { netns: ns })).toBe(opened.size);
  });

  it("short connections are counted through their namespace's destroy feed (--interval 1h: one poll only)", async () => {
    const long = await startAgent(['--netns', 'all', '--interval', '1h']);
    const ns = names[SHORT]!;
    const { stdout } = await run('ip', ['netns', 'exec', ns, 'python3', PEERS, 'short', '--host', '127.0.0.1', '--port', String(SHORT_PORT), '--count', '5']);
    expect(stdout).toContain('done 5 1000000');
    const text = await eventually(async () => {
      const t = await get(long, '/metrics');
      return sample(t, 'tcp_chrono_connections_closed_total', { netns: ns, port: String(SHORT_PORT) }) === 5 ? t : undefined;
    }, 10_000);
    expect(sample(text, 'tcp_chrono_bytes_acked_total', { netns: ns, port: String(SHORT_PORT) })).toBeGreaterThanOrEqual(1_000_000);
    expect(sample(text, 'tcp_chrono_connections', { netns: ns, port: String(SHORT_PORT) })).toBe(0);
    // In that namespace only.
    expect(text.split('\n').filter((l) => l.startsWith('tcp_chrono_connections_closed_total{') && l.includes(`port="${SHORT_PORT}"`) && !l.includes(`netns="${ns}"`))).toEqual([]);
    expect(sample(text, 'tcp_chrono_agent_polls_total')).toBe(1);
    expect(sample(text, 'tcp_chrono_agent_destroy_feed_up')).toBe(1);
    expect(await stopChild(long.child, 6000)).toBe(0);
  });

  it('--netns PATH watches that namespace only; its name is the label', async () => {
    const one = await startAgent(['--netns', `/run/netns/${names[0]}`, '--interval', '1s']);
    expect(one.start.namespaces).toBe(1);
    const rows = await eventually(async () => {
      const r = await rowsOf(one);
      return r.length >= 2 ? r : undefined;
    }, 5000);
    expect(new Set(rows.map((c) => c.netns))).toEqual(new Set([names[0]]));
    expect(await stopChild(one.child, 6000)).toBe(0);
  });

  it('says what is wrong: a path that is no namespace, and setns refused without CAP_SYS_ADMIN', () => {
    const none = runCli(['watch', '--listen', '127.0.0.1:0', '--netns', '/run/netns/tcn-no-such-namespace']);
    expect(none.code).toBe(1);
    expect(none.stderr.trim()).toBe('tcp-chronograph: --netns /run/netns/tcn-no-such-namespace: no such file');
    const refused = runCli(['watch', '--listen', '127.0.0.1:0', '--netns', `/run/netns/${names[0]}`], {
      prefix: ['setpriv', '--inh-caps=-all', '--bounding-set=-sys_admin', '--'],
    });
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(/cannot enter network namespace .*: setns needs CAP_SYS_ADMIN/);
    const usage = runCli(['watch', '--netns', 'some']);
    expect(usage.code).toBe(2);
    expect(usage.stderr).toMatch(/--netns "some": expected all, \/run\/netns\/NAME or \/proc\/PID\/ns\/net/);
  });

  it('a namespace without TCP sockets is not dumped (its sockstat says so); one with sockets is, for its families only', async () => {
    const empty = `tcn-${process.pid}-${id}-empty`;
    await addNamespace(empty);
    const set = new NetnsSet([`/run/netns/${empty}`, `/run/netns/${names[0]}`], { added: () => undefined, removed: () => undefined, relabel: () => false });
    try {
      const r = set.refresh();
      expect(r.added.sort()).toEqual([empty, names[0]].sort());
      const families = new Map([...set.entries()].map(({ ns }) => [ns.label, set.tcpFamilies(ns)]));
      expect(families.get(empty)).toEqual([]);
      expect(families.get(names[0]!)).toEqual([AF_INET]); // python's IPv4 sockets only
    } finally {
      set.close();
    }
  });

  it('stops cleanly on SIGTERM, having polled every namespace every interval', async () => {
    const text = await get(agent, '/metrics');
    const polls = sample(text, 'tcp_chrono_agent_poll_duration_seconds_count')!;
    const mean = sample(text, 'tcp_chrono_agent_poll_duration_seconds_sum')! / polls;
    console.log(`netns: ${sample(text, 'tcp_chrono_agent_namespaces')} namespaces, ${polls} polls, mean poll ${(mean * 1000).toFixed(2)} ms`);
    expect(mean).toBeLessThan(0.25);
    expect(sample(text, 'tcp_chrono_agent_poll_errors_total')).toBe(0);
    expect(await stopChild(agent.child, 6000)).toBe(0);
  });
});

// ---- the table's namespaces, on synthetic sockets ----

// Every connection 127.0.0.1:8080 → 127.0.0.1:40000: one 4-tuple, told apart by namespace.
const sock = (key: number, over: Partial<InetDiagSocket>, chrono: Partial<TcpChrono>): InetDiagSocket =>
  syntheticSocket(key, { localAddress: '127.0.0.1', remoteAddress: '127.0.0.1', remotePort: 40000, ...over }, chrono);

const SELF: SelfSnapshot = { polls: 1, pollErrors: 0, parseErrors: { dump: 0, destroy: 0 }, dumpInterrupted: 0, socketsSeen: 0, destroyFeedUp: true, destroyedSockets: 0, destroyFeedLost: 0, ownerScans: 0, namespaces: 2 };

describe('ConnectionTable with network namespaces', () => {
  it('keeps the same cookie (as numbered per namespace before Linux 5.11) and 4-tuple in two namespaces apart', async () => {
    const t = new ConnectionTable({ closeGraceMs: 0 });
    const a = t.addScope('a');
    const b = t.addScope('b');
    const poll = (now: number, figures: Record<string, Partial<TcpChrono>>): void => {
      t.beginPoll(now, new Set());
      for (const [scope, name] of [[a, 'a'], [b, 'b']] as const) {
        t.enterScope(scope, new Set([8080]));
        if (figures[name] !== undefined) t.track(sock(7, {}, figures[name]));
        t.leaveScope(true);
      }
      t.endPoll(true);
    };
    poll(1000, { a: { busyTime: 1, bytesAcked: 10 }, b: { busyTime: 2, rwndLimited: 1.5, bytesAcked: 20 } });
    poll(2000, { a: { busyTime: 3, bytesAcked: 30 }, b: { busyTime: 2, rwndLimited: 1.5, bytesAcked: 20 } });
    expect(t.open.size).toBe(2);
    expect(t.aggregates.get('a/8080')).toMatchObject({ busy: 3, bytesAcked: 30, closed: 0, port: '8080' });
    expect(t.aggregates.get('b/8080')).toMatchObject({ busy: 2, rwndLimited: 1.5, bytesAcked: 20 });
    expect([...t.open.values()].map((c) => connectionJson(c).netns).sort()).toEqual(['a', 'b']);

    const m = new WatchMetrics(t, undefined, () => SELF, { maxConnections: 10, info: { version: 't', kernel: 'k', destroyFeed: 'on' } });
    const text = await m.render();
    expect(sample(text, 'tcp_chrono_busy_seconds_total', { netns: 'a', port: '8080' })).toBe(3);
    expect(sample(text, 'tcp_chrono_rwnd_limited_seconds_total', { netns: 'b', port: '8080' })).toBe(1.5);
    expect(sample(text, 'tcp_chrono_connections', { netns: 'b', port: '8080' })).toBe(1);
    expect(sample(text, 'tcp_chrono_connection_rwnd_limited_seconds_total', { netns: 'b', port: '8080', remote: '127.0.0.1:40000' })).toBe(1.5);
    expect(sample(text, 'tcp_chrono_connection_rwnd_limited_seconds_total', { netns: 'a', port: '8080', remote: '127.0.0.1:40000' })).toBe(0);
    expect(sample(text, 'tcp_chrono_agent_namespaces')).toBe(2);

    // b's destroy feed closes b's connection only.
    t.applyDestroyed([sock(7, { state: 7 }, { busyTime: 2.5, rwndLimited: 1.5, bytesAcked: 25 })], 2500, b);
    expect(t.aggregates.get('b/8080')).toMatchObject({ closed: 1, bytesAcked: 25 });
    expect(t.aggregates.get('a/8080')).toMatchObject({ closed: 0, bytesAcked: 30 });
    expect(t.open.size).toBe(1);
  });

  it('a namespace left out of a poll, or whose dump failed, closes nothing; one that went away closes all, and its aggregates go later', () => {
    const t = new ConnectionTable({ closeGraceMs: 0, scopeRetentionMs: 10_000 });
    const a = t.addScope('a');
    const b = t.addScope('b');
    t.beginPoll(1000, new Set());
    t.enterScope(a, new Set([8080]));
    t.track(sock(1, {}, { busyTime: 1, bytesAcked: 1 }));
    t.leaveScope(true);
    t.enterScope(b, new Set([8080]));
    t.track(sock(2, {}, { busyTime: 1, bytesAcked: 1 }));
    t.track(sock(3, { localPort: 9090 }, { busyTime: 1, bytesAcked: 1 }));
    t.leaveScope(true);
    t.endPoll(true);
    // Next poll: a's dump failed, b is not polled at all.
    t.beginPoll(2000, new Set());
    t.enterScope(a, new Set([8080]));
    t.leaveScope(false);
    t.endPoll(true);
    expect(t.open.size).toBe(3);

    t.removeScope(b, 2500);
    expect(t.open.size).toBe(1);
    expect(t.aggregates.get('b/8080')!.closed + t.aggregates.get('b/ephemeral')!.closed).toBe(2);
    expect(t.peekClosed().map((c) => c.closed?.how)).toEqual(['vanished', 'vanished']);
    t.beginPoll(5000, new Set());
    t.endPoll(true);
    expect(t.aggregates.has('b/8080')).toBe(true); // still exported for a while
    t.beginPoll(12_600, new Set());
    t.endPoll(true);
    expect([...t.aggregates.keys()]).toEqual(['a/8080']);
  });

  it('a namespace of a name that went away takes its aggregates over; a scope is renamed only before its first aggregate', () => {
    const t = new ConnectionTable({ closeGraceMs: 0, scopeRetentionMs: 10_000 });
    const old = t.addScope('x');
    t.beginPoll(1000, new Set());
    t.enterScope(old, new Set([8080]));
    t.track(sock(1, {}, { bytesAcked: 5 }));
    t.leaveScope(true);
    t.endPoll(true);
    t.removeScope(old, 1500);
    const fresh = t.addScope('inode:123');
    expect(t.relabelScope(fresh, 'x')).toBe(true);
    t.beginPoll(2000, new Set());
    t.enterScope(fresh, new Set([8080]));
    t.track(sock(1, {}, { bytesAcked: 7 })); // the same cookie in a new namespace: a new connection
    t.leaveScope(true);
    t.endPoll(true);
    expect(t.aggregates.get('x/8080')).toMatchObject({ bytesAcked: 12, closed: 1 });
    expect(t.relabelScope(fresh, 'y')).toBe(false);
    t.beginPoll(20_000, new Set());
    t.enterScope(fresh, new Set([8080]));
    t.track(sock(1, {}, { bytesAcked: 9 }));
    t.leaveScope(true);
    t.endPoll(true);
    expect(t.aggregates.get('x/8080')).toMatchObject({ bytesAcked: 14, closed: 1 }); // not dropped with the old one
  });
});
