// Query parameters of the API routes, checked the same way everywhere.
import type { Request, Response } from 'express';

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
