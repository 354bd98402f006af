// The HTTP server of every mode (/metrics, /healthz, /api/…): one way to
// start it (agent/export/http.ts listenApp: token auth, TLS, redacted JSON,
// bounded requests) and one sentence when it cannot listen.
import type { Server } from 'node:http';
import type express from 'express';
import { listenApp, type HttpSecurity } from '../export/http.js';
import { log } from './log.js';

import { hostPort, type HostPort } from '../address.js';

export { hostPort, type HostPort };

/** Loopback addresses: the only ones a mode listens on unless told otherwise. */
export const isLoopback = (host: string): boolean => /^127\./.test(host) || host === '::1' || host === 'localhost' || /^::ffff:127\./i.test(host);

/**
 * Listens on `a`; resolves with the server and the address it got (port 0
 * chosen by the kernel), rejects with the listen error. Warns once when the
 * address is not loopback and nothing guards it.
 */
export async function startServer(app: express.Express, a: HostPort, security: HttpSecurity = {}): Promise<{ server: Server; address: HostPort; close(): Promise<void> }> {
  const l = await listenApp(app, a.host, a.port, security);
  if (!isLoopback(a.host) && security.token === undefined) {
    log('warn', 'the HTTP server listens beyond loopback without --auth-token-file: anyone who can reach it reads every metric and connection', {
      listen: hostPort(l.address),
    });
  }
  return l;
}

/** One sentence for a listen error, naming the flag that fixes it (`what`: '' when the mode has one listener). */
export function listenFailure(what: string, a: HostPort, flag: string, e: unknown): Error {
  const code = e instanceof Error && 'code' in e ? String((e as { code: unknown }).code) : '';
  const why =
    code === 'EADDRINUSE'
      ? 'the address is in use'
      : code === 'EACCES'
        ? 'permission denied (ports below 1024 need CAP_NET_BIND_SERVICE)'
        : code === 'EADDRNOTAVAIL'
          ? 'no such local address'
          : code === 'ENOTFOUND' || code === 'EAI_AGAIN'
            ? 'the host name does not resolve'
            : e instanceof Error
              ? e.message
              : String(e);
  return new Error(`cannot listen${what !== '' ? ` for ${what}` : ''} on ${hostPort(a)}: ${why}; choose another with ${flag}`);
}
