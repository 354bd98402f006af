// Pure parts of the console commands: window accounting, sentences, the top
// table, the human log line. No kernel needed.
import { describe, expect, it } from 'vitest';
import { WindowTracker, sampleOfApi, type ConnSample } from '../../agent/model/verdict.js';
import { buildReport, formatReport, headline } from '../../agent/cli/report.js';
import { bar, renderTable, rowsOf, type ViewState } from '../../agent/cli/top.js';
import { humanLine } from '../../agent/cli/log.js';

function sample(id: string, t: number, d: Partial<ConnSample['delta']>, more: Partial<ConnSample> = {}): ConnSample {
  return {
    id,
    port: '8080',
    remote: `10.0.0.${id}:5000${id}`,
    state: 'established',
    pid: 42,
    comm: 'server',
    lastSeen: t,
    deliveryRate: 1e6,
    rtt: 0.02,
    peerRwnd: 65536,
    bytesAcked: 0,
    delta: { seconds: 0, busy: 0, rwndLimited: 0, sndbufLimited: 0, sndbufBound: 0, bytesAcked: 0, bytesRetrans: 0, ...d },
    sndbuf: 0,
    closed: false,
    ...more,
  };
}

/** Two connections on :8080 over 10 one-second polls: one stalled by its reader, one idle. */
function scenario(): WindowTracker {
  const t = new WindowTracker();
  // First observation: whole-life counters over 0 s; must not count.
  t.observeAll([sample('7', 0, { busy: 100, rwndLimited: 90 }), sample('8', 0, { busy: 50 })], 0);
  for (let i = 1; i <= 10; i++) {
    t.observeAll(
      [
        sample('7', i * 1000, { seconds: 1, busy: 1, rwndLimited: 0.8, bytesAcked: 1000 }, { peerRwnd: i > 4 ? 0 : 1024 }),
        sample('8', i * 1000, { seconds: 1, busy: 0.1, bytesAcked: 5e5 }),
      ],
      i * 1000,
    );
  }
  return t;
}

describe('WindowTracker and the report', () => {
  it('sums deltas after the first observation, and counts zero-window time', () => {
    const t = scenario();
    const w = t.conns.get('7')!;
    expect(w.seconds).toBeCloseTo(10);
    expect(w.busy).toBeCloseTo(10);
    expect(w.rwndLimited).toBeCloseTo(8);
    expect(w.zeroWindowSeconds).toBeCloseTo(6);
    expect(w.minPeerRwnd).toBe(0);
    // A repeated observation of the same poll adds nothing.
    t.observe(sample('7', 10_000, { seconds: 1, busy: 1 }));
    expect(t.conns.get('7')!.busy).toBeCloseTo(10);
  });

  it('names the port, the cause, the worst connection and the advice in one sentence', () => {
    const r = buildReport(scenario());
    expect(r.ports).toHaveLength(1);
    const p = r.ports[0]!;
    expect(p.limit).toBe('rwnd');
    // rwnd 8 s of 11 s busy; shares of 20 s of connection time.
    expect(p.limitShareOfSending).toBeCloseTo(8 / 11);
    expect(p.sentence).toBe(
      "73 % of sending time on :8080 was limited by the client's receive window; worst: 10.0.0.7:50007 " +
        '(peer window 0 for 6.0 s, rwnd-limited 8.0 s of 10 s; served by server 42) — the client is not reading: player buffer full or client overloaded (CPU, disk, a small receive buffer)',
    );
    expect(r.connections.map((c) => [c.remote, c.limit])).toEqual([
      ['10.0.0.7:50007', 'rwnd'],
      ['10.0.0.8:50008', 'app'],
    ]);
    const text = formatReport(r);
    expect(text).toContain('Worst connections:');
    expect(text).toContain('rwnd-limited 8.0 s');
    expect(text).not.toContain('10.0.0.8:50008  app'); // idle connections are not "worst"
  });

  it('has a sentence per cause', () => {
    const f = { seconds: 10, busy: 8, rwndLimited: 0, sndbufLimited: 6, sndbufBound: 0, bytesAcked: 0, bytesRetrans: 0, zeroWindowSeconds: 0 };
    expect(headline('443', f, 'sndbuf')).toBe("75 % of sending time on :443 was limited by the server's send buffer");
    expect(headline('443', { ...f, sndbufLimited: 0 }, 'network')).toMatch(/^100 % of sending time on :443 was limited by the network/);
    expect(headline('ephemeral', { ...f, busy: 1, sndbufLimited: 0 }, 'app')).toBe('outbound connections were idle 90 % of the time');
    expect(headline('443', f, 'unknown')).toMatch(/too little data/);
  });

  it('names a send buffer smaller than the congestion window, from inferred sndbuf-bound time', () => {
    const t = new WindowTracker();
    const more = { sndbuf: 32768, rtt: 0.04 };
    t.observeAll([sample('9', 0, {}, more)], 0);
    // BBR paces behind a capped buffer: the kernel names 0.2 s of each busy second.
    for (let i = 1; i <= 5; i++) t.observeAll([sample('9', i * 1000, { seconds: 1, busy: 1, sndbufLimited: 0.2, sndbufBound: 0.8, bytesAcked: 1e6 }, more)], i * 1000);
    const r = buildReport(t);
    expect(r.ports[0]!.limit).toBe('sndbuf');
    expect(r.ports[0]!.limitShareOfSending).toBeCloseTo(1);
    const c = r.connections[0]!;
    expect(c.limit).toBe('sndbuf');
    expect(c.sndbufLimitedSeconds).toBeCloseTo(1);
    expect(c.sndbufBoundSeconds).toBeCloseTo(4);
    expect(c.evidence).toBe('send buffer (32.0 KiB) smaller than the congestion window and full for 5.0 s of 5.0 s, RTT 40.0 ms');
    // Without the inference the same window reads as the network.
    const plain = new WindowTracker();
    plain.observeAll([sample('9', 0, {}, more)], 0);
    for (let i = 1; i <= 5; i++) plain.observeAll([sample('9', i * 1000, { seconds: 1, busy: 1, sndbufLimited: 0.2, bytesAcked: 1e6 }, more)], i * 1000);
    expect(buildReport(plain).connections[0]!.limit).toBe('network');
  });

  it('reads /api/connections JSON back into samples', () => {
    const s = sampleOfApi({
      id: '12', port: '8080', local: '10.0.0.1:8080', remote: '10.0.0.7:1', state: 'established', pid: null, comm: null,
      lastSeen: '2025-01-01T00:00:01.000Z', closed: null, deliveryRateBytesPerSecond: 10, rttSeconds: 0.1, peerRwndBytes: 0, bytesAcked: 5,
      lastInterval: { seconds: 1, busySeconds: 1, rwndLimitedSeconds: 1, sndbufLimitedSeconds: 0, bytesAcked: 5 },
    });
    expect(s).toMatchObject({ id: '12', lastSeen: Date.parse('2025-01-01T00:00:01Z'), peerRwnd: 0, delta: { seconds: 1, rwndLimited: 1 }, closed: false });
  });
});

describe('top table', () => {
  const view: ViewState = { sort: 'stall', reverse: false, portFilter: '' };

  it('bars always fill their width, letters without colour', () => {
    expect(bar({ rwnd: 0.5, sndbuf: 0, network: 0.25, app: 0.25 }, 8, false)).toBe('rrrrnn..');
    expect(bar({ rwnd: 1 / 3, sndbuf: 1 / 3, network: 1 / 3, app: 0 }, 10, false)).toHaveLength(10);
    expect(bar(undefined, 5, false)).toBe('     ');
    expect(bar({ rwnd: 1, sndbuf: 0, network: 0, app: 0 }, 3, true)).toBe('\x1b[41;97mrrr\x1b[0m');
  });

  it('sorts worst first, reverses, filters by port, and fits narrow terminals', () => {
    const t = scenario();
    expect(rowsOf(t, view).map((w) => w.last.id)).toEqual(['7', '8']);
    expect(rowsOf(t, { ...view, reverse: true }).map((w) => w.last.id)).toEqual(['8', '7']);
    expect(rowsOf(t, { ...view, portFilter: '9999' })).toHaveLength(0);
    for (const width of [160, 100, 80, 60, 40]) {
      const lines = renderTable(rowsOf(t, view), view, { width, color: false, title: 'top' });
      for (const l of lines) expect(l.length, `${width}: ${l}`).toBeLessThanOrEqual(width);
      const row = lines.find((l) => l.includes('10.0.0.7'))!;
      expect(row, `${width}`).toMatch(/rwnd\s*$/);
      if (width >= 100) expect(lines[2]).toMatch(/PROCESS.*LAST.*TOTAL.*LIMIT/);
    }
  });
});

describe('human log line', () => {
  it('prints key=value, quoting only what needs it, skipping empty lists', () => {
    const line = humanLine(new Date('2025-01-01T12:34:56Z'), 'info', 'watching', { ports: 'all', listen: 'http://127.0.0.1:9465', degraded: [], states: ['established', 'fin-wait-1'], note: 'two words' });
    expect(line).toBe('12:34:56 INFO  watching ports=all listen=http://127.0.0.1:9465 states=established,fin-wait-1 note="two words"');
    expect(humanLine(new Date(0), 'warn', 'x', { privileges: { root: false, capabilities: ['net_admin'] } })).toBe('00:00:00 WARN  x privileges.root=false privileges.capabilities=net_admin');
  });
});
