// The live page's data: GET /api/overview (worst connections, per-port time
// shares over recent polls) and the page's static files (agent/export/page/).
//
// The timeline is sampled from the connection table when the page asks (at
// most once per poll, deduplicated by poll time): no timer of its own, and
// nothing is kept while nobody watches beyond the last `keep` points.
import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { Request, Response } from 'express';
import { shares, type Shares } from '../model/classify.js';
import { connectionJson, type Connection, type ConnectionTable } from '../model/connections.js';
import type { OwnerResolver } from '../model/owners.js';
import { queryParams } from './query.js';

export interface TimelinePoint {
  /** Epoch ms of the poll. */
  t: number;
  ports: Record<string, Shares & { connections: number; seconds: number }>;
}

const MAX_WORST = 200;

export class LiveView {
  private readonly points: TimelinePoint[] = [];
  private lastPoll = 0;

  constructor(
    private readonly table: ConnectionTable,
    private readonly owners?: OwnerResolver,
    private readonly keep = 300,
  ) {}

  /** Records the latest poll's per-port shares, once per poll. */
  sample(): void {
    let poll = 0;
    for (const c of this.table.open.values()) if (c.lastSeen > poll) poll = c.lastSeen;
    if (poll <= this.lastPoll) return;
    this.lastPoll = poll;
    const sums = new Map<string, { seconds: number; busy: number; rwndLimited: number; sndbufLimited: number; connections: number }>();
    for (const c of this.table.open.values()) {
      const d = c.delta;
      if (c.lastSeen !== poll || !(d.seconds > 0)) continue;
      let s = sums.get(c.port);
      if (s === undefined) {
        s = { seconds: 0, busy: 0, rwndLimited: 0, sndbufLimited: 0, connections: 0 };
        sums.set(c.port, s);
      }
      s.connections++;
      s.seconds += d.seconds;
      s.busy += d.busy;
      s.rwndLimited += d.rwndLimited;
      s.sndbufLimited += d.sndbufLimited;
    }
    const ports: TimelinePoint['ports'] = {};
    for (const [port, s] of sums) {
      ports[port] = { ...shares({ span: s.seconds, busy: s.busy, rwndLimited: s.rwndLimited, sndbufLimited: s.sndbufLimited }), connections: s.connections, seconds: s.seconds };
    }
    this.points.push({ t: poll, ports });
    if (this.points.length > this.keep) this.points.splice(0, this.points.length - this.keep);
  }

  /** Worst connections first: most recent stall (decayed), then stalled seconds, then bytes. */
  worst(limit: number): Connection[] {
    const all = [...this.table.open.values()];
    all.sort((a, b) => b.recentStall - a.recentStall || b.rwndLimited + b.sndbufLimited - (a.rwndLimited + a.sndbufLimited) || b.recentBytes - a.recentBytes);
    return all.slice(0, limit);
  }

  overview(limit: number, since: number): Record<string, unknown> {
    this.sample();
    const worst = this.worst(limit);
    for (const c of worst) if (c.owner === undefined) this.owners?.request(c);
    return {
      now: Date.now(),
      connections: this.table.open.size,
      ports: [...this.table.openCounts()].map(([port, open]) => {
        const a = this.table.aggregates.get(port)!;
        return { port, open, busySeconds: a.busy, rwndLimitedSeconds: a.rwndLimited, sndbufLimitedSeconds: a.sndbufLimited, bytesAcked: a.bytesAcked, closed: a.closed };
      }),
      timeline: this.points.filter((p) => p.t > since),
      worst: worst.map((c) => ({
        ...connectionJson(c),
        lastShares: c.delta.seconds > 0 ? shares({ span: c.delta.seconds, busy: c.delta.busy, rwndLimited: c.delta.rwndLimited, sndbufLimited: c.delta.sndbufLimited }) : null,
      })),
    };
  }

  handler = (req: Request, res: Response): void => {
    const q = queryParams(req, res, ['limit', 'since']);
    if (q === undefined) return;
    const limit = /^\d{1,9}$/.test(q.limit ?? '20') ? Number(q.limit ?? '20') : NaN;
    const since = /^\d{1,16}(?:\.\d+)?$/.test(q.since ?? '0') ? Number(q.since ?? '0') : NaN;
    if (!Number.isInteger(limit) || limit < 1 || limit > MAX_WORST) {
      res.status(400).json({ error: `limit must be an integer from 1 to ${MAX_WORST}` });
      return;
    }
    if (!Number.isFinite(since) || since < 0) {
      res.status(400).json({ error: 'since must be a time in epoch milliseconds' });
      return;
    }
    res.set('cache-control', 'no-store').json(this.overview(limit, since));
  };
}

// ---- static files of the page ----

/** agent/export/page/ from the sources (agent/export/) or from the build (dist/agent/export/). */
function pageDir(): string | undefined {
  for (const rel of ['./page/', '../../../agent/export/page/']) {
    const dir = fileURLToPath(new URL(rel, import.meta.url));
    if (existsSync(`${dir}index.html`)) return dir;
  }
  return undefined;
}

const TYPES: Record<string, string> = { 'index.html': 'text/html; charset=utf-8', 'app.js': 'text/javascript; charset=utf-8', 'style.css': 'text/css; charset=utf-8' };

/** Serves the page's three files (read once; nothing else under the directory is reachable). */
export function pageFiles(): (req: Request, res: Response, next: () => void) => void {
  const dir = pageDir();
  const files = new Map<string, Buffer>();
  if (dir !== undefined) for (const name of Object.keys(TYPES)) files.set(name, readFileSync(dir + name));
  return (req, res, next) => {
    const name = req.path === '/' ? 'index.html' : req.path.slice(1);
    const body = files.get(name);
    if (body === undefined) {
      if (req.path === '/') {
        res.status(500).type('text/plain').send('the live page files (agent/export/page/) are missing from this installation\n');
        return;
      }
      next();
      return;
    }
    res
      .status(200)
      .set('content-type', TYPES[name]!)
      .set('cache-control', 'no-cache')
      // The page loads nothing from elsewhere: say so to the browser.
      .set('content-security-policy', "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'")
      .send(body);
  };
}
