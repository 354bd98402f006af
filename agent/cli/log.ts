// Logs: one JSON object per line on stdout (what log shippers and `jq`
// read), or one human line when a person is watching. Deliberately tiny;
// the agent logs a handful of lines.
//
// Format: `--log-format human|json|auto` (commands that offer it) or
// TCP_CHRONOGRAPH_LOG_FORMAT; auto (the default) is human when stdout is a
// terminal, JSON otherwise.
import type { Writable } from 'node:stream';
import { redactFields } from '../export/redact.js';
import { parseChoice, type FlagSpec } from './flags.js';

export type Level = 'debug' | 'info' | 'warn' | 'error';
export type LogFormat = 'human' | 'json' | 'auto';

interface LogConfig {
  format: LogFormat;
  stream: Writable & { isTTY?: boolean };
}

const config: LogConfig = {
  format: envFormat() ?? 'auto',
  stream: process.stdout,
};

function envFormat(): LogFormat | undefined {
  const v = process.env.TCP_CHRONOGRAPH_LOG_FORMAT;
  return v === 'human' || v === 'json' || v === 'auto' ? v : undefined;
}

/** The --log-format flag, for a command's flag table (env TCP_CHRONOGRAPH_LOG_FORMAT). */
export const LOG_FORMAT_FLAG = {
  name: 'log-format',
  arg: 'human|json|auto',
  default: 'auto',
  help: 'Log lines as JSON (for log shippers) or as text for a person; auto: text when stdout is a terminal.',
  parse: parseChoice(['human', 'json', 'auto'] as const),
} satisfies FlagSpec<LogFormat>;

/** Sets the format and (optionally) where lines go (top and diagnose keep stdout for their output). */
export function configureLog(opts: { format?: LogFormat; stream?: Writable & { isTTY?: boolean } }): void {
  if (opts.format !== undefined) config.format = opts.format;
  if (opts.stream !== undefined) config.stream = opts.stream;
}

/** The format in effect (auto resolved against the stream). */
export function logFormat(): 'human' | 'json' {
  if (config.format !== 'auto') return config.format;
  return config.stream.isTTY === true ? 'human' : 'json';
}

const replacer = (_k: string, v: unknown): unknown => (typeof v === 'bigint' ? v.toString() : v);

/** One human line: time, level, message, then key=value (values JSON-quoted only when needed). */
export function humanLine(time: Date, level: Level, msg: string, fields: Record<string, unknown>): string {
  const hh = time.toISOString().slice(11, 19);
  const parts = [`${hh} ${level.toUpperCase().padEnd(5)} ${msg}`];
  const flat: [string, unknown][] = [];
  // Nested objects one level deep become key.sub=value (privileges.root=true).
  for (const [k, v] of Object.entries(fields)) {
    if (v !== null && typeof v === 'object' && !Array.isArray(v)) for (const [k2, v2] of Object.entries(v)) flat.push([`${k}.${k2}`, v2]);
    else flat.push([k, v]);
  }
  for (const [k, v] of flat) {
    if (v === undefined) continue;
    if (Array.isArray(v) && v.length === 0) continue;
    let text: string;
    if (typeof v === 'string') text = /^[^\s"=]+$/.test(v) ? v : JSON.stringify(v);
    else if (Array.isArray(v) && v.every((x) => typeof x === 'string' && /^[^\s,"]+$/.test(x))) text = v.join(',');
    else text = JSON.stringify(v, replacer);
    parts.push(`${k}=${text}`);
  }
  return parts.join(' ');
}

export function log(level: Level, msg: string, raw: Record<string, unknown> = {}): void {
  const now = new Date();
  // Peer addresses in fields (remote, peer) as --redact allows (agent/export/redact.ts).
  const fields = redactFields(raw);
  const line =
    logFormat() === 'human' ? humanLine(now, level, msg, fields) : JSON.stringify({ time: now.toISOString(), level, msg, ...fields }, replacer);
  config.stream.write(line + '\n');
}

const said = new Set<string>();

/** Logs a line once per process for a given key (degradations, kernel gaps). */
export function logOnce(key: string, level: Level, msg: string, fields: Record<string, unknown> = {}): void {
  if (said.has(key)) return;
  said.add(key);
  log(level, msg, fields);
}
