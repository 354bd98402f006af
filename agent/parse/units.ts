// Unit conversions shared by the decoders: everything leaves agent/parse/ in
// base units (seconds, bytes, bytes/second), the way Prometheus wants them.

export const usToSeconds = (us: number): number => us / 1e6;
export const msToSeconds = (ms: number): number => ms / 1e3;

export const U64_MAX = 0xffff_ffff_ffff_ffffn;

/** u64 as a JS number; exact below 2^53, which every counter stays under in practice. */
export function u64(buf: Buffer, offset: number): number {
  return Number(buf.readBigUInt64LE(offset));
}

/** Rates use ~0 for "unlimited" (e.g. max_pacing_rate with no SO_MAX_PACING_RATE). */
export function rate64(buf: Buffer, offset: number): number {
  const v = buf.readBigUInt64LE(offset);
  return v === U64_MAX ? Infinity : Number(v);
}

/** Nanoseconds (u64/i64) to float seconds without losing the sub-second part to 2^53. */
export function nsToSeconds(ns: bigint): number {
  return Number(ns / 1_000_000_000n) + Number(ns % 1_000_000_000n) / 1e9;
}
