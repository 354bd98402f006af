// End to end, real kernel: the built CLI attached to a separate Node server
// process (test/attach/target.mjs) streaming to loopback readers.
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ChunkRecord } from '../../agent/model/chunks.js';
import { OPT_RX_FILTER } from '../../agent/attach/attacher.js';
import { ensureBuilt } from '../helpers/cli.js';
import { slowReader } from '../helpers/loopback.js';
import {
  cpuOver,
  metric,
  setTargetTimestamping,
  sleep,
  startAgent,
  startTarget,
  stopAgent,
  targetSockets,
  type TargetProc,
} from './helpers.js';

type Event = ChunkRecord & { mode: string; port: number; peer: string; pid: number };

const readEvents = (file: string): Event[] =>
  readFileSync(file, 'utf8')
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => JSON.parse(l) as Event);

async function connect(port: number): Promise<net.Socket> {
  const s = net.connect({ host: '127.0.0.1', port });
  await once(s, 'connect');
  s.on('data', () => {}); // a fast reader
  s.on('error', () => {});
  return s;
}

const kill = (c: ChildProcess | undefined): void => {
  if (c !== undefined && c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
};

describe('tcp-chronograph attach (real kernel, separate target process)', () => {
  let dir: string;
  let target: TargetProc;
  const clients: net.Socket[] = [];
  let reader: ChildProcess | undefined;

  beforeAll(async () => {
    ensureBuilt();
    dir = mkdtempSync(join(tmpdir(), 'attach-test-'));
    target = await startTarget();
  });

  afterAll(() => {
    for (const c of clients) c.destroy();
    kill(reader);
    kill(target?.child);
    rmSync(dir, { recursive: true, force: true });
  });

  it('records chunks keyed at the target’s own writes, rwnd verdicts for a slow reader, picks up and releases connections, and leaves the sockets as they were', async () => {
    const pid = target.child.pid!;
    const paced = await connect(target.ports.paced);
    clients.push(paced, await connect(target.ports.idle));
    reader = slowReader('127.0.0.1', target.ports.bulk, { rcvbuf: 4096, chunk: 16384, pause: 0.002, total: 1 << 30, limitSeconds: 40 });
    await sleep(300);
    const baseline = await cpuOver(pid, 500);

    const events = join(dir, 'events.jsonl');
    const agent = await startAgent(pid, ['--interval', '200ms', '--events', events, '--stall-after', '30s']);
    expect(agent.started.sockets).toBe(3);
    await sleep(1500);

    // A new connection is picked up within one rescan interval (200 ms).
    const late = await connect(target.ports.idle);
    clients.push(late);
    const lateName = `127.0.0.1:${late.localPort}`;
    await sleep(450);
    let sockets = (await (await fetch(`${agent.url}/api/sockets`)).json()) as { peer: string; records: number }[];
    expect(sockets.map((s) => s.peer)).toContain(lateName);
    await sleep(500);

    // The target close()s the late connection after our end: released, and its FIN is not held back by the agent.
    const t0 = performance.now();
    late.end();
    await once(late, 'close');
    expect(performance.now() - t0).toBeLessThan(150);
    await sleep(450);
    sockets = (await (await fetch(`${agent.url}/api/sockets`)).json()) as { peer: string; records: number }[];
    expect(sockets.map((s) => s.peer)).not.toContain(lateName);

    const text = await (await fetch(`${agent.url}/metrics`)).text();
    expect(execFileSync('promtool', ['check', 'metrics'], { input: text, encoding: 'utf8' })).toBe('');
    expect(metric(text, 'tcp_chrono_attach_sockets')).toBe(3);
    expect(metric(text, 'tcp_chrono_attach_sockets_attached_total')).toBe(4);
    expect(metric(text, 'tcp_chrono_attach_sockets_released_total')).toBe(1);
    expect(metric(text, 'tcp_chrono_attach_records_total', { kind: 'ack' })).toBeGreaterThan(50);
    expect(metric(text, 'tcp_chrono_chunks_total', { port: String(target.ports.bulk), mode: 'attach', limit: 'rwnd' })).toBeGreaterThan(5);
    expect(metric(text, 'tcp_chrono_attach_drains_total')).toBeGreaterThan(0);
    expect(metric(text, 'tcp_chrono_attach_rescan_dumps_skipped_total')).toBeGreaterThan(0);
    expect(metric(text, 'tcp_chrono_attach_records_lost_total')).toBeDefined();

    const stopped = await stopAgent(agent);
    expect(stopped.code).toBe(0);
    expect(stopped.detached).toMatchObject({ reason: 'SIGTERM', leftOn: 0, timedOut: 0 });

    // Left as it was: no timestamping, nothing in any error queue, checked through fresh duplicates.
    const after = targetSockets(pid).filter((s) => s.state === 1);
    expect(after.length).toBe(3);
    for (const s of after) expect({ port: s.localPort, timestamping: s.timestamping, queued: s.queued }).toEqual({ port: s.localPort, timestamping: 0, queued: 0 });

    // Chunks are the target's writes: on the paced connection (one sendmsg per
    // write) each chunk is one of the target's writes, in order, or now and
    // then two that the kernel merged into one skb (one set of records).
    const recs = readEvents(events);
    const pacedPeer = `127.0.0.1:${paced.localPort}`;
    const sizes = target.lines.all
      .filter((l) => l.startsWith('{"paced"'))
      .map((l) => JSON.parse(l) as { paced: number; size: number })
      .filter((w) => w.paced === paced.localPort)
      .map((w) => w.size);
    const pacedChunks = recs.filter((r) => r.peer === pacedPeer && !r.stalled).slice(1); // the first may start mid-write
    expect(pacedChunks.length).toBeGreaterThan(50);
    let at = sizes.indexOf(pacedChunks[0]!.bytes);
    expect(at).toBeGreaterThanOrEqual(0);
    let merged = 0;
    for (const c of pacedChunks) {
      let sum = 0;
      let writes = 0;
      while (sum < c.bytes && at < sizes.length) {
        sum += sizes[at++]!;
        writes++;
      }
      expect(sum).toBe(c.bytes);
      if (writes > 1) merged++;
    }
    expect(merged / pacedChunks.length).toBeLessThan(0.1);
    expect(pacedChunks.every((c) => c.exact)).toBe(true);
    for (let i = 1; i < pacedChunks.length; i++) expect(pacedChunks[i]!.offset).toBe(pacedChunks[i - 1]!.offset + pacedChunks[i - 1]!.bytes);

    // The slow reader's chunks: mostly receive-window-limited.
    const bulk = recs.filter((r) => r.port === target.ports.bulk && !r.stalled && r.limit !== 'unknown');
    expect(bulk.length).toBeGreaterThan(5);
    expect(bulk.filter((r) => r.limit === 'rwnd').length / bulk.length).toBeGreaterThan(0.7);

    // CPU back to baseline once the target stops writing (a record left behind would make it spin).
    target.child.kill('SIGUSR2');
    await sleep(300);
    const idle = await cpuOver(pid, 1000);
    expect(idle).toBeLessThan(0.3);
    expect(baseline).toBeLessThan(1.5);
  });

  it('leaves a socket alone that already uses SO_TIMESTAMPING', async () => {
    const t = await startTarget();
    try {
      const c = await connect(t.ports.idle);
      clients.push(c);
      await sleep(100);
      const [s] = targetSockets(t.child.pid!).filter((x) => x.state === 1);
      const APP_FLAGS = (1 << 4) | (1 << 3); // SOFTWARE | RX_SOFTWARE, as an application might set
      setTargetTimestamping(t.child.pid!, s!.fd, APP_FLAGS);
      const agent = await startAgent(t.child.pid!, ['--interval', '200ms']);
      expect(agent.started.sockets).toBe(0);
      const text = await (await fetch(`${agent.url}/metrics`)).text();
      expect(metric(text, 'tcp_chrono_attach_sockets_skipped_total', { reason: 'timestamping' })).toBe(1);
      expect((await stopAgent(agent)).code).toBe(0);
      expect(targetSockets(t.child.pid!).find((x) => x.fd === s!.fd)?.timestamping).toBe(APP_FLAGS);
    } finally {
      kill(t.child);
    }
  });

  it('turns off timestamping left by a killed agent (--cleanup-only, and on the next attach)', async () => {
    const t = await startTarget();
    try {
      const c1 = await connect(t.ports.paced);
      const c2 = await connect(t.ports.idle);
      clients.push(c1, c2);
      await sleep(100);
      const agent = await startAgent(t.child.pid!, ['--interval', '200ms']);
      await sleep(300);
      await stopAgent(agent, 'SIGKILL');
      const left = targetSockets(t.child.pid!).filter((x) => x.state === 1);
      expect(left.every((x) => (x.timestamping & OPT_RX_FILTER) !== 0)).toBe(true);

      // The next agent, attached to the paced port only, adopts that socket and cleans the idle one.
      const next = await startAgent(t.child.pid!, ['--interval', '200ms', '--port', String(t.ports.paced)]);
      await sleep(300);
      const text = await (await fetch(`${next.url}/metrics`)).text();
      expect(metric(text, 'tcp_chrono_attach_stale_sockets_total')).toBe(2);
      expect(metric(text, 'tcp_chrono_attach_sockets')).toBe(1);
      const idleNow = targetSockets(t.child.pid!).find((x) => x.localPort === t.ports.idle);
      expect(idleNow?.timestamping).toBe(0);
      await stopAgent(next, 'SIGKILL');

      const r = spawn('node', [join(import.meta.dirname, '../../dist/agent/cli/main.js'), 'attach', '--pid', String(t.child.pid!), '--cleanup-only'], { stdio: ['ignore', 'pipe', 'inherit'] });
      let out = '';
      r.stdout.on('data', (d: Buffer) => (out += d.toString()));
      const [code] = (await once(r, 'exit')) as [number];
      expect(code).toBe(0);
      expect(out).toContain('"staleSockets":1');
      for (const s of targetSockets(t.child.pid!).filter((x) => x.state === 1)) expect([s.timestamping, s.queued]).toEqual([0, 0]);
      t.child.kill('SIGUSR2');
      await sleep(200);
      expect(await cpuOver(t.child.pid!, 700)).toBeLessThan(0.3);
    } finally {
      kill(t.child);
    }
  });
  it('exits on its own (0) when the target exits', async () => {
    const t = await startTarget();
    const c = await connect(t.ports.paced);
    clients.push(c);
    await sleep(100);
    const agent = await startAgent(t.child.pid!, ['--interval', '200ms']);
    expect(agent.started.sockets).toBe(1);
    const exited = new Promise<number | null>((r) => agent.child.once('exit', (code) => r(code)));
    t.child.kill('SIGKILL');
    const t0 = performance.now();
    expect(await exited).toBe(0);
    expect(performance.now() - t0).toBeLessThan(3000);
    const line = agent.lines.all.find((l) => l.includes('"msg":"detached"'));
    expect(JSON.parse(line!)).toMatchObject({ reason: 'target-exit' });
  });
});
