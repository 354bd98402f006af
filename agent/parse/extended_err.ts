// struct sock_extended_err (include/uapi/linux/errqueue.h), the payload of
// IP_RECVERR / IPV6_RECVERR. The offender sockaddr that follows is not read.
import { ParseError } from './errors.js';

export const SOCK_EXTENDED_ERR_LEN = 16;

/** ee_errno of a timestamp record (everything else is a real error). */
export const ENOMSG = 42;

export const SO_EE_ORIGIN = {
  NONE: 0,
  LOCAL: 1,
  ICMP: 2,
  ICMP6: 3,
  TIMESTAMPING: 4,
  ZEROCOPY: 5,
  TXTIME: 6,
} as const;

/** ee_info of a timestamping record: which point of the path it stamps. */
export const SCM_TSTAMP = { SND: 0, SCHED: 1, ACK: 2 } as const;

export interface SockExtendedErr {
  errno: number;
  origin: number;
  type: number;
  code: number;
  /** Timestamping: SCM_TSTAMP_*. */
  info: number;
  /** Timestamping with OPT_ID: the key (byte offset of the last byte, u32, wraps). */
  data: number;
}

export function parseExtendedErr(data: Buffer): SockExtendedErr {
  if (data.length < SOCK_EXTENDED_ERR_LEN) {
    throw new ParseError(`${data.length} bytes, need ${SOCK_EXTENDED_ERR_LEN}`, 'sock_extended_err');
  }
  return {
    errno: data.readUInt32LE(0),
    origin: data.readUInt8(4),
    type: data.readUInt8(5),
    code: data.readUInt8(6),
    info: data.readUInt32LE(8),
    data: data.readUInt32LE(12),
  };
}
