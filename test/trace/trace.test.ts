// `tcp-chronograph trace` against the real kernel (BPF TX timestamping,
// Linux 6.15+) and real servers that know nothing of the agent: Debian's
// nginx (sendfile, keep-alive) and python3's http.server. The agent runs as
// its own process; every server, client and agent is killed after each test,
// and a SIGKILLed agent is shown to leave no BPF program behind.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { native } from '../../agent/native.js';
import { TRACE_CHUNK_SIZE, TRACE_CONN_SIZE, TRACE_EVENT_SIZE } from '../../agent/parse/trace_event.js';
import { cgroup2Mount, kernelVersion, traceBinding, traceUnavailable } from '../../agent/sources/trace.js';
import { ensureBuilt, runCli } from '../helpers/cli.js';
import {
  chunks,
  chunksOf,
  docroot,
  freePort,
  heldClient,
  loadedPrograms,
  nginxAvailable,
  programsOf,
  runClient,
  startNginx,
  startPython,
  startTrace,
  stopAll,
  stopTrace,
  tempCgroup,
  tempNetns,
  type TraceAgent,
} from './helpers.js';

const SEGMENT = 4 * 1024 * 1024;

// No silent skips: where trace cannot run, the suite fails and says why.
beforeAll(() => {
  ensureBuilt();
  const [maj, min] = kernelVersion();
  if (maj < 6 || (maj === 6 && min < 15)) throw new Error(`these tests need Linux 6.15+ (BPF TX timestamping); this kernel is ${maj}.${min}`);
  if (traceBinding() === undefined) throw new Error('the addon was built without libbpf: install libbpf-dev and pkg-config (scripts/install-test-deps.sh), then npm rebuild');
  if (process.geteuid?.() !== 0) throw new Error('these tests load BPF programs: run them as root');
  if (!nginxAvailable()) throw new Error('nginx is missing: run scripts/install-test-deps.sh');
});

afterEach(async () => {
  await stopAll();
});

describe('trace: the kernel records', () => {
  it('the decoder reads the structs where the compiler put them', () => {
    const layout = (native() as unknown as { traceLayout(): Record<string, number> }).traceLayout();
    expect(layout['trace_event.size']).toBe(TRACE_EVENT_SIZE);
    expect(layout['trace_chunk.size']).toBe(TRACE_CHUNK_SIZE);
    expect(layout['trace_conn.size']).toBe(TRACE_CONN_SIZE);
    // The offsets agent/parse/trace_event.ts reads at.
    expect(layout).toMatchObject({
      'trace_event.kind': 0, 'trace_event.lport': 4, 'trace_event.family': 8, 'trace_event.cookie': 16, 'trace_event.now_ns': 24,
      'trace_event.laddr': 32, 'trace_event.raddr': 48, 'trace_event.c': 64,
      'trace_chunk.chunk': 0, 'trace_chunk.first_write_ns': 8, 'trace_chunk.ack_ns': 32, 'trace_chunk.start_key': 40, 'trace_chunk.last_key': 44,
      'trace_chunk.writes': 48, 'trace_chunk.pid': 52, 'trace_chunk.busy0_us': 56, 'trace_chunk.mss0': 92, 'trace_chunk.busy1_us': 96,
      'trace_chunk.wmem_queued1': 148, 'trace_chunk.sampled': 152, 'trace_chunk.comm': 160,
      'trace_conn.end_key': 16, 'trace_conn.lport': 20, 'trace_conn.family': 24, 'trace_conn.has_prev': 26, 'trace_conn.existing': 27, 'trace_conn.laddr': 32,
      'trace_conn.cur': 64, 'trace_conn.prev': 240,
    });
  });
});

describe('trace: per-response records for servers that know nothing of the agent', () => {
  it('nginx (sendfile, keep-alive): one chunk per response, in order, bytes exact, the writer named', async () => {
    const dir = docroot({ 'seg.ts': SEGMENT });
    const port = await freePort();
    const nginx = await startNginx(dir, port);
    const agent = await startTrace(['--port', String(port), '--interval', '200ms', '--quiet', '300ms']);
    const client = await runClient(port, '/seg.ts', 4);
    expect(await client.done).toBe(0);
    const mine = await chunksOf(agent, client.local, 4);
    expect(mine.map((c) => c.id)).toEqual([0, 1, 2, 3]);
    for (const [i, c] of mine.entries()) {
      expect(c.stalled).toBe(false);
      expect(c.exact).toBe(true);
      // Headers and body of one response: what the client read.
      expect(c.bytes).toBe(client.responses[i]!.bytes + client.responses[i]!.head);
      expect(c.mode).toBe('trace');
      expect(c.port).toBe(port);
      expect(c.comm).toBe('nginx');
      expect(c.pid).not.toBe(nginx.pid); // the worker, not the master
      expect(c.ackTime as number).toBeGreaterThanOrEqual(c.lastWriteTime as number);
      expect(c.lastWriteTime as number).toBeGreaterThanOrEqual(c.writeTime as number);
    }
    const metrics = await (await fetch(`${agent.url}/metrics`)).text();
    expect(metrics).toMatch(new RegExp(`tcp_chrono_chunks_total\\{port="${port}",mode="trace",limit="[a-z]+"\\} \\d`));
    expect(metrics).toMatch(/tcp_chrono_trace_records_lost_total\{reason="ringbuf"\} 0/);
    expect(await stopTrace(agent)).toBe(0);
    expect(agent.lines.all.some((l) => l.includes('"msg":"stopped"'))).toBe(true);
  });

  it('a slow reader behind a small receive window gets rwnd verdicts; a fast one does not', async () => {
    const dir = docroot({ 'seg.ts': 2 * 1024 * 1024 });
    const port = await freePort();
    await startPython(dir, port);
    const agent = await startTrace(['--port', String(port), '--interval', '200ms', '--quiet', '300ms']);
    const slow = await runClient(port, '/seg.ts', 2, { rcvbuf: 16384, pace: 0.004 });
    // The fast reader's buffer holds a whole response, so however late a
    // loaded machine schedules it, its window cannot fill (on one CI run it
    // did: an rwnd verdict for the "fast" reader, correctly given).
    const fast = await runClient(port, '/seg.ts', 2, { rcvbuf: 8 * 1024 * 1024 });
    expect(await slow.done).toBe(0);
    expect(await fast.done).toBe(0);
    const s = await chunksOf(agent, slow.local, 2);
    const f = await chunksOf(agent, fast.local, 2);
    expect(s).toHaveLength(2);
    expect(f).toHaveLength(2);
    for (const c of s) {
      expect(c.limit).toBe('rwnd');
      expect((c.rwndLimited as number) / (c.deliveryTime as number)).toBeGreaterThan(0.5);
      expect(c.comm).toBe('python3');
    }
    for (const c of f) expect(c.limit).not.toBe('rwnd');
  });

  it('an idle agent sleeps instead of polling the ring, and the first record wakes it (its chunk is out long before the next scan)', async () => {
    const dir = docroot({ 'seg.ts': 256 * 1024 });
    const port = await freePort();
    await startPython(dir, port);
    // Scans every 30 s: only the ring's wake-up can deliver the chunk in time.
    const agent = await startTrace(['--port', String(port), '--interval', '30s', '--diag', 'off', '--chunks', 'write']);
    const pid = agent.child.pid!;
    // Each voluntary context switch of the main thread is one sleep in epoll_wait.
    const sleeps = (): number => Number(/voluntary_ctxt_switches:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/task/${pid}/status`, 'utf8'))![1]);
    await new Promise((r) => setTimeout(r, 1000)); // start-up work done
    const s0 = sleeps();
    await new Promise((r) => setTimeout(r, 3000));
    // Reading the ring every 100 ms would be 30 wake-ups.
    expect(sleeps() - s0, 'wake-ups of an idle agent in 3 s').toBeLessThan(10);
    const client = await runClient(port, '/seg.ts', 1);
    expect(await client.done).toBe(0);
    const t0 = Date.now();
    const mine = await chunksOf(agent, client.local, 1, 5000);
    expect(mine.length).toBeGreaterThan(0);
    expect(Date.now() - t0).toBeLessThan(3000);
    expect(mine[0]!.exact).toBe(true);
  });

  it('a reader that stops reading: its response is reported stalled after --stall-after, with the kernel\'s figures', async () => {
    const dir = docroot({ 'seg.ts': SEGMENT });
    const port = await freePort();
    await startNginx(dir, port);
    const agent = await startTrace(['--port', String(port), '--interval', '200ms', '--stall-after', '1s']);
    const client = await runClient(port, '/seg.ts', 1, { rcvbuf: 16384, stall: true });
    const [c] = await chunksOf(agent, client.local, 1);
    expect(c).toBeDefined();
    expect(c!.stalled).toBe(true);
    expect(c!.deliveryTime as number).toBeGreaterThanOrEqual(1);
    expect(c!.ackTime).toBeUndefined();
    const metrics = await (await fetch(`${agent.url}/metrics`)).text();
    expect(metrics).toMatch(new RegExp(`tcp_chrono_chunk_stalls_total\\{port="${port}",mode="trace",limit="[a-z]+"\\} 1`));
  });

  it('--pid follows only that process\'s writes; --chunks write gives one chunk per hand-over', async () => {
    const dir = docroot({ 'a.ts': 256 * 1024 });
    const p1 = await freePort();
    const p2 = await freePort();
    const s1 = await startPython(dir, p1);
    await startPython(dir, p2);
    const agent = await startTrace(['--port', String(p1), '--port', String(p2), '--pid', String(s1.pid), '--chunks', 'write', '--interval', '200ms', '--quiet', '300ms']);
    const c1 = await runClient(p1, '/a.ts', 2);
    const c2 = await runClient(p2, '/a.ts', 2);
    expect(await c1.done).toBe(0);
    expect(await c2.done).toBe(0);
    const mine = await chunksOf(agent, c1.local, 3);
    expect(mine.length).toBeGreaterThanOrEqual(3); // headers, then the body in pieces, per response
    expect(mine.every((c) => c.pid === s1.pid)).toBe(true);
    const total = mine.reduce((n, c) => n + c.bytes, 0);
    expect(total).toBe(c1.responses.reduce((n, r) => n + r.bytes + r.head, 0));
    await new Promise((r) => setTimeout(r, 600));
    expect((await chunks(agent)).filter((c) => c.peer.endsWith(`:${c2.local}`))).toHaveLength(0);
  });
});

/** A metric's value (the series without labels) from the agent's /metrics. */
async function metric(agent: TraceAgent, name: string): Promise<number | undefined> {
  const text = await (await fetch(`${agent.url}/metrics`)).text();
  const m = new RegExp(`^${name} (\\S+)$`, 'm').exec(text);
  return m === null ? undefined : Number(m[1]);
}

/** Waits until `name` reads `value` (at most `ms`); returns the last value read. */
async function metricBecomes(agent: TraceAgent, name: string, value: number, ms = 5000): Promise<number | undefined> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await metric(agent, name);
    if (v === value || Date.now() > end) return v;
    await new Promise((r) => setTimeout(r, 100));
  }
}

describe('trace: connections open before the agent started', () => {
  it('a keep-alive connection to nginx used before the start: its next responses are chunks, exact and in order; its close is found', async () => {
    const dir = docroot({ 'first.ts': 5000, 'a.ts': 300_000, 'b.ts': 1_500_000, 'c.ts': 70_000 });
    const port = await freePort();
    await startNginx(dir, port);
    const held = await heldClient(port);
    await held.get('/first.ts');
    const agent = await startTrace(['--port', String(port), '--interval', '200ms', '--quiet', '300ms']);
    expect(agent.started.existingConnections).toBe(1);
    const sent = [await held.get('/a.ts'), await held.get('/b.ts'), await held.get('/c.ts')];
    const mine = await chunksOf(agent, held.local, 3);
    expect(mine.map((c) => c.id)).toEqual([0, 1, 2]);
    for (const [i, c] of mine.entries()) {
      expect(c.bytes).toBe(sent[i]!.bytes + sent[i]!.head); // headers included
      expect(c.stalled).toBe(false);
      expect(c.exact).toBe(true);
      expect(c.mode).toBe('trace');
      expect(c.port).toBe(port);
      expect(c.comm).toBe('nginx');
    }
    expect(await metricBecomes(agent, 'tcp_chrono_trace_connections', 1)).toBe(1);
    // While it is open, its close is watched (a tracepoint) besides the cgroup's program.
    expect(linksTo(programsOf(agent.child.pid!)).sort()).toEqual(['cgroup', 'iter', 'raw_tracepoint']);
    expect(await held.close()).toBe(0);
    // Its close comes from the tracepoint, not from the STATE callback it never had.
    expect(await metricBecomes(agent, 'tcp_chrono_trace_connections', 0)).toBe(0);
    await new Promise((r) => setTimeout(r, 500));
    const after = (await chunks(agent)).filter((c) => c.peer.endsWith(`:${held.local}`));
    expect(after.map((c) => c.id)).toEqual([0, 1, 2]); // each once, none stalled
    expect(after.every((c) => !c.stalled)).toBe(true);
    expect(await metric(agent, 'tcp_chrono_trace_connections_total')).toBe(1);
    // The last adopted connection gone, only the cgroup's program is still called.
    const end = Date.now() + 3000;
    while (linksTo(programsOf(agent.child.pid!)).length > 1 && Date.now() < end) await new Promise((r) => setTimeout(r, 100));
    expect(linksTo(programsOf(agent.child.pid!))).toEqual(['cgroup']);
    expect(await stopTrace(agent)).toBe(0);
  });

  it('one in another network namespace (as in a pod): followed too, and its close found', async () => {
    const ns = tempNetns();
    const dir = docroot({ 'first.ts': 5000, 'a.ts': 400_000 });
    const port = await freePort();
    await startPython(dir, port, ns);
    const held = await heldClient(port, ns);
    await held.get('/first.ts');
    const agent = await startTrace(['--port', String(port), '--interval', '200ms', '--quiet', '300ms']);
    expect(agent.started.existingConnections).toBe(1);
    expect(agent.started.namespacesScanned).toBeGreaterThanOrEqual(2);
    const sent = await held.get('/a.ts');
    const [c] = await chunksOf(agent, held.local, 1);
    expect(c!.bytes).toBe(sent.bytes + sent.head);
    expect(c!.comm).toBe('python3');
    expect(await held.close()).toBe(0);
    expect(await metricBecomes(agent, 'tcp_chrono_trace_connections', 0)).toBe(0);
    expect(await stopTrace(agent)).toBe(0);
  });

  it('without CAP_SYS_ADMIN (no entering other namespaces) it runs, and says whose open connections it does not follow', async () => {
    tempNetns();
    const agent = await startTrace(['--port', String(await freePort())], ['setpriv', '--inh-caps=-all', '--bounding-set=-sys_admin', '--']);
    const degraded = (agent.started.degraded ?? []) as string[];
    expect(degraded.join('\n')).toMatch(/connections already open in \d+ network namespace\(s\) are not followed, only new ones \(cannot enter network namespace .*: setns needs CAP_SYS_ADMIN/);
    expect(await stopTrace(agent)).toBe(0);
  });

  it('only those of a watched port, in the traced cgroup, are followed', async () => {
    const mount = cgroup2Mount();
    expect(mount).toBeDefined();
    const traced = tempCgroup(mount!);
    const other = tempCgroup(mount!);
    const dir = docroot({ 'a.ts': 100_000 });
    const [inside, outside, unwatched] = [await freePort(), await freePort(), await freePort()];
    await startNginx(dir, inside, traced);
    await startNginx(dir, outside, other); // a watched port, another cgroup
    await startNginx(dir, unwatched, traced); // the traced cgroup, a port not watched
    const held = [await heldClient(inside), await heldClient(outside), await heldClient(unwatched)];
    for (const h of held) await h.get('/a.ts');
    const agent = await startTrace(['--cgroup', traced, '--port', String(inside), '--port', String(outside), '--interval', '200ms', '--quiet', '300ms']);
    expect(agent.started.existingConnections).toBe(1);
    const sent = [];
    for (const h of held) sent.push(await h.get('/a.ts'));
    const mine = await chunksOf(agent, held[0]!.local, 1);
    expect(mine).toHaveLength(1);
    expect(mine[0]!.bytes).toBe(sent[0]!.bytes + sent[0]!.head);
    await new Promise((r) => setTimeout(r, 600));
    for (const h of held.slice(1)) expect((await chunks(agent)).filter((c) => c.peer.endsWith(`:${h.local}`))).toHaveLength(0);
    expect(await metric(agent, 'tcp_chrono_trace_connections_total')).toBe(1);
    expect(await metric(agent, 'tcp_chrono_trace_connections')).toBe(1);
  });
});

/** The types of the kernel's BPF links that run one of `progs` (bpftool link show). */
function linksTo(progs: number[]): string[] {
  const r = spawnSync('bpftool', ['link', 'show', '--json'], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`bpftool link show failed: ${r.stderr}`);
  return (JSON.parse(r.stdout) as { type: string; prog_id: number }[]).filter((l) => progs.includes(l.prog_id)).map((l) => l.type);
}

describe('trace: lifetime and bad input', () => {
  it('an old kernel, a kernel without BTF, a build without libbpf: one sentence each, with the way out', () => {
    const ok = { release: '6.18.44', btf: '/sys/kernel/btf/vmlinux', loader: true };
    const root = cgroup2Mount()!;
    expect(traceUnavailable(root, ok)).toBeUndefined();
    expect(traceUnavailable(root, { ...ok, release: '6.14.3-generic' })).toBe('trace needs Linux 6.15 or later (BPF TX timestamping); this kernel is 6.14.3-generic: use attach or proxy instead');
    expect(traceUnavailable(root, { ...ok, release: '5.15.0' })).toMatch(/this kernel is 5\.15\.0: use attach or proxy instead$/);
    expect(traceUnavailable(root, { ...ok, btf: '/nonexistent/vmlinux' })).toBe('trace needs a kernel with BTF (/nonexistent/vmlinux, CONFIG_DEBUG_INFO_BTF); this one has none: use attach or proxy instead');
    expect(traceUnavailable(root, { ...ok, loader: false })).toMatch(/built without libbpf \(install libbpf-dev and pkg-config, then npm rebuild\)$/);
  });

  it('loads under a signal storm (node --cpu-prof: SIGPROF all along the verifier run)', async () => {
    const prof = mkdtempSync(join(tmpdir(), 'tcpchrono-prof-'));
    try {
      const agent = await startTrace(['--port', String(await freePort())], [], ['--cpu-prof', `--cpu-prof-dir=${prof}`]);
      expect(agent.started.msg).toBe('tracing');
      expect(await stopTrace(agent)).toBe(0);
    } finally {
      rmSync(prof, { recursive: true, force: true });
    }
  });

  it('a SIGKILLed agent leaves no BPF program loaded', async () => {
    const agent = await startTrace(['--port', String(await freePort())]);
    // This agent's programs, by id (other agents may run meanwhile: the other test file's).
    const mine = programsOf(agent.child.pid!);
    const loaded = loadedPrograms();
    expect(mine.map((id) => loaded.get(id)).sort()).toEqual(['tcp_chrono_adopt', 'tcp_chrono_closed', 'tcp_chrono_trace']);
    expect(linksTo(mine)).toContain('cgroup');
    await stopTrace(agent, 'SIGKILL');
    // The link's fd closes with the process; the kernel frees the program shortly after.
    const left = (): number[] => {
      const now = loadedPrograms();
      return mine.filter((id) => now.has(id));
    };
    const end = Date.now() + 5000;
    while (left().length > 0 && Date.now() < end) await new Promise((r) => setTimeout(r, 50));
    expect(left()).toEqual([]);
    // Nor a link (the cgroup attachment is one): none of the kernel's links runs one of them.
    expect(linksTo(mine)).toEqual([]);
  });

  it.each([
    [['--chunks', 'sometimes'], 2, '--chunks "sometimes": expected response, write or idle=DURATION'],
    [['--chunks', 'idle=2m'], 2, 'idle=DURATION must be from 1ms to 60s'],
    [['--sample', '0'], 2, '--sample'],
    [['--ring-buffer', '3m'], 2, 'must be a power of two'],
    [['--port', '1', '--port', '2', '--port', '3', '--port', '4', '--port', '5', '--port', '6', '--port', '7', '--port', '8', '--port', '9'], 2, 'at most 8 ports'],
    [['--cgroup', '/nonexistent/cgroup'], 1, '--cgroup /nonexistent/cgroup does not exist'],
    [['--cgroup', '/proc'], 1, 'cannot load the trace program'],
  ])('%j exits %i with one sentence', (args, code, text) => {
    const r = runCli(['trace', '--listen', '127.0.0.1:0', ...args]);
    expect(r.code).toBe(code);
    expect(r.stderr).toContain(text);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
  });

  it('without CAP_BPF the load fails with a sentence naming the capabilities', () => {
    const r = runCli(['trace', '--listen', '127.0.0.1:0'], { prefix: ['setpriv', '--inh-caps=-all', '--bounding-set=-bpf,-perfmon,-sys_admin,-net_admin', '--'] });
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON/);
  });
});
