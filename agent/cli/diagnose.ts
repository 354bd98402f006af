// `tcp-chronograph diagnose`: watch for a while, then say in a sentence per
// port why delivery was slow and which connections were worst, with the
// figures behind it. `--json` gives the same report for machines.
import { release } from 'node:os';
import { setTimeout as sleep } from 'node:timers/promises';
import type { PortRange } from '../parse/inet_diag.js';
import { WindowTracker } from '../model/verdict.js';
import { buildReport, formatReport } from './report.js';
import type { Command } from './command.js';
import { formatHelp, parseBool, parseDuration, parseFlags, type FlagSpec } from './flags.js';
import { FROM_FLAG, FROM_TOKEN_FLAG, LocalPoller, RemotePoller, portsText, type Poller } from './local.js';
import { parsePortRange } from './common_flags.js';
import { applyRedaction, REDACT_FLAGS } from './common_flags.js';
import { LOG_FORMAT_FLAG, configureLog, log } from './log.js';
import { describeDrop, dropPrivileges, privileges } from './privileges.js';

const SUMMARY =
  'Watch the connections for a while, then print a verdict per port (receive window, send buffer,\n' +
  'network or application) and the worst connections, with the figures behind it.';

export const FLAGS = {
  port: {
    name: 'port',
    arg: 'PORT[-PORT]',
    multiple: true,
    help: 'Diagnose only connections whose local port is one of these (default: every port).',
    parse: parsePortRange,
  } satisfies FlagSpec<PortRange>,
  for: {
    name: 'for',
    arg: 'DURATION',
    default: '30s',
    help: 'How long to watch.',
    parse: (t: string) => {
      const s = parseDuration(t);
      if (s < 1 || s > 86_400) throw new Error('must be from 1s to 24h');
      return s;
    },
  } satisfies FlagSpec<number>,
  interval: {
    name: 'interval',
    arg: 'DURATION',
    default: '1s',
    help: 'Poll interval (one sock_diag dump each).',
    parse: (t: string) => {
      const s = parseDuration(t);
      if (s < 0.05 || s > 60) throw new Error('must be from 50ms to 1m');
      return s;
    },
  } satisfies FlagSpec<number>,
  json: {
    name: 'json',
    help: 'Print the report as one JSON object (ports, worst connections, every figure) instead of sentences.',
    parse: parseBool,
  } satisfies FlagSpec<boolean>,
  worst: {
    name: 'worst',
    arg: 'N',
    default: '5',
    help: 'How many of the worst connections to list.',
    parse: (t: string) => {
      const n = Number(t);
      if (!Number.isInteger(n) || n < 0 || n > 1000) throw new Error('expected a whole number from 0 to 1000');
      return n;
    },
  } satisfies FlagSpec<number>,
  from: FROM_FLAG,
  authTokenFile: FROM_TOKEN_FLAG,
  ...REDACT_FLAGS,
  logFormat: LOG_FORMAT_FLAG,
};

/** A one-line progress bar on stderr, only when stderr is a terminal. */
function progress(done: number, total: number, conns: number): void {
  const width = 30;
  const n = Math.round((done / total) * width);
  process.stderr.write(`\r\x1b[2K[${'#'.repeat(n)}${' '.repeat(width - n)}] ${Math.round(done)}/${Math.round(total)} s, ${conns} connection${conns === 1 ? '' : 's'}`);
}

async function runDiagnose(argv: readonly string[]): Promise<number> {
  const { values: o, help } = parseFlags('diagnose', FLAGS, argv);
  if (help) {
    process.stdout.write(formatHelp('diagnose', SUMMARY, FLAGS));
    return 0;
  }
  // stdout carries the report; logs go to stderr.
  configureLog({ format: o.logFormat, stream: process.stderr });
  applyRedaction(o);
  const poller: Poller = o.from !== undefined ? new RemotePoller(o.from, o.port, o.authTokenFile) : new LocalPoller(o.port);
  const tracker = new WindowTracker();
  const showProgress = process.stderr.isTTY === true;
  const drop = { log, owners: o.from === undefined };
  const capabilities = describeDrop('diagnose', drop);
  log('info', 'diagnosing', { watching: poller.describe, for: o.for, interval: o.interval, kernel: release(), privileges: privileges(), ...(capabilities !== undefined && { capabilities }) });
  dropPrivileges('diagnose', drop);
  let stopped = false;
  // Ctrl-C ends the watch early: the report covers what was seen.
  const stop = (): void => {
    stopped = true;
  };
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);

  const t0 = Date.now();
  const end = t0 + o.for * 1000;
  tracker.observeAll(await poller.poll(), Date.now());
  while (!stopped && Date.now() < end) {
    await sleep(Math.min(o.interval * 1000, Math.max(0, end - Date.now())));
    tracker.observeAll(await poller.poll(), Date.now());
    if (showProgress) progress(Math.min(o.for, (Date.now() - t0) / 1000), o.for, [...tracker.conns.values()].filter((w) => !w.last.closed).length);
  }
  if (showProgress) process.stderr.write('\r\x1b[2K');
  const report = buildReport(tracker);
  if (o.json) {
    process.stdout.write(JSON.stringify({ watching: poller.describe, ...report, connections: report.connections.slice(0, Math.max(o.worst, 0)) }, null, 2) + '\n');
  } else {
    const portsLine = portsText(o.port);
    if (report.ports.length === 0) process.stdout.write(`Nothing to diagnose on ${portsLine}: ${formatReport(report, o.worst)}`);
    else process.stdout.write(formatReport(report, o.worst));
  }
  return 0;
}

export const diagnoseCommand: Command = {
  name: 'diagnose',
  summary: 'Watch for a while, then say per port why delivery was slow and name the worst connections',
  run: runDiagnose,
};
