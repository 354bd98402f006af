// The report of `diagnose` (and the words `top` uses): per-port sentences
// with the evidence and what to do, the worst connections, and number
// formatting, built from the model's windows and verdicts (agent/model/verdict.ts).
import type { Limit, Shares } from '../model/classify.js';
import { badness, portLimit, windowLimit, windowShares, zeroFigures, type ConnSample, type ConnWindow, type WindowFigures, type WindowTracker } from '../model/verdict.js';

export const ADVICE: Record<Limit, string> = {
  rwnd: "the client is not reading: player buffer full or client overloaded (CPU, disk, a small receive buffer)",
  sndbuf: 'the server\'s send buffer is too small for this path: raise SO_SNDBUF or net.ipv4.tcp_wmem (long-RTT paths need more)',
  network: 'the path limits delivery: congestion window, pacing or loss on the way to the client',
  app: 'the server had nothing to send: the application (or its upstream) was slow to produce data',
  unknown: 'too little sending time to tell (the chronographs tick every 4 ms)',
};

export const CAUSE: Record<Limit, string> = {
  rwnd: "the client's receive window",
  sndbuf: "the server's send buffer",
  network: 'the network (congestion window, pacing, loss)',
  app: 'the application (nothing to send)',
  unknown: 'nothing measurable',
};

export function pct(x: number): string {
  return `${Math.round(x * 100)} %`;
}

export function secs(x: number): string {
  return x >= 10 ? `${Math.round(x)} s` : `${x.toFixed(1)} s`;
}

export function bytesText(n: number): string {
  if (n >= 1 << 30) return `${(n / (1 << 30)).toFixed(1)} GiB`;
  if (n >= 1 << 20) return `${(n / (1 << 20)).toFixed(1)} MiB`;
  if (n >= 1 << 10) return `${(n / (1 << 10)).toFixed(1)} KiB`;
  return `${Math.round(n)} B`;
}

/** Seconds spent in a limit over a window (app: idle connection-time). */
export function limitSeconds(f: WindowFigures, limit: Limit): number {
  switch (limit) {
    case 'rwnd':
      return f.rwndLimited;
    case 'sndbuf':
      return f.sndbufLimited + f.sndbufBound;
    case 'network':
      return Math.max(0, f.busy - f.rwndLimited - f.sndbufLimited - f.sndbufBound);
    case 'app':
      return Math.max(0, f.seconds - f.busy);
    default:
      return 0;
  }
}

/** "73 % of sending time on :8080 was limited by the client's receive window" */
export function headline(port: string, f: WindowFigures, limit: Limit): string {
  const out = port === 'ephemeral';
  const conns = out ? 'outbound connections' : `connections on :${port}`;
  if (limit === 'unknown') return `too little data from ${conns} to tell (${secs(f.seconds)} of connection time)`;
  if (limit === 'app') {
    return `${conns} were idle ${pct(f.seconds > 0 ? limitSeconds(f, 'app') / f.seconds : 0)} of the time`;
  }
  const share = f.busy > 0 ? limitSeconds(f, limit) / f.busy : 0;
  return `${pct(share)} of sending time ${out ? 'of outbound connections' : `on :${port}`} was limited by ${CAUSE[limit]}`;
}

/** The figure in brackets after a connection's name. */
export function evidence(w: ConnWindow, limit: Limit): string {
  switch (limit) {
    case 'rwnd': {
      const parts = [`rwnd-limited ${secs(w.rwndLimited)} of ${secs(w.seconds)}`];
      if (w.zeroWindowSeconds > 0) parts.unshift(`peer window 0 for ${secs(w.zeroWindowSeconds)}`);
      else if (w.minPeerRwnd !== null) parts.push(`peer window down to ${bytesText(w.minPeerRwnd)}`);
      return parts.join(', ');
    }
    case 'sndbuf': {
      const rtt = `RTT ${(w.last.rtt * 1000).toFixed(1)} ms`;
      if (w.sndbufBound <= w.sndbufLimited) return `send buffer full ${secs(w.sndbufLimited)} of ${secs(w.seconds)}, ${rtt}`;
      const size = w.last.sndbuf > 0 ? ` (${bytesText(w.last.sndbuf)})` : '';
      return `send buffer${size} smaller than the congestion window and full for ${secs(w.sndbufLimited + w.sndbufBound)} of ${secs(w.seconds)}, ${rtt}`;
    }
    case 'network':
      return `busy ${secs(w.busy)} of ${secs(w.seconds)} at ${rateText(w.last.deliveryRate)}, RTT ${(w.last.rtt * 1000).toFixed(1)} ms${w.bytesRetrans > 0 ? `, ${bytesText(w.bytesRetrans)} retransmitted` : ''}`;
    case 'app':
      return `idle ${secs(Math.max(0, w.seconds - w.busy))} of ${secs(w.seconds)}`;
    default:
      return `${secs(w.seconds)} observed`;
  }
}

export function rateText(bytesPerSecond: number): string {
  const bits = bytesPerSecond * 8;
  if (bits >= 1e9) return `${(bits / 1e9).toFixed(1)} Gbit/s`;
  if (bits >= 1e6) return `${(bits / 1e6).toFixed(1)} Mbit/s`;
  if (bits >= 1e3) return `${(bits / 1e3).toFixed(0)} kbit/s`;
  return `${Math.round(bits)} bit/s`;
}

function owner(s: ConnSample): string {
  return s.comm !== null ? `; served by ${s.comm}${s.pid !== null ? ` ${s.pid}` : ''}` : '';
}

// ---- the report (diagnose) ----

export interface ConnVerdict {
  id: string;
  port: string;
  remote: string;
  pid: number | null;
  comm: string | null;
  limit: Limit;
  shares: Shares;
  seconds: number;
  busySeconds: number;
  rwndLimitedSeconds: number;
  sndbufLimitedSeconds: number;
  sndbufBoundSeconds: number;
  zeroWindowSeconds: number;
  minPeerRwndBytes: number | null;
  bytesAcked: number;
  bytesRetrans: number;
  deliveryRateBytesPerSecond: number;
  rttSeconds: number;
  evidence: string;
  advice: string;
}

export interface PortVerdict {
  port: string;
  connections: number;
  limit: Limit;
  shares: Shares;
  /** Of busy time (app: of connection time). */
  limitShareOfSending: number;
  seconds: number;
  busySeconds: number;
  rwndLimitedSeconds: number;
  sndbufLimitedSeconds: number;
  sndbufBoundSeconds: number;
  zeroWindowSeconds: number;
  bytesAcked: number;
  bytesRetrans: number;
  sentence: string;
  worst: ConnVerdict[];
}

export interface Report {
  window: { seconds: number; polls: number; start: string | null; end: string | null };
  ports: PortVerdict[];
  /** Every connection of the window, worst first. */
  connections: ConnVerdict[];
}

function connVerdict(w: ConnWindow): ConnVerdict {
  const limit = windowLimit(w);
  return {
    id: w.last.id,
    port: w.last.port,
    remote: w.last.remote,
    pid: w.last.pid,
    comm: w.last.comm,
    limit,
    shares: windowShares(w),
    seconds: w.seconds,
    busySeconds: w.busy,
    rwndLimitedSeconds: w.rwndLimited,
    sndbufLimitedSeconds: w.sndbufLimited,
    sndbufBoundSeconds: w.sndbufBound,
    zeroWindowSeconds: w.zeroWindowSeconds,
    minPeerRwndBytes: w.minPeerRwnd,
    bytesAcked: w.bytesAcked,
    bytesRetrans: w.bytesRetrans,
    deliveryRateBytesPerSecond: w.last.deliveryRate,
    rttSeconds: w.last.rtt,
    evidence: evidence(w, limit),
    advice: ADVICE[limit],
  };
}

export function buildReport(t: WindowTracker, worstPerPort = 3): Report {
  const windows = [...t.conns.values()].filter((w) => w.seconds > 0);
  windows.sort((a, b) => badness(b) - badness(a) || b.bytesAcked - a.bytesAcked);
  const ports: PortVerdict[] = [];
  for (const [port, f] of t.ports()) {
    const limit = portLimit(f);
    // The worst of a port are those that spent the most time in the port's own limit.
    const mine = windows.filter((w) => w.last.port === port);
    const rank = limit === 'unknown' ? badness : (w: WindowFigures) => limitSeconds(w, limit);
    mine.sort((a, b) => rank(b) - rank(a));
    const worst = mine.slice(0, worstPerPort).map(connVerdict);
    const head = headline(port, f, limit);
    const w0 = worst[0];
    const sentence =
      w0 !== undefined && limit !== 'unknown'
        ? `${head}; worst: ${w0.remote} (${evidence(mine[0]!, limit)}${owner(mine[0]!.last)}) — ${ADVICE[limit]}`
        : `${head} — ${ADVICE[limit]}`;
    ports.push({
      port,
      connections: f.connections,
      limit,
      shares: windowShares(f),
      limitShareOfSending: limit === 'app' ? (f.seconds > 0 ? limitSeconds(f, 'app') / f.seconds : 0) : f.busy > 0 ? limitSeconds(f, limit) / f.busy : 0,
      seconds: f.seconds,
      busySeconds: f.busy,
      rwndLimitedSeconds: f.rwndLimited,
      sndbufLimitedSeconds: f.sndbufLimited,
      sndbufBoundSeconds: f.sndbufBound,
      zeroWindowSeconds: f.zeroWindowSeconds,
      bytesAcked: f.bytesAcked,
      bytesRetrans: f.bytesRetrans,
      sentence,
      worst,
    });
  }
  // Ports where time was lost to the client or the path come first.
  const fig = (p: PortVerdict): WindowFigures => ({ ...zeroFigures(), seconds: p.seconds, busy: p.busySeconds, rwndLimited: p.rwndLimitedSeconds, sndbufLimited: p.sndbufLimitedSeconds, sndbufBound: p.sndbufBoundSeconds });
  ports.sort((a, b) => badness(fig(b)) - badness(fig(a)));
  return {
    window: {
      seconds: t.started !== undefined && t.ended !== undefined ? (t.ended - t.started) / 1000 : 0,
      polls: t.polls,
      start: t.started !== undefined ? new Date(t.started).toISOString() : null,
      end: t.ended !== undefined ? new Date(t.ended).toISOString() : null,
    },
    ports,
    connections: windows.map(connVerdict),
  };
}

/** The report as text: one paragraph per port, the figures behind it indented. */
export function formatReport(r: Report, worstConnections = 5): string {
  const lines: string[] = [];
  if (r.ports.length === 0) {
    lines.push(`No connection carried data during the ${secs(r.window.seconds)} watched (${r.window.polls} polls).`);
    return lines.join('\n') + '\n';
  }
  lines.push(`Watched ${secs(r.window.seconds)} (${r.window.polls} polls), ${r.connections.length} connection${r.connections.length === 1 ? '' : 's'} carrying data.`, '');
  for (const p of r.ports) {
    lines.push(p.sentence);
    const s = p.shares;
    lines.push(
      `    ${p.connections} conn, ${secs(p.seconds)} connection-time: app ${pct(s.app)}, network ${pct(s.network)}, rwnd ${pct(s.rwnd)}, sndbuf ${pct(s.sndbuf)}; ` +
        `busy ${secs(p.busySeconds)}, rwnd-limited ${secs(p.rwndLimitedSeconds)}, sndbuf-limited ${secs(p.sndbufLimitedSeconds)}, ${bytesText(p.bytesAcked)} acked` +
        (p.bytesRetrans > 0 ? `, ${bytesText(p.bytesRetrans)} retransmitted` : ''),
    );
    lines.push('');
  }
  const worst = r.connections.filter((c) => c.limit !== 'app' && c.limit !== 'unknown').slice(0, worstConnections);
  if (worst.length > 0) {
    lines.push('Worst connections:');
    for (const c of worst) {
      const who = c.comm !== null ? ` ${c.comm}${c.pid !== null ? `[${c.pid}]` : ''}` : '';
      lines.push(`  :${c.port} ${c.remote}${who}  ${c.limit}  (${c.evidence}) — ${c.advice}`);
    }
  }
  return lines.join('\n') + '\n';
}
