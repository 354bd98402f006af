// The sock_diag connection metrics of `watch` for a few ports, for the
// per-chunk modes (proxy, attach, trace): their operators get the per-port and
// per-connection chronographs of the same sockets next to the chunk records.
import { release } from 'node:os';
import { WatchMetrics } from '../export/metrics.js';
import { ConnectionTable, type Connection } from '../model/connections.js';
import type { PortRange } from '../parse/inet_diag.js';
import { DEFAULT_STATES, DiagSource } from '../sources/diag.js';
import { DiagPoller, type PollStats } from '../sources/diag_poller.js';
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

const sourceFor = (ports: PortRange[]): DiagSource => new DiagSource({ ports, remoteCidrs: [], states: DEFAULT_STATES });

/** The connection view's metrics (watch's, without a destroy feed or owners), read from `table` and `stats` at each scrape. */
export function portWatchMetrics(table: ConnectionTable, stats: PollStats, maxSeries: number): WatchMetrics {
  return new WatchMetrics(
    table,
    undefined,
    () => ({
      polls: stats.polls,
      pollErrors: stats.pollErrors,
      parseErrors: { dump: stats.dumpParseErrors, destroy: 0 },
      dumpInterrupted: stats.dumpInterrupted,
      socketsSeen: stats.socketsSeen,
      destroyFeedUp: false,
      destroyedSockets: 0,
      destroyFeedLost: 0,
      ownerScans: 0,
    }),
    { maxConnections: maxSeries, info: { version: version(), kernel: release(), destroyFeed: 'off' } },
  );
}

/**
 * Polls the connections of `ports` every `intervalSeconds`. Throws when the
 * first dump fails (the caller reports it as degraded and goes on without).
 */
export function startPortWatch(ports: PortRange[], o: { intervalSeconds: number; maxSeries: number }): PortWatch {
  const table = new ConnectionTable({ closeGraceMs: 0, portsChosen: true });
  const poller = new DiagPoller(sourceFor(ports), table);
  poller.poll();
  const stats = poller.stats;
  // Connections by socket inode for attach's per-chunk question, built on the
  // first question after a poll (proxy never asks).
  let byInode: Map<number, Connection> | undefined;
  const metrics = portWatchMetrics(table, stats, o.maxSeries);
  const poll = (): void => {
    const r = poller.tryPoll(metrics.pollDuration);
    byInode = undefined;
    if (typeof r === 'string') logOnce(`poll:${r}`, 'warn', 'sock_diag poll failed; retrying every interval', { error: r });
  };
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
      poller.source = sourceFor(next);
    },
    stop(): void {
      clearInterval(timer);
    },
  };
}
