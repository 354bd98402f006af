// The HTTP guard's first-request deadline, in this process (real sockets on
// loopback): a client whose request arrived in time is never cut because
// the agent's event loop was held up past the deadline before reading it
// (a long render on a loaded machine did that: "fetch failed" in a CI run).
import { createServer } from 'node:http';
import { connect, type AddressInfo, type Socket } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { guardServer, rejected } from '../../agent/export/http_guard.js';

const cleanup: (() => void)[] = [];
afterEach(() => {
  for (const f of cleanup.splice(0)) f();
});

async function guarded(firstRequestTimeout: number): Promise<{ port: number; accepted: Promise<void> }> {
  const server = createServer((_req, res) => res.end('ok'));
  const guard = guardServer(server, { firstRequestTimeout, maxPerAddress: 8, maxWaiting: 8 });
  await new Promise<void>((r) => guard.listener.listen(0, '127.0.0.1', r));
  const accepted = new Promise<void>((r) => guard.listener.once('connection', () => r()));
  cleanup.push(() => {
    guard.dropAll();
    guard.listener.close();
  });
  return { port: (guard.listener.address() as AddressInfo).port, accepted };
}

/** What the client reads until the server closes or 2 s pass. */
function reply(s: Socket): Promise<string> {
  return new Promise((resolve) => {
    let got = '';
    s.on('data', (d) => (got += d));
    s.on('error', () => undefined);
    s.on('close', () => resolve(got));
    setTimeout(() => (s.destroy(), resolve(got)), 2000);
  });
}

const block = (ms: number): void => {
  const end = performance.now() + ms;
  while (performance.now() < end);
};

describe('http guard: the first-request deadline', () => {
  it('a request sent in time is served even when the loop was held past the deadline before reading it', async () => {
    const { port, accepted } = await guarded(0.2);
    const before = rejected.first_request_timeout;
    const s = connect(port, '127.0.0.1');
    cleanup.push(() => s.destroy());
    await Promise.all([accepted, new Promise((r) => s.once('connect', r))]);
    s.write('GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
    block(500); // the deadline passes with the request unread in the kernel's buffer
    const got = await reply(s);
    expect(got).toMatch(/^HTTP\/1\.1 200/);
    expect(rejected.first_request_timeout - before).toBe(0);
  });

  it('a client that sends nothing is still cut at the deadline, and counted', async () => {
    const { port, accepted } = await guarded(0.2);
    const before = rejected.first_request_timeout;
    const s = connect(port, '127.0.0.1');
    cleanup.push(() => s.destroy());
    await accepted;
    const t0 = performance.now();
    expect(await reply(s)).toBe('');
    const waited = performance.now() - t0;
    expect(waited).toBeGreaterThan(150);
    expect(waited).toBeLessThan(1500);
    expect(rejected.first_request_timeout - before).toBe(1);
  });
});
