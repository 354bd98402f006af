// Flags that several commands offer (watch, proxy, attach). Each command
// picks what it needs and keeps its own help text (and default, where the
// commands differ on purpose: each mode's metrics port is its own, so they can
// run side by side).
import { readFileSync } from 'node:fs';
import { createSecureContext } from 'node:tls';
import type { HttpSecurity } from '../export/http.js';
import { configureRedaction, parseRedact, type RedactPolicy } from '../export/redact.js';
import type { PortRange } from '../parse/inet_diag.js';
import { parseChoice, parseDuration, parseIntIn, parseListen, UsageError, type FlagSpec } from './flags.js';
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

/** --diag on|off (default on): a chunk mode also exports watch's metrics for its ports. */
export function diagFlag(help: string) {
  return { name: 'diag', arg: 'on|off', default: 'on', help, parse: parseChoice(['on', 'off'] as const) } satisfies FlagSpec<'on' | 'off'>;
}

/** --max-connection-series N (default 200, 0 to 100 000): the per-connection series of --diag on. */
export function maxConnectionSeriesFlag(help: string) {
  return { name: 'max-connection-series', arg: 'N', default: '200', help, parse: parseIntIn(0, 100_000) } satisfies FlagSpec<number>;
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

/** The contents of a file named by a flag; the error says what to fix. */
function readFlagFile(path: string, what: string): Buffer {
  if (path === '') throw new Error('expected a file path');
  try {
    return readFileSync(path);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code ?? '';
    const why =
      code === 'ENOENT'
        ? 'no such file'
        : code === 'EACCES'
          ? 'permission denied (the agent cannot read it)'
          : code === 'EISDIR'
            ? 'it is a directory'
            : (e as Error).message;
    throw new Error(`cannot read ${what}: ${why}; give a readable file`);
  }
}

/**
 * Who may read the HTTP server and how: --auth-token-file, --tls-cert,
 * --tls-key (every mode with a listener; agent/export/http.ts listenApp).
 */
export const SERVE_FLAGS = {
  authTokenFile: {
    name: 'auth-token-file',
    arg: 'FILE',
    help: 'Require `Authorization: Bearer TOKEN` (TOKEN: the first line of FILE) on every route but\n/healthz; browsers may use Basic auth with TOKEN as the password (any user name).',
    parse: (t: string) => {
      const token = readFlagFile(t, 'the token file').toString('utf8').split('\n')[0]!.trim();
      if (token.length < 16) throw new Error('the token must be at least 16 characters on the first line (e.g. openssl rand -hex 32 > FILE)');
      return token;
    },
  } satisfies FlagSpec<string>,
  tlsCert: {
    name: 'tls-cert',
    arg: 'FILE',
    help: 'Serve HTTPS with this PEM certificate (chain); needs --tls-key.',
    parse: (t: string) => readFlagFile(t, 'the certificate'),
  } satisfies FlagSpec<Buffer>,
  tlsKey: {
    name: 'tls-key',
    arg: 'FILE',
    help: 'The PEM private key of --tls-cert.',
    parse: (t: string) => readFlagFile(t, 'the key'),
  } satisfies FlagSpec<Buffer>,
  httpFirstRequestTimeout: {
    name: 'http-first-request-timeout',
    arg: 'DURATION',
    default: '3s',
    help: 'Close an HTTP connection that has not sent a complete first request (or finished its TLS\nhandshake) this long after connecting.',
    parse: durationIn(0.1, 60, 'must be from 100ms to 60s'),
  } satisfies FlagSpec<number>,
  httpMaxPerAddress: {
    name: 'http-max-per-address',
    arg: 'N',
    default: '32',
    help: 'Most HTTP connections open at once from one source address; more are reset at once\n(a client pool that reconnects briefly holds a few more than it uses).',
    parse: parseIntIn(1, 10_000),
  } satisfies FlagSpec<number>,
  httpMaxWaiting: {
    name: 'http-max-waiting',
    arg: 'N',
    default: '128',
    help: 'Most HTTP connections waiting for their first request; a newcomer closes the oldest waiting one.',
    parse: parseIntIn(1, 100_000),
  } satisfies FlagSpec<number>,
};

/** --tls-cert and --tls-key together, and a pair that TLS accepts; throws UsageError. */
export function serveSecurity(
  o: { authTokenFile?: string; tlsCert?: Buffer; tlsKey?: Buffer; httpFirstRequestTimeout: number; httpMaxPerAddress: number; httpMaxWaiting: number },
  command: string,
): HttpSecurity {
  if ((o.tlsCert === undefined) !== (o.tlsKey === undefined)) {
    throw new UsageError(`--tls-cert and --tls-key go together: give both (see \`tcp-chronograph ${command} --help\`)`);
  }
  const security: HttpSecurity = { limits: { firstRequestTimeout: o.httpFirstRequestTimeout, maxPerAddress: o.httpMaxPerAddress, maxWaiting: o.httpMaxWaiting } };
  if (o.authTokenFile !== undefined) security.token = o.authTokenFile;
  if (o.tlsCert !== undefined && o.tlsKey !== undefined) {
    try {
      createSecureContext({ cert: o.tlsCert, key: o.tlsKey });
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code ?? '';
      const why = code === 'ERR_OSSL_X509_KEY_VALUES_MISMATCH' || /mismatch/i.test(String((e as Error).message)) ? 'the key does not belong to the certificate' : 'they are not a PEM certificate and private key';
      throw new UsageError(`--tls-cert/--tls-key: ${why}; give the matching PEM pair`);
    }
    security.tls = { cert: o.tlsCert, key: o.tlsKey };
  }
  return security;
}

/** --redact and --redact-key-file (agent/export/redact.ts), for every command with an output. */
export const REDACT_FLAGS = {
  redact: {
    name: 'redact',
    arg: 'POLICY',
    default: 'none',
    help: 'Client addresses in every output (metrics, API, events, logs, page): none; remote (dropped);\nremote=prefix/24 (truncated; IPv6 /64, or remote=prefix/24/48); remote=hash (keyed HMAC).\nThe peer port is kept.',
    parse: parseRedact,
  } satisfies FlagSpec<RedactPolicy>,
  redactKeyFile: {
    name: 'redact-key-file',
    arg: 'FILE',
    help: 'Key of --redact remote=hash (at least 16 bytes), so hashes match across restarts and agents;\nwithout it a random key is made at each start.',
    parse: (t: string) => {
      const key = readFlagFile(t, 'the key file');
      if (key.length < 16) throw new Error('the key must be at least 16 bytes (e.g. openssl rand 32 > FILE)');
      return key;
    },
  } satisfies FlagSpec<Buffer>,
};

/** Applies --redact for the whole process; throws UsageError on a key without hashing. */
export function applyRedaction(o: { redact: RedactPolicy; redactKeyFile?: Buffer }): void {
  if (o.redactKeyFile !== undefined && o.redact.kind !== 'hash') throw new UsageError('--redact-key-file is only used with --redact remote=hash; drop it or hash');
  configureRedaction(o.redact.kind === 'hash' ? { kind: 'hash', key: o.redactKeyFile } : o.redact);
}
