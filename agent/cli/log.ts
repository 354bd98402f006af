// Structured logs: one JSON object per line on stdout (what log shippers and
// `jq` read). Deliberately tiny; the agent logs a handful of lines.

export type Level = 'debug' | 'info' | 'warn' | 'error';

export function log(level: Level, msg: string, fields: Record<string, unknown> = {}): void {
  const line = JSON.stringify({ time: new Date().toISOString(), level, msg, ...fields }, (_k, v: unknown) =>
    typeof v === 'bigint' ? v.toString() : v,
  );
  process.stdout.write(line + '\n');
}

const said = new Set<string>();

/** Logs a line once per process for a given key (degradations, kernel gaps). */
export function logOnce(key: string, level: Level, msg: string, fields: Record<string, unknown> = {}): void {
  if (said.has(key)) return;
  said.add(key);
  log(level, msg, fields);
}
