// What a client that has not yet sent a complete request may hold, on every
// mode's HTTP server (listenApp): a short deadline for the first request
// (TLS handshake included), a cap on open connections per source address,
// and a cap on connections still waiting for their first request, where a
// newcomer evicts the oldest waiting one rather than being refused, so a
// flood from any number of addresses cannot shut out a scraper that
// connects later. A connection that has sent a request is the server's
// (keep-alive scrapers stay), governed by Node's own timeouts.
//
// Why by hand: Node's headersTimeout/requestTimeout are checked only every
// connectionsCheckingInterval, count nothing, and know no source address;
// maxConnections refuses newcomers, which is the attack's goal. The guard is
// a plain TCP listener in front of the HTTP server: a refused connection is
// closed before the HTTP server (its parser, its TLS socket) ever sees it,
// which is what keeps a flood cheap; admitted ones are handed over with the
// server's own 'connection' event. Every refusal is counted
// (tcp_chrono_agent_http_rejected_total{reason}).
import type { Server } from 'node:http';
import { createServer as createTcpServer, type Server as TcpServer, type Socket } from 'node:net';
import { Counter, type Registry } from 'prom-client';

export interface GuardLimits {
  /** Seconds a connection may take to send its first complete request (TLS handshake included). */
  firstRequestTimeout: number;
  /** Open connections per source address. */
  maxPerAddress: number;
  /** Connections waiting for their first request; beyond, the oldest waiting one is closed. */
  maxWaiting: number;
}

export const DEFAULT_LIMITS: GuardLimits = { firstRequestTimeout: 3, maxPerAddress: 32, maxWaiting: 128 };

export const REJECT_REASONS = ['per_address', 'evicted', 'first_request_timeout'] as const;
export type RejectReason = (typeof REJECT_REASONS)[number];

/** Process-wide counts (one agent, one HTTP server; a mode's registry reads them at scrape time). */
export const rejected: Record<RejectReason, number> = { per_address: 0, evicted: 0, first_request_timeout: 0 };

/** Registers tcp_chrono_agent_http_rejected_total{reason} in a mode's registry. */
export function registerGuardMetrics(registry: Registry): void {
  new Counter({
    name: 'tcp_chrono_agent_http_rejected_total',
    help: 'Connections to the HTTP server closed before a complete request, by reason (per_address: the source address had --http-max-per-address open; evicted: the oldest of --http-max-waiting connections waiting for a first request, closed for a newcomer; first_request_timeout: no complete request, or no TLS handshake, within --http-first-request-timeout).',
    labelNames: ['reason'],
    registers: [registry],
    collect() {
      this.reset();
      for (const r of REJECT_REASONS) this.inc({ reason: r }, rejected[r]);
    },
  });
}

type Warn = (msg: string, fields: Record<string, unknown>) => void;

export interface Guard {
  /** Listen on this one; the HTTP server itself does not listen. */
  listener: TcpServer;
  /** Cuts every admitted connection (at shutdown), requests or not. */
  dropAll(): void;
}

/**
 * A TCP listener that admits connections to `server` (an http or https
 * server) within the limits.
 */
export function guardServer(server: Server, limits: GuardLimits, warn: Warn = () => undefined): Guard {
  // Paused: a refused connection is never read from.
  const front = createTcpServer({ pauseOnConnect: true });
  const admitted = new Set<Socket>();
  const perAddress = new Map<string, number>();
  // Waiting connections in arrival order (a Map keeps insertion order), by
  // peer address and port: under TLS the request's socket is the TLS socket,
  // not the TCP one the 'connection' event saw.
  const waiting = new Map<string, { s: Socket; timer: NodeJS.Timeout }>();
  const keyOf = (s: Socket): string => `${s.remoteAddress ?? '?'}|${s.remotePort ?? 0}`;
  let lastWarn = -Infinity;
  const count = (reason: RejectReason, address: string): void => {
    rejected[reason]++;
    const now = Date.now();
    if (now - lastWarn >= 60_000) {
      lastWarn = now;
      warn('HTTP connections are being refused or timed out (a client holding connections without requests?); counted in tcp_chrono_agent_http_rejected_total, logged at most once a minute', {
        reason,
        address,
        ...rejected,
      });
    }
  };
  const settle = (key: string): void => {
    const w = waiting.get(key);
    if (w !== undefined) {
      clearTimeout(w.timer);
      waiting.delete(key);
    }
  };

  front.on('connection', (s: Socket) => {
    const address = s.remoteAddress ?? '?';
    const n = (perAddress.get(address) ?? 0) + 1;
    if (n > limits.maxPerAddress) {
      count('per_address', address);
      // A reset, not a FIN: no closing handshake, no TIME_WAIT on our side.
      s.resetAndDestroy();
      return;
    }
    perAddress.set(address, n);
    admitted.add(s);
    const key = keyOf(s);
    s.once('close', () => {
      admitted.delete(s);
      // Only its own entry: a reconnection from the same port may hold the key by now.
      if (waiting.get(key)?.s === s) settle(key);
      const left = (perAddress.get(address) ?? 1) - 1;
      if (left <= 0) perAddress.delete(address);
      else perAddress.set(address, left);
    });
    if (waiting.size >= limits.maxWaiting) {
      const [oldest] = waiting.entries();
      if (oldest !== undefined) {
        settle(oldest[0]);
        count('evicted', oldest[1].s.remoteAddress ?? '?');
        oldest[1].s.destroy();
      }
    }
    // The verdict waits for the I/O phase that follows the timer (setImmediate
    // runs after it): a loop held up past the deadline (a long render under
    // load) would otherwise cut a client whose request sat unread in the
    // kernel's buffer all along.
    const timer = setTimeout(() => {
      setImmediate(() => {
        if (waiting.get(key)?.s !== s) return;
        waiting.delete(key);
        count('first_request_timeout', address);
        s.destroy();
      });
    }, limits.firstRequestTimeout * 1000);
    timer.unref();
    waiting.set(key, { s, timer });
    server.emit('connection', s);
    s.resume();
  });
  // A request whose headers are complete: the connection has shown it speaks HTTP.
  server.on('request', (req: { socket: Socket }) => {
    settle(keyOf(req.socket));
  });
  // Node's own deadline for a request's headers, for requests after the first.
  server.headersTimeout = Math.max(1000, limits.firstRequestTimeout * 1000);
  server.requestTimeout = 10_000;
  return {
    listener: front,
    dropAll: () => {
      for (const s of admitted) s.destroy();
    },
  };
}
