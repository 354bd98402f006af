// Flags that several commands offer (watch, proxy, attach). Each command
// picks what it needs and keeps its own help text (and default, where the
// commands differ on purpose: each mode's metrics port is its own, so they can
// run side by side).
import type { PortRange } from '../parse/inet_diag.js';
import { parseDuration, parseListen, type FlagSpec } from './flags.js';
import type { HostPort } from './serve.js';

/** "8080" or "8000-8100". */
export function parsePortRange(text: string): PortRange {
  const m = /^(\d+)(?:-(\d+))?$/.exec(text);
  const from = Number(m?.[1]);
  const to = m?.[2] !== undefined ? Number(m[2]) : from;
  if (m === null || from < 1 || to > 65535 || from > to) throw new Error('expected a port (1-65535) or a range like 8000-8100');
  return { from, to };
}

/** A duration from `min` to `max` seconds (`what` says so when it is not); with zeroMeansNever, 0 too. */
export const durationIn =
  (min: number, max: number, what: string, zeroMeansNever = false) =>
  (t: string): number => {
    const s = parseDuration(t);
    if (s === 0 && zeroMeansNever) return 0;
    if (s < min || s > max) throw new Error(what);
    return s;
  };

/** --port PORT[-PORT], repeatable. */
export function portFlag(help: string) {
  return { name: 'port', arg: 'PORT[-PORT]', multiple: true, help, parse: parsePortRange } satisfies FlagSpec<PortRange>;
}

/** --interval DURATION (default 1s, from 50ms to 1h). */
export function intervalFlag(help: string) {
  return {
    name: 'interval',
    arg: 'DURATION',
    default: '1s',
    help,
    parse: durationIn(0.05, 3600, 'must be from 50ms to 1h'),
  } satisfies FlagSpec<number>;
}

/** A HOST:PORT to listen on (`--listen`, `--metrics-listen`). */
export function listenFlag<N extends string>(name: N, help: string, defaultAddress?: string) {
  return {
    name,
    arg: 'HOST:PORT',
    ...(defaultAddress !== undefined && { default: defaultAddress }),
    help,
    parse: parseListen,
  } satisfies FlagSpec<HostPort>;
}

/** --stall-after DURATION (default 10s, from 100ms to 1h). */
export function stallAfterFlag(help: string) {
  return {
    name: 'stall-after',
    arg: 'DURATION',
    default: '10s',
    help,
    parse: durationIn(0.1, 3600, 'must be from 100ms to 1h'),
  } satisfies FlagSpec<number>;
}

/** --events FILE: the chunk records as JSON lines (agent/export/chunk_events.ts). */
export const EVENTS_FLAG = {
  name: 'events',
  arg: 'FILE',
  help: 'Append every chunk record to FILE, one JSON object per line (also at GET /api/chunks?follow=1).',
  parse: (t: string) => {
    if (t === '') throw new Error('expected a file path');
    return t;
  },
} satisfies FlagSpec<string>;
