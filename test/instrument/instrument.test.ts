// instrument() against the real kernel over loopback: real sockets, real
// SO_TIMESTAMPING records, real chronographs.
import { once } from 'node:events';
import net from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { instrument, type ChunkRecord } from '../../agent/index.js';
import { native } from '../../agent/native.js';
import { collect, connect, listen, portOf, sleep, slowReader } from '../helpers/loopback.js';

const cleanup: Array<() => void> = [];
afterEach(() => {
  while (cleanup.length > 0) cleanup.pop()!();
});

const KiB = 1024;
const MiB = 1024 * KiB;
const SIZES = [1 * KiB, 4 * MiB, 64 * KiB, 3 * KiB, 1 * MiB, 17, 256 * KiB, 2 * MiB, 8 * KiB, 1 * KiB, 512 * KiB, 4 * MiB];

async function drainingServer(host: '127.0.0.1' | '::1'): Promise<net.Server> {
  const server = await listen(host, (s) => s.resume());
  cleanup.push(() => server.close());
  return server;
}

for (const host of ['127.0.0.1', '::1'] as const) {
  describe(`chunks over ${host}`, () => {
    it('N writes of mixed sizes give exactly N chunk records, in order, with ordered times', async () => {
      const server = await drainingServer(host);
      const sock = await connect(host, portOf(server));
      cleanup.push(() => sock.destroy());
      const probe = instrument(sock, { sndRecords: true });
      const done = collect<ChunkRecord>(probe, 'chunk', SIZES.length, 20_000);
      const stalls: ChunkRecord[] = [];
      probe.on('stall', (c) => stalls.push(c));
      for (const n of SIZES) sock.write(Buffer.alloc(n, 7));
      const chunks = await done;
      expect(stalls).toEqual([]);
      expect(chunks.map((c) => c.id)).toEqual(SIZES.map((_, i) => i));
      expect(chunks.map((c) => c.bytes)).toEqual(SIZES);
      let offset = 0;
      for (const c of chunks) {
        expect(c.offset).toBe(offset);
        offset += c.bytes;
        expect(c.writeTime).toBeLessThanOrEqual(c.lastWriteTime);
        expect(c.schedTime).toBeDefined();
        expect(c.sndTime).toBeDefined();
        expect(c.ackTime).toBeDefined();
        expect(c.lastWriteTime).toBeLessThanOrEqual(c.schedTime!);
        expect(c.schedTime!).toBeLessThanOrEqual(c.sndTime!);
        expect(c.sndTime!).toBeLessThanOrEqual(c.ackTime!);
        expect(c.deliveryTime).toBeCloseTo(c.ackTime! - c.writeTime, 9);
        expect(c.stalled).toBe(false);
      }
      // Wall clock sanity: the kernel's CLOCK_REALTIME stamps are within seconds of ours.
      expect(Math.abs(chunks[0]!.ackTime! - Date.now() / 1000)).toBeLessThan(30);
      expect(probe.stats().bytesWritten).toBe(offset);
      probe.close();
    });
  });
}

describe('classification on loopback', () => {
  it('a slow reader with a small receive buffer makes chunks rwnd-limited', async () => {
    const chunks: ChunkRecord[] = [];
    let probeClosed: Promise<unknown> | undefined;
    const total = 6 * 128 * KiB;
    const server = await listen('127.0.0.1', (s) => {
      const probe = instrument(s);
      probe.on('chunk', (c) => chunks.push(c));
      probeClosed = once(probe, 'close');
      for (let i = 0; i < 6; i++) s.write(Buffer.alloc(128 * KiB, 1));
      s.end();
    });
    cleanup.push(() => server.close());
    // About 800 KB/s through a 4 KiB window: roughly one second of rwnd stall.
    const reader = slowReader('127.0.0.1', portOf(server), { rcvbuf: 4096, chunk: 4096, pause: 0.005, total, limitSeconds: 20 });
    cleanup.push(() => reader.kill());
    const [code] = await once(reader, 'exit');
    expect(code).toBe(0);
    await probeClosed;
    expect(chunks).toHaveLength(6);
    const rwnd = chunks.filter((c) => c.limit === 'rwnd');
    expect(rwnd.length).toBeGreaterThanOrEqual(5);
    for (const c of rwnd) expect(c.rwndLimited / c.deliveryTime).toBeGreaterThan(0.5);
  });

  it('a unit written in small pieces with pauses is app-limited', async () => {
    const server = await drainingServer('127.0.0.1');
    const sock = await connect('127.0.0.1', portOf(server));
    cleanup.push(() => sock.destroy());
    const probe = instrument(sock);
    const done = collect<ChunkRecord>(probe, 'chunk', 4, 20_000);
    for (let u = 0; u < 4; u++) {
      probe.unit('live');
      for (let i = 0; i < 8; i++) {
        sock.write(Buffer.alloc(1 * KiB));
        await sleep(15);
      }
    }
    probe.endUnit();
    const chunks = await done;
    for (const c of chunks) {
      expect(c.label).toBe('live');
      expect(c.bytes).toBe(8 * KiB);
      expect(c.limit).toBe('app');
      expect(c.appLimited / c.deliveryTime).toBeGreaterThan(0.8);
    }
    probe.close();
  });
});

describe('chunk starts', () => {
  it('chunks written back to back share one TCP_INFO read, each reads SO_SNDBUF, and a later chunk reads TCP_INFO again', async () => {
    const server = await drainingServer('127.0.0.1');
    const sock = await connect('127.0.0.1', portOf(server));
    cleanup.push(() => sock.destroy());
    const fd = (sock as unknown as { _handle: { fd: number } })._handle.fd;
    // Count this socket's reads through the addon's own functions (shared: put back after).
    const n = native();
    const { tcpInfo, getSockoptInt } = n;
    const reads = { tcpInfo: 0, sndbuf: 0 };
    n.tcpInfo = (f) => {
      if (f === fd) reads.tcpInfo++;
      return tcpInfo(f);
    };
    n.getSockoptInt = (f, level, name) => {
      if (f === fd && name === 7 /* SO_SNDBUF */) reads.sndbuf++;
      return getSockoptInt(f, level, name);
    };
    cleanup.push(() => Object.assign(n, { tcpInfo, getSockoptInt }));
    const probe = instrument(sock);
    const done = collect<ChunkRecord>(probe, 'chunk', 11, 10_000);
    for (let i = 0; i < 10; i++) sock.write(Buffer.alloc(1024, i));
    const backToBack = { ...reads };
    await sleep(5); // past the 0.5 ms a read is reused for
    sock.write(Buffer.alloc(1024, 10));
    const chunks = await done;
    probe.close();
    expect(backToBack.sndbuf).toBe(10);
    expect(backToBack.tcpInfo).toBeGreaterThanOrEqual(1);
    expect(backToBack.tcpInfo).toBeLessThan(5); // one, unless the loop was preempted
    expect(reads.tcpInfo).toBeGreaterThan(backToBack.tcpInfo);
    expect(chunks.map((c) => c.bytes)).toEqual(Array(11).fill(1024));
    for (const c of chunks) expect(c.busy).toBeGreaterThanOrEqual(0);
  });
});

describe('lifecycle', () => {
  it('refuses a socket that is not connected, with a sentence that says so', () => {
    expect(() => instrument(new net.Socket())).toThrow(/connected TCP net.Socket/);
  });

  it('close() turns timestamping off, leaves the error queue empty and the loop idle', async () => {
    const server = await drainingServer('127.0.0.1');
    const sock = await connect('127.0.0.1', portOf(server));
    cleanup.push(() => sock.destroy());
    const fd = (sock as unknown as { _handle: { fd: number } })._handle.fd;
    const probe = instrument(sock);
    let after = 0;
    const done = collect<ChunkRecord>(probe, 'chunk', 50, 10_000);
    for (let i = 0; i < 50; i++) sock.write(Buffer.alloc(16 * KiB));
    await done;
    // Flag a last write, then close before its ACK can be drained.
    sock.write(Buffer.alloc(64 * KiB));
    probe.on('chunk', () => after++);
    probe.close();
    expect(native().getTimestamping(fd)).toBe(0);
    // Writes after close() get no records at all, and late records are drained for us.
    for (let i = 0; i < 20; i++) sock.write(Buffer.alloc(16 * KiB));
    await sleep(200);
    expect(native().drainErrqueue(fd)).toBeNull();
    const cpu0 = process.cpuUsage();
    const t0 = performance.now();
    await sleep(500);
    const cpu = process.cpuUsage(cpu0);
    const busy = (cpu.user + cpu.system) / 1000 / (performance.now() - t0);
    // A loop spinning on EPOLLERR would burn a whole core here.
    expect(busy).toBeLessThan(0.3);
    expect(after).toBe(0);
  });

  it('socket close releases the probe and reports unacked chunks as stalls', async () => {
    const server = await listen('127.0.0.1', () => {
      /* never reads */
    });
    cleanup.push(() => server.close());
    const sock = await connect('127.0.0.1', portOf(server));
    const probe = instrument(sock, { stallAfterMs: 60_000 });
    const stalls: ChunkRecord[] = [];
    probe.on('stall', (c) => stalls.push(c));
    sock.write(Buffer.alloc(8 * MiB)); // far beyond both buffers: cannot be acked
    await sleep(300);
    expect(probe.stats().pending).toBe(1);
    const closed = once(probe, 'close');
    sock.destroy();
    await closed;
    expect(stalls).toHaveLength(1);
    expect(stalls[0]!.stalled).toBe(true);
    expect(stalls[0]!.ackTime).toBeUndefined();
  });
});

describe('unitsOnly: chunks from unit boundaries, no write hooked', () => {
  for (const finalWritesOnly of [false, true]) {
    it(`units are chunks, bytes outside them are none${finalWritesOnly ? ' (records only from finishing())' : ''}`, async () => {
      const server = await drainingServer('127.0.0.1');
      const sock = await connect('127.0.0.1', portOf(server));
      cleanup.push(() => sock.destroy());
      const probe = instrument(sock, { unitsOnly: true, finalWritesOnly });
      expect(Object.getOwnPropertyNames(sock)).not.toContain('write');
      const chunks: ChunkRecord[] = [];
      const stalls: ChunkRecord[] = [];
      probe.on('chunk', (c) => chunks.push(c));
      probe.on('stall', (c) => stalls.push(c));
      sock.write(Buffer.alloc(100)); // outside any unit: no chunk
      const units = [3 * 64 * KiB, 17, 1 * MiB + 3];
      for (const [i, n] of units.entries()) {
        probe.unit(`u${i}`);
        sock.write(Buffer.alloc(n - Math.floor(n / 2)));
        await sleep(5);
        probe.finishing();
        sock.write(Buffer.alloc(Math.floor(n / 2)));
        probe.endUnit();
        // The next unit starts once this one is acked: its first bytes, in the
        // same writev or appended by the kernel to this unit's unsent last
        // segment, would key the record past this unit's end.
        for (let t = 0; t < 400 && chunks.length + stalls.length <= i; t++) await sleep(25);
      }
      expect(stalls).toEqual([]);
      expect(chunks.map((c) => c.label)).toEqual(['u0', 'u1', 'u2']);
      expect(chunks.map((c) => c.bytes)).toEqual(units);
      let offset = 100;
      for (const c of chunks) {
        expect(c.offset).toBe(offset);
        offset += c.bytes;
        expect(c.exact, `${c.label}: ${JSON.stringify(c)}`).toBe(true);
        expect(c.writeTime).toBeLessThan(c.lastWriteTime);
        expect(c.lastWriteTime).toBeLessThanOrEqual(c.schedTime!);
      }
      expect(probe.stats().bytesWritten).toBe(offset);
      expect(probe.stats().chunks).toBe(3);
      probe.close();
    });
  }
});
