// SO_TIMESTAMPING flags and their switching on a connected TCP socket.
// The uapi headers on many hosts predate OPT_ID_TCP, so the bits are defined here.
import { explain, native } from '../native.js';

export const SOF = {
  TX_SOFTWARE: 1 << 1, // record when the last byte leaves the host (SND)
  SOFTWARE: 1 << 4,
  OPT_ID: 1 << 7, // key each record by byte offset (ee_data)
  TX_SCHED: 1 << 8, // record when the last byte leaves the TCP queue (SCHED)
  TX_ACK: 1 << 9, // record when the last byte is acked (ACK)
  OPT_TSONLY: 1 << 11,
  OPT_STATS: 1 << 12, // attach TCP_NLA_* chronograph stats (needs OPT_TSONLY)
  OPT_ID_TCP: 1 << 16, // Linux 6.2+: key counts from write_seq, right when enabled mid-stream
} as const;

/**
 * Flags kept while no record is wanted: OPT_ID must stay on (turning it off and
 * on again resets the key base) and OPT_STATS must stay on (it is read when a
 * record is generated, e.g. at ack time, not when the write was flagged).
 */
export function idleFlags(idTcp: boolean): number {
  return SOF.SOFTWARE | SOF.OPT_ID | SOF.OPT_TSONLY | SOF.OPT_STATS | (idTcp ? SOF.OPT_ID_TCP : 0);
}

/** Flags that make the next sendmsg calls produce SCHED + ACK (+ SND) records. */
export function recordFlags(idTcp: boolean, snd: boolean): number {
  return idleFlags(idTcp) | SOF.TX_SCHED | SOF.TX_ACK | (snd ? SOF.TX_SOFTWARE : 0);
}

const HINTS = {
  EINVAL: 'SO_TIMESTAMPING was refused: enable timestamping after connect()/accept() on a connected TCP socket (Linux >= 4.10 needed for OPT_STATS)',
  ENOTSOCK: 'not a socket: instrument() needs a connected TCP net.Socket',
  EBADF: 'the socket is already closed',
  ENOPROTOOPT: 'this kernel has no SO_TIMESTAMPING on TCP (Linux >= 4.10 needed)',
};

/**
 * Turns timestamping on (idle flags). Returns whether OPT_ID_TCP was accepted;
 * kernels before 6.2 reject it with EINVAL and get plain OPT_ID.
 */
export function enableTimestamping(fd: number): { idTcp: boolean } {
  const n = native();
  try {
    n.setTimestamping(fd, idleFlags(true));
    return { idTcp: true };
  } catch (e) {
    try {
      n.setTimestamping(fd, idleFlags(false));
      return { idTcp: false };
    } catch (e2) {
      throw explain(e2, HINTS);
    }
  }
}

export function setFlags(fd: number, flags: number): void {
  try {
    native().setTimestamping(fd, flags);
  } catch (e) {
    throw explain(e, HINTS);
  }
}
