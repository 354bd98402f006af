// `tcp-chronograph top`: a live terminal view of every connection, one row
// each, with a bar of where its time went over the last interval and since
// top first saw it.
//
// Terminal handling: plain ANSI through `ansi-escapes` (sindresorhus; kept
// up, no dependencies, works on Node 20) and Node's own readline keypress
// decoding and raw mode. A full-screen widget library was not worth it:
// blessed is unmaintained, ink 8 needs Node 22 and React. The screen is one
// table redrawn in a single write (no flicker over SSH), on the alternate
// screen, restored on every way out (q, Ctrl-C, SIGTERM, SIGHUP, a crash).
import ansi from 'ansi-escapes';
import { emitKeypressEvents } from 'node:readline';
import { setTimeout as sleep } from 'node:timers/promises';
import type { PortRange } from '../parse/inet_diag.js';
import { WindowTracker, windowLimit, windowShares, type ConnWindow } from '../model/verdict.js';
import { rateText } from './report.js';
import type { Shares } from '../model/classify.js';
import type { Command } from './command.js';
import { formatHelp, parseBool, parseDuration, parseFlags, type FlagSpec } from './flags.js';
import { FROM_FLAG, FROM_TOKEN_FLAG, LocalPoller, RemotePoller, portsText, type Poller } from './local.js';
import { parsePortRange } from './common_flags.js';
import { applyRedaction, REDACT_FLAGS } from './common_flags.js';
import { dropPrivileges } from './privileges.js';

const SUMMARY =
  'Live view of every TCP connection: remote, process, state, delivery rate, RTT, peer window,\n' +
  'and where its time went (app / network / rwnd / sndbuf) over the last interval and since start.\n' +
  'Keys: s stall, r rate, t RTT, w window, b bytes, p port (press again to reverse), f filter by port, q quit.';

export const FLAGS = {
  interval: {
    name: 'interval',
    arg: 'DURATION',
    default: '1s',
    help: 'Refresh interval (one sock_diag dump each).',
    parse: (t: string) => {
      const s = parseDuration(t);
      if (s < 0.1 || s > 3600) throw new Error('must be from 100ms to 1h');
      return s;
    },
  } satisfies FlagSpec<number>,
  port: {
    name: 'port',
    arg: 'PORT[-PORT]',
    multiple: true,
    help: 'Show only connections whose local port is one of these.',
    parse: parsePortRange,
  } satisfies FlagSpec<PortRange>,
  sort: {
    name: 'sort',
    arg: 'KEY',
    default: 'stall',
    help: 'Initial order: stall (rwnd+sndbuf share, worst first), rate, rtt, window, bytes, port.',
    parse: (t: string) => {
      if (!(t in SORT_KEYS_BY_NAME)) throw new Error(`expected one of ${Object.keys(SORT_KEYS_BY_NAME).join(', ')}`);
      return t as SortName;
    },
  } satisfies FlagSpec<SortName>,
  once: {
    name: 'once',
    help: 'Print one table (after one interval, so the bars have a span) and exit. For scripts.',
    parse: parseBool,
  } satisfies FlagSpec<boolean>,
  from: FROM_FLAG,
  authTokenFile: FROM_TOKEN_FLAG,
  ...REDACT_FLAGS,
  color: {
    name: 'color',
    arg: 'auto|on|off',
    default: 'auto',
    help: 'Colour the bars (auto: on a terminal, unless NO_COLOR is set).',
    parse: (t: string) => {
      if (!['auto', 'on', 'off'].includes(t)) throw new Error('expected auto, on or off');
      return t as 'auto' | 'on' | 'off';
    },
  } satisfies FlagSpec<'auto' | 'on' | 'off'>,
};

// ---- the table (pure: rows in, lines out) ----

export type SortName = 'stall' | 'rate' | 'rtt' | 'window' | 'bytes' | 'port';

type Cmp = (a: ConnWindow, b: ConnWindow) => number;
const stallShare = (w: ConnWindow): number => {
  const s = windowShares(w);
  return s.rwnd + s.sndbuf;
};
/** Natural order of each key (worst or biggest first). */
export const SORT_KEYS_BY_NAME: Record<SortName, { key: string; label: string; cmp: Cmp }> = {
  stall: { key: 's', label: 'stall', cmp: (a, b) => stallShare(b) - stallShare(a) || b.rwndLimited + b.sndbufLimited - (a.rwndLimited + a.sndbufLimited) },
  rate: { key: 'r', label: 'rate', cmp: (a, b) => b.last.deliveryRate - a.last.deliveryRate },
  rtt: { key: 't', label: 'RTT', cmp: (a, b) => b.last.rtt - a.last.rtt },
  window: { key: 'w', label: 'window', cmp: (a, b) => (a.last.peerRwnd ?? Infinity) - (b.last.peerRwnd ?? Infinity) },
  bytes: { key: 'b', label: 'bytes', cmp: (a, b) => b.last.bytesAcked - a.last.bytesAcked },
  port: { key: 'p', label: 'port', cmp: (a, b) => a.last.port.localeCompare(b.last.port, undefined, { numeric: true }) || a.last.remote.localeCompare(b.last.remote) },
};

export interface ViewState {
  sort: SortName;
  reverse: boolean;
  /** Local port label to show only ("" = all). */
  portFilter: string;
}

export interface RenderOptions {
  width: number;
  /** Rows available for the table body (undefined: all). */
  height?: number;
  color: boolean;
  title: string;
  status?: string;
}

const SEG: { k: keyof Shares; ch: string; sgr: string }[] = [
  { k: 'rwnd', ch: 'r', sgr: '41;97' }, // red
  { k: 'sndbuf', ch: 's', sgr: '45;97' }, // magenta
  { k: 'network', ch: 'n', sgr: '43;30' }, // yellow
  { k: 'app', ch: '.', sgr: '2' }, // dim
];

/** A bar of `width` cells: r rwnd, s sndbuf, n network, . app (largest remainders, so it always fills). */
export function bar(sh: Shares | undefined, width: number, color: boolean): string {
  if (width <= 0) return '';
  const total = sh === undefined ? 0 : sh.rwnd + sh.sndbuf + sh.network + sh.app;
  if (sh === undefined || !(total > 0)) return ' '.repeat(width);
  const exact = SEG.map((s) => (sh[s.k] / total) * width);
  const cells = exact.map(Math.floor);
  let left = width - cells.reduce((a, b) => a + b, 0);
  const order = exact.map((x, i) => [x - Math.floor(x), i] as const).sort((a, b) => b[0] - a[0]);
  for (const [, i] of order) {
    if (left <= 0) break;
    cells[i]!++;
    left--;
  }
  return SEG.map((s, i) => {
    const text = s.ch.repeat(cells[i]!);
    return color && text !== '' ? `\x1b[${s.sgr}m${text}\x1b[0m` : text;
  }).join('');
}

function fit(text: string, width: number, right = false): string {
  if (text.length > width) return width <= 1 ? text.slice(0, width) : text.slice(0, width - 1) + '…';
  return right ? text.padStart(width) : text.padEnd(width);
}

function bytesShort(n: number | null): string {
  if (n === null) return '-';
  if (n >= 1 << 20) return `${(n / (1 << 20)).toFixed(1)}M`;
  if (n >= 1 << 10) return `${(n / (1 << 10)).toFixed(n >= 10 << 10 ? 0 : 1)}K`;
  return String(n);
}

const SHORT_STATE: Record<string, string> = {
  established: 'ESTAB',
  'fin-wait-1': 'FIN-W1',
  'fin-wait-2': 'FIN-W2',
  'close-wait': 'CLOSE-W',
  'last-ack': 'LASTACK',
  closing: 'CLOSING',
  closed: 'CLOSED',
};

interface Column {
  head: string;
  width: number;
  right?: boolean;
  /** Lower goes first when the terminal is too narrow. */
  keep: number;
  cell: (w: ConnWindow) => string;
}

/** Sorted, filtered rows of a tracker. */
export function rowsOf(t: WindowTracker, v: ViewState): ConnWindow[] {
  const rows = [...t.conns.values()].filter((w) => !w.last.closed && (v.portFilter === '' || w.last.port === v.portFilter));
  const cmp = SORT_KEYS_BY_NAME[v.sort].cmp;
  rows.sort(v.reverse ? (a, b) => cmp(b, a) : cmp);
  return rows;
}

/** The whole screen (or the --once table) as lines no wider than `width`. */
export function renderTable(rows: readonly ConnWindow[], v: ViewState, o: RenderOptions): string[] {
  const width = Math.max(20, o.width);
  const cols: Column[] = [
    { head: 'PORT', width: 6, keep: 7, cell: (w) => (w.last.port === 'ephemeral' ? 'out' : w.last.port) },
    { head: 'REMOTE', width: 21, keep: 10, cell: (w) => w.last.remote },
    { head: 'PROCESS', width: 14, keep: 2, cell: (w) => (w.last.comm !== null ? `${w.last.comm}${w.last.pid !== null ? `/${w.last.pid}` : ''}` : '-') },
    { head: 'STATE', width: 7, keep: 1, cell: (w) => SHORT_STATE[w.last.state] ?? w.last.state },
    { head: 'RATE', width: 10, right: true, keep: 6, cell: (w) => rateText(w.last.deliveryRate).replace('bit/s', 'b/s') },
    { head: 'RTT', width: 8, right: true, keep: 4, cell: (w) => `${(w.last.rtt * 1000).toFixed(w.last.rtt < 0.01 ? 2 : 1)}ms` },
    { head: 'WINDOW', width: 7, right: true, keep: 5, cell: (w) => bytesShort(w.last.peerRwnd) },
    { head: 'LIMIT', width: 7, keep: 11, cell: (w) => windowLimit(w) },
  ];
  // Bars share what the fixed columns leave; the since-start bar is dropped first.
  const MIN_BAR = 8;
  const fixedWidth = (cs: Column[]): number => cs.reduce((a, c) => a + c.width + 1, 0);
  let bars = 2;
  const byKeep = [...cols].sort((a, b) => a.keep - b.keep);
  const shown = new Set(cols);
  const fits = (): boolean => fixedWidth([...shown]) + bars * (MIN_BAR + 1) <= width;
  for (const c of byKeep) {
    if (fits()) break;
    if (c.keep >= 3 && bars === 2) bars = 1; // lose the since-start bar before rate, RTT, window
    if (fits()) break;
    shown.delete(c);
  }
  // A very narrow terminal: shrink the remote column rather than lose it.
  const remoteCol = cols[1]!;
  while (!fits() && remoteCol.width > 12) remoteCol.width--;
  const used = cols.filter((c) => shown.has(c));
  // The bars go just before the verdict (or last, if even the verdict did not fit).
  const barAt = used.findIndex((c) => c.head === 'LIMIT') === -1 ? used.length : used.length - 1;
  const barSpace = Math.max(bars * MIN_BAR, width - fixedWidth(used) - bars);
  const barWidth = Math.max(MIN_BAR, Math.min(30, Math.floor(barSpace / bars)));

  const sortName = SORT_KEYS_BY_NAME[v.sort].label + (v.reverse ? '↑' : '');
  const legend = 'bars: LAST interval, TOTAL since first seen;  r rwnd  s sndbuf  n network  . app';
  const head1 = `${o.title}  ${rows.length} conn  sort ${sortName}${v.portFilter !== '' ? `  port ${v.portFilter}` : ''}`;
  const lines = [fit(head1, width), fit(legend, width)];
  const headCells = used.map((c) => fit(c.head, c.width, c.right));
  headCells.splice(barAt, 0, fit('LAST', barWidth), ...(bars === 2 ? [fit('TOTAL', barWidth)] : []));
  lines.push(fit(headCells.join(' '), width));
  const body = o.height !== undefined ? rows.slice(0, Math.max(0, o.height)) : rows;
  for (const w of body) {
    const last = w.last.delta.seconds > 0 ? windowShares({ seconds: w.last.delta.seconds, busy: w.last.delta.busy, rwndLimited: w.last.delta.rwndLimited, sndbufLimited: w.last.delta.sndbufLimited, sndbufBound: w.last.delta.sndbufBound }) : undefined;
    const cells = used.map((c) => fit(c.cell(w), c.width, c.right));
    const barCells = [bar(last, barWidth, o.color), ...(bars === 2 ? [bar(w.seconds > 0 ? windowShares(w) : undefined, barWidth, o.color)] : [])];
    cells.splice(barAt, 0, ...barCells);
    lines.push(cells.join(' '));
  }
  if (rows.length === 0) lines.push(v.portFilter !== '' ? `no connection on port ${v.portFilter}` : 'no connection carrying data yet');
  if (o.height !== undefined && rows.length > body.length) lines.push(fit(`… ${rows.length - body.length} more`, width));
  if (o.status !== undefined) lines.push(fit(o.status, width));
  return lines;
}

// ---- the command ----

function useColor(flag: 'auto' | 'on' | 'off', tty: boolean): boolean {
  if (flag !== 'auto') return flag === 'on';
  return tty && process.env.NO_COLOR === undefined && process.env.TERM !== 'dumb';
}

async function runTop(argv: readonly string[]): Promise<number> {
  const { values: o, help } = parseFlags('top', FLAGS, argv);
  if (help) {
    process.stdout.write(formatHelp('top', SUMMARY, FLAGS));
    return 0;
  }
  applyRedaction(o);
  const poller: Poller = o.from !== undefined ? new RemotePoller(o.from, o.port, o.authTokenFile) : new LocalPoller(o.port);
  dropPrivileges('top', { owners: o.from === undefined });
  const tracker = new WindowTracker();
  const view: ViewState = { sort: o.sort, reverse: false, portFilter: '' };
  const intervalMs = o.interval * 1000;
  const title = `tcp-chronograph top — ${o.from !== undefined ? `via ${o.from}` : portsText(o.port)}`;
  const pollOnce = async (): Promise<void> => {
    const samples = await poller.poll();
    const now = Date.now();
    tracker.observeAll(samples, now);
    tracker.prune(now, 10_000);
  };

  const tty = process.stdout.isTTY === true && process.stdin.isTTY === true;
  if (o.once || !tty) {
    // Batch: a table per interval (once with --once), no escapes, width from the terminal or COLUMNS.
    const width = process.stdout.columns ?? (Number(process.env.COLUMNS) || 160);
    await pollOnce();
    for (;;) {
      await sleep(intervalMs);
      await pollOnce();
      const lines = renderTable(rowsOf(tracker, view), view, { width, color: useColor(o.color, process.stdout.isTTY === true), title });
      process.stdout.write(lines.map((l) => l.trimEnd()).join('\n') + '\n');
      if (o.once) return 0;
      process.stdout.write('\n');
    }
  }
  return interactive(pollOnce, tracker, view, intervalMs, title, useColor(o.color, true));
}

async function interactive(
  pollOnce: () => Promise<void>,
  tracker: WindowTracker,
  view: ViewState,
  intervalMs: number,
  title: string,
  color: boolean,
): Promise<number> {
  const out = process.stdout;
  const stdin = process.stdin;
  let status = 'q quit  s/r/t/w/b/p sort  f port filter  ? help';
  let prompt: string | undefined; // the port being typed after `f`
  let lastError: string | undefined;
  let restored = false;

  const restore = (): void => {
    if (restored) return;
    restored = true;
    if (stdin.isTTY) stdin.setRawMode(false);
    out.write(ansi.cursorShow + ansi.exitAlternativeScreen);
  };
  const draw = (): void => {
    if (restored) return;
    const width = out.columns ?? 80;
    const height = (out.rows ?? 24) - 5;
    const line = prompt !== undefined ? `port (Enter to apply, empty for all, Esc to cancel): ${prompt}` : (lastError ?? status);
    const lines = renderTable(rowsOf(tracker, view), view, { width, height, color, title, status: line });
    // One write per frame: home, each line cleared to its end, then the rest of the screen.
    out.write(ansi.beginSynchronizedOutput + ansi.cursorTo(0, 0) + lines.map((l) => l + ansi.eraseEndLine).join('\n') + ansi.eraseDown + ansi.endSynchronizedOutput);
  };

  out.write(ansi.enterAlternativeScreen + ansi.cursorHide + ansi.clearScreen);
  // Whatever happens, the user gets their terminal back.
  process.once('exit', restore);
  const fatal = (e: unknown): void => {
    restore();
    process.stderr.write(`tcp-chronograph: ${e instanceof Error ? e.message : String(e)}\n`);
    process.exit(1);
  };
  process.once('uncaughtException', fatal);

  return new Promise<number>((resolve) => {
    let timer: NodeJS.Timeout | undefined;
    const quit = (code: number): void => {
      if (timer !== undefined) clearTimeout(timer);
      stdin.off('keypress', onKey);
      restore();
      stdin.pause();
      resolve(code);
    };
    const onKey = (str: string | undefined, key: { name?: string; ctrl?: boolean; sequence?: string } | undefined): void => {
      if (key?.ctrl === true && (key.name === 'c' || key.name === 'd')) return quit(0);
      if (prompt !== undefined) {
        if (key?.name === 'return' || key?.name === 'enter') {
          view.portFilter = prompt;
          prompt = undefined;
        } else if (key?.name === 'escape') {
          prompt = undefined;
        } else if (key?.name === 'backspace') {
          prompt = prompt.slice(0, -1);
        } else if (str !== undefined && /^[0-9a-z]$/.test(str) && prompt.length < 10) {
          prompt += str;
        }
        return draw();
      }
      if (str === 'q' || key?.name === 'escape') return quit(0);
      if (str === 'f' || str === '/') {
        prompt = '';
        return draw();
      }
      if (str === '?') {
        status = 'sort: s stall, r rate, t RTT, w window, b bytes, p port (again: reverse)  f port filter  q quit';
        return draw();
      }
      const found = Object.entries(SORT_KEYS_BY_NAME).find(([, s]) => s.key === str);
      if (found !== undefined) {
        const name = found[0] as SortName;
        view.reverse = view.sort === name ? !view.reverse : false;
        view.sort = name;
        draw();
      }
    };
    emitKeypressEvents(stdin);
    stdin.setRawMode(true);
    stdin.resume();
    stdin.on('keypress', onKey);
    out.on('resize', draw);
    for (const sig of ['SIGTERM', 'SIGHUP', 'SIGINT'] as const) process.once(sig, () => quit(0));

    const tick = async (): Promise<void> => {
      try {
        await pollOnce();
        lastError = undefined;
      } catch (e) {
        lastError = `poll failed: ${e instanceof Error ? e.message : String(e)}`;
      }
      draw();
      if (!restored) timer = setTimeout(() => void tick(), intervalMs);
    };
    draw();
    void tick();
  }).finally(() => {
    process.off('uncaughtException', fatal);
  });
}

export const topCommand: Command = {
  name: 'top',
  summary: 'Live terminal view of every connection and where its time went (app, network, rwnd, sndbuf)',
  run: runTop,
};
