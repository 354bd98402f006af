// Walks a raw control-message area as recvmsg() fills it on x86_64 (and every
// other 64-bit Linux ABI): struct cmsghdr { u64 cmsg_len; i32 cmsg_level;
// i32 cmsg_type } followed by data, each message padded to 8 bytes.
// Tolerant like CMSG_NXTHDR: a header that cannot be right ends the walk and
// is reported in `problems` (when given); what came before it is kept.

export const CMSG_HDRLEN = 16;
export const CMSG_ALIGN = 8;

export const SOL_IP = 0;
export const SOL_SOCKET = 1;
export const SOL_IPV6 = 41;
export const IP_RECVERR = 11;
export const IPV6_RECVERR = 25;
export const SCM_TIMESTAMPING = 37;
export const SCM_TIMESTAMPING_OPT_STATS = 54;

export interface Cmsg {
  level: number;
  type: number;
  /** A view into the walked buffer (cmsg_len - header bytes). */
  data: Buffer;
}

export function parseCmsgs(buf: Buffer, problems?: string[]): Cmsg[] {
  const out: Cmsg[] = [];
  let off = 0;
  while (off + CMSG_HDRLEN <= buf.length) {
    const len = buf.readBigUInt64LE(off);
    if (len < BigInt(CMSG_HDRLEN)) {
      // cmsg_len 0 also covers zero padding after the last message.
      problems?.push(`cmsg at ${off}: cmsg_len ${len} < ${CMSG_HDRLEN}`);
      return out;
    }
    if (len > BigInt(buf.length - off)) {
      problems?.push(`cmsg at ${off}: cmsg_len ${len} overruns ${buf.length - off} bytes`);
      return out;
    }
    const n = Number(len);
    out.push({ level: buf.readInt32LE(off + 8), type: buf.readInt32LE(off + 12), data: buf.subarray(off + CMSG_HDRLEN, off + n) });
    off += Math.ceil(n / CMSG_ALIGN) * CMSG_ALIGN;
  }
  if (off < buf.length) problems?.push(`${buf.length - off} trailing bytes after the last cmsg`);
  return out;
}
