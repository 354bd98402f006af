// `tcp-chronograph trace` against the real kernel (BPF TX timestamping,
// Linux 6.15+) and real servers that know nothing of the agent: Debian's
// nginx (sendfile, keep-alive) and python3's http.server. The agent runs as
// its own process; every server, client and agent is killed after each test,
// and a SIGKILLed agent is shown to leave no BPF program behind.
import { spawnSync } from 'node:child_process';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { native } from '../../agent/native.js';
import { TRACE_CHUNK_SIZE, TRACE_CONN_SIZE, TRACE_EVENT_SIZE } from '../../agent/parse/trace_event.js';
import { kernelVersion, traceBinding } from '../../agent/sources/trace.js';
import { ensureBuilt, runCli } from '../helpers/cli.js';
import { chunks, chunksOf, docroot, freePort, loadedPrograms, nginxAvailable, runClient, startNginx, startPython, startTrace, stopAll, stopTrace } from './helpers.js';

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
      'trace_conn.end_key': 16, 'trace_conn.lport': 20, 'trace_conn.family': 24, 'trace_conn.has_prev': 26, 'trace_conn.laddr': 32,
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
    const fast = await runClient(port, '/seg.ts', 2);
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

describe('trace: lifetime and bad input', () => {
  it('a SIGKILLed agent leaves no BPF program loaded', async () => {
    const before = loadedPrograms();
    const agent = await startTrace(['--port', String(await freePort())]);
    expect(loadedPrograms()).toBe(before + 1);
    await stopTrace(agent, 'SIGKILL');
    // The link's fd closes with the process; the kernel frees the program shortly after.
    const end = Date.now() + 5000;
    while (loadedPrograms() > before && Date.now() < end) await new Promise((r) => setTimeout(r, 50));
    expect(loadedPrograms()).toBe(before);
    const cg = spawnSync('bpftool', ['cgroup', 'show', String(agent.started.cgroup)], { encoding: 'utf8' });
    expect(cg.stdout).not.toContain('tcp_chrono_trace');
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
