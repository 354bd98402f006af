// HTTP/1.x framing as the relay sees it: boundaries at the same stream offsets
// however the bytes are split, and a clean fall back to raw on garbage.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { Framer, parseChunkSize, parseContentLength, type Boundary } from '../../agent/proxy/http1.js';
import { RouteMap, parseRoute, pathOf } from '../../agent/proxy/routes.js';

type Abs = { kind: Boundary['kind']; at: number; extra?: string };

/** Feeds `data` in pieces cut at `cuts`; returns boundaries at absolute offsets. */
function frame(kind: 'request' | 'response', data: Buffer, cuts: number[] = [], methods: string[] = []): { b: Abs[]; f: Framer } {
  const f = new Framer(kind, { requestMethod: (i) => methods[i] });
  const points = [...new Set([0, ...cuts.filter((c) => c > 0 && c < data.length), data.length])].sort((a, b) => a - b);
  const out: Abs[] = [];
  for (let k = 0; k + 1 < points.length; k++) {
    const from = points[k]!;
    for (const b of f.feed(data.subarray(from, points[k + 1]))) {
      const extra = b.kind === 'raw' ? b.reason : b.kind === 'head' ? (b.request ? `${b.request.method} ${b.request.target}` : `${b.response!.status}${b.untilClose ? ' close' : ''}`) : undefined;
      out.push({ kind: b.kind, at: from + b.at, ...(extra !== undefined && { extra }) });
    }
  }
  return { b: out, f };
}

const ends = (b: Abs[]): number[] => b.filter((x) => x.kind === 'end').map((x) => x.at);

const r1 = 'HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello';
const r2 = 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;x=1\r\nabc\r\nA\r\n0123456789\r\n0\r\nX-Trailer: 1\r\n\r\n';
const r3 = 'HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n';
const r4 = 'HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n'; // a HEAD response: no body
const stream = Buffer.from(r1 + r2 + r3 + r4, 'latin1');
const expectedEnds = [r1.length, r1.length + r2.length, r1.length + r2.length + r3.length, stream.length];

describe('Framer (responses)', () => {
  it('finds every message end: Content-Length, chunked with extensions and trailers, 1xx + 204, HEAD', () => {
    const { b, f } = frame('response', stream, [], ['GET', 'GET', 'POST', 'HEAD']);
    expect(ends(b)).toEqual(expectedEnds);
    expect(b.filter((x) => x.kind === 'begin').map((x) => x.at)).toEqual([0, ...expectedEnds.slice(0, 3)]);
    expect(b.filter((x) => x.kind === 'head').map((x) => x.extra)).toEqual(['200', '200', '204', '200']);
    expect(f.raw).toBe(false);
    expect(f.messages).toBe(4);
  });

  it('gives the same boundaries however the stream is split', () => {
    fc.assert(
      fc.property(fc.array(fc.integer({ min: 1, max: stream.length - 1 }), { maxLength: 12 }), (cuts) => {
        expect(ends(frame('response', stream, cuts, ['GET', 'GET', 'POST', 'HEAD']).b)).toEqual(expectedEnds);
      }),
      { numRuns: 300 },
    );
    // Byte by byte.
    const all = Array.from({ length: stream.length }, (_, i) => i);
    expect(ends(frame('response', stream, all, ['GET', 'GET', 'POST', 'HEAD']).b)).toEqual(expectedEnds);
  });

  it('a body without a length runs to the end of the stream', () => {
    const { b, f } = frame('response', Buffer.from('HTTP/1.0 200 OK\r\n\r\nabcdef'));
    expect(b.map((x) => x.kind)).toEqual(['begin', 'head']);
    expect(b[1]!.extra).toBe('200 close');
    expect(f.eof()).toBe(true);
    expect(f.messages).toBe(1);
  });

  it('non-HTTP bytes go raw at once; garbage later goes raw where it is found', () => {
    expect(frame('response', Buffer.from([0x16, 0x03, 0x01, 0x00])).b).toEqual([{ kind: 'raw', at: 0, extra: 'not-http' }]);
    expect(frame('response', Buffer.from('SSH-2.0-OpenSSH\r\n')).b).toEqual([{ kind: 'raw', at: 0, extra: 'not-http' }]);
    const bad = frame('response', Buffer.from(`${r1}HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n`));
    expect(bad.b.map((x) => x.kind)).toEqual(['begin', 'head', 'end', 'begin', 'head', 'raw']);
    expect(bad.b.at(-1)!.extra).toBe('malformed');
    const conflicting = frame('response', Buffer.from('HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n'));
    expect(conflicting.b.at(-1)).toMatchObject({ kind: 'raw', extra: 'malformed' });
    const noColon = frame('response', Buffer.from('HTTP/1.1 200 OK\r\nnonsense\r\n\r\n'));
    expect(noColon.b.at(-1)).toMatchObject({ kind: 'raw', extra: 'malformed' });
  });

  it('a header block over the cap goes raw', () => {
    const f = new Framer('response', { maxHeadBytes: 1024 });
    const head = Buffer.from(`HTTP/1.1 200 OK\r\nX: ${'a'.repeat(2000)}\r\n\r\n`);
    const got = [...f.feed(head.subarray(0, 700)), ...f.feed(head.subarray(700))];
    expect(got.at(-1)).toMatchObject({ kind: 'raw', reason: 'head-too-large' });
  });

  it('101 upgrades and CONNECT tunnels end HTTP framing after the head', () => {
    const up = frame('response', Buffer.from('HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n\x81\x05hello'));
    expect(up.b.map((x) => x.kind)).toEqual(['begin', 'head', 'end', 'raw']);
    expect(up.b.at(-1)!.extra).toBe('upgrade');
    const tunnel = frame('response', Buffer.from('HTTP/1.1 200 Connection established\r\n\r\n\x16\x03'), [], ['CONNECT']);
    expect(tunnel.b.at(-1)).toMatchObject({ kind: 'raw', extra: 'tunnel' });
  });

  it('fuzz: random bytes never throw, and boundaries stay in range and in order', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 400 }), fc.array(fc.integer({ min: 1, max: 399 }), { maxLength: 6 }), (bytes, cuts) => {
        const data = Buffer.concat([Buffer.from('HTTP/1.1 200 OK\r\n'), Buffer.from(bytes)]);
        const { b } = frame('response', data, cuts);
        let last = 0;
        for (const x of b) {
          expect(x.at).toBeGreaterThanOrEqual(last);
          expect(x.at).toBeLessThanOrEqual(data.length);
          last = x.at;
        }
      }),
      { numRuns: 500 },
    );
  });
});

describe('Framer (requests)', () => {
  it('reads request lines across keep-alive requests with bodies', () => {
    const reqs = 'GET /seg/1.ts HTTP/1.1\r\nHost: a\r\n\r\nPOST /up HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc\r\nPUT /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\nHEAD http://h:8/x?y HTTP/1.1\r\n\r\n';
    const { b } = frame('request', Buffer.from(reqs), [5, 40, 41, 90]);
    expect(b.filter((x) => x.kind === 'head').map((x) => x.extra)).toEqual(['GET /seg/1.ts', 'POST /up', 'PUT /c', 'HEAD http://h:8/x?y']);
    expect(b.filter((x) => x.kind === 'end')).toHaveLength(4);
  });

  it('binary client bytes go raw', () => {
    expect(frame('request', Buffer.from([0x16, 0x03, 0x01])).b).toEqual([{ kind: 'raw', at: 0, extra: 'not-http' }]);
  });
});

describe('helpers', () => {
  it('parses Content-Length and chunk sizes strictly', () => {
    expect(parseContentLength('42')).toBe(42);
    expect(parseContentLength('42, 42')).toBe(42);
    expect(parseContentLength('42, 43')).toBeUndefined();
    expect(parseContentLength('-1')).toBeUndefined();
    expect(parseContentLength('0x10')).toBeUndefined();
    expect(parseChunkSize('1aF;name=v\r')).toBe(0x1af);
    expect(parseChunkSize('\r')).toBeUndefined();
    expect(parseChunkSize('g1\r')).toBeUndefined();
  });

  it('maps paths to route names, longest prefix first', () => {
    const m = new RouteMap([parseRoute('video=/v/'), parseRoute('live=/v/live/'), parseRoute('manifest=/m')]);
    expect(m.match('/v/live/1.ts')).toBe('live');
    expect(m.match('/v/1.ts')).toBe('video');
    expect(m.match('http://host:80/m/x.m3u8')).toBe('manifest');
    expect(m.match('/other')).toBeUndefined();
    expect(pathOf('host:443')).toBe('');
    expect(() => parseRoute('=/x')).toThrow(/NAME=PATH_PREFIX/);
    expect(() => parseRoute('a b=/x')).toThrow(/name/);
    expect(() => parseRoute('a=x')).toThrow(/start with \//);
  });
});
