// Query parameters of the API routes, checked the same way everywhere; and
// their large results, ranked and written in slices (below).
import { performance } from 'node:perf_hooks';
import type { Request, Response } from 'express';
import { RENDER_SLICE_MS } from './metrics.js';

/**
 * The named query parameters as single strings (absent: undefined), or
 * undefined after answering 400 when one is repeated (?limit=1&limit=2) or
 * too long. Unknown parameters are ignored.
 */
export function queryParams<K extends string>(req: Request, res: Response, names: readonly K[]): Partial<Record<K, string>> | undefined {
  const out: Partial<Record<K, string>> = {};
  for (const n of names) {
    const v: unknown = req.query[n];
    if (v === undefined) continue;
    if (typeof v !== 'string') {
      res.status(400).json({ error: `give the query parameter ${n} once, as a plain value` });
      return undefined;
    }
    if (v.length > 64) {
      res.status(400).json({ error: `the query parameter ${n} is too long (at most 64 characters)` });
      return undefined;
    }
    out[n] = v;
  }
  return out;
}

// ---- results of the API routes over the whole connection table ----
//
// With tens of thousands of connections, ranking them and writing the JSON
// of a large page are tens to hundreds of milliseconds of work on the loop
// that runs the polls. Both are done in slices of about RENDER_SLICE_MS (as
// /metrics is), handing the loop back between them, and the JSON goes out in
// writes of ~64 KiB that wait for the client ('drain'): a slow reader holds
// one write's worth of memory, not the whole body.

/**
 * Slices of work that hand the event loop back: at most about
 * RENDER_SLICE_MS of sliced work per loop turn, however many responses are
 * being built at once. A response that has had its slice waits for a later
 * turn (setImmediate: timers, and the polls, run first), and waiting
 * responses resume one per turn, in the order they stopped: four large
 * requests at once interleave and hold the loop for one slice at a time, not
 * one slice each back to back.
 */
export class Slicer {
  private since = -Infinity;
  private readonly waiting: Array<() => void> = [];
  private scheduled = false;
  /** Times a response waited for a later turn. */
  yields = 0;

  /** Resolves at once while this turn's slice lasts, else in a later turn. */
  async maybeYield(): Promise<void> {
    if (performance.now() - this.since < RENDER_SLICE_MS) return;
    this.yields++;
    await new Promise<void>((resolve) => {
      this.waiting.push(resolve);
      this.schedule();
    });
  }

  private schedule(): void {
    if (this.scheduled) return;
    this.scheduled = true;
    setImmediate(() => {
      this.scheduled = false;
      this.since = performance.now();
      this.waiting.shift()?.();
      if (this.waiting.length > 0) this.schedule();
    });
  }
}

/** The slicer the API routes share (one slice per loop turn between them all). */
export const apiSlicer = new Slicer();

type Replacer = (this: unknown, key: string, value: unknown) => unknown;

/** Bytes (about: UTF-16 units) gathered before one write to the response. */
const WRITE_CHARS = 64 * 1024;

/** Resolves when `res` can take more ('drain') or is gone ('close'). */
function drained(res: Response): Promise<void> {
  return new Promise((resolve) => {
    if (res.destroyed) {
      resolve();
      return;
    }
    const done = (): void => {
      res.off('drain', done);
      res.off('close', done);
      resolve();
    };
    res.on('drain', done);
    res.on('close', done);
  });
}

/**
 * Answers `{ ...head, [key]: items.map(toJson) }` with the bytes res.json()
 * would send (the app's `json replacer`, no spacing; Content-Type
 * application/json; charset=utf-8), without building it in one go: each
 * item is converted and stringified in turn, in slices handing the loop back
 * (see Slicer), and written in pieces of ~64 KiB that wait for 'drain'. No
 * Content-Length (chunked). A HEAD request gets the headers only. Items are
 * read as they are reached: a poll in between may move a later item's
 * figures on (it then shows the newer ones, as a later request would).
 *
 * With settings whose output cannot be put together piecewise (`json
 * spaces`, `json escape`) it falls back to res.json().
 */
export async function sendJsonSliced<T>(
  req: Request,
  res: Response,
  head: Record<string, unknown>,
  key: string,
  items: readonly T[],
  toJson: (x: T) => unknown,
  slicer: Slicer,
): Promise<void> {
  const app = req.app;
  const replacer = app.get('json replacer') as Replacer | undefined;
  const envelope = JSON.stringify({ ...head, [key]: [] }, replacer);
  if (Boolean(app.get('json spaces')) || Boolean(app.get('json escape')) || !envelope.endsWith('[]}')) {
    res.json({ ...head, [key]: items.map(toJson) });
    return;
  }
  res.set('Content-Type', 'application/json; charset=utf-8');
  if (req.method === 'HEAD') {
    res.end();
    return;
  }
  // As JSON.stringify does for an array element: the replacer sees it under its
  // index first, then its members (the root call of the inner stringify is skipped).
  const element = (value: unknown, index: number): string => {
    if (replacer === undefined) return JSON.stringify(value) ?? 'null';
    const v = replacer.call(undefined, String(index), value);
    let root = true;
    const inner = function (this: unknown, k: string, x: unknown): unknown {
      if (root) {
        root = false;
        return x;
      }
      return replacer.call(this, k, x);
    };
    return JSON.stringify(v, inner) ?? 'null';
  };
  let pieces: string[] = [envelope.slice(0, -2)]; // through the array's "["
  let size = pieces[0]!.length;
  for (let i = 0; i < items.length; i++) {
    const piece = element(toJson(items[i]!), i);
    pieces.push(i === 0 ? piece : `,${piece}`);
    size += piece.length + 1;
    if (size >= WRITE_CHARS) {
      const more = res.write(pieces.join(''));
      pieces = [];
      size = 0;
      if (!more) await drained(res);
      if (res.destroyed) return;
    }
    if ((i & 15) === 15) {
      await slicer.maybeYield();
      if (res.destroyed) return; // the client went away: nothing more to do
    }
  }
  pieces.push(']}');
  if (!res.destroyed) res.end(pieces.join(''));
}
