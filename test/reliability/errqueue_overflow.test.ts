// Error-queue overflow in instrument(): the queue is charged to the socket's
// receive memory, so when the host's event loop is starved (here: a busy loop
// of 300 ms writing a flagged 1 KiB chunk every 0.3 ms to a reader in another
// process), about 157 records fill the 128 KiB budget and the kernel drops
// the rest silently. Asserted: the probe counts them (stats().lostRecords),
// the chunks that lost their ACK record are the inexact ones, and the same
// writes with the loop free lose nothing. Everything is bounded in time.
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import net from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { instrument, type ChunkRecord, type Probe } from '../../agent/index.js';
import { ChunkTracker } from '../../agent/model/chunks.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function until(cond: () => boolean, ms: number): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond() && Date.now() < deadline) await sleep(10);
}

describe('error-queue overflow (instrument)', () => {
  let server: net.Server | undefined;
  let reader: ChildProcess | undefined;
  let sock: net.Socket | undefined;

  afterEach(() => {
    sock?.destroy();
    reader?.kill('SIGKILL');
    server?.close();
  });

  // The loop blocked for 300 ms writing a flagged 1 KiB chunk every 0.3 ms; returns how many.
  function starvedWrites(buf: Buffer): number {
    let writes = 0;
    const t0 = performance.now();
    let next = t0;
    while (performance.now() - t0 < 300) {
      if (performance.now() >= next) {
        sock!.write(buf);
        writes++;
        next += 0.3;
      }
    }
    return writes;
  }

  async function connected(stallAfterMs?: number): Promise<{ probe: Probe; chunks: ChunkRecord[] }> {
    server = net.createServer();
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const port = (server.address() as net.AddressInfo).port;
    // The reader runs in its own process: it keeps acking while this loop is blocked.
    reader = spawn(process.execPath, ['-e', `const s=require('net').connect(${port},'127.0.0.1');s.on('data',()=>{});s.on('error',()=>{});setTimeout(()=>process.exit(0),30000)`], {
      stdio: 'ignore',
    });
    const [s] = (await Promise.race([once(server, 'connection'), sleep(5000).then(() => [undefined])])) as [net.Socket | undefined];
    expect(s).toBeDefined();
    sock = s!;
    sock.setNoDelay(true);
    const probe = instrument(sock, stallAfterMs !== undefined ? { stallAfterMs } : {});
    const chunks: ChunkRecord[] = [];
    probe.on('chunk', (c) => chunks.push(c));
    return { probe, chunks };
  }

  it('a starved event loop: the dropped ACK records are counted, never silent', async () => {
    const { probe, chunks } = await connected();
    const buf = Buffer.alloc(1024, 1);
    let writes = starvedWrites(buf);
    await sleep(100);
    // Later writes, spaced: their ACK records reveal the gap.
    for (let i = 0; i < 5; i++) {
      sock!.write(buf);
      writes++;
      await sleep(20);
    }
    await until(() => chunks.length === writes, 5000);
    const st = probe.stats();
    console.log(`errqueue overflow: ${writes} flagged writes, ${st.chunks} chunks, ${st.inexact} inexact, ${st.lostRecords} lost records`);
    expect(st.chunks).toBe(writes);
    expect(st.pending).toBe(0);
    // Far more records than the queue holds were requested: most ACKs were lost.
    expect(writes).toBeGreaterThan(400);
    expect(st.lostRecords).toBeGreaterThan(writes / 2);
    // Each lost ACK left its chunk matched to a later record (inexact), and only those.
    expect(st.lostRecords).toBeLessThanOrEqual(st.inexact);
    expect(st.lostRecords).toBeGreaterThanOrEqual(0.9 * st.inexact);
    // The spaced writes after the starvation got their own records.
    expect(chunks.slice(-5).every((c) => c.exact)).toBe(true);
    probe.close();
  }, 20_000);

  it('records lost at the end, then quiet: acked chunks are counted lost, not reported as stalls', async () => {
    const { probe, chunks } = await connected(500);
    const stalls: ChunkRecord[] = [];
    probe.on('stall', (c) => stalls.push(c));
    const buf = Buffer.alloc(1024, 1);
    const t0 = performance.now();
    const writes = starvedWrites(buf);
    // Still blocked while the last ACKs arrive: the queue is full, they are dropped.
    while (performance.now() - t0 < 500);
    // No later write: nothing reveals the tail's lost ACK records but the
    // kernel's own count (nothing unacked) once stallAfter (500 ms) has passed.
    await until(() => probe.stats().pending === 0, 5000);
    const st = probe.stats();
    console.log(`errqueue overflow, quiet after: ${writes} writes, ${st.chunks} chunks, ${st.lostRecords} lost records, ${stalls.length} stalls`);
    expect(st.pending).toBe(0);
    expect(stalls).toHaveLength(0);
    expect(chunks.length).toBe(st.chunks);
    // The tail never got a record: those chunks are lost, every write is accounted for.
    expect(st.chunks).toBeLessThan(writes);
    expect(st.lostRecords).toBeGreaterThanOrEqual(writes - st.chunks);
    probe.close();
  }, 20_000);

  it('records lost at the end, then the connection closes: no stall either', async () => {
    const { probe, chunks } = await connected(60_000); // stallAfter out of reach: only the close decides
    const stalls: ChunkRecord[] = [];
    probe.on('stall', (c) => stalls.push(c));
    const buf = Buffer.alloc(1024, 1);
    const t0 = performance.now();
    const writes = starvedWrites(buf);
    while (performance.now() - t0 < 500);
    // The reader answers our FIN with its own: the socket closes with everything acked.
    sock!.end();
    await Promise.race([once(probe, 'close'), sleep(5000)]);
    const st = probe.stats();
    console.log(`errqueue overflow, closed after: ${writes} writes, ${st.chunks} chunks, ${st.lostRecords} lost records, ${stalls.length} stalls`);
    expect(st.pending).toBe(0);
    expect(stalls).toHaveLength(0);
    expect(chunks.length).toBe(st.chunks);
    expect(st.chunks).toBeLessThan(writes);
    expect(st.lostRecords).toBeGreaterThanOrEqual(writes - st.chunks);
  }, 20_000);

  it('control: the same writes with the loop free lose nothing', async () => {
    const { probe, chunks } = await connected();
    const buf = Buffer.alloc(1024, 1);
    const writes = 1000;
    for (let i = 0; i < writes; i++) {
      sock!.write(buf);
      if (i % 10 === 9) await new Promise((r) => setImmediate(r)); // the drainer runs between bursts
    }
    await until(() => chunks.length === writes, 5000);
    const st = probe.stats();
    console.log(`errqueue, loop free: ${writes} flagged writes, ${st.chunks} chunks, ${st.inexact} inexact, ${st.lostRecords} lost records`);
    expect(st.chunks).toBe(writes);
    expect(st.lostRecords).toBe(0);
    probe.close();
  }, 20_000);
});

describe('lost-record rule (ChunkTracker, synthetic records)', () => {
  const snap = () => ({ busy: 0, rwndLimited: 0, sndbufLimited: 0, totalRetrans: 0 });
  const ack = (key: number) => ({ fd: 3, kind: 'ack' as const, key, time: 1, truncated: false });
  function tracker(): ChunkTracker {
    const t = new ChunkTracker({ stallAfter: 10, maxPending: 100 }, { chunk: () => undefined, stall: () => undefined });
    for (let i = 0; i < 4; i++) {
      t.write(100, 1, true, snap);
      t.expectAck(t.written - 1);
    }
    return t;
  }

  it('a gap after a drain that found the queue full is counted', () => {
    const t = tracker();
    t.onRecords([ack(99)], snap, true);
    t.onRecords([ack(399)], snap, false);
    expect(t.counters.lostRecords).toBe(2);
    expect(t.counters.inexact).toBe(2);
  });

  it('a gap with no full queue is a merged write, not a loss', () => {
    const t = tracker();
    t.onRecords([ack(99)], snap, false);
    t.onRecords([ack(399)], snap, false);
    expect(t.counters.lostRecords).toBe(0);
    expect(t.counters.inexact).toBe(2);
  });

  it('at the close, with everything acknowledged: a flagged chunk without its record lost it; an unflagged one stays a stall', () => {
    const stalls: number[] = [];
    const t = new ChunkTracker({ stallAfter: 10, maxPending: 100 }, { chunk: () => undefined, stall: (c) => stalls.push(c.id) });
    t.write(100, 1, true, snap);
    t.expectAck(99); // flagged: a record was asked for
    t.write(100, 1, true, snap); // never flagged (a response cut short before its final write)
    t.flush(2, undefined, 200); // the kernel acknowledged both chunks
    expect(t.counters.lostRecords).toBe(1);
    expect(stalls).toEqual([1]);
  });

  it('records of a partial write (keyed inside a hand-over) are not gaps', () => {
    const t = tracker();
    t.onRecords([ack(49), ack(99), ack(150), ack(199), ack(299), ack(399)], snap, true);
    expect(t.counters.lostRecords).toBe(0);
    expect(t.counters.inexact).toBe(0);
  });
});
