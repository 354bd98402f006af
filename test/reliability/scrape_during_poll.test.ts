// A scrape never holds the poll loop: `watch` polls every 100 ms while 3 000
// loopback connections are tracked with per-connection series for all of
// them (a /metrics body of ~2.5 MB), and four clients scrape /metrics back
// to back for 3 s. Renders run on the loop the polls run on: before the fix
// each was one synchronous stretch, four of them queued pushed polls past
// their slots and the phase-aligned schedule skipped them (24-27 polls of 32).
// The same for /api/connections of the whole table (~2.2 MB of JSON): ranked
// and written in slices (agent/export/query.ts); in one go (sort, map,
// res.json), four clients made watch skip about half the polls (17 polls in
// 33 slots, on a loaded machine).
// Asserted: tcp_chrono_agent_polls_total grows by the elapsed time divided
// by the interval, less 2 (edges of the window), and /healthz, sampled
// throughout, never reports a last poll older than 2 intervals. Time the
// agent's main thread spent waiting for a CPU (its run-queue wait, from
// /proc/PID/task/PID/schedstat: other processes on a loaded machine) is not
// the agent's doing: it is taken out of the elapsed time and allowed in the age.
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLI, ensureBuilt } from '../helpers/cli.js';
import { stopChild, waitForLine } from '../../lab/lab.js';

const AGENT = '127.0.0.1:9483';
const CONNECTIONS = 3000;
const INTERVAL_S = 0.1;

function pollsTotal(body: string): number {
  const m = /^tcp_chrono_agent_polls_total (\S+)$/m.exec(body);
  expect(m).not.toBeNull();
  return Number(m![1]);
}

describe('a scrape during polls', () => {
  let server: net.Server;
  const sockets: net.Socket[] = [];
  let agent: ChildProcess | undefined;

  beforeAll(async () => {
    ensureBuilt();
    server = net.createServer((c) => {
      c.on('error', () => undefined);
      c.write('x');
    });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const port = (server.address() as net.AddressInfo).port;
    for (let i = 0; i < CONNECTIONS; i += 200) {
      await Promise.all(
        Array.from({ length: Math.min(200, CONNECTIONS - i) }, async () => {
          const s = net.connect(port, '127.0.0.1');
          s.on('data', () => undefined);
          s.on('error', () => undefined);
          sockets.push(s);
          await once(s, 'connect');
        }),
      );
    }
    agent = spawn(
      'node',
      [CLI, 'watch', '--listen', AGENT, '--interval', `${INTERVAL_S * 1000}ms`, '--port', String(port), '--max-connections', '100000', '--owners', 'off', '--destroy-feed', 'off'],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    await waitForLine(agent, /"msg":"watching"/);
  });

  afterAll(async () => {
    if (agent !== undefined) await stopChild(agent);
    for (const s of sockets) s.destroy();
    server.close();
  });

  /** Seconds the agent's main thread has waited on a run queue (runnable, no CPU given). */
  const runQueueWait = (): number => {
    const pid = agent!.pid!;
    return Number(readFileSync(`/proc/${pid}/task/${pid}/schedstat`, 'utf8').trim().split(/\s+/)[1]) / 1e9;
  };

  /**
   * Four clients fetch `path` back to back for 3 s while /healthz is sampled;
   * returns the first body and asserts the polls went on.
   */
  async function underLoad(what: string, path: string, check: (first: string) => void): Promise<void> {
    const get = async (): Promise<string> => {
      const r = await fetch(`http://${AGENT}${path}`, { signal: AbortSignal.timeout(20_000) });
      expect(r.status).toBe(200);
      return r.text();
    };
    // Under load the body is only counted (decoding it would take CPU from the agent).
    const load = async (): Promise<number> => {
      const r = await fetch(`http://${AGENT}${path}`, { signal: AbortSignal.timeout(20_000) });
      expect(r.status).toBe(200);
      return (await r.arrayBuffer()).byteLength;
    };
    const polls = async (): Promise<number> => pollsTotal(await (await fetch(`http://${AGENT}/metrics`, { signal: AbortSignal.timeout(20_000) })).text());
    await get(); // warm-up (the first request compiles the code)
    check(await get());
    // Both ends of the window are taken with a scrape of /metrics: its render
    // reads polls_total a little later, at about the same offset each time.
    const t0 = performance.now();
    const p0 = await polls();
    const w0 = runQueueWait();
    let stop = false;
    let requests = 0;
    let maxAge = 0;
    let bytes = 0;
    const clients = Array.from({ length: 4 }, async () => {
      while (!stop) {
        const n = await load();
        bytes += n;
        requests++;
      }
    });
    const health = (async () => {
      while (!stop) {
        const h = (await (await fetch(`http://${AGENT}/healthz`, { signal: AbortSignal.timeout(20_000) })).json()) as { lastPollAgeSeconds: number };
        maxAge = Math.max(maxAge, h.lastPollAgeSeconds);
        await new Promise((r) => setTimeout(r, 20));
      }
    })();
    await new Promise((r) => setTimeout(r, 3000));
    stop = true;
    await Promise.all([...clients, health]);
    const seconds = (performance.now() - t0) / 1000;
    const n = (await polls()) - p0;
    const waited = runQueueWait() - w0;
    const expected = (seconds - waited) / INTERVAL_S;
    console.log(
      `${what}: ${requests} requests of ${(bytes / Math.max(1, requests) / 1e6).toFixed(1)} MB in ${seconds.toFixed(2)} s; ` +
        `${n} polls of ${(seconds / INTERVAL_S).toFixed(1)} slots (${expected.toFixed(1)} expected: the agent waited ${(waited * 1000).toFixed(0)} ms for a CPU); ` +
        `max /healthz last-poll age ${(maxAge * 1000).toFixed(0)} ms`,
    );
    expect(requests).toBeGreaterThanOrEqual(6);
    expect(n).toBeGreaterThanOrEqual(Math.floor(expected) - 2);
    expect(maxAge).toBeLessThan(2 * INTERVAL_S + waited);
  }

  it('back-to-back scrapes of a large /metrics do not delay or skip polls', async () => {
    await underLoad('scrape during polls', '/metrics', (first) => {
      const series = first.split('\n').filter((l) => l.startsWith('tcp_chrono_connection_busy_seconds_total{')).length;
      expect(series).toBe(CONNECTIONS);
    });
  }, 60_000);

  it('back-to-back /api/connections of the whole table do not delay or skip polls', async () => {
    await underLoad('/api/connections during polls', '/api/connections?limit=100000', (first) => {
      const body = JSON.parse(first) as { total: number; connections: unknown[] };
      expect(body.total).toBe(CONNECTIONS);
      expect(body.connections).toHaveLength(CONNECTIONS);
    });
  }, 60_000);
});
