// DelayLab: the forwarder gives a steady RTT of twice the one-way delay, TCP
// crosses it, and teardown leaves nothing behind.
import { execFileSync } from 'node:child_process';
import { once } from 'node:events';
import type { Socket } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { native } from '../../agent/native.js';
import { parseTcpInfo } from '../../agent/parse/tcp_info.js';
import { DelayLab, sweepStaleDelayLabs } from '../../lab/delay.js';

const labs: DelayLab[] = [];
afterEach(async () => {
  while (labs.length > 0) await labs.pop()!.teardown();
});

async function lab(opts: Parameters<typeof DelayLab.create>[0]): Promise<DelayLab> {
  const l = await DelayLab.create(opts);
  labs.push(l);
  return l;
}

const netnsList = (): string[] =>
  execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' })
    .split('\n')
    .map((l) => l.split(' ')[0] ?? '');

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
};

describe('DelayLab', () => {
  for (const delayMs of [20, 50]) {
    it(`${delayMs} ms each way gives a steady RTT of about ${2 * delayMs} ms`, async () => {
      const l = await lab({ delayMs });
      const rtts = await l.pingRtt(20, 20);
      expect(rtts).toHaveLength(20);
      const target = 2 * delayMs;
      // Every probe, not only the median, within ±25 % of 2 × delay.
      for (const r of rtts) {
        expect(r).toBeGreaterThan(target * 0.75);
        expect(r).toBeLessThan(target * 1.25);
      }
      // Accurate and steady: median within 5 %, 10th to 90th percentile within 5 % of the target.
      const sorted = [...rtts].sort((a, b) => a - b);
      expect(Math.abs(median(rtts) - target)).toBeLessThan(0.05 * target);
      expect(sorted[17]! - sorted[2]!).toBeLessThan(0.05 * target);
      console.log(`delay ${delayMs} ms: RTT median ${median(rtts).toFixed(2)} ms, min ${Math.min(...rtts).toFixed(2)}, max ${Math.max(...rtts).toFixed(2)}`);
    });
  }

  it('TCP crosses it: a greedy reader gets every byte, the kernel measures the RTT, the forwarder keeps time', async () => {
    const l = await lab({ delayMs: 20 });
    const server = await l.listen('server');
    const port = (server.address() as { port: number }).port;
    const total = 2 * 1024 * 1024;
    const accepted = once(server, 'connection');
    const reader = l.greedyReader(port, 10);
    const [sock] = (await accepted) as [Socket];
    sock.resume();
    sock.write(Buffer.alloc(total, 1));
    let out = '';
    reader.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    await new Promise((r) => sock.once('drain', r));
    await new Promise((r) => setTimeout(r, 200));
    const info = parseTcpInfo(native().tcpInfo((sock as unknown as { _handle: { fd: number } })._handle.fd));
    console.log(`kernel min_rtt ${(info.minRtt! * 1000).toFixed(2)} ms, srtt ${(info.rtt * 1000).toFixed(2)} ms`);
    expect(info.minRtt! * 1000).toBeGreaterThan(40 * 0.75);
    expect(info.minRtt! * 1000).toBeLessThan(40 * 1.25);
    // Smoothed RTT under load: no queue builds up in the forwarder.
    expect(info.rtt * 1000).toBeLessThan(40 * 1.25);
    sock.end();
    const [code] = await once(reader, 'exit');
    expect(code).toBe(0);
    const got = JSON.parse(out) as { bytes: number; seconds: number };
    expect(got.bytes).toBe(total);
    server.close();
    await l.teardown();
    const c = l.forwarderCounters!;
    expect(c.forwarded).toBeGreaterThan(total / 1500);
    expect(c.sendErrors).toBe(0);
    // The forwarder kept its schedule: its single worst frame left less than half
    // the delay late (seen: 0.3–2.6 ms usually, 5.5 ms once in a CI run on 2
    // vCPUs with sender and reader on the same cores); the steadiness that
    // matters to the tests, the kernel's own RTT under load, is asserted above.
    expect(c.maxLateUs).toBeLessThan(0.5 * 20_000);
    expect(c.maxReadLagUs).toBeLessThan(0.5 * 20_000);
  });

  it('two labs coexist, and teardown deletes their namespaces', async () => {
    const a = await lab({ delayMs: 5 });
    const b = await lab({ delayMs: 5 });
    expect(a.server.ns).not.toBe(b.server.ns);
    const names = netnsList();
    for (const ns of [...a.namespaces, ...b.namespaces]) expect(names).toContain(ns);
    const [ra, rb] = await Promise.all([a.pingRtt(3, 10), b.pingRtt(3, 10)]);
    expect(ra).toHaveLength(3);
    expect(rb).toHaveLength(3);
    await a.teardown();
    await b.teardown();
    const after = netnsList();
    for (const ns of [...a.namespaces, ...b.namespaces]) expect(after).not.toContain(ns);
  });

  it('the sweep deletes namespaces of dead runs only', async () => {
    // A pid that is not running: a child that has exited.
    const dead = execFileSync('sh', ['-c', 'echo $$'], { encoding: 'utf8' }).trim();
    const stale = `tcdm-${dead}-abcdef`;
    const mine = `tcdm-${process.pid}-fedcba`;
    execFileSync('ip', ['netns', 'add', stale]);
    execFileSync('ip', ['netns', 'add', mine]);
    try {
      const swept = sweepStaleDelayLabs();
      expect(swept).toContain(stale);
      expect(netnsList()).not.toContain(stale);
      expect(netnsList()).toContain(mine);
    } finally {
      for (const ns of [stale, mine]) {
        try {
          execFileSync('ip', ['netns', 'del', ns], { stdio: 'ignore' });
        } catch {
          // gone
        }
      }
    }
  });

  it('a rate shapes the bottleneck', async () => {
    const l = await lab({ delayMs: 10, rate: '20mbit' });
    const server = await l.listen('server');
    const port = (server.address() as { port: number }).port;
    const total = 3 * 1024 * 1024;
    server.once('connection', (s) => {
      s.resume();
      s.end(Buffer.alloc(total, 2));
    });
    const reader = l.greedyReader(port, 10);
    let out = '';
    reader.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    const [code] = await once(reader, 'exit');
    expect(code).toBe(0);
    server.close();
    const got = JSON.parse(out) as { bytes: number; seconds: number };
    expect(got.bytes).toBe(total);
    const mbit = (got.bytes * 8) / got.seconds / 1e6;
    console.log(`shaped at 20mbit: ${mbit.toFixed(1)} Mbit/s`);
    expect(mbit).toBeLessThan(21);
    expect(mbit).toBeGreaterThan(10);
  });
});
