// watch --netns all --netns-labels pod_uid,container_id, real kernel (root):
// a pod as a kubelet and containerd lay it out, made here in the cgroup v2
// tree: a "pause" process in its own network namespace and in
// kubepods-burstable-pod<uid>.slice/cri-containerd-<id>.scope, then a
// server and a client entering that namespace, each in a container scope of
// its own. Beside it a namespace in no pod. The series of the pod's
// namespace carry its UID, each connection the ID of its owner's
// container; the other namespace's carry empty ones; without the flag
// there is no such label. Also: a namespace named under /run/netns or given
// by /proc/PID/ns/net, and a process moved into its pod's cgroup after the
// agent first looked (found at a later discovery).
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, readdirSync, readlinkSync, rmdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { eventually, stopChild, waitForLine } from '../../lab/lab.js';
import { CLI, ensureBuilt, runCli } from '../helpers/cli.js';

const root = process.geteuid?.() === 0;
const PORT = 5997;
const WAIT_MS = 30_000;

/** Where cgroup v2 is mounted (/sys/fs/cgroup, or /sys/fs/cgroup/unified on a hybrid host). */
function cgroup2Root(): string | undefined {
  try {
    for (const line of readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
      const [left, right] = line.split(' - ');
      if (right?.startsWith('cgroup2 ')) return left!.split(' ')[4];
    }
  } catch {
    // no /proc
  }
  return undefined;
}

const CG2 = cgroup2Root();
const have = (cmd: string): boolean => {
  try {
    execFileSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
};
const usable = root && CG2 !== undefined && ['unshare', 'nsenter', 'ip', 'python3'].every(have);

/** Removes a cgroup directory tree, children first (a cgroup with processes stays: EBUSY). */
function removeCgroup(dir: string): void {
  if (!existsSync(dir)) return;
  for (const e of readdirSync(dir, { withFileTypes: true })) if (e.isDirectory()) removeCgroup(join(dir, e.name));
  rmdirSync(dir);
}

/** Directories of earlier runs whose process is gone. */
function sweepStale(): void {
  for (const name of readdirSync(CG2!)) {
    const m = /^tcn-labels-(\d+)$/.exec(name);
    if (m === null || Number(m[1]) === process.pid) continue;
    try {
      process.kill(Number(m[1]), 0);
      continue;
    } catch {
      // gone
    }
    try {
      removeCgroup(join(CG2!, name));
    } catch {
      // still in use
    }
  }
}

const children = new Set<ChildProcess>();
function start(script: string, ...args: string[]): ChildProcess {
  const child = spawn('sh', ['-c', script, 'sh', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  children.add(child);
  child.once('exit', () => children.delete(child));
  return child;
}

const PY_SERVER = [
  'import socket, sys, time',
  's = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)',
  `s.bind(('127.0.0.1', ${PORT})); s.listen(); print('listening', flush=True)`,
  "a, _ = s.accept(); a.sendall(b'y' * 2000); time.sleep(300)",
].join('\n');
const PY_CLIENT = [
  'import socket, time',
  `c = socket.create_connection(('127.0.0.1', ${PORT}))`,
  "c.sendall(b'x' * 1000); print('connected %s:%d' % c.getsockname(), flush=True); time.sleep(300)",
].join('\n');

/** The series lines of `name` whose labels include all of `labels`. */
function series(text: string, name: string, labels: Record<string, string>): string[] {
  return text.split('\n').filter((l) => l.startsWith(`${name}{`) && Object.entries(labels).every(([k, v]) => l.includes(`${k}="${v}"`)));
}

interface Agent {
  child: ChildProcess;
  port: number;
}

/** An agent with `extra` flags, watching `--netns all` every 250 ms unless `which` says otherwise. */
async function startAgent(extra: string[], which: string[] = ['--netns', 'all', '--interval', '250ms']): Promise<Agent> {
  const child = spawn('node', [CLI, 'watch', ...which, '--listen', '127.0.0.1:0', '--log-format', 'json', '--max-connections', '5000', ...extra], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.add(child);
  let err = '';
  child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  const line = await waitForLine(child, /"msg":"watching"/, WAIT_MS).catch((e: unknown) => {
    throw new Error(`${String(e)}; stderr: ${err}`);
  });
  return { child, port: Number(/"listen":"http:\/\/127\.0\.0\.1:(\d+)"/.exec(line)![1]) };
}

const scrape = async (a: Agent): Promise<string> => (await fetch(`http://127.0.0.1:${a.port}/metrics`)).text();

describe.skipIf(!usable)('watch --netns-labels: a pod and its containers laid out in cgroup v2 as kubelet and containerd do', () => {
  const uid = randomUUID();
  const id = (): string => randomBytes(32).toString('hex');
  const ids = { pause: id(), server: id(), client: id() };
  const base = join(CG2 ?? '/nonexistent', `tcn-labels-${process.pid}`);
  const pod = join(base, 'kubepods.slice', 'kubepods-burstable.slice', `kubepods-burstable-pod${uid.replace(/-/g, '_')}.slice`);
  const scope = (name: keyof typeof ids): string => join(pod, `cri-containerd-${ids[name]}.scope`);
  const plain = join(base, 'plain');
  let podNetns = '';
  let otherNetns = '';
  let clientAddr = '';
  let pausePid = 0;
  let otherClientAddr = '';
  let agent: Agent;

  beforeAll(async () => {
    ensureBuilt();
    sweepStale();
    for (const name of Object.keys(ids) as (keyof typeof ids)[]) mkdirSync(scope(name), { recursive: true });
    mkdirSync(plain);
    // The sandbox: enters its scope, then makes the pod's namespace (it stays the lowest pid there).
    const pause = start('echo $$ > "$1/cgroup.procs" && exec unshare -n sh -c "ip link set lo up && echo ready && exec sleep 300"', scope('pause'));
    await waitForLine(pause, /^ready$/, WAIT_MS);
    pausePid = pause.pid!;
    const net = `/proc/${pausePid}/ns/net`;
    podNetns = `inode:${/\[(\d+)\]/.exec(readlinkSync(net))![1]!}`;
    // Two containers of the pod: each enters its scope, then the pod's namespace.
    const server = start('echo $$ > "$1/cgroup.procs" && exec nsenter --net="$2" python3 -c "$3"', scope('server'), net, PY_SERVER);
    await waitForLine(server, /^listening$/, WAIT_MS);
    const client = start('echo $$ > "$1/cgroup.procs" && exec nsenter --net="$2" python3 -c "$3"', scope('client'), net, PY_CLIENT);
    clientAddr = (await waitForLine(client, /^connected /, WAIT_MS)).split(' ')[1]!;
    // A namespace in no pod: the same pair, in a plain cgroup.
    const otherServer = start(`echo $$ > "$1/cgroup.procs" && exec unshare -n sh -c 'ip link set lo up && exec python3 -c "$0"' "$2"`, plain, PY_SERVER);
    await waitForLine(otherServer, /^listening$/, WAIT_MS);
    const otherNet = `/proc/${otherServer.pid!}/ns/net`;
    otherNetns = `inode:${/\[(\d+)\]/.exec(readlinkSync(otherNet))![1]!}`;
    const otherClient = start('echo $$ > "$1/cgroup.procs" && exec nsenter --net="$2" python3 -c "$3"', plain, otherNet, PY_CLIENT);
    otherClientAddr = (await waitForLine(otherClient, /^connected /, WAIT_MS)).split(' ')[1]!;
    agent = await startAgent(['--netns-labels', 'pod_uid,container_id']);
  }, 4 * WAIT_MS);

  afterAll(async () => {
    await Promise.all([...children].map((c) => stopChild(c)));
    // A cgroup empties when its last process is reaped: retry for a moment.
    await eventually(async () => {
      try {
        removeCgroup(base);
        return true;
      } catch {
        return undefined;
      }
    }, 10_000, 100).catch(() => undefined);
  }, 2 * WAIT_MS);

  it("every series of the pod's namespace carries its UID; each connection its owner's container", async () => {
    // Owners are found by a background scan: wait for both.
    const text = await eventually(async () => {
      const t = await scrape(agent);
      const owned = series(t, 'tcp_chrono_connection_bytes_acked_total', { netns: podNetns }).filter((l) => !l.includes('container_id=""'));
      return owned.length >= 2 ? t : undefined;
    }, WAIT_MS);
    // Aggregates: the server's port, in the pod.
    expect(series(text, 'tcp_chrono_connections', { netns: podNetns, pod_uid: uid, port: String(PORT) })).toHaveLength(1);
    expect(series(text, 'tcp_chrono_busy_seconds_total', { netns: podNetns, pod_uid: uid })).not.toHaveLength(0);
    // The server's connection (its local port) and the client's (to it), each its own container.
    const serverSide = series(text, 'tcp_chrono_connection_bytes_acked_total', { netns: podNetns, port: String(PORT), remote: clientAddr });
    expect(serverSide).toHaveLength(1);
    expect(serverSide[0]).toContain(`pod_uid="${uid}"`);
    expect(serverSide[0]).toContain(`container_id="${ids.server}"`);
    expect(serverSide[0]).toContain('comm="python3"');
    const clientSide = series(text, 'tcp_chrono_connection_bytes_acked_total', { netns: podNetns, remote: `127.0.0.1:${PORT}` });
    expect(clientSide).toHaveLength(1);
    expect(clientSide[0]).toContain(`pod_uid="${uid}"`);
    expect(clientSide[0]).toContain(`container_id="${ids.client}"`);
    // No series of the pod's namespace without its UID.
    expect(text.split('\n').filter((l) => l.includes(`netns="${podNetns}"`) && !l.includes(`pod_uid="${uid}"`))).toEqual([]);
    // The API's rows say the same.
    const rows = ((await (await fetch(`http://127.0.0.1:${agent.port}/api/connections?limit=1000`)).json()) as { connections: Record<string, unknown>[] }).connections;
    const server = rows.filter((r) => r.netns === podNetns && r.port === String(PORT) && r.remote === clientAddr);
    expect(server).toHaveLength(1);
    expect(server[0]).toMatchObject({ podUid: uid, containerId: ids.server, comm: 'python3' });
  });

  it('a namespace in no pod, and a process in no container, get empty labels', async () => {
    const text = await eventually(async () => {
      const t = await scrape(agent);
      // Its owner found (a pid), so its container was looked for.
      return series(t, 'tcp_chrono_connection_bytes_acked_total', { netns: otherNetns, port: String(PORT), remote: otherClientAddr }).some((l) => !l.includes('pid=""')) ? t : undefined;
    }, WAIT_MS);
    const lines = text.split('\n').filter((l) => l.includes(`netns="${otherNetns}"`));
    expect(lines.length).toBeGreaterThan(0);
    for (const l of lines) expect(l).toContain('pod_uid=""');
    const conn = series(text, 'tcp_chrono_connection_bytes_acked_total', { netns: otherNetns, port: String(PORT), remote: otherClientAddr });
    expect(conn[0]).toContain('container_id=""');
  });

  it('a namespace given by its /run/netns name: its pod found through the processes in it', async () => {
    // The pod's namespace bind-mounted as a named one (as CNI plugins do), then named alone.
    const name = `tcn-labels-${process.pid}`;
    execFileSync('ip', ['netns', 'attach', name, String(pausePid)]);
    try {
      const named = await startAgent(['--netns-labels', 'pod_uid'], ['--netns', `/run/netns/${name}`, '--interval', '250ms']);
      const text = await eventually(async () => {
        const t = await scrape(named);
        return series(t, 'tcp_chrono_connections', { netns: name, port: String(PORT) }).length > 0 ? t : undefined;
      }, WAIT_MS);
      expect(series(text, 'tcp_chrono_connections', { netns: name, pod_uid: uid, port: String(PORT) })).toHaveLength(1);
      expect(text).not.toContain('container_id=');
      await stopChild(named.child);
    } finally {
      execFileSync('ip', ['netns', 'del', name]);
    }
  });

  it("a namespace's process moved into a pod's cgroup after discovery (as runc may do): its pod is found at a later discovery", async () => {
    // A second pod, given by /proc/PID/ns/net: its first process starts in a plain cgroup.
    const uid2 = randomUUID();
    const pod2 = join(base, 'kubepods.slice', 'kubepods-besteffort.slice', `kubepods-besteffort-pod${uid2.replace(/-/g, '_')}.slice`);
    const scope2 = join(pod2, `cri-containerd-${id()}.scope`);
    mkdirSync(scope2, { recursive: true });
    const late = start('echo $$ > "$1/cgroup.procs" && exec unshare -n sh -c "ip link set lo up && echo ready && exec sleep 300"', plain);
    await waitForLine(late, /^ready$/, WAIT_MS);
    const net = `/proc/${late.pid!}/ns/net`;
    const label = `inode:${/\[(\d+)\]/.exec(readlinkSync(net))![1]!}`;
    // Polls every 5 s: its first discovery (at the start) finds no pod, the move comes well within the next four.
    const agent2 = await startAgent(['--netns-labels', 'pod_uid'], ['--netns', net, '--interval', '5s']);
    writeFileSync(join(scope2, 'cgroup.procs'), String(late.pid!));
    const server = start('echo $$ > "$1/cgroup.procs" && exec nsenter --net="$2" python3 -c "$3"', scope2, net, PY_SERVER);
    await waitForLine(server, /^listening$/, WAIT_MS);
    const client = start('echo $$ > "$1/cgroup.procs" && exec nsenter --net="$2" python3 -c "$3"', scope2, net, PY_CLIENT);
    await waitForLine(client, /^connected /, WAIT_MS);
    const text = await eventually(async () => {
      const t = await scrape(agent2);
      return series(t, 'tcp_chrono_connections', { netns: label, port: String(PORT) }).some((l) => l.includes(`pod_uid="${uid2}"`)) ? t : undefined;
    }, WAIT_MS);
    expect(series(text, 'tcp_chrono_connections', { netns: label, pod_uid: uid2, port: String(PORT) })).toHaveLength(1);
    await stopChild(agent2.child);
  });

  it('without --netns-labels: no pod_uid or container_id label', async () => {
    const plain = await startAgent([]);
    const text = await eventually(async () => {
      const t = await scrape(plain);
      return series(t, 'tcp_chrono_connections', { netns: podNetns }).length > 0 ? t : undefined;
    }, WAIT_MS);
    expect(text).not.toContain('pod_uid=');
    expect(text).not.toContain('container_id=');
    await stopChild(plain.child);
  });

  it('usage: needs --netns; container_id needs the owners', () => {
    const a = runCli(['watch', '--netns-labels', 'pod_uid', '--listen', '127.0.0.1:0']);
    expect(a.code).toBe(2);
    expect(a.stderr).toMatch(/--netns-labels .*--netns all/);
    const b = runCli(['watch', '--netns', 'all', '--netns-labels', 'container_id', '--owners', 'off', '--listen', '127.0.0.1:0']);
    expect(b.code).toBe(2);
    expect(b.stderr).toMatch(/container_id .*--owners off/);
    const c = runCli(['watch', '--netns', 'all', '--netns-labels', 'pod', '--listen', '127.0.0.1:0']);
    expect(c.code).toBe(2);
    expect(c.stderr).toMatch(/expected one of pod_uid, container_id/);
  });
});
