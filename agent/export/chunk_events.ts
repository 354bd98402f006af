// The chunk event stream of proxy and attach mode: one JSON object per line,
// for offline analysis. Sinks: a file (--events FILE, appended) and HTTP
// followers (GET /api/chunks?follow=1). A sink that cannot keep up loses
// events (counted), never memory: the relay or the target must not slow down
// for its observers.
//
// Lazy: a record is turned into JSON only when a file or a follower takes it,
// and the recent records are kept as objects until someone asks. Attach mode
// sees every sendmsg of the target (thousands of chunks a second); building a
// JSON line for each one nobody reads was the agent's largest cost. So a
// pushed event must not be changed afterwards (proxy and attach push a record
// of their own). Peer addresses (remote, peer) are redacted as the lines are
// built (agent/export/redact.ts).
import { createWriteStream, type WriteStream } from 'node:fs';
import type { Request, Response } from 'express';
import { queryParams } from './query.js';
import { jsonReplacer } from './redact.js';

/** Bytes a sink may have pending before events are dropped for it. */
const MAX_PENDING = 1 << 20;

export class ChunkEvents {
  dropped = 0;
  private readonly ring: object[] = [];
  private at = 0;
  private readonly followers = new Set<Response>();
  private file: WriteStream | undefined;
  private fileError: Error | undefined;

  constructor(private readonly keep = 1000) {}

  /** Appends events to `path`; resolves once the file is open, rejects with the open error. */
  async openFile(path: string): Promise<void> {
    const f = createWriteStream(path, { flags: 'a' });
    await new Promise<void>((resolve, reject) => {
      f.once('open', () => resolve());
      f.once('error', (e: NodeJS.ErrnoException) => {
        const why: Record<string, string> = {
          ENOENT: 'no such directory; give a path in an existing directory',
          EISDIR: 'it is a directory; give a file path',
          EACCES: 'permission denied; give a file the agent may write',
          EROFS: 'read-only file system; give a writable path',
        };
        reject(Object.assign(new Error(why[e.code ?? ''] ?? e.message), { code: e.code }));
      });
    });
    f.on('error', (e) => {
      this.fileError = e;
    });
    this.file = f;
  }

  get fileFailure(): Error | undefined {
    return this.fileError;
  }

  /** Keeps the event; turns it into JSON only if a file or a follower takes it now. */
  push(event: object): void {
    if (this.ring.length < this.keep) this.ring.push(event);
    else {
      this.ring[this.at] = event;
      this.at = (this.at + 1) % this.keep;
    }
    const toFile = this.file !== undefined && this.fileError === undefined;
    if (!toFile && this.followers.size === 0) return;
    const line = JSON.stringify(event, jsonReplacer()) + '\n';
    if (toFile) {
      if (this.file!.writableLength > MAX_PENDING) this.dropped++;
      else this.file!.write(line);
    }
    for (const res of this.followers) {
      if (res.writableLength > MAX_PENDING) this.dropped++;
      else res.write(line);
    }
  }

  private recent(n: number): object[] {
    const ordered = this.ring.length < this.keep ? this.ring : [...this.ring.slice(this.at), ...this.ring.slice(0, this.at)];
    return n === 0 ? [] : ordered.slice(-n);
  }

  /** GET /api/chunks: the last records (?limit=N), or with ?follow=1 those and every new one. */
  handler = (req: Request, res: Response): void => {
    const q = queryParams(req, res, ['limit', 'follow']);
    if (q === undefined) return;
    const rawLimit = q.limit ?? String(this.keep);
    const limit = /^\d{1,9}$/.test(rawLimit) ? Number(rawLimit) : NaN;
    if (!Number.isInteger(limit) || limit < 0 || limit > this.keep) {
      res.status(400).json({ error: `limit must be an integer from 0 to ${this.keep}` });
      return;
    }
    if (q.follow !== undefined && !['0', '1', 'true', 'false'].includes(q.follow)) {
      res.status(400).json({ error: 'follow must be 1 or 0' });
      return;
    }
    const follow = q.follow === '1' || q.follow === 'true';
    res.status(200).type('application/x-ndjson');
    const replacer = jsonReplacer();
    const backlog = this.recent(limit).map((e) => JSON.stringify(e, replacer) + '\n');
    if (!follow) {
      res.end(backlog.join(''));
      return;
    }
    res.setHeader('cache-control', 'no-store');
    res.flushHeaders();
    for (const l of backlog) res.write(l);
    this.followers.add(res);
    res.on('close', () => this.followers.delete(res));
  };

  async close(): Promise<void> {
    for (const res of this.followers) res.end();
    this.followers.clear();
    const f = this.file;
    this.file = undefined;
    if (f !== undefined) await new Promise<void>((resolve) => f.end(() => resolve()));
  }
}
