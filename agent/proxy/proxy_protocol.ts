// PROXY protocol header (HAProxy's spec, versions 1 and 2) sent to the
// upstream before any client byte, so the server sees the client's address.
// Source = the client's address; destination = the address the client
// connected to (the proxy's listening address as the client saw it).
import { isIPv4, isIPv6 } from 'node:net';

export type ProxyProtocolVersion = 'v1' | 'v2';

export interface Endpoints {
  sourceAddress: string | undefined;
  sourcePort: number | undefined;
  destAddress: string | undefined;
  destPort: number | undefined;
}

const V2_SIGNATURE = Buffer.from([0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a]);

/** "::ffff:1.2.3.4" → "1.2.3.4" (a v4 client on a dual-stack listener). */
function unmap(a: string): string {
  const m = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(a);
  return m !== null ? m[1]! : a;
}

type Family = { family: 4 | 6; src: string; dst: string; sport: number; dport: number } | undefined;

function family(e: Endpoints): Family {
  if (e.sourceAddress === undefined || e.destAddress === undefined || e.sourcePort === undefined || e.destPort === undefined) return undefined;
  let src = e.sourceAddress;
  let dst = e.destAddress;
  if (isIPv4(unmap(src)) && isIPv4(unmap(dst))) {
    src = unmap(src);
    dst = unmap(dst);
    return { family: 4, src, dst, sport: e.sourcePort, dport: e.destPort };
  }
  // Strip a zone index: the header has no room for it.
  src = src.replace(/%.*$/, '');
  dst = dst.replace(/%.*$/, '');
  if (isIPv6(src) && isIPv6(dst)) return { family: 6, src, dst, sport: e.sourcePort, dport: e.destPort };
  return undefined;
}

/** Version 1: one text line, e.g. "PROXY TCP4 192.0.2.1 192.0.2.2 51234 80\r\n". */
export function proxyHeaderV1(e: Endpoints): Buffer {
  const f = family(e);
  if (f === undefined) return Buffer.from('PROXY UNKNOWN\r\n', 'latin1');
  return Buffer.from(`PROXY TCP${f.family} ${f.src} ${f.dst} ${f.sport} ${f.dport}\r\n`, 'latin1');
}

/** Version 2: binary; PROXY command, TCP over IPv4 or IPv6 (LOCAL when the addresses are unknown). */
export function proxyHeaderV2(e: Endpoints): Buffer {
  const f = family(e);
  if (f === undefined) {
    // LOCAL: the receiver uses the connection's own addresses.
    return Buffer.concat([V2_SIGNATURE, Buffer.from([0x20, 0x00, 0x00, 0x00])]);
  }
  const addrLen = f.family === 4 ? 12 : 36;
  const out = Buffer.alloc(16 + addrLen);
  V2_SIGNATURE.copy(out, 0);
  out[12] = 0x21; // version 2, PROXY
  out[13] = f.family === 4 ? 0x11 : 0x21; // AF_INET/AF_INET6, STREAM
  out.writeUInt16BE(addrLen, 14);
  const a = f.family === 4 ? ipv4Bytes : ipv6Bytes;
  const n = f.family === 4 ? 4 : 16;
  a(f.src).copy(out, 16);
  a(f.dst).copy(out, 16 + n);
  out.writeUInt16BE(f.sport, 16 + 2 * n);
  out.writeUInt16BE(f.dport, 18 + 2 * n);
  return out;
}

export function proxyHeader(version: ProxyProtocolVersion, e: Endpoints): Buffer {
  return version === 'v1' ? proxyHeaderV1(e) : proxyHeaderV2(e);
}

function ipv4Bytes(a: string): Buffer {
  return Buffer.from(a.split('.').map(Number));
}

/** Expands "::"-compressed (and v4-suffixed) IPv6 text into 16 bytes. */
export function ipv6Bytes(a: string): Buffer {
  let text = a;
  const v4 = /(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(text);
  if (v4 !== null) {
    const [b0, b1, b2, b3] = v4.slice(1).map(Number) as [number, number, number, number];
    text = `${text.slice(0, v4.index)}${((b0 << 8) | b1).toString(16)}:${((b2 << 8) | b3).toString(16)}`;
  }
  const parse = (s: string): number[] => (s === '' ? [] : s.split(':').map((h) => parseInt(h, 16)));
  const dbl = text.indexOf('::');
  let groups: number[];
  if (dbl < 0) groups = parse(text);
  else {
    const head = parse(text.slice(0, dbl));
    const tail = parse(text.slice(dbl + 2));
    groups = [...head, ...new Array<number>(Math.max(0, 8 - head.length - tail.length)).fill(0), ...tail];
  }
  const out = Buffer.alloc(16);
  groups.slice(0, 8).forEach((g, i) => out.writeUInt16BE(g & 0xffff, 2 * i));
  return out;
}
