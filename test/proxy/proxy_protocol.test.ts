// PROXY protocol header bytes for the address forms a listener can see.
import { describe, expect, it } from 'vitest';
import { ipv6Bytes, proxyHeaderV1, proxyHeaderV2 } from '../../agent/proxy/proxy_protocol.js';

const SIG = '0d0a0d0a000d0a515549540a';

describe('PROXY protocol headers', () => {
  it('a v4 client on a dual-stack listener is sent as TCP4', () => {
    const e = { sourceAddress: '::ffff:192.0.2.1', sourcePort: 51234, destAddress: '::ffff:198.51.100.2', destPort: 80 };
    expect(proxyHeaderV1(e).toString()).toBe('PROXY TCP4 192.0.2.1 198.51.100.2 51234 80\r\n');
    expect(proxyHeaderV2(e).toString('hex')).toBe(`${SIG}2111000cc0000201c6336402c8220050`);
  });

  it('IPv6 addresses are expanded; zone indexes dropped', () => {
    const e = { sourceAddress: '2001:db8::1', sourcePort: 1, destAddress: 'fe80::2%eth0', destPort: 2 };
    expect(proxyHeaderV1(e).toString()).toBe('PROXY TCP6 2001:db8::1 fe80::2 1 2\r\n');
    expect(proxyHeaderV2(e).toString('hex')).toBe(`${SIG}21210024${'20010db8000000000000000000000001'}${'fe800000000000000000000000000002'}00010002`);
  });

  it('unknown or mixed families: UNKNOWN (v1) and LOCAL (v2)', () => {
    const e = { sourceAddress: undefined, sourcePort: undefined, destAddress: '127.0.0.1', destPort: 80 };
    expect(proxyHeaderV1(e).toString()).toBe('PROXY UNKNOWN\r\n');
    expect(proxyHeaderV2(e).toString('hex')).toBe(`${SIG}20000000`);
  });

  it('expands IPv6 text forms', () => {
    expect(ipv6Bytes('::').toString('hex')).toBe('0'.repeat(32));
    expect(ipv6Bytes('::1').toString('hex')).toBe(`${'0'.repeat(30)}01`);
    expect(ipv6Bytes('fe80::').toString('hex')).toBe(`fe80${'0'.repeat(28)}`);
    expect(ipv6Bytes('1:2:3:4:5:6:7:8').toString('hex')).toBe('00010002000300040005000600070008');
    expect(ipv6Bytes('::ffff:1.2.3.4').toString('hex')).toBe('00000000000000000000ffff01020304');
    expect(ipv6Bytes('64:ff9b::192.0.2.33').toString('hex')).toBe('0064ff9b0000000000000000c0000221');
  });
});
