// HTTP endpoints of watch mode (express): /metrics, /healthz, /api/connections,
// and the live page (/, /api/overview).
import type { AddressInfo } from 'node:net';
import type { Server } from 'node:http';
import express, { type Request, type Response } from 'express';
import { connectionJson, rwndShare, type Connection, type ConnectionTable } from '../model/connections.js';
import type { OwnerResolver } from '../model/owners.js';
import type { WatchMetrics } from './metrics.js';
import { LiveView, pageFiles } from './live.js';

export interface Health {
  ok: boolean;
  [k: string]: unknown;
}

export interface HttpDeps {
  metrics: WatchMetrics;
  table: ConnectionTable;
  owners?: OwnerResolver;
  health: () => Health;
}

export interface HttpServer {
  address: { host: string; port: number };
  close(): Promise<void>;
}

export const SORTS = {
  rwnd_share: (a: Connection, b: Connection) => rwndShare(b) - rwndShare(a) || b.rwndLimited - a.rwndLimited,
  stall: (a: Connection, b: Connection) => b.rwndLimited + b.sndbufLimited - (a.rwndLimited + a.sndbufLimited),
  bytes: (a: Connection, b: Connection) => b.bytesAcked - a.bytesAcked,
} as const;
const MAX_LIMIT = 100_000;

export function createApp(deps: HttpDeps): express.Express {
  const app = express();
  app.disable('x-powered-by');
  app.disable('etag');

  app.get('/metrics', async (_req: Request, res: Response) => {
    try {
      const body = await deps.metrics.render();
      res.set('Content-Type', deps.metrics.contentType).send(body);
    } catch (e) {
      res.status(500).type('text/plain').send(`metrics rendering failed: ${e instanceof Error ? e.message : String(e)}\n`);
    }
  });

  app.get('/healthz', (_req: Request, res: Response) => {
    const h = deps.health();
    res.status(h.ok ? 200 : 503).json(h);
  });

  app.get('/api/connections', (req: Request, res: Response) => {
    const sort = typeof req.query.sort === 'string' ? req.query.sort : 'stall';
    if (!(sort in SORTS)) {
      res.status(400).json({ error: `sort must be one of ${Object.keys(SORTS).join(', ')}` });
      return;
    }
    const rawLimit = typeof req.query.limit === 'string' ? req.query.limit : '100';
    const limit = Number(rawLimit);
    if (!Number.isInteger(limit) || limit < 1 || limit > MAX_LIMIT) {
      res.status(400).json({ error: `limit must be an integer from 1 to ${MAX_LIMIT}` });
      return;
    }
    const all = [...deps.table.open.values()].sort(SORTS[sort as keyof typeof SORTS]);
    const page = all.slice(0, limit);
    for (const c of page) if (c.owner === undefined) deps.owners?.request(c);
    res.json({ total: all.length, sort, connections: page.map(connectionJson) });
  });

  // The live page (agent/export/live.ts, agent/export/page/): / and its two files, and its data.
  const live = new LiveView(deps.table, deps.owners);
  app.get('/api/overview', live.handler);
  app.get(['/', '/app.js', '/style.css'], pageFiles());

  app.use((_req: Request, res: Response) => {
    res.status(404).json({ error: 'not found: try /, /metrics, /healthz, /api/connections or /api/overview' });
  });
  return app;
}

/** Listens on host:port; rejects with the listen error (EADDRINUSE, EACCES, …). */
export function startHttp(deps: HttpDeps, host: string, port: number): Promise<HttpServer> {
  const app = createApp(deps);
  return new Promise((resolve, reject) => {
    const server: Server = app.listen(port, host);
    server.once('error', reject);
    server.once('listening', () => {
      server.off('error', reject);
      const a = server.address() as AddressInfo;
      resolve({
        address: { host: a.address, port: a.port },
        close: () =>
          new Promise<void>((done) => {
            server.close(() => done());
            // Keep-alive scrapers would hold close() open: cut them.
            server.closeAllConnections();
          }),
      });
    });
  });
}
