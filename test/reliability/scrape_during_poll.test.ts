// A scrape never holds the poll loop: `watch` polls every 100 ms while 3 000
// loopback connections are tracked with per-connection series for all of
// them (a /metrics body of ~2.5 MB), and four clients scrape /metrics back
// to back for 3 s. Renders run on the loop the polls run on: before the fix
// each was one synchronous stretch, four of them queued pushed polls past
// their slots and the phase-aligned schedule skipped them (24-27 polls of 32).
// Asserted: tcp_chrono_agent_polls_total grows by the elapsed time divided
// by the interval, less 2 (edges of the window), and /healthz, sampled
// throughout, never reports a last poll older than 2 intervals.
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLI, ensureBuilt } from '../helpers/cli.js';
import { stopChild, waitForLine } from '../lab/lab.js';

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

  it('back-to-back scrapes of a large /metrics do not delay or skip polls', async () => {
    const scrape = async (): Promise<string> => {
      const r = await fetch(`http://${AGENT}/metrics`, { signal: AbortSignal.timeout(10_000) });
      expect(r.status).toBe(200);
      return r.text();
    };
    await scrape(); // warm-up (the first render compiles the code)
    // Both ends of the window are taken when a scrape is sent: its render reads
    // polls_total a little later, at about the same offset each time.
    const t0 = performance.now();
    const first = await scrape();
    const series = first.split('\n').filter((l) => l.startsWith('tcp_chrono_connection_busy_seconds_total{')).length;
    expect(series).toBe(CONNECTIONS);

    const p0 = pollsTotal(first);
    let stop = false;
    let scrapes = 0;
    let maxAge = 0;
    const scrapers = Array.from({ length: 4 }, async () => {
      while (!stop) {
        await scrape();
        scrapes++;
      }
    });
    const health = (async () => {
      while (!stop) {
        const h = (await (await fetch(`http://${AGENT}/healthz`, { signal: AbortSignal.timeout(10_000) })).json()) as { lastPollAgeSeconds: number };
        maxAge = Math.max(maxAge, h.lastPollAgeSeconds);
        await new Promise((r) => setTimeout(r, 20));
      }
    })();
    await new Promise((r) => setTimeout(r, 3000));
    stop = true;
    await Promise.all([...scrapers, health]);
    const seconds = (performance.now() - t0) / 1000;
    const last = await scrape();
    const polls = pollsTotal(last) - p0;
    const expected = seconds / INTERVAL_S;
    console.log(
      `scrape during polls: ${scrapes} scrapes of ${(first.length / 1e6).toFixed(1)} MB in ${seconds.toFixed(2)} s; ` +
        `${polls} polls of ${expected.toFixed(1)} expected; max /healthz last-poll age ${(maxAge * 1000).toFixed(0)} ms`,
    );
    expect(scrapes).toBeGreaterThanOrEqual(6);
    expect(polls).toBeGreaterThanOrEqual(Math.floor(expected) - 2);
    expect(maxAge).toBeLessThan(2 * INTERVAL_S);
  }, 60_000);
});
