// The mode runtime: what every long-running mode (watch, proxy, attach,
// trace) shares, written once. A mode parses its flags, starts its own work
// (polling, relaying, attaching, a BPF program), and hands serveMode() a
// ModeSpec describing itself: its metrics, its health, its extra routes, the
// fields of its start and stop lines, and how to stop. serveMode owns the
// rest: the HTTP server (through startServer/listenApp: auth, TLS, bounded
// requests), a /metrics whose concurrent scrapes share one render, /healthz,
// the 404 that lists the routes, the start line, dropping capabilities,
// SIGTERM/SIGINT (a second signal exits at once), an orderly stop with a
// deadline, and the stop line, even when stopping fails.
//
// A new mode is one file: flags, its source, a ModeSpec, `return serveMode(spec)`.
// Chunk modes build their outputs with ChunkOutputs (chunk_mode.ts).
import { release } from 'node:os';
import express, { type Request, type Response } from 'express';
import type { Registry } from 'prom-client';
import { registerGuardMetrics } from '../export/http_guard.js';
import { plainApp, type HttpSecurity } from '../export/http.js';
import { describeRedaction } from '../export/redact.js';
import { log, logOnce } from './log.js';
import { describeDrop, dropPrivileges, type DropOptions, type Mode } from './privileges.js';
import { hostPort, listenFailure, startServer, type HostPort } from './serve.js';
import { version } from './version.js';

export interface Health {
  ok: boolean;
  [k: string]: unknown;
}

export interface ModeSpec {
  /** The command, for capability dropping (privileges.ts KEEP). */
  command: Mode;
  /** Where the HTTP server listens, and the flag that sets it (named in a listen error). */
  listen: HostPort;
  listenFlag: string;
  /** The start line's field for the server's URL ('listen' in watch, 'metrics' where --listen means something else). */
  listenField: 'listen' | 'metrics';
  security: HttpSecurity;
  /** /metrics: one render at a time, shared by the scrapes that arrive meanwhile; the runtime's own metrics go in the registry. */
  metrics: { render(): Promise<string>; contentType: string; registry: Registry };
  health(): Health;
  /** The mode's own routes (after /metrics and /healthz, which they cannot shadow). */
  routes(app: express.Express): void;
  /** Paths named by the 404 answer. */
  paths: readonly string[];
  /** The start line: its message and fields (version, kernel, the URL, auth, redaction and degraded are added). */
  startMessage: string;
  startFields(): Record<string, unknown>;
  /** Features that are off or degraded, one sentence each: in the start line, and logged once. */
  degraded: readonly string[];
  drop?: DropOptions;
  /** Undoes the mode's start when the server cannot listen. */
  abort(): Promise<void>;
  /** Stops the mode's work; resolves with the stop line's fields. */
  stop(reason: string): Promise<Record<string, unknown>>;
  /** The stop line's message and the field naming why ('stopped'/'signal' unless said). */
  stopMessage?: string;
  reasonField?: string;
  /** After this long the stop gives up waiting and exits (default 8 s). */
  stopDeadlineMs?: number;
  /** Lets the mode stop itself (attach: the target exited). */
  onStopRequest?(stop: (reason: string) => void): void;
}

// Signals are caught from the first call on (attach takes them before it has
// attached, so a SIGTERM during start-up still detaches); the runtime's
// handler gets a signal that came earlier as soon as it is installed.
let caught: NodeJS.Signals | undefined;
let onSignal: ((s: NodeJS.Signals) => void) | undefined;
let caughtInstalled = false;
export function catchSignals(): void {
  if (caughtInstalled) return;
  caughtInstalled = true;
  for (const s of ['SIGTERM', 'SIGINT'] as const) {
    process.on(s, () => {
      if (onSignal !== undefined) onSignal(s);
      else caught ??= s;
    });
  }
}

/** Serves the mode until it is stopped; resolves with the exit code. */
export async function serveMode(spec: ModeSpec): Promise<number> {
  catchSignals();
  registerGuardMetrics(spec.metrics.registry);
  const app = plainApp();
  let rendering: Promise<string> | undefined;
  app.get('/metrics', async (_req: Request, res: Response) => {
    try {
      rendering ??= spec.metrics.render().finally(() => (rendering = undefined));
      const body = await rendering;
      res.set('Content-Type', spec.metrics.contentType).send(body);
    } catch (e) {
      res.status(500).type('text/plain').send(`metrics rendering failed: ${e instanceof Error ? e.message : String(e)}\n`);
    }
  });
  app.get('/healthz', (_req: Request, res: Response) => {
    const h = spec.health();
    res.status(h.ok ? 200 : 503).json(h);
  });
  spec.routes(app);
  app.use((_req: Request, res: Response) => {
    const paths = ['/metrics', '/healthz', ...spec.paths];
    res.status(404).json({ error: `not found: try ${paths.slice(0, -1).join(', ')} or ${paths[paths.length - 1]}` });
  });

  let http: Awaited<ReturnType<typeof startServer>>;
  try {
    http = await startServer(app, spec.listen, { ...spec.security, warn: (msg, fields) => log('warn', msg, fields) });
  } catch (e) {
    await spec.abort().catch((err: unknown) => log('warn', 'undoing the start failed', { error: String(err) }));
    throw listenFailure(spec.listenField === 'metrics' ? 'metrics' : '', spec.listen, spec.listenFlag, e);
  }

  const capabilities = describeDrop(spec.command, spec.drop); // what the drop below will keep, said once here
  log('info', spec.startMessage, {
    version: version(),
    kernel: release(),
    ...spec.startFields(),
    [spec.listenField]: `${spec.security.tls !== undefined ? 'https' : 'http'}://${hostPort(http.address)}`,
    auth: spec.security.token !== undefined ? 'bearer token' : 'none',
    redact: describeRedaction(),
    ...(capabilities !== undefined && { capabilities }),
    degraded: spec.degraded,
  });
  for (const d of spec.degraded) logOnce(d, 'warn', d);
  dropPrivileges(spec.command, { log, ...spec.drop });

  return new Promise<number>((resolve) => {
    let stopping = false;
    const stop = (reason: string): void => {
      if (stopping) {
        if (reason === 'SIGTERM' || reason === 'SIGINT') process.exit(1); // second signal: the user insists
        return;
      }
      stopping = true;
      const deadline = setTimeout(() => {
        log('warn', 'shutdown deadline passed; exiting', { [spec.reasonField ?? 'signal']: reason });
        resolve(0);
      }, spec.stopDeadlineMs ?? 8000);
      deadline.unref();
      void (async () => {
        let code = 0;
        let fields: Record<string, unknown> = {};
        try {
          fields = await spec.stop(reason);
        } catch (e) {
          code = 1;
          log('error', 'stopping the mode failed', { error: e instanceof Error ? e.message : String(e) });
        }
        try {
          await http.close();
        } catch (e) {
          code = 1;
          log('error', 'closing the HTTP server failed', { error: e instanceof Error ? e.message : String(e) });
        }
        clearTimeout(deadline);
        log('info', spec.stopMessage ?? 'stopped', { [spec.reasonField ?? 'signal']: reason, ...fields });
        resolve(code);
      })();
    };
    onSignal = stop;
    spec.onStopRequest?.(stop);
    if (caught !== undefined) stop(caught);
  });
}
