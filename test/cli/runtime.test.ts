// The mode runtime (agent/cli/runtime.ts) in this process, with a mode made
// for the test (real HTTP server on loopback, real signals to this process):
// shared renders of /metrics, the 404 that names the routes, the start and
// stop lines, a stop that fails still gives the stop line and exit code 1, a
// listen error undoes the start. Every real mode runs through it in the mode
// tests (test/watch, test/proxy, test/attach, test/trace).
import { createServer, type Server } from 'node:net';
import { Writable } from 'node:stream';
import { afterEach, describe, expect, it } from 'vitest';
import { configureLog } from '../../agent/cli/log.js';
import { Registry } from 'prom-client';
import { serveMode, type ModeSpec } from '../../agent/cli/runtime.js';

const lines: Record<string, unknown>[] = [];
configureLog({
  format: 'json',
  stream: new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const l of chunk.toString('utf8').split('\n')) if (l !== '') lines.push(JSON.parse(l) as Record<string, unknown>);
      done();
    },
  }),
});

const waitFor = async (cond: () => boolean, ms = 5000): Promise<void> => {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('timed out waiting');
    await new Promise((r) => setTimeout(r, 10));
  }
};

function spec(over: Partial<ModeSpec> & { renders?: { n: number } }): ModeSpec {
  const renders = over.renders ?? { n: 0 };
  return {
    command: 'top', // keeps nothing; this test process has nothing to lose
    listen: { host: '127.0.0.1', port: 0 },
    listenFlag: '--listen',
    listenField: 'listen',
    security: {},
    metrics: {
      contentType: 'text/plain; version=0.0.4',
      registry: new Registry(),
      render: async () => {
        renders.n++;
        await new Promise((r) => setTimeout(r, 200));
        return `test_renders ${renders.n}\n`;
      },
    },
    health: () => ({ ok: true, mode: 'test' }),
    routes: (app) => app.get('/api/test', (_q, res) => res.json({ hello: 1 })),
    paths: ['/api/test'],
    startMessage: 'testing',
    startFields: () => ({ what: 'a test mode' }),
    degraded: ['a degraded feature'],
    abort: async () => undefined,
    stop: async () => ({ done: true }),
    ...over,
  };
}

const startLine = () => lines.find((l) => l.msg === 'testing');
const url = (path: string): string => {
  const u = String(startLine()!.listen);
  return `${u}${path}`;
};

afterEach(() => {
  lines.length = 0;
});

describe('serveMode', () => {
  it('serves the mode, shares one render between concurrent scrapes, names its routes in a 404, and stops on SIGTERM', async () => {
    const renders = { n: 0 };
    const run = serveMode(spec({ renders }));
    await waitFor(() => startLine() !== undefined);
    const s = startLine()!;
    expect(s).toMatchObject({ what: 'a test mode', auth: 'none', degraded: ['a degraded feature'] });
    expect(lines.some((l) => l.level === 'warn' && l.msg === 'a degraded feature')).toBe(true);

    const bodies = await Promise.all([1, 2, 3].map(() => fetch(url('/metrics')).then((r) => r.text())));
    expect(renders.n).toBe(1);
    expect(new Set(bodies)).toEqual(new Set(['test_renders 1\n']));
    expect(await (await fetch(url('/healthz'))).json()).toEqual({ ok: true, mode: 'test' });
    expect(await (await fetch(url('/api/test'))).json()).toEqual({ hello: 1 });
    const missing = await fetch(url('/nope'));
    expect(missing.status).toBe(404);
    expect(((await missing.json()) as { error: string }).error).toBe('not found: try /metrics, /healthz or /api/test');

    process.emit('SIGTERM', 'SIGTERM');
    expect(await run).toBe(0);
    expect(lines.at(-1)).toMatchObject({ msg: 'stopped', signal: 'SIGTERM', done: true });
  });

  it('a stop that fails is logged, still gives the stop line, and exits 1', async () => {
    const run = serveMode(spec({ stop: () => Promise.reject(new Error('the source would not stop')) }));
    await waitFor(() => startLine() !== undefined);
    process.emit('SIGINT', 'SIGINT');
    expect(await run).toBe(1);
    expect(lines.some((l) => l.level === 'error' && l.error === 'the source would not stop')).toBe(true);
    expect(lines.at(-1)).toMatchObject({ msg: 'stopped', signal: 'SIGINT' });
  });

  it('a mode may stop itself, with its own reason field and stop message', async () => {
    let stopNow: (why: string) => void = () => undefined;
    const run = serveMode(spec({ onStopRequest: (s) => (stopNow = s), stopMessage: 'detached', reasonField: 'reason' }));
    await waitFor(() => startLine() !== undefined);
    stopNow('target-exit');
    expect(await run).toBe(0);
    expect(lines.at(-1)).toMatchObject({ msg: 'detached', reason: 'target-exit' });
  });

  it('an address in use: the start is undone and the error names the flag', async () => {
    const taken: Server = createServer();
    await new Promise<void>((r) => taken.listen(0, '127.0.0.1', r));
    const port = (taken.address() as { port: number }).port;
    let aborted = false;
    try {
      await expect(
        serveMode(
          spec({
            listen: { host: '127.0.0.1', port },
            abort: async () => {
              aborted = true;
            },
          }),
        ),
      ).rejects.toThrow(`cannot listen on 127.0.0.1:${port}: the address is in use; choose another with --listen`);
      expect(aborted).toBe(true);
      expect(startLine()).toBeUndefined();
    } finally {
      taken.close();
    }
  });
});
