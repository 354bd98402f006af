// agent/export/redact.ts: each policy's form for IPv4, IPv6 and v4-mapped
// peers, the port kept, hashes keyed, redacted text passed through (top --from).
import { afterEach, describe, expect, it } from 'vitest';
import { configureRedaction, jsonReplacer, parseRedact, redactEndpoint, redactFields } from '../../agent/export/redact.js';

afterEach(() => configureRedaction({ kind: 'none' }));

describe('redact', () => {
  it('none leaves addresses alone and costs no replacer', () => {
    expect(redactEndpoint('10.1.2.3:51234')).toBe('10.1.2.3:51234');
    expect(jsonReplacer()).toBeUndefined();
  });

  it('remote drops the address, keeps the port', () => {
    configureRedaction(parseRedact('remote'));
    expect(redactEndpoint('10.1.2.3:51234')).toBe('redacted:51234');
    expect(redactEndpoint('[2001:db8::1]:443')).toBe('redacted:443');
    expect(redactEndpoint('garbage')).toBe('redacted');
  });

  it('prefix truncates: /24 for IPv4 (and v4-mapped), /64 or the given length for IPv6', () => {
    configureRedaction(parseRedact('remote=prefix/24'));
    expect(redactEndpoint('10.1.2.3:51234')).toBe('10.1.2.0/24:51234');
    expect(redactEndpoint('[::ffff:192.168.7.9]:80')).toBe('192.168.7.0/24:80');
    expect(redactEndpoint('[2001:db8:aa:bb:cc:dd:ee:ff]:443')).toBe('[2001:db8:aa:bb::/64]:443');
    configureRedaction(parseRedact('remote=prefix/16/48'));
    expect(redactEndpoint('10.1.2.3:1')).toBe('10.1.0.0/16:1');
    expect(redactEndpoint('[2001:db8:aa:bb::1]:1')).toBe('[2001:db8:aa::/48]:1');
    // already redacted (an agent read with --from): unchanged
    expect(redactEndpoint('10.1.2.0/24:51234')).toBe('10.1.2.0/24:51234');
  });

  it('hash is keyed: the same key gives the same hash, another key another', () => {
    const key = Buffer.alloc(32, 7);
    configureRedaction({ kind: 'hash', key });
    const a = redactEndpoint('10.1.2.3:51234');
    expect(a).toMatch(/^h-[0-9a-f]{16}:51234$/);
    expect(redactEndpoint('10.1.2.3:1')).toBe(a.replace(':51234', ':1'));
    configureRedaction({ kind: 'hash', key });
    expect(redactEndpoint('10.1.2.3:51234')).toBe(a);
    configureRedaction({ kind: 'hash', key: Buffer.alloc(32, 8) });
    expect(redactEndpoint('10.1.2.3:51234')).not.toBe(a);
    expect(redactEndpoint(a)).toBe(a);
  });

  it('JSON and log fields: remote, peer and client keys, nested one level', () => {
    configureRedaction(parseRedact('remote'));
    expect(JSON.stringify({ remote: '1.2.3.4:5', local: '127.0.0.1:80', x: [{ peer: '1.2.3.4:6' }] }, jsonReplacer())).toBe(
      '{"remote":"redacted:5","local":"127.0.0.1:80","x":[{"peer":"redacted:6"}]}',
    );
    expect(redactFields({ a: { peer: '1.2.3.4:7' }, remote: '1.2.3.4:8' })).toEqual({ a: { peer: 'redacted:7' }, remote: 'redacted:8' });
  });

  it('rejects what it cannot do', () => {
    expect(() => parseRedact('remote=prefix/33')).toThrow(/0 to 32/);
    expect(() => parseRedact('remote=prefix/24/129')).toThrow(/0 to 128/);
    expect(() => parseRedact('address')).toThrow(/expected remote/);
  });
});
