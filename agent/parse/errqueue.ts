// Decodes the native drainer's batches (native/errqueue.cc) into timestamp
// records. A batch is a run of frames, little-endian:
//   u32 fd | u32 control_len | u32 msg_flags | u32 0 | control bytes | zero pad to 8
// where the control bytes are the cmsg area of one recvmsg(MSG_ERRQUEUE).
// Never throws: a bad record is counted and skipped, a bad frame header ends
// the batch (nothing after it can be framed), and both leave a problem note.
import {
  IPV6_RECVERR,
  IP_RECVERR,
  parseCmsgs,
  SCM_TIMESTAMPING,
  SCM_TIMESTAMPING_OPT_STATS,
  SOL_IP,
  SOL_IPV6,
  SOL_SOCKET,
} from './cmsg.js';
import { ParseError } from './errors.js';
import { ENOMSG, parseExtendedErr, SCM_TSTAMP, SO_EE_ORIGIN } from './extended_err.js';
import { parseOptStats, type OptStats } from './opt_stats.js';
import { parseTimestamping } from './timestamping.js';

export type TxKind = 'sched' | 'snd' | 'ack';

export interface TxRecord {
  fd: number;
  kind: TxKind; // ee_info: SCM_TSTAMP_SND=0 -> 'snd', SCHED=1 -> 'sched', ACK=2 -> 'ack'
  key: number; // ee_data (u32): OPT_ID byte offset of the last byte of the sendmsg
  time: number; // software timestamp, CLOCK_REALTIME, seconds (float)
  stats?: OptStats; // when OPT_STATS was on
  truncated: boolean; // msg_flags & MSG_CTRUNC (0x8)
}

export interface ErrqueueBatch {
  records: TxRecord[];
  /** Frames that could not be decoded (a bad frame header counts once and ends the batch). */
  malformed: number;
  /** The first MAX_PROBLEMS notes on what did not decode or was skipped. */
  problems: string[];
  /** Well-formed records that are not timestamps (e.g. an ICMP error), or of a kind not requested. */
  skipped?: number;
}

export const FRAME_HDRLEN = 16;
export const MAX_PROBLEMS = 10;
/** Control data was cut short (the drainer's buffer was too small). */
export const MSG_CTRUNC = 0x8;

const KINDS: ReadonlyMap<number, TxKind> = new Map([
  [SCM_TSTAMP.SND, 'snd'],
  [SCM_TSTAMP.SCHED, 'sched'],
  [SCM_TSTAMP.ACK, 'ack'],
]);

/** Why a well-formed record yields no TxRecord. */
export class NotATimestamp {
  constructor(readonly reason: string) {}
}

/**
 * One frame's control area to a record. Throws ParseError when the record is
 * malformed; returns NotATimestamp for a valid record that is something else.
 * Per-record stats problems are appended to `problems`.
 */
export function parseTxRecord(fd: number, msgFlags: number, control: Buffer, problems: string[] = []): TxRecord | NotATimestamp {
  const cmsgProblems: string[] = [];
  let ts: Buffer | undefined;
  let statsData: Buffer | undefined;
  let ee: Buffer | undefined;
  for (const c of parseCmsgs(control, cmsgProblems)) {
    if (c.level === SOL_SOCKET && c.type === SCM_TIMESTAMPING) ts ??= c.data;
    else if (c.level === SOL_SOCKET && c.type === SCM_TIMESTAMPING_OPT_STATS) statsData ??= c.data;
    else if ((c.level === SOL_IP && c.type === IP_RECVERR) || (c.level === SOL_IPV6 && c.type === IPV6_RECVERR)) ee ??= c.data;
  }
  if (ee === undefined) throw new ParseError(`no IP_RECVERR/IPV6_RECVERR cmsg${note(cmsgProblems)}`, 'errqueue record');
  const err = parseExtendedErr(ee);
  if (err.errno !== ENOMSG || err.origin !== SO_EE_ORIGIN.TIMESTAMPING) {
    return new NotATimestamp(`ee_errno ${err.errno}, ee_origin ${err.origin}: not a timestamp`);
  }
  const kind = KINDS.get(err.info);
  if (kind === undefined) return new NotATimestamp(`timestamp type ${err.info} not requested`);
  if (ts === undefined) throw new ParseError(`no SCM_TIMESTAMPING cmsg${note(cmsgProblems)}`, 'errqueue record');
  const time = parseTimestamping(ts).software;
  if (time === undefined) throw new ParseError('no software timestamp (SOF_TIMESTAMPING_SOFTWARE off?)', 'errqueue record');

  const record: TxRecord = { fd, kind, key: err.data, time, truncated: (msgFlags & MSG_CTRUNC) !== 0 };
  if (statsData !== undefined) {
    record.stats = parseOptStats(statsData);
    for (const p of record.stats.problems) problems.push(`fd ${fd} key ${err.data} ${kind} stats: ${p}`);
  }
  return record;
}

function note(problems: string[]): string {
  return problems.length === 0 ? '' : ` (${problems.join('; ')})`;
}

export function parseErrqueueBatch(buf: Buffer): ErrqueueBatch {
  const batch: Required<ErrqueueBatch> = { records: [], malformed: 0, problems: [], skipped: 0 };
  const problem = (p: string): void => {
    if (batch.problems.length < MAX_PROBLEMS) batch.problems.push(p);
  };
  let off = 0;
  while (off < buf.length) {
    if (buf.length - off < FRAME_HDRLEN) {
      batch.malformed++;
      problem(`frame at ${off}: ${buf.length - off} bytes, shorter than a frame header`);
      break;
    }
    const fd = buf.readUInt32LE(off);
    const controlLen = buf.readUInt32LE(off + 4);
    const msgFlags = buf.readUInt32LE(off + 8);
    const reserved = buf.readUInt32LE(off + 12);
    const start = off + FRAME_HDRLEN;
    // A nonzero reserved word means we are no longer on a frame boundary.
    if (reserved !== 0 || controlLen > buf.length - start) {
      batch.malformed++;
      problem(`frame at ${off}: bad header (control_len ${controlLen}, reserved ${reserved}, ${buf.length - start} bytes left)`);
      break;
    }
    off = start + Math.ceil(controlLen / 8) * 8;
    try {
      const perRecord: string[] = [];
      const r = parseTxRecord(fd, msgFlags, buf.subarray(start, start + controlLen), perRecord);
      perRecord.forEach(problem);
      if (r instanceof NotATimestamp) {
        batch.skipped++;
        problem(`fd ${fd}: ${r.reason}, skipped`);
      } else {
        batch.records.push(r);
      }
    } catch (e) {
      // Anything else would be a bug here, but a host's event loop must not pay for it.
      batch.malformed++;
      problem(`fd ${fd}: ${e instanceof ParseError ? e.message : `unexpected ${String(e)}`}`);
    }
  }
  return batch;
}
