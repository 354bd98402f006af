// SCM_TIMESTAMPING payload: struct scm_timestamping64, three
// { i64 tv_sec; i64 tv_nsec } (the same as struct timespec on 64-bit ABIs).
// ts[0] is the software stamp (CLOCK_REALTIME), ts[1] a deprecated slot that
// is always zero, ts[2] the raw hardware stamp.
import { ParseError } from './errors.js';
import { nsToSeconds } from './units.js';

export const SCM_TIMESTAMPING_LEN = 48;

export interface ScmTimestamping {
  /** Seconds since the epoch (float); undefined when the slot is zero. */
  software?: number;
  hardware?: number;
}

const NS_PER_S = 1_000_000_000n;

function timespec(data: Buffer, offset: number): number | undefined {
  const sec = data.readBigInt64LE(offset);
  const nsec = data.readBigInt64LE(offset + 8);
  if (sec === 0n && nsec === 0n) return undefined;
  if (nsec < 0n || nsec >= NS_PER_S) throw new ParseError(`tv_nsec ${nsec} out of range`, 'scm_timestamping');
  return nsToSeconds(sec * NS_PER_S + nsec);
}

export function parseTimestamping(data: Buffer): ScmTimestamping {
  if (data.length < SCM_TIMESTAMPING_LEN) {
    throw new ParseError(`${data.length} bytes, need ${SCM_TIMESTAMPING_LEN}`, 'scm_timestamping');
  }
  return { software: timespec(data, 0), hardware: timespec(data, 32) };
}
