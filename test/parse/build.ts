// Builders for hand-made kernel structures, the inverse of agent/parse, so
// edge cases and fuzz inputs can be written as data.

export function u8(v: number): Buffer {
  return Buffer.of(v & 0xff);
}
export function u16(v: number): Buffer {
  const b = Buffer.alloc(2);
  b.writeUInt16LE(v);
  return b;
}
export function u32(v: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(v >>> 0);
  return b;
}
export function u64(v: bigint | number): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(BigInt(v));
  return b;
}

const pad = (b: Buffer, align: number): Buffer => Buffer.concat([b, Buffer.alloc((align - (b.length % align)) % align)]);

/** struct nlattr + payload, padded to 4. `len` overrides nla_len. */
export function nla(type: number, payload: Buffer, len = 4 + payload.length): Buffer {
  const h = Buffer.alloc(4);
  h.writeUInt16LE(len & 0xffff, 0);
  h.writeUInt16LE(type & 0xffff, 2);
  return pad(Buffer.concat([h, payload]), 4);
}

/** struct cmsghdr + data, padded to 8. `len` overrides cmsg_len. */
export function cmsg(level: number, type: number, data: Buffer, len: bigint | number = 16 + data.length): Buffer {
  const h = Buffer.alloc(16);
  h.writeBigUInt64LE(BigInt(len), 0);
  h.writeInt32LE(level, 8);
  h.writeInt32LE(type, 12);
  return pad(Buffer.concat([h, data]), 8);
}

/** One native drainer frame. */
export function frame(fd: number, control: Buffer, msgFlags = 0x2020, controlLen = control.length, reserved = 0): Buffer {
  const h = Buffer.alloc(16);
  h.writeUInt32LE(fd >>> 0, 0);
  h.writeUInt32LE(controlLen >>> 0, 4);
  h.writeUInt32LE(msgFlags >>> 0, 8);
  h.writeUInt32LE(reserved >>> 0, 12);
  return pad(Buffer.concat([h, control]), 8);
}

/** struct scm_timestamping64 with a software stamp (seconds since the epoch). */
export function timestamping(sec: bigint, nsec: bigint): Buffer {
  const b = Buffer.alloc(48);
  b.writeBigInt64LE(sec, 0);
  b.writeBigInt64LE(nsec, 8);
  return b;
}

/** struct sock_extended_err followed by a zeroed sockaddr_in. */
export function extendedErr(e: { errno?: number; origin?: number; info: number; data: number }): Buffer {
  const b = Buffer.alloc(32);
  b.writeUInt32LE(e.errno ?? 42, 0);
  b.writeUInt8(e.origin ?? 4, 4);
  b.writeUInt32LE(e.info, 8);
  b.writeUInt32LE(e.data >>> 0, 12);
  return b;
}

/** The three cmsgs of one IPv4 timestamp record, as the kernel orders them. */
export function txControl(r: { info: number; key: number; sec?: bigint; nsec?: bigint; stats?: Buffer; errno?: number; origin?: number }): Buffer {
  return Buffer.concat([
    cmsg(1, 37, timestamping(r.sec ?? 1_795_000_000n, r.nsec ?? 123_456_789n)),
    ...(r.stats === undefined ? [] : [cmsg(1, 54, r.stats)]),
    cmsg(0, 11, extendedErr({ ...r, data: r.key })),
  ]);
}
