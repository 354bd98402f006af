// Decodes the native drainer's batches (native/errqueue.cc) into timestamp
// records. A batch is a run of frames, little-endian:
//   u32 fd | u32 control_len | u32 msg_flags | u32 0 | control bytes | zero pad to 8
// where the control bytes are the cmsg area of one recvmsg(MSG_ERRQUEUE).
// Never throws: a bad record is counted and skipped, a bad frame header ends
// the batch (nothing after it can be framed), and both leave a problem note.
import {
  CMSG_ALIGN,
  CMSG_HDRLEN,
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
import { ENOMSG, parseExtendedErr, SCM_TSTAMP, SOCK_EXTENDED_ERR_LEN, SO_EE_ORIGIN } from './extended_err.js';
import { parseOptStats, TCP_NLA, type OptStats } from './opt_stats.js';
import { usToSeconds } from './units.js';
import { parseTimestamping, SCM_TIMESTAMPING_LEN } from './timestamping.js';

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
const NLA_HDRLEN = 4;
const NLA_TYPE_MASK = 0x3fff;
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
 * Which records get their OPT_STATS decoded: 'all' (the default: every
 * attribute of every record), or 'chunks': what instrument()'s chunk records
 * read (fromOptStats in model/chunks.ts), the chronograph fields of ACK
 * records only (busy, rwndLimited, sndbufLimited, totalRetrans, deliveryRate,
 * sndCwnd, minRtt, srtt); SCHED and SND records carry no stats then. Decoding
 * every attribute was most of a record's parsing cost.
 */
export type StatsOn = 'all' | 'chunks';

/**
 * One frame's control area to a record. Throws ParseError when the record is
 * malformed; returns NotATimestamp for a valid record that is something else.
 * Per-record stats problems are appended to `problems`.
 *
 * The usual record (three well-formed cmsgs) is read in place, without a view
 * or an object per cmsg; anything unusual goes through the general decoders
 * (parseCmsgs, parseExtendedErr, parseTimestamping), which give the same
 * result and name what is wrong.
 */
export function parseTxRecord(fd: number, msgFlags: number, control: Buffer, problems: string[] = [], statsOn: StatsOn = 'all'): TxRecord | NotATimestamp {
  return parseFrame(fd, msgFlags, control, 0, control.length, problems, statsOn);
}

/** parseTxRecord() of the control bytes [from, n) of `control` (a whole batch: no view per frame). */
function parseFrame(fd: number, msgFlags: number, control: Buffer, from: number, n: number, problems: string[], statsOn: StatsOn): TxRecord | NotATimestamp {
  let ts = -1;
  let st = -1;
  let stEnd = 0;
  let ee = -1;
  let eeLen = 0;
  let off = from;
  while (off + CMSG_HDRLEN <= n) {
    const len = control.readUInt32LE(off);
    if (control.readUInt32LE(off + 4) !== 0 || len < CMSG_HDRLEN || len > n - off) return parseTxRecordGeneral(fd, msgFlags, control.subarray(from, n), problems, statsOn);
    const level = control.readInt32LE(off + 8);
    const type = control.readInt32LE(off + 12);
    if (level === SOL_SOCKET) {
      if (type === SCM_TIMESTAMPING) {
        if (ts < 0) ts = len - CMSG_HDRLEN >= SCM_TIMESTAMPING_LEN ? off + CMSG_HDRLEN : n;
      } else if (type === SCM_TIMESTAMPING_OPT_STATS && st < 0) {
        st = off + CMSG_HDRLEN;
        stEnd = off + len;
      }
    } else if (ee < 0 && ((level === SOL_IP && type === IP_RECVERR) || (level === SOL_IPV6 && type === IPV6_RECVERR))) {
      ee = off + CMSG_HDRLEN;
      eeLen = len - CMSG_HDRLEN;
    }
    off += Math.ceil(len / CMSG_ALIGN) * CMSG_ALIGN;
  }
  // ts === n: an SCM_TIMESTAMPING too short to read.
  if (off < n || ee < 0 || eeLen < SOCK_EXTENDED_ERR_LEN || ts < 0 || ts === n) return parseTxRecordGeneral(fd, msgFlags, control.subarray(from, n), problems, statsOn);
  if (control.readUInt32LE(ee) !== ENOMSG || control.readUInt8(ee + 4) !== SO_EE_ORIGIN.TIMESTAMPING) {
    return parseTxRecordGeneral(fd, msgFlags, control.subarray(from, n), problems, statsOn);
  }
  const info = control.readUInt32LE(ee + 8);
  const kind: TxKind | undefined = info === SCM_TSTAMP.ACK ? 'ack' : info === SCM_TSTAMP.SCHED ? 'sched' : info === SCM_TSTAMP.SND ? 'snd' : undefined;
  // The software stamp, { i64 tv_sec; i64 tv_nsec }: a plain number when it
  // is an ordinary time (0 <= tv_sec < 2^53, tv_nsec < 1e9, not both zero),
  // the same value nsToSeconds gives; anything else: the general decoder.
  const secLo = control.readUInt32LE(ts);
  const secHi = control.readInt32LE(ts + 4);
  const nsec = control.readUInt32LE(ts + 8);
  if (kind === undefined || secHi < 0 || secHi >= 0x200000 || control.readInt32LE(ts + 12) !== 0 || nsec >= 1e9 || (secLo === 0 && secHi === 0 && nsec === 0)) {
    return parseTxRecordGeneral(fd, msgFlags, control.subarray(from, n), problems, statsOn);
  }
  const key = control.readUInt32LE(ee + 12);
  const record: TxRecord = { fd, kind, key, time: secHi * 0x1_0000_0000 + secLo + nsec / 1e9, truncated: (msgFlags & MSG_CTRUNC) !== 0 };
  if (st >= 0) {
    if (statsOn === 'all') record.stats = parseOptStats(control.subarray(st, stEnd));
    else if (kind === 'ack') record.stats = chunkStats(control, st, stEnd);
    if (record.stats !== undefined) for (const p of record.stats.problems) problems.push(`fd ${fd} key ${key} ${kind} stats: ${p}`);
  }
  return record;
}

/**
 * OPT_STATS attributes [from, to) of `buf` to the fields a chunk record reads,
 * read in place; the same values parseOptStats gives them. An attribute of
 * another size than the kernel's, a value past 2^53 (or ~0) or a malformed
 * header: parseOptStats decodes the whole, naming the problem.
 */
function chunkStats(buf: Buffer, from: number, to: number): OptStats {
  const out: OptStats = { unknown: [], problems: [] };
  let off = from;
  while (off + NLA_HDRLEN <= to) {
    const nlaLen = buf.readUInt16LE(off);
    if (nlaLen < NLA_HDRLEN || off + nlaLen > to) return parseOptStats(buf.subarray(from, to));
    const type = buf.readUInt16LE(off + 2) & NLA_TYPE_MASK;
    const at = off + NLA_HDRLEN;
    const width = nlaLen - NLA_HDRLEN;
    off += (nlaLen + 3) & ~3;
    switch (type) {
      case TCP_NLA.BUSY:
      case TCP_NLA.RWND_LIMITED:
      case TCP_NLA.SNDBUF_LIMITED:
      case TCP_NLA.TOTAL_RETRANS:
      case TCP_NLA.DELIVERY_RATE: {
        const hi = width === 8 ? buf.readUInt32LE(at + 4) : -1;
        if (hi < 0 || hi >= 0x200000) return parseOptStats(buf.subarray(from, to));
        const v = hi * 0x1_0000_0000 + buf.readUInt32LE(at);
        if (type === TCP_NLA.BUSY) out.busy = usToSeconds(v);
        else if (type === TCP_NLA.RWND_LIMITED) out.rwndLimited = usToSeconds(v);
        else if (type === TCP_NLA.SNDBUF_LIMITED) out.sndbufLimited = usToSeconds(v);
        else if (type === TCP_NLA.TOTAL_RETRANS) out.totalRetrans = v;
        else out.deliveryRate = v;
        break;
      }
      case TCP_NLA.SND_CWND:
      case TCP_NLA.MIN_RTT:
      case TCP_NLA.SRTT: {
        if (width !== 4) return parseOptStats(buf.subarray(from, to));
        const v = buf.readUInt32LE(at);
        if (type === TCP_NLA.SND_CWND) out.sndCwnd = v;
        else if (type === TCP_NLA.SRTT) out.srtt = usToSeconds(v);
        else if (v !== 0xffff_ffff) out.minRtt = usToSeconds(v); // ~0: no RTT sample

        break;
      }
      default:
    }
  }
  if (off < to) return parseOptStats(buf.subarray(from, to));
  return out;
}

function parseTxRecordGeneral(fd: number, msgFlags: number, control: Buffer, problems: string[], statsOn: StatsOn): TxRecord | NotATimestamp {
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
  if (statsData !== undefined && (statsOn === 'all' || kind === 'ack')) {
    record.stats = parseOptStats(statsData);
    for (const p of record.stats.problems) problems.push(`fd ${fd} key ${err.data} ${kind} stats: ${p}`);
  }
  return record;
}

function note(problems: string[]): string {
  return problems.length === 0 ? '' : ` (${problems.join('; ')})`;
}

export function parseErrqueueBatch(buf: Buffer, statsOn: StatsOn = 'all'): ErrqueueBatch {
  const batch: Required<ErrqueueBatch> = { records: [], malformed: 0, problems: [], skipped: 0 };
  const problem = (p: string): void => {
    if (batch.problems.length < MAX_PROBLEMS) batch.problems.push(p);
  };
  const perRecord: string[] = [];
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
      const r = parseFrame(fd, msgFlags, buf, start, start + controlLen, perRecord, statsOn);
      if (perRecord.length > 0) {
        perRecord.forEach(problem);
        perRecord.length = 0;
      }
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
