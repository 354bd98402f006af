// Generic netlink framing (include/uapi/linux/netlink.h): nlmsghdr streams
// and nlattr lists. Pure functions over bytes, tolerant of garbage: a
// malformed frame ends the walk and is reported, it never throws.
//
// The walkers hand out offsets instead of sub-Buffers: a 50k-socket dump has
// ~300k attributes and the agent only needs a handful of them as Buffers.

export const NLMSG_HDRLEN = 16;
export const NLA_HDRLEN = 4;

export const NLMSG_NOOP = 1;
export const NLMSG_ERROR = 2;
export const NLMSG_DONE = 3;

export const NLM_F_MULTI = 0x2;
/** Set on dump messages when the table changed while it was being dumped. */
export const NLM_F_DUMP_INTR = 0x10;

/** Netlink lengths are padded to 4 bytes. */
export function align4(n: number): number {
  return (n + 3) & ~3;
}

export interface NlMsgHeader {
  type: number;
  flags: number;
  seq: number;
  pid: number;
  /** Payload [start, end) within the walked buffer. */
  start: number;
  end: number;
}

export interface WalkResult {
  messages: number;
  /** True if the walk stopped on a header that does not fit (bytes after it are ignored). */
  malformed: boolean;
}

/** Calls visit for every nlmsghdr in buf (several datagrams concatenated is fine). */
export function walkMessages(buf: Buffer, visit: (h: NlMsgHeader) => void): WalkResult {
  let off = 0;
  let messages = 0;
  while (off + NLMSG_HDRLEN <= buf.length) {
    const len = buf.readUInt32LE(off);
    if (len < NLMSG_HDRLEN || off + len > buf.length) return { messages, malformed: true };
    visit({
      type: buf.readUInt16LE(off + 4),
      flags: buf.readUInt16LE(off + 6),
      seq: buf.readUInt32LE(off + 8),
      pid: buf.readUInt32LE(off + 12),
      start: off + NLMSG_HDRLEN,
      end: off + len,
    });
    messages++;
    off += align4(len);
  }
  // Trailing bytes shorter than a header: only padding (zeros) is legitimate.
  for (let i = off; i < buf.length; i++) if (buf[i] !== 0) return { messages, malformed: true };
  return { messages, malformed: false };
}

/**
 * Calls visit(type, start, end) for every attribute in [start, end).
 * Returns false if the list is malformed (the attributes before the fault
 * have been visited). The NLA_F_NESTED / NLA_F_NET_BYTEORDER bits are masked off.
 */
export function walkAttrs(
  buf: Buffer,
  start: number,
  end: number,
  visit: (type: number, start: number, end: number) => void,
): boolean {
  let off = start;
  const limit = Math.min(end, buf.length);
  while (off + NLA_HDRLEN <= limit) {
    const len = buf.readUInt16LE(off);
    if (len < NLA_HDRLEN || off + len > limit) return false;
    visit(buf.readUInt16LE(off + 2) & 0x3fff, off + NLA_HDRLEN, off + len);
    off += align4(len);
  }
  return true;
}

/** The errno (positive) carried by an NLMSG_ERROR payload; 0 is an ACK, undefined if truncated. */
export function nlmsgError(buf: Buffer, h: NlMsgHeader): number | undefined {
  if (h.end - h.start < 4) return undefined;
  return -buf.readInt32LE(h.start);
}
