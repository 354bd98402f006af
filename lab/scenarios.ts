// Scenarios with ground truth. Each is a small program: a path (DelayLab:
// real propagation delay, optional bottleneck rate), server-side settings, and
// a client plan (lab/peers.py) of segments fetched over one keep-alive
// connection. The truth is fixed by construction, per segment (one segment is
// one chunk for instrument(), proxy and attach), and per time span (for
// watch's intervals):
//
//  - while a segment is being fetched, the cause is the segment's
//    `transfer` cause (default: its `truth`), except during a decoder stall
//    (the reader stops: the window closes), which is rwnd;
//  - between segments (the player's buffer is full, the client thinks) the
//    server has nothing to send: app;
//  - a `warmup` segment (slow start before a sndbuf limit can show: the
//    congestion window is the limit until it outgrows the send buffer) is not
//    scored, and neither is any interval it dominates.
//
// Why each scenario has its cause (kernel facts: busy runs while data is
// unacked or unsent, so in-flight time is busy; rwnd-limited runs while the
// peer's window blocks a send; sndbuf-limited runs only when the application
// hit a full buffer and the socket is not cwnd-limited, tcp_cwnd_validate()):
//  - app needs idle gaps much longer than the RTT, or the in-flight time of
//    each burst counts as busy.
//  - sndbuf needs a long RTT: on a short path ACKs free the buffer before the
//    sender runs dry (docs/kernel-notes.md#the-sndbuf-chronograph-on-shaped-paths).
//  - under BBR behind a bottleneck (mixed-sndbuf) the kernel names only 0.1-0.4
//    of a capped buffer's busy time: BBR paces at the rate the buffer allows
//    and paced data in the write queue keeps the sndbuf chronograph off. The
//    agent's sndbuf-bound inference (agent/model/classify.ts) covers it.
import type { Limit } from '../agent/model/classify.js';

export type Cause = Exclude<Limit, 'unknown'>;
export type Truth = Cause | 'warmup';
export type Mode = 'direct' | 'proxy' | 'attach' | 'trace';

export interface Segment {
  bytes: number;
  /** Server writes the body in this many pieces, gapMs apart (a slow producer). */
  pieces?: number;
  gapMs?: number;
  /** Server sets SO_SNDBUF to this before the response (not through the proxy: its client-facing socket is its own). */
  sndbuf?: number;
  /** Client reads at most this many bytes/s (0: greedily). */
  readRate?: number;
  /** Client stops reading for stallSeconds after this many body bytes (a decoder stall). */
  stallAfter?: number;
  stallSeconds?: number;
  /** Client waits this long after the segment (player buffer full). */
  thinkSeconds?: number;
  /** The chunk's ground truth. */
  truth: Truth;
  /** The cause outside stalls while the segment is fetched (default: truth). */
  transfer?: Truth;
}

export interface Scenario {
  name: string;
  what: string;
  /** In the CI subset (`--quick`), and with which modes there. */
  quick: Mode[];
  modes: Mode[];
  delayMs: number;
  rate?: string;
  /** net.ipv4.tcp_wmem in the server namespace (min default max). */
  wmem?: string;
  /** Congestion control in the server namespace (default: the machine's, BBR on ours). */
  cc?: string;
  /** Client SO_RCVBUF before connect (turns receive autotuning off). */
  rcvbuf?: number;
  plan: Segment[];
  /**
   * Why this scenario is outside the pass/fail gate (it is still run and
   * reported): a documented limitation of what the chronographs can tell.
   */
  limitation?: string;
  /** Why a mode does not apply, for the report. */
  notApplicable?: Partial<Record<Mode, string>>;
}

const KiB = 1024;
const MiB = 1024 * KiB;
const times = <T>(n: number, s: T): T[] => Array.from({ length: n }, () => s);

/** Live-stream video: a segment of `seconds` at `mbps` (the payload a player fetches). */
const videoSegment = (seconds: number, mbps: number): number => Math.round((seconds * mbps * 1e6) / 8);

export const SCENARIOS: Scenario[] = [
  {
    name: 'rwnd',
    what: 'slow reader (400 kB/s) with a 16 KiB receive buffer, 10 ms RTT, BBR (the machine default: it paces at the reader’s rate, so only about half of busy time is counted rwnd-limited; classify() names rwnd from a third)',
    quick: ['direct', 'attach', 'trace'],
    modes: ['direct', 'proxy', 'attach', 'trace'],
    delayMs: 5,
    rcvbuf: 16 * KiB,
    plan: times(5, { bytes: 512 * KiB, readRate: 400_000, truth: 'rwnd' as const }),
  },
  {
    name: 'rwnd-reno',
    what: 'the same slow reader, with Reno on the server (no pacing)',
    quick: ['direct'],
    modes: ['direct', 'proxy', 'attach', 'trace'],
    delayMs: 5,
    cc: 'reno',
    rcvbuf: 16 * KiB,
    plan: times(5, { bytes: 512 * KiB, readRate: 400_000, truth: 'rwnd' as const }),
  },
  {
    name: 'sndbuf',
    what: 'server tcp_wmem 32 KiB (max), greedy reader, 40 ms RTT, no bottleneck',
    quick: ['direct', 'proxy'],
    modes: ['direct', 'proxy', 'attach', 'trace'],
    delayMs: 20,
    wmem: '4096 32768 32768',
    plan: [{ bytes: 256 * KiB, truth: 'warmup' }, ...times(20, { bytes: 256 * KiB, truth: 'sndbuf' as const })],
  },
  {
    name: 'network',
    what: '20 Mbit/s bottleneck (tbf), greedy reader, 40 ms RTT',
    quick: ['direct', 'attach'],
    modes: ['direct', 'proxy', 'attach', 'trace'],
    delayMs: 20,
    rate: '20mbit',
    plan: times(10, { bytes: 1 * MiB, truth: 'network' as const }),
  },
  {
    name: 'app',
    what: 'producer writes 8 KiB bursts 150 ms apart (96 KiB per segment), 20 ms RTT',
    quick: ['direct', 'proxy', 'attach', 'trace'],
    modes: ['direct', 'proxy', 'attach', 'trace'],
    delayMs: 10,
    plan: times(4, { bytes: 96 * KiB, pieces: 12, gapMs: 150, truth: 'app' as const }),
  },
  {
    name: 'video',
    what: 'player: 2 s segments at 4 Mbit/s over 20 Mbit/s, 40 ms RTT; 3 back to back, then one per 2 s (buffer full)',
    quick: [],
    modes: ['direct', 'proxy', 'attach', 'trace'],
    delayMs: 20,
    rate: '20mbit',
    plan: [
      ...times(3, { bytes: videoSegment(2, 4), truth: 'network' as const }),
      ...times(5, { bytes: videoSegment(2, 4), thinkSeconds: 1.6, truth: 'network' as const }),
    ],
  },
  {
    name: 'video-stall',
    what: 'player (512 KiB receive buffer) whose decoder stalls 3 s inside two 4 s segments at 4 Mbit/s; 20 Mbit/s, 40 ms RTT',
    quick: ['direct', 'proxy'],
    modes: ['direct', 'proxy', 'attach', 'trace'],
    delayMs: 20,
    rate: '20mbit',
    rcvbuf: 512 * KiB,
    plan: [
      ...times(2, { bytes: videoSegment(4, 4), truth: 'network' as const }),
      { bytes: videoSegment(4, 4), stallAfter: 256 * KiB, stallSeconds: 3, thinkSeconds: 1, truth: 'rwnd', transfer: 'network' },
      { bytes: videoSegment(4, 4), thinkSeconds: 1, truth: 'network' },
      { bytes: videoSegment(4, 4), stallAfter: 256 * KiB, stallSeconds: 3, truth: 'rwnd', transfer: 'network' },
    ],
  },
  {
    name: 'mixed',
    what: 'one connection: network (20 Mbit/s) → decoder stall (rwnd) → network → slow producer (app); 40 ms RTT',
    quick: ['direct'],
    modes: ['direct', 'proxy', 'attach', 'trace'],
    delayMs: 20,
    rate: '20mbit',
    rcvbuf: 512 * KiB,
    plan: [
      ...times(4, { bytes: 1 * MiB, truth: 'network' as const }),
      { bytes: 2 * MiB, stallAfter: 256 * KiB, stallSeconds: 3, truth: 'rwnd', transfer: 'network' },
      ...times(3, { bytes: 1 * MiB, truth: 'network' as const }),
      ...times(2, { bytes: 96 * KiB, pieces: 12, gapMs: 200, truth: 'app' as const }),
    ],
  },
  {
    name: 'mixed-sndbuf',
    what: 'one connection: tcp_wmem 32 KiB (sndbuf) → server raises SO_SNDBUF mid-connection (network); 20 Mbit/s, 40 ms RTT',
    quick: ['direct'],
    modes: ['direct', 'attach', 'trace'],
    delayMs: 20,
    rate: '20mbit',
    wmem: '4096 32768 32768',
    plan: [
      { bytes: 256 * KiB, truth: 'warmup' },
      ...times(5, { bytes: 512 * KiB, truth: 'sndbuf' as const }),
      { bytes: 1 * MiB, sndbuf: 4 * MiB, truth: 'warmup' },
      ...times(5, { bytes: 1 * MiB, truth: 'network' as const }),
    ],
    notApplicable: {
      proxy: 'the client-facing socket is the proxy’s: the upstream server cannot change its SO_SNDBUF mid-connection',
    },
  },
  {
    name: 'short',
    what: '16 KiB responses, 4 ms RTT, 50 ms apart: every chunk is shorter than four jiffies',
    quick: [],
    modes: ['direct', 'proxy', 'attach', 'trace'],
    delayMs: 2,
    plan: times(60, { bytes: 16 * KiB, thinkSeconds: 0.05, truth: 'network' as const }),
    limitation:
      'a chunk delivered in 5–10 ms spans one or two jiffies of the chronographs: the agent answers unknown (too short to tell) ' +
      'by design; its intervals (1 s) are classified normally',
  },
];
