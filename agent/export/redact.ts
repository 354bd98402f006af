// Client-address redaction for every output: metrics labels, JSON (the API,
// the live page, /healthz), chunk events, logs, top and diagnose. Client
// addresses are personal data for a video service; the operator chooses what
// leaves the agent with `--redact`:
//
//   (not given)              addresses as they are (the default; the listener is loopback-only)
//   remote                   the address is dropped: "redacted:51234"
//   remote=prefix/24         truncated to its network: "10.1.2.0/24:51234"; IPv6 to /64
//   remote=prefix/24/48      the same, IPv6 to /48
//   remote=hash              a keyed hash (HMAC-SHA256, 64 bits): "h-3fa2c1d0e9b8a7f6:51234";
//                            key from --redact-key-file, else random per start (then hashes
//                            match within one run only)
//
// The peer's port is kept in every form: it is chosen by the client's kernel,
// identifies no one without the address, and keeps connections apart (two
// connections from one network would otherwise share one per-connection
// series). The local side (our own address and port) is never redacted.
//
// One policy per process (configureRedaction, called by each command after its
// flags are parsed), like the log format: the outputs are spread over layers
// that otherwise share nothing, and a forgotten parameter would leak.
import { createHmac, randomBytes } from 'node:crypto';
import { isIP } from 'node:net';

export type RedactPolicy =
  | { kind: 'none' }
  | { kind: 'drop' }
  | { kind: 'prefix'; v4: number; v6: number }
  | { kind: 'hash'; key?: Buffer };

let policy: RedactPolicy = { kind: 'none' };
let hashKey: Buffer = randomBytes(32);
const cache = new Map<string, string>();
const CACHE_MAX = 100_000;

/** Parses the text of `--redact` (throws Error whose message says what is expected). */
export function parseRedact(text: string): RedactPolicy {
  const expected = 'expected remote, remote=prefix/24 (IPv6 /64), remote=prefix/24/48, remote=hash or none';
  if (text === 'none') return { kind: 'none' };
  if (text === 'remote') return { kind: 'drop' };
  if (text === 'remote=hash') return { kind: 'hash' };
  const m = /^remote=prefix\/(\d{1,2})(?:\/(\d{1,3}))?$/.exec(text);
  if (m === null) throw new Error(expected);
  const v4 = Number(m[1]);
  const v6 = m[2] !== undefined ? Number(m[2]) : 64;
  if (v4 > 32) throw new Error('the IPv4 prefix length must be from 0 to 32');
  if (v6 > 128) throw new Error('the IPv6 prefix length must be from 0 to 128');
  return { kind: 'prefix', v4, v6 };
}

/** Sets the process's policy; a hash policy without a key gets a random one for this run. */
export function configureRedaction(p: RedactPolicy): void {
  policy = p;
  cache.clear();
  if (p.kind === 'hash') hashKey = p.key ?? randomBytes(32);
}

export function redactionPolicy(): RedactPolicy {
  return policy;
}

export const redacting = (): boolean => policy.kind !== 'none';

/** For the start line: what is redacted and how (never the key). */
export function describeRedaction(): string {
  switch (policy.kind) {
    case 'none':
      return 'none';
    case 'drop':
      return 'remote address dropped';
    case 'prefix':
      return `remote address truncated to /${policy.v4} (IPv4), /${policy.v6} (IPv6)`;
    case 'hash':
      return `remote address hashed (HMAC-SHA256, key ${policy.key !== undefined ? 'from --redact-key-file' : 'random for this run'})`;
  }
}

function truncate4(a: string, len: number): string {
  const n = a.split('.').reduce((acc, o) => acc * 256 + Number(o), 0);
  const mask = len === 0 ? 0 : Number((0xffffffffn << BigInt(32 - len)) & 0xffffffffn);
  const net = Number(BigInt(n) & BigInt(mask));
  return `${[24, 16, 8, 0].map((s) => (net >>> s) & 255).join('.')}/${len}`;
}

function expand6(a: string): number[] {
  // Embedded IPv4 tail (::ffff:1.2.3.4) into two groups first.
  let text = a;
  const v4 = /(\d+\.\d+\.\d+\.\d+)$/.exec(text);
  if (v4 !== null) {
    const o = v4[1]!.split('.').map(Number);
    text = text.slice(0, -v4[1]!.length) + `${((o[0]! << 8) | o[1]!).toString(16)}:${((o[2]! << 8) | o[3]!).toString(16)}`;
  }
  const [head, tail] = text.includes('::') ? text.split('::') : [text, undefined];
  const h = head === '' ? [] : head!.split(':');
  const t = tail === undefined || tail === '' ? [] : tail.split(':');
  const zeros = tail === undefined ? 0 : 8 - h.length - t.length;
  return [...h, ...Array<string>(zeros).fill('0'), ...t].map((g) => parseInt(g, 16));
}

function truncate6(a: string, len: number): string {
  const groups = expand6(a).map((g, i) => {
    const bits = Math.max(0, Math.min(16, len - i * 16));
    return bits === 0 ? 0 : g & ((0xffff << (16 - bits)) & 0xffff);
  });
  // Shortest form: drop the trailing zero groups.
  let last = groups.length;
  while (last > 0 && groups[last - 1] === 0) last--;
  const shown = groups.slice(0, last).map((g) => g.toString(16));
  return `${shown.join(':')}${last < 8 ? '::' : ''}/${len}`;
}

/** An address as the policy allows it out (the policy's form; unchanged with none). */
export function redactAddress(address: string): string {
  if (policy.kind === 'none') return address;
  if (policy.kind === 'drop') return 'redacted';
  const family = isIP(address);
  if (family === 0) return 'redacted';
  if (policy.kind === 'hash') return `h-${createHmac('sha256', hashKey).update(address.toLowerCase()).digest('hex').slice(0, 16)}`;
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  if (family === 4 || mapped !== null) return truncate4(mapped?.[1] ?? address, policy.v4);
  return truncate6(address, policy.v6);
}

/** What redactEndpoint produces: passed through unchanged (an agent read with `--from` already redacted it). */
const ALREADY = /^(?:redacted|h-[0-9a-f]{16}|[0-9.]+\/\d+|\[[0-9a-f:]*\/\d+\]):\d+$/;

/** "ip:port" or "[v6]:port" of a peer, redacted by the policy (port kept). */
export function redactEndpoint(endpoint: string): string {
  if (policy.kind === 'none') return endpoint;
  const hit = cache.get(endpoint);
  if (hit !== undefined) return hit;
  let out: string;
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([0-9.]+)):(\d+)$/.exec(endpoint);
  if (m !== null) {
    const r = redactAddress((m[1] ?? m[2])!);
    out = `${r.includes(':') ? `[${r}]` : r}:${m[3]}`;
  } else if (ALREADY.test(endpoint)) {
    out = endpoint;
  } else {
    out = isIP(endpoint) !== 0 ? redactAddress(endpoint) : 'redacted';
  }
  if (cache.size >= CACHE_MAX) cache.clear();
  cache.set(endpoint, out);
  return out;
}

/** The object keys that carry a peer's endpoint in JSON outputs and logs. */
const PEER_KEYS = new Set(['remote', 'peer', 'client']);

/**
 * A JSON.stringify replacer that redacts the peer keys (remote, peer, client)
 * wherever they appear; undefined when nothing is redacted (no cost).
 */
export function jsonReplacer(): ((key: string, value: unknown) => unknown) | undefined {
  if (policy.kind === 'none') return undefined;
  return (key, value) => (typeof value === 'string' && PEER_KEYS.has(key) ? redactEndpoint(value) : value);
}

/** A copy of log fields with the peer keys redacted (one level of nesting, as log lines have). */
export function redactFields(fields: Record<string, unknown>): Record<string, unknown> {
  if (policy.kind === 'none') return fields;
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(fields)) {
    if (typeof v === 'string' && PEER_KEYS.has(k)) out[k] = redactEndpoint(v);
    else if (v !== null && typeof v === 'object' && !Array.isArray(v)) out[k] = redactFields(v as Record<string, unknown>);
    else out[k] = v;
  }
  return out;
}
