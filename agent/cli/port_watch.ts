// The sock_diag connection metrics of `watch` for a few ports, for the
// per-chunk modes (proxy, attach): their operators get the per-port and
// per-connection chronographs of the same sockets next to the chunk records.
import { release } from 'node:os';
import { WatchMetrics } from '../export/metrics.js';
import { ConnectionTable, type Connection } from '../model/connections.js';
import type { PortRange } from '../parse/inet_diag.js';
import { DEFAULT_STATES, DiagSource } from '../sources/diag.js';
import { logOnce } from './log.js';
import { version } from './version.js';

export interface PortWatch {
  table: ConnectionTable;
  /** Its registry is the mode's registry: register chunk and self metrics on it. */
  metrics: WatchMetrics;
  /** Watches more ports from the next poll on (attach learns the target's ports over time). */
  setPorts(ports: PortRange[]): void;
  /** Whether the connection of this socket inode had its send buffer bound at its last poll (false if unknown). */
  bufferBound(inode: number): boolean;
  stop(): void;
}

/**
 * Polls the connections of `ports` every `intervalSeconds`. Throws when the
 * first dump fails (the caller reports it as degraded and goes on without).
 */
export function startPortWatch(ports: PortRange[], o: { intervalSeconds: number; maxSeries: number }): PortWatch {
  const table = new ConnectionTable({ closeGraceMs: 0, portsChosen: true });
  let source = new DiagSource({ ports, remoteCidrs: [], states: DEFAULT_STATES });
  source.poll();
  const stats = { polls: 0, pollErrors: 0, parseErrors: 0, interrupted: 0, seen: 0 };
  // Connections by socket inode for attach's per-chunk question, built on the
  // first question after a poll (proxy never asks).
  let byInode: Map<number, Connection> | undefined;
  const metrics = new WatchMetrics(
    table,
    undefined,
    () => ({
      polls: stats.polls,
      pollErrors: stats.pollErrors,
      parseErrors: { dump: stats.parseErrors, destroy: 0 },
      dumpInterrupted: stats.interrupted,
      socketsSeen: stats.seen,
      destroyFeedUp: false,
      destroyedSockets: 0,
      destroyFeedLost: 0,
      ownerScans: 0,
    }),
    { maxConnections: o.maxSeries, info: { version: version(), kernel: release(), destroyFeed: 'off' } },
  );
  const poll = (): void => {
    try {
      const r = source.poll();
      table.applyPoll(r.sockets, Date.now(), r.listeningPorts, !r.interrupted);
      byInode = undefined;
      stats.polls++;
      stats.seen = r.seen;
      stats.parseErrors += r.parseErrors;
      stats.interrupted += r.interruptedRetries + (r.interrupted ? 1 : 0);
    } catch (e) {
      stats.pollErrors++;
      const error = e instanceof Error ? e.message : String(e);
      logOnce(`poll:${error}`, 'warn', 'sock_diag poll failed; retrying every interval', { error });
    }
  };
  poll();
  const timer = setInterval(poll, o.intervalSeconds * 1000);
  return {
    table,
    metrics,
    bufferBound(inode: number): boolean {
      if (byInode === undefined) {
        byInode = new Map();
        for (const c of table.open.values()) if (c.inode !== 0) byInode.set(c.inode, c);
      }
      return byInode.get(inode)?.bufferBound === true;
    },
    setPorts(next: PortRange[]): void {
      source = new DiagSource({ ports: next, remoteCidrs: [], states: DEFAULT_STATES });
    },
    stop(): void {
      clearInterval(timer);
    },
  };
}
