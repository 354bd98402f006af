import { describe, expect, it } from 'vitest';
import { parseCmsgs } from '../../agent/parse/cmsg.js';
import { ParseError } from '../../agent/parse/errors.js';
import { parseExtendedErr } from '../../agent/parse/extended_err.js';
import { parseTimestamping } from '../../agent/parse/timestamping.js';
import { cmsg, extendedErr, timestamping } from './build.js';

describe('parseCmsgs', () => {
  it('walks messages padded to 8 bytes', () => {
    const area = Buffer.concat([cmsg(1, 37, Buffer.alloc(48)), cmsg(41, 25, Buffer.alloc(44))]);
    expect(area.length).toBe(64 + 64);
    const out = parseCmsgs(area);
    expect(out.map((c) => [c.level, c.type, c.data.length])).toEqual([
      [1, 37, 48],
      [41, 25, 44],
    ]);
  });

  it('a zero-length cmsg ends the walk', () => {
    const problems: string[] = [];
    const out = parseCmsgs(Buffer.concat([cmsg(1, 37, Buffer.alloc(8)), cmsg(0, 11, Buffer.alloc(16), 0)]), problems);
    expect(out).toHaveLength(1);
    expect(problems).toEqual(['cmsg at 24: cmsg_len 0 < 16']);
  });

  it('cmsg_len beyond the buffer ends the walk', () => {
    const problems: string[] = [];
    const huge = 1n << 63n;
    expect(parseCmsgs(cmsg(1, 37, Buffer.alloc(8), huge), problems)).toEqual([]);
    expect(parseCmsgs(cmsg(1, 37, Buffer.alloc(8), 25), problems)).toEqual([]);
    expect(problems).toEqual([`cmsg at 0: cmsg_len ${huge} overruns 24 bytes`, 'cmsg at 0: cmsg_len 25 overruns 24 bytes']);
  });

  it('a header-only cmsg has empty data; the last one may lack its padding', () => {
    const out = parseCmsgs(Buffer.concat([cmsg(1, 1, Buffer.alloc(0)), cmsg(0, 11, Buffer.alloc(3)).subarray(0, 19)]));
    expect(out.map((c) => c.data.length)).toEqual([0, 3]);
  });

  it('reports bytes too short for a header', () => {
    const problems: string[] = [];
    expect(parseCmsgs(Buffer.alloc(15), problems)).toEqual([]);
    expect(problems).toEqual(['15 trailing bytes after the last cmsg']);
  });
});

describe('parseExtendedErr', () => {
  it('decodes sock_extended_err and ignores the offender address', () => {
    expect(parseExtendedErr(extendedErr({ info: 2, data: 0xffff_fffe }))).toEqual({
      errno: 42,
      origin: 4,
      type: 0,
      code: 0,
      info: 2,
      data: 0xffff_fffe,
    });
  });

  it('throws ParseError when short', () => {
    expect(() => parseExtendedErr(Buffer.alloc(15))).toThrow(ParseError);
  });
});

describe('parseTimestamping', () => {
  it('reads the software stamp as float seconds; zero slots are absent', () => {
    const t = parseTimestamping(timestamping(1_795_664_502n, 108_787_416n));
    expect(t.software).toBeCloseTo(1_795_664_502.108787416, 6);
    expect(t.hardware).toBeUndefined();
  });

  it('throws ParseError when short or when tv_nsec is out of range', () => {
    expect(() => parseTimestamping(Buffer.alloc(47))).toThrow(ParseError);
    expect(() => parseTimestamping(timestamping(1n, 1_000_000_000n))).toThrow(ParseError);
    expect(() => parseTimestamping(timestamping(1n, -1n))).toThrow(ParseError);
  });
});
