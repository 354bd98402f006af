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
import { rankTop, rankTopSync, type RankKeys } from '../model/rank.js';
import { apiSlicer, queryParams, type Slicer } from './query.js';

export interface TimelinePoint {
  /** Epoch ms of the poll. */
  t: number;
  ports: Record<string, Shares & { connections: number; seconds: number }>;
}

const MAX_WORST = 200;

/** Worst first: most recent stall (decayed), then stalled seconds, then recent bytes. */
const WORST: RankKeys<Connection> = [(c) => c.recentStall, (c) => c.rwndLimited + c.sndbufLimited, (c) => c.recentBytes];

export class LiveView {
  private readonly points: TimelinePoint[] = [];
  private lastPoll = 0;

  constructor(
    private readonly table: ConnectionTable,
    private readonly owners?: OwnerResolver,
    private readonly keep = 300,
  ) {}

  /**
   * Records the latest poll's per-port shares, once per poll. One
   * synchronous pass (a few ms for 50k connections): the connections of the
   * latest poll are summed as they are met, the sums restarted whenever a
   * later poll time turns up, so the point is of one poll, whole.
   */
  sample(): void {
    let poll = 0;
    type Sums = { seconds: number; busy: number; rwndLimited: number; sndbufLimited: number; sndbufBound: number; connections: number };
    let sums = new Map<string, Sums>();
    let lastPort: string | undefined;
    let last: Sums | undefined;
    for (const c of this.table.open.values()) {
      if (c.lastSeen < poll) continue;
      if (c.lastSeen > poll) {
        poll = c.lastSeen;
        sums = new Map();
        lastPort = undefined;
      }
      if (poll <= this.lastPoll) continue; // that poll is sampled already
      const d = c.delta;
      if (!(d.seconds > 0)) continue;
      // Connections of one port tend to come together: skip the Map lookup then.
      let s = c.port === lastPort ? last : sums.get(c.port);
      if (s === undefined) {
        s = { seconds: 0, busy: 0, rwndLimited: 0, sndbufLimited: 0, sndbufBound: 0, connections: 0 };
        sums.set(c.port, s);
      }
      lastPort = c.port;
      last = s;
      s.connections++;
      s.seconds += d.seconds;
      s.busy += d.busy;
      s.rwndLimited += d.rwndLimited;
      s.sndbufLimited += d.sndbufLimited;
      s.sndbufBound += d.sndbufBound;
    }
    if (poll <= this.lastPoll) return;
    this.lastPoll = poll;
    const ports: TimelinePoint['ports'] = {};
    for (const [port, s] of sums) {
      ports[port] = { ...shares({ span: s.seconds, busy: s.busy, rwndLimited: s.rwndLimited, sndbufLimited: s.sndbufLimited, sndbufBound: s.sndbufBound }), connections: s.connections, seconds: s.seconds };
    }
    this.points.push({ t: poll, ports });
    if (this.points.length > this.keep) this.points.splice(0, this.points.length - this.keep);
  }

  /**
   * Worst connections first: most recent stall (decayed), then stalled
   * seconds, then bytes; ties in table order (what sorting them all gave).
   * A bounded heap over the table, in slices with a slicer.
   */
  worst(limit: number, slicer?: Slicer): Connection[] | Promise<Connection[]> {
    const all = [...this.table.open.values()];
    return slicer === undefined ? rankTopSync(all, WORST, limit) : rankTop(all, WORST, limit, slicer);
  }

  /**
   * The page's data. The timeline point and the per-port figures are each
   * one synchronous pass over the table (a poll's figures, whole); the worst
   * connections are ranked in slices (see agent/export/query.ts).
   */
  async overview(limit: number, since: number): Promise<Record<string, unknown>> {
    await apiSlicer.maybeYield(); // its turn first: sample() is a pass over the table
    this.sample();
    await apiSlicer.maybeYield();
    const worst = await this.worst(limit, apiSlicer);
    await apiSlicer.maybeYield(); // the per-port counts below: one more pass
    for (const c of worst) if (c.owner === undefined) this.owners?.request(c);
    return {
      now: Date.now(),
      connections: this.table.open.size,
      ports: [...this.table.openCounts()].map(([port, open]) => {
        const a = this.table.aggregates.get(port)!;
        return { port, open, busySeconds: a.busy, rwndLimitedSeconds: a.rwndLimited, sndbufLimitedSeconds: a.sndbufLimited, sndbufBoundSeconds: a.sndbufBound, bytesAcked: a.bytesAcked, closed: a.closed };
      }),
      timeline: this.points.filter((p) => p.t > since),
      worst: worst.map((c) => ({
        ...connectionJson(c),
        lastShares: c.delta.seconds > 0 ? shares({ span: c.delta.seconds, busy: c.delta.busy, rwndLimited: c.delta.rwndLimited, sndbufLimited: c.delta.sndbufLimited, sndbufBound: c.delta.sndbufBound }) : null,
      })),
    };
  }

  handler = async (req: Request, res: Response): Promise<void> => {
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
    const body = await this.overview(limit, since);
    res.set('cache-control', 'no-store').json(body);
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
