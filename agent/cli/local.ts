// The in-process poller of `top` and `diagnose`: the same sock_diag source
// and connection table as `watch`, without a server, so neither needs a
// running agent. Or, with --from, a running agent's /api/connections.
import type { PortRange } from '../parse/inet_diag.js';
import { DEFAULT_STATES, DiagSource } from '../sources/diag.js';
import { DiagPoller, dumpFailure } from '../sources/diag_poller.js';
import { ConnectionTable } from '../model/connections.js';
import { OwnerResolver } from '../model/owners.js';
import { sampleOfApi, sampleOfConnection, type ConnSample } from '../model/verdict.js';
import { redactEndpoint } from '../export/redact.js';
import { readFileSync } from 'node:fs';
import type { FlagSpec } from './flags.js';

/** --from URL: a running agent (watch, or proxy with its diag poller). */
export const FROM_FLAG = {
  name: 'from',
  arg: 'URL',
  help: "Read a running agent's /api/connections (e.g. http://127.0.0.1:9465) instead of polling here.\nHTTPS with a private CA: NODE_EXTRA_CA_CERTS=ca.pem.",
  parse: (t: string) => {
    let u: URL;
    try {
      u = new URL(t);
    } catch {
      throw new Error('expected a URL like http://127.0.0.1:9465');
    }
    if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new Error('expected an http:// or https:// URL');
    return u.href;
  },
} satisfies FlagSpec<string>;

/** --auth-token-file FILE: the token a --from agent requires. */
export const FROM_TOKEN_FLAG = {
  name: 'auth-token-file',
  arg: 'FILE',
  help: "With --from: send the token in FILE (the agent's --auth-token-file) as a bearer token.",
  parse: (t: string) => {
    try {
      return readFileSync(t, 'utf8').split('\n')[0]!.trim();
    } catch (e) {
      throw new Error(`cannot read it (${(e as NodeJS.ErrnoException).code ?? (e as Error).message}); give a readable file`);
    }
  },
} satisfies FlagSpec<string>;

/** Client addresses as --redact allows, whichever poller saw them. */
function redacted(s: ConnSample): ConnSample {
  s.remote = redactEndpoint(s.remote);
  return s;
}

export interface Poller {
  /** One observation of every watched connection (those closed since the last one included). */
  poll(): Promise<ConnSample[]>;
  /** What is watched, for the start line and the screen title. */
  readonly describe: string;
}

export function portsText(ports: readonly PortRange[]): string {
  return ports.length === 0 ? 'all ports' : ports.map((r) => (r.from === r.to ? `:${r.from}` : `:${r.from}-${r.to}`)).join(' ');
}

export class LocalPoller implements Poller {
  private readonly poller: DiagPoller;
  private readonly table: ConnectionTable;
  private readonly owners: OwnerResolver | undefined;
  readonly describe: string;

  constructor(ports: readonly PortRange[], owners = true) {
    this.owners = owners ? new OwnerResolver({ minRescanMs: 2000 }) : undefined;
    const o = this.owners;
    this.table = new ConnectionTable({ closeGraceMs: 0, portsChosen: ports.length > 0, onNew: o !== undefined ? (c) => o.request(c) : undefined });
    this.poller = new DiagPoller(new DiagSource({ ports, remoteCidrs: [], states: DEFAULT_STATES }), this.table);
    this.describe = `${portsText(ports)} in this network namespace`;
  }

  poll(): Promise<ConnSample[]> {
    try {
      this.poller.poll();
    } catch (e) {
      return Promise.reject(new Error(dumpFailure(e)));
    }
    void this.owners?.flush();
    const out: ConnSample[] = [];
    for (const c of this.table.open.values()) out.push(redacted(sampleOfConnection(c)));
    for (const c of this.table.takeClosed()) out.push(redacted(sampleOfConnection(c)));
    return Promise.resolve(out);
  }
}

/** Reads a running agent's /api/connections (watch, or proxy with its diag poller). */
export class RemotePoller implements Poller {
  readonly describe: string;
  private readonly url: URL;

  constructor(
    base: string,
    private readonly ports: readonly PortRange[],
    private readonly token?: string,
  ) {
    this.url = new URL('/api/connections?sort=stall&limit=100000', base);
    this.describe = `${portsText(ports)} via ${base}`;
  }

  async poll(): Promise<ConnSample[]> {
    let body: { connections?: Record<string, unknown>[] };
    try {
      const headers: Record<string, string> = this.token !== undefined ? { authorization: `Bearer ${this.token}` } : {};
      const r = await fetch(this.url, { signal: AbortSignal.timeout(5000), headers });
      if (r.status === 401) throw new Error('the agent requires a token: give its token file with --auth-token-file');
      if (!r.ok) throw new Error(`HTTP ${r.status}; is --from the address of a watch agent (or a proxy with --diag on)?`);
      body = (await r.json()) as typeof body;
    } catch (e) {
      throw new Error(`cannot read ${this.url.href}: ${fetchProblem(e)}`);
    }
    const raw = body.connections ?? [];
    const localPort = (j: Record<string, unknown>): number => Number(/:(\d+)$/.exec(String(j.local ?? ''))?.[1] ?? 0);
    const kept = this.ports.length === 0 ? raw : raw.filter((j) => this.ports.some((r) => localPort(j) >= r.from && localPort(j) <= r.to));
    return kept.map((j) => redacted(sampleOfApi(j)));
  }
}

/** What went wrong with a fetch, as a sentence with the fix (undici hides the cause). */
function fetchProblem(e: unknown): string {
  const cause = (e as { cause?: { code?: string; message?: string } }).cause;
  const code = cause?.code ?? (e as { name?: string }).name ?? '';
  if (cause?.message === 'bad port') return 'fetch refuses to connect to this port (on the browsers\' blocked list); run the agent on another port';
  if (code === 'ECONNREFUSED') return 'connection refused; is the agent running there? check --from';
  if (code === 'ENOTFOUND' || code === 'EAI_AGAIN') return 'the host name does not resolve; check --from';
  if (code === 'TimeoutError' || code === 'UND_ERR_CONNECT_TIMEOUT') return 'no answer within 5 s; check --from';
  if (code === 'DEPTH_ZERO_SELF_SIGNED_CERT' || code === 'SELF_SIGNED_CERT_IN_CHAIN' || code === 'UNABLE_TO_VERIFY_LEAF_SIGNATURE')
    return `the agent's certificate is not trusted (${code}); give its CA with NODE_EXTRA_CA_CERTS=ca.pem`;
  if (code === 'UND_ERR_SOCKET' || code === 'ECONNRESET') return 'the connection was closed; is it an https:// agent? check the scheme of --from';
  return cause?.message ?? (e instanceof Error ? e.message : String(e));
}
