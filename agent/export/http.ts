// The connection view's HTTP routes (express): /api/connections and the live
// page (/, /api/overview), served by watch and by the chunk modes with their
// port watch; and listenApp, the one way every mode's HTTP server starts:
// bearer-token auth, TLS, redacted JSON, bounded requests, errors without
// stack traces. /metrics, /healthz and the 404 are the mode runtime's
// (agent/cli/runtime.ts).
import { createHash, timingSafeEqual } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import { createServer as createHttpServer, type Server } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import express, { type NextFunction, type Request, type Response } from 'express';
import { jsonReplacer } from './redact.js';
import { rankTop, type RankKeys } from '../model/rank.js';
import { apiSlicer, queryParams, sendJsonSliced } from './query.js';
import { connectionJson, rwndShare, type Connection, type ConnectionTable, type NetnsScope } from '../model/connections.js';
import type { OwnerResolver } from '../model/owners.js';
import { LiveView, pageFiles } from './live.js';
import { DEFAULT_LIMITS, guardServer, type GuardLimits } from './http_guard.js';

export interface ConnectionViewDeps {
  table: ConnectionTable;
  owners?: OwnerResolver;
  /** watch --netns-labels pod_uid: a namespace's pod UID, for the rows' podUid. */
  podOf?: (scope: NetnsScope) => string;
}

/** The orders of /api/connections?sort=, as comparators (what SORT_KEYS computes, in slices). */
export const SORTS = {
  rwnd_share: (a: Connection, b: Connection) => rwndShare(b) - rwndShare(a) || b.rwndLimited - a.rwndLimited,
  stall: (a: Connection, b: Connection) => b.rwndLimited + b.sndbufLimited - (a.rwndLimited + a.sndbufLimited),
  bytes: (a: Connection, b: Connection) => b.bytesAcked - a.bytesAcked,
} as const;
/** SORTS as ranking keys (each larger first, ties in table order): the same order. */
export const SORT_KEYS: Record<keyof typeof SORTS, RankKeys<Connection>> = {
  rwnd_share: [rwndShare, (c) => c.rwndLimited],
  stall: [(c) => c.rwndLimited + c.sndbufLimited],
  bytes: [(c) => c.bytesAcked],
};
const MAX_LIMIT = 100_000;
/** Pages up to this many connections are written in one go (a few ms at most), with a Content-Length. */
export const ONE_GO_MAX = 200;

/** The connection view's routes, for a mode's app (routes() of its ModeSpec). */
export function connectionRoutes(deps: ConnectionViewDeps): express.Router {
  const router = express.Router();

  // Ranked and written in slices (agent/export/query.ts): a page of 50k
  // connections is about a second of work that polls must not wait behind.
  router.get('/api/connections', async (req: Request, res: Response) => {
    const q = queryParams(req, res, ['sort', 'limit']);
    if (q === undefined) return;
    const sort = q.sort ?? 'stall';
    if (!Object.hasOwn(SORTS, sort)) {
      res.status(400).json({ error: `sort must be one of ${Object.keys(SORTS).join(', ')}` });
      return;
    }
    const rawLimit = q.limit ?? '100';
    const limit = /^\d{1,9}$/.test(rawLimit) ? Number(rawLimit) : NaN;
    if (!Number.isInteger(limit) || limit < 1 || limit > MAX_LIMIT) {
      res.status(400).json({ error: `limit must be an integer from 1 to ${MAX_LIMIT}` });
      return;
    }
    await apiSlicer.maybeYield(); // its turn first: the copy below is a pass over the table
    const all = [...deps.table.open.values()];
    const page = await rankTop(all, SORT_KEYS[sort as keyof typeof SORTS], limit, apiSlicer);
    if (res.destroyed) return; // the client went away meanwhile
    for (const c of page) if (c.owner === undefined) deps.owners?.request(c);
    const head = { total: all.length, sort };
    const row = (c: Connection): Record<string, unknown> => connectionJson(c, deps.podOf);
    if (page.length <= ONE_GO_MAX) res.json({ ...head, connections: page.map(row) });
    else await sendJsonSliced(req, res, head, 'connections', page, row, apiSlicer);
  });

  // The live page (agent/export/live.ts, agent/export/page/): / and its two files, and its data.
  const live = new LiveView(deps.table, deps.owners);
  router.get('/api/overview', live.handler);
  router.get(['/', '/app.js', '/style.css'], pageFiles());

  return router;
}

/** Who may read the HTTP server, and how it is reached. */
export interface HttpSecurity {
  /** Required as `Authorization: Bearer TOKEN` (or Basic with TOKEN as password, for browsers) on every route but /healthz. */
  token?: string;
  /** PEM certificate chain and key: HTTPS instead of HTTP. */
  tls?: { cert: Buffer; key: Buffer };
  /** What a client without a complete request may hold (agent/export/http_guard.ts). */
  limits?: GuardLimits;
  /** Where the guard's once-a-minute warning goes. */
  warn?: (msg: string, fields: Record<string, unknown>) => void;
}

const digest = (s: string): Buffer => createHash('sha256').update(s).digest();

/** Bearer (Prometheus' bearer_token_file, curl -H) or Basic with the token as password (a browser's prompt, for the live page). */
function authorized(header: string | undefined, want: Buffer): boolean {
  if (header === undefined) return false;
  let given: string | undefined;
  const m = /^(Bearer|Basic)\s+(\S+)\s*$/i.exec(header);
  if (m === null) return false;
  if (m[1]!.toLowerCase() === 'bearer') given = m[2];
  else {
    const decoded = Buffer.from(m[2]!, 'base64').toString('utf8');
    const colon = decoded.indexOf(':');
    given = colon >= 0 ? decoded.slice(colon + 1) : undefined;
  }
  return given !== undefined && timingSafeEqual(digest(given), want);
}

/** Routes open without a token: liveness probes carry no credentials, and /healthz shows no client address. */
export const OPEN_PATHS: ReadonlySet<string> = new Set(['/healthz']);

/** An express app as every listener's: no X-Powered-By, no ETag (settings a mounted app keeps its own of). */
export function plainApp(): express.Express {
  const app = express();
  app.disable('x-powered-by');
  app.disable('etag');
  return app;
}

/**
 * Wraps a mode's app in what every listener shares: the token check, JSON
 * with client addresses redacted (agent/export/redact.ts; the `json replacer`
 * setting is inherited by the mounted app), no-sniff, and an error handler that
 * answers without a stack trace.
 */
export function secureApp(app: express.Express, security: HttpSecurity = {}): express.Express {
  const outer = plainApp();
  const replacer = jsonReplacer();
  if (replacer !== undefined) outer.set('json replacer', replacer);
  outer.use((_req: Request, res: Response, next: NextFunction) => {
    res.set('x-content-type-options', 'nosniff');
    next();
  });
  if (security.token !== undefined) {
    const want = digest(security.token);
    outer.use((req: Request, res: Response, next: NextFunction) => {
      if (OPEN_PATHS.has(req.path) || authorized(req.headers.authorization, want)) {
        next();
        return;
      }
      res
        .status(401)
        .set('www-authenticate', 'Bearer realm="tcp-chronograph", Basic realm="tcp-chronograph", charset="UTF-8"')
        .json({ error: 'authorization required: send Authorization: Bearer <the token of --auth-token-file>' });
    });
  }
  outer.use(app);
  // express calls this with four arguments only: keep them all.
  outer.use((err: unknown, _req: Request, res: Response, _next: NextFunction) => {
    const status = typeof (err as { status?: unknown }).status === 'number' ? (err as { status: number }).status : 500;
    if (res.headersSent) {
      res.destroy();
      return;
    }
    res.status(status >= 400 && status < 600 ? status : 500).json({ error: status < 500 ? 'bad request' : 'internal error' });
  });
  return outer;
}

export interface Listening {
  server: Server;
  address: { host: string; port: number };
  close(): Promise<void>;
}

/**
 * Serves `app` (secured with secureApp) on host:port, over TLS when
 * configured; rejects with the listen error (EADDRINUSE, EACCES, …).
 * Requests are bounded: headers 16 KiB (Node's default; 431 beyond), and
 * clients without a complete request by http_guard.ts (first-request
 * deadline, per-address cap, waiting connections evicted oldest first).
 */
export function listenApp(app: express.Express, host: string, port: number, security: HttpSecurity = {}): Promise<Listening> {
  const handler = secureApp(app, security);
  const limits = security.limits ?? DEFAULT_LIMITS;
  const server: Server =
    security.tls !== undefined
      ? (createHttpsServer({ cert: security.tls.cert, key: security.tls.key, handshakeTimeout: limits.firstRequestTimeout * 1000 }, handler) as unknown as Server)
      : createHttpServer(handler);
  const guard = guardServer(server, limits, security.warn);
  const front = guard.listener;
  return new Promise((resolve, reject) => {
    front.once('error', reject);
    front.listen(port, host, () => {
      front.off('error', reject);
      const a = front.address() as AddressInfo;
      resolve({
        server,
        address: { host: a.address, port: a.port },
        close: () =>
          new Promise<void>((done) => {
            front.close(() => done());
            // Keep-alive scrapers and idle connections would hold close() open: cut them.
            guard.dropAll();
          }),
      });
    });
  });
}
