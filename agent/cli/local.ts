// The in-process poller of `top` and `diagnose`: the same sock_diag source
// and connection table as `watch`, without a server, so neither needs a
// running agent. Or, with --from, a running agent's /api/connections.
import { isSystemError } from '../native.js';
import type { PortRange } from '../parse/inet_diag.js';
import { DEFAULT_STATES, DiagSource } from '../sources/diag.js';
import { ConnectionTable } from '../model/connections.js';
import { OwnerResolver } from '../model/owners.js';
import { sampleOfApi, sampleOfConnection, type ConnSample } from '../model/verdict.js';

export interface Poller {
  /** One observation of every watched connection (those closed since the last one included). */
  poll(): Promise<ConnSample[]>;
  /** What is watched, for the start line and the screen title. */
  readonly describe: string;
}

export function parsePortRange(text: string): PortRange {
  const m = /^(\d+)(?:-(\d+))?$/.exec(text);
  const from = Number(m?.[1]);
  const to = m?.[2] !== undefined ? Number(m[2]) : from;
  if (m === null || from < 1 || to > 65535 || from > to) throw new Error('expected a port (1-65535) or a range like 8000-8100');
  return { from, to };
}

export function portsText(ports: readonly PortRange[]): string {
  return ports.length === 0 ? 'all ports' : ports.map((r) => (r.from === r.to ? `:${r.from}` : `:${r.from}-${r.to}`)).join(' ');
}

/** A sentence for a native error, by code. */
export function dumpFailure(e: unknown): string {
  if (isSystemError(e)) {
    const hints: Record<string, string> = {
      EPROTONOSUPPORT: 'the kernel has no sock_diag support for TCP (modprobe tcp_diag)',
      ENOENT: 'the kernel has no inet_diag handler for TCP (modprobe tcp_diag)',
      EPERM: 'the kernel refused the sock_diag dump (a seccomp or LSM policy may block netlink sockets)',
      EACCES: 'the kernel refused the sock_diag dump (a seccomp or LSM policy may block netlink sockets)',
    };
    return `cannot dump TCP sockets: ${hints[e.code] ?? e.message} (${e.syscall}: ${e.code})`;
  }
  return `cannot dump TCP sockets: ${e instanceof Error ? e.message : String(e)}`;
}

export class LocalPoller implements Poller {
  private readonly source: DiagSource;
  private readonly table: ConnectionTable;
  private readonly owners: OwnerResolver | undefined;
  readonly describe: string;

  constructor(ports: readonly PortRange[], owners = true) {
    this.source = new DiagSource({ ports, remoteCidrs: [], states: DEFAULT_STATES });
    this.owners = owners ? new OwnerResolver({ minRescanMs: 2000 }) : undefined;
    const o = this.owners;
    this.table = new ConnectionTable({ closeGraceMs: 0, portsChosen: ports.length > 0, onNew: o !== undefined ? (c) => o.request(c) : undefined });
    this.describe = `${portsText(ports)} in this network namespace`;
  }

  poll(): Promise<ConnSample[]> {
    try {
      const listening = new Set<number>();
      this.table.beginPoll(Date.now(), listening);
      const r = this.source.poll((s) => this.table.track(s), listening);
      this.table.endPoll(!r.interrupted);
    } catch (e) {
      return Promise.reject(new Error(dumpFailure(e)));
    }
    void this.owners?.flush();
    const out: ConnSample[] = [];
    for (const c of this.table.open.values()) out.push(sampleOfConnection(c));
    for (const c of this.table.takeClosed()) out.push(sampleOfConnection(c));
    return Promise.resolve(out);
  }
}

/** Reads a running agent's /api/connections (watch, or proxy with its diag poller). */
export class RemotePoller implements Poller {
  readonly describe: string;
  private readonly url: URL;

  constructor(base: string, private readonly ports: readonly PortRange[]) {
    this.url = new URL('/api/connections?sort=stall&limit=100000', base);
    this.describe = `${portsText(ports)} via ${base}`;
  }

  async poll(): Promise<ConnSample[]> {
    let body: { connections?: Record<string, unknown>[] };
    try {
      const r = await fetch(this.url, { signal: AbortSignal.timeout(5000) });
      if (!r.ok) throw new Error(`HTTP ${r.status}`);
      body = (await r.json()) as typeof body;
    } catch (e) {
      throw new Error(`cannot read ${this.url.href}: ${e instanceof Error ? e.message : String(e)}`);
    }
    const raw = body.connections ?? [];
    const localPort = (j: Record<string, unknown>): number => Number(/:(\d+)$/.exec(String(j.local ?? ''))?.[1] ?? 0);
    const kept = this.ports.length === 0 ? raw : raw.filter((j) => this.ports.some((r) => localPort(j) >= r.from && localPort(j) <= r.to));
    return kept.map(sampleOfApi);
  }
}
