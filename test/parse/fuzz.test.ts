// Property-based fuzzing of every decoder: random bytes, and mutations of the
// kernel fixtures (bit flips, truncation, corrupted length fields, inserted
// and deleted bytes). The decoders may reject input only with ParseError;
// parseOptStats, parseCmsgs and parseErrqueueBatch never throw at all.
// Termination is by construction (every walk advances by at least 4 bytes);
// a regression would hang this file rather than pass it.
// More runs: FUZZ_RUNS=100000 npx vitest run test/parse/fuzz (npm run fuzz); the native
// side's one walk over kernel bytes: scripts/fuzz-native.sh (libFuzzer).
import { once } from 'node:events';
import { connect, createServer, type Server, type Socket } from 'node:net';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { native } from '../../agent/native.js';
import { AF_INET, INET_DIAG_CONG, INET_DIAG_INFO, INET_DIAG_SKMEMINFO, extMask, parseDiagBatch, portFilterBytecode, stateMask } from '../../agent/parse/inet_diag.js';
import { DEFAULT_STATES } from '../../agent/sources/diag.js';
import { parseCmsgs } from '../../agent/parse/cmsg.js';
import { ParseError } from '../../agent/parse/errors.js';
import { parseErrqueueBatch, type ErrqueueBatch } from '../../agent/parse/errqueue.js';
import { parseExtendedErr } from '../../agent/parse/extended_err.js';
import { parseOptStats } from '../../agent/parse/opt_stats.js';
import { parseTcpInfo, TCP_INFO_MIN_LEN } from '../../agent/parse/tcp_info.js';
import { parseTimestamping } from '../../agent/parse/timestamping.js';
import { cmsg, frame, nla, timestamping, extendedErr } from './build.js';
import { errqueueV4, errqueueV6, tcpInfo } from './fixtures.js';

const RUNS = Number(process.env.FUZZ_RUNS ?? 2000);
const opts = { numRuns: RUNS };

function onlyParseError(f: () => unknown): void {
  try {
    f();
  } catch (e) {
    if (!(e instanceof ParseError)) throw e;
  }
}

// Length uniform in [0, max]: fast-check's default favours short arrays, which
// would rarely reach e.g. the optional tail of tcp_info.
const bytes = (max: number): fc.Arbitrary<Buffer> =>
  fc.nat(max).chain((n) => fc.uint8Array({ minLength: n, maxLength: n }).map((a) => Buffer.from(a)));

interface Field {
  off: number;
  width: 1 | 2 | 4 | 8;
}

/** Where the length fields of a recorded batch are: frame, cmsg and nlattr headers. */
function lengthFields(batch: Buffer): Field[] {
  const out: Field[] = [];
  for (let f = 0; f + 16 <= batch.length; ) {
    const controlLen = batch.readUInt32LE(f + 4);
    out.push({ off: f + 4, width: 4 }, { off: f + 12, width: 4 });
    const control = f + 16;
    for (let c = control; c + 16 <= control + controlLen; ) {
      const len = Number(batch.readBigUInt64LE(c));
      out.push({ off: c, width: 8 });
      if (batch.readInt32LE(c + 12) === 54) {
        for (let a = c + 16; a + 4 <= c + len; a += (batch.readUInt16LE(a) + 3) & ~3) out.push({ off: a, width: 2 });
      }
      c += Math.ceil(len / 8) * 8;
    }
    f = control + Math.ceil(controlLen / 8) * 8;
  }
  return out;
}

const INTERESTING = [0n, 1n, 2n, 3n, 4n, 7n, 8n, 15n, 16n, 17n, 255n, 0xfffen, 0xffffn, 0x7fff_ffffn, 0xffff_ffffn, 1n << 63n, (1n << 64n) - 1n];

function writeLE(buf: Buffer, off: number, width: number, value: bigint): void {
  for (let i = 0; i < width && off + i < buf.length; i++) buf.writeUInt8(Number((value >> BigInt(8 * i)) & 0xffn), off + i);
}

/** Mutations of a seed; `fields` are offsets worth corrupting (length fields). */
function mutated(seed: Buffer, fields: Field[] = []): fc.Arbitrary<Buffer> {
  const value = fc.oneof(fc.constantFrom(...INTERESTING), fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }));
  const bitFlips = fc.array(fc.nat(seed.length * 8 - 1), { minLength: 1, maxLength: 16 }).map((bits) => {
    const b = Buffer.from(seed);
    for (const bit of bits) b.writeUInt8(b.readUInt8(bit >> 3) ^ (1 << (bit & 7)), bit >> 3);
    return b;
  });
  const truncated = fc.nat(seed.length).map((n) => seed.subarray(0, n));
  const overwrite = fc.record({ off: fc.nat(seed.length - 1), width: fc.constantFrom(1, 2, 4, 8), value }).map(({ off, width, value: v }) => {
    const b = Buffer.from(seed);
    writeLE(b, off, width, v);
    return b;
  });
  const spliced = fc.record({ at: fc.nat(seed.length), del: fc.nat(24), ins: bytes(24) }).map(({ at, del, ins }) =>
    Buffer.concat([seed.subarray(0, at), ins, seed.subarray(Math.min(seed.length, at + del))]),
  );
  const arbs: Array<fc.Arbitrary<Buffer>> = [bitFlips, truncated, overwrite, spliced];
  if (fields.length > 0) {
    const lengthField = fc.record({ i: fc.nat(fields.length - 1), value, cut: fc.boolean(), at: fc.nat(seed.length) }).map(({ i, value: v, cut, at }) => {
      const f = fields[i]!;
      const b = Buffer.from(seed);
      writeLE(b, f.off, f.width, v);
      return cut ? b.subarray(0, at) : b;
    });
    arbs.push(lengthField, lengthField); // weighted: the interesting case
  }
  return fc.oneof(...arbs);
}

// Plain checks, not expect(): these run a few hundred thousand times.
function must(ok: boolean, what: string): void {
  if (!ok) throw new Error(what);
}

/** What every batch must satisfy, whatever went in. */
function checkBatch(input: Buffer, b: ErrqueueBatch): void {
  must(b.records.length + b.malformed + (b.skipped ?? 0) <= Math.ceil(input.length / 16), 'more outcomes than frames');
  must(b.problems.length <= 10, 'problems not capped');
  for (const r of b.records) {
    must(r.kind === 'sched' || r.kind === 'snd' || r.kind === 'ack', `kind ${r.kind}`);
    must(Number.isInteger(r.key) && r.key >= 0 && r.key <= 0xffff_ffff, `key ${r.key}`);
    must(Number.isInteger(r.fd) && r.fd >= 0, `fd ${r.fd}`);
    must(Number.isFinite(r.time), `time ${r.time}`);
    must(r.stats === undefined || Array.isArray(r.stats.problems), 'stats.problems');
  }
}

const statsPayload = (() => {
  const controlLen = errqueueV4.readUInt32LE(4);
  const stats = parseCmsgs(errqueueV4.subarray(16, 16 + controlLen)).find((c) => c.type === 54);
  return Buffer.from(stats!.data);
})();

const nlaFields = (payload: Buffer): Field[] => {
  const out: Field[] = [];
  for (let a = 0; a + 4 <= payload.length; a += (payload.readUInt16LE(a) + 3) & ~3) out.push({ off: a, width: 2 });
  return out;
};

describe('fuzz: parseTcpInfo', () => {
  it('random bytes: ParseError below the minimum, a result from there on', () => {
    fc.assert(
      fc.property(bytes(400), (b) => {
        if (b.length < TCP_INFO_MIN_LEN) expect(() => parseTcpInfo(b)).toThrow(ParseError);
        else must(parseTcpInfo(b).length === Math.min(b.length, 280), 'length');
      }),
      opts,
    );
  });

  it('mutated kernel tcp_info', () => {
    fc.assert(fc.property(mutated(tcpInfo), (b) => onlyParseError(() => parseTcpInfo(b))), opts);
  });
});

describe('fuzz: parseOptStats never throws', () => {
  const lists = new Set(['unknown', 'problems']);
  const check = (b: Buffer): void => {
    const s = parseOptStats(b);
    for (const [k, v] of Object.entries(s)) must(lists.has(k) || typeof v === 'number' || typeof v === 'boolean', k);
    for (const u of s.unknown) must(u.data.length <= b.length, 'unknown attribute larger than input');
  };

  it('random bytes', () => {
    fc.assert(fc.property(bytes(512), check), opts);
  });

  it('random well-framed attributes', () => {
    const attr = fc.record({ type: fc.nat(0xffff), payload: bytes(12) }).map(({ type, payload }) => nla(type, payload));
    fc.assert(fc.property(fc.array(attr, { maxLength: 40 }), (attrs) => check(Buffer.concat(attrs))), opts);
  });

  it('mutated kernel OPT_STATS payload', () => {
    fc.assert(fc.property(mutated(statsPayload, nlaFields(statsPayload)), check), opts);
  });
});

describe('fuzz: cmsg, sock_extended_err, scm_timestamping', () => {
  it('parseCmsgs never throws and every data view stays inside the input', () => {
    fc.assert(
      fc.property(fc.oneof(bytes(256), mutated(errqueueV4.subarray(16, 16 + errqueueV4.readUInt32LE(4)))), (b) => {
        const problems: string[] = [];
        for (const c of parseCmsgs(b, problems)) {
          const at = c.data.byteOffset - b.byteOffset;
          must(at >= 16 && at + c.data.length <= b.length, 'cmsg data outside the input');
        }
      }),
      opts,
    );
  });

  it('parseExtendedErr and parseTimestamping throw only ParseError', () => {
    fc.assert(
      fc.property(bytes(64), (b) => {
        onlyParseError(() => parseExtendedErr(b));
        onlyParseError(() => parseTimestamping(b));
      }),
      opts,
    );
  });
});

describe('fuzz: parseErrqueueBatch never throws', () => {
  it('random bytes', () => {
    fc.assert(fc.property(bytes(1024), (b) => checkBatch(b, parseErrqueueBatch(b))), opts);
  });

  it.each([
    ['IPv4', errqueueV4],
    ['IPv6', errqueueV6],
  ])('mutated kernel batch (%s)', (_name, seed) => {
    const seen = { intact: 0, malformed: 0, skipped: 0 };
    fc.assert(
      fc.property(mutated(seed, lengthFields(seed)), (b) => {
        const batch = parseErrqueueBatch(b);
        checkBatch(b, batch);
        if (batch.records.length === 9) seen.intact++;
        if (batch.malformed > 0) seen.malformed++;
        if ((batch.skipped ?? 0) > 0) seen.skipped++;
      }),
      opts,
    );
    // The mutations reach every outcome, not just the happy path.
    if (RUNS >= 1000) for (const [k, n] of Object.entries(seen)) expect(n, k).toBeGreaterThan(0);
  });

  it('well-framed batches of random cmsgs', () => {
    const anyCmsg = fc
      .record({
        level: fc.constantFrom(0, 1, 41, -1, 0x7fff_ffff),
        type: fc.constantFrom(11, 25, 37, 54, 0, 99),
        data: fc.oneof(
          bytes(64),
          fc.record({ s: fc.bigInt({ min: -(1n << 63n), max: (1n << 63n) - 1n }), ns: fc.bigInt({ min: -(1n << 63n), max: (1n << 63n) - 1n }) }).map(({ s, ns }) => timestamping(s, ns)),
          fc.record({ errno: fc.constantFrom(42, 0, 111), origin: fc.constantFrom(4, 2, 0), info: fc.nat(4), data: fc.nat(0xffff_ffff) }).map(extendedErr),
          fc.constant(statsPayload),
        ),
      })
      .map(({ level, type, data }) => cmsg(level, type, data));
    const anyFrame = fc
      .record({ fd: fc.nat(0xffff_ffff), flags: fc.nat(0xffff_ffff), cmsgs: fc.array(anyCmsg, { maxLength: 5 }) })
      .map(({ fd, flags, cmsgs }) => frame(fd, Buffer.concat(cmsgs), flags));
    fc.assert(
      fc.property(fc.array(anyFrame, { maxLength: 8 }), (frames) => {
        const input = Buffer.concat(frames);
        const b = parseErrqueueBatch(input);
        checkBatch(input, b);
        // Well framed: every frame is accounted for, none ends the batch early.
        must(b.records.length + b.malformed + (b.skipped ?? 0) === frames.length, 'a frame went missing');
      }),
      opts,
    );
  });
});

describe('fuzz: parseDiagBatch never throws (netlink messages and attributes)', () => {
  // The seed is a real dump of this kernel: a loopback connection of this
  // process, with the extensions watch asks for (tcp_info, congestion, skmem).
  let seed = Buffer.alloc(0);
  const servers: Server[] = [];
  const socks: Socket[] = [];
  beforeAll(async () => {
    const srv = createServer((s) => socks.push(s));
    servers.push(srv);
    await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
    const c = connect((srv.address() as { port: number }).port, '127.0.0.1');
    socks.push(c);
    await once(c, 'connect');
    c.write(Buffer.alloc(64 * 1024));
    const port = (srv.address() as { port: number }).port;
    // Only our port (kernel bytecode): the namespace may hold many other sockets.
    const dump = (native() as unknown as { diagDump(family: number, states: number, ext: number, bc?: Buffer): Buffer }).diagDump(
      AF_INET,
      stateMask(DEFAULT_STATES),
      extMask([INET_DIAG_INFO, INET_DIAG_CONG, INET_DIAG_SKMEMINFO]),
      portFilterBytecode([{ from: port, to: port }]),
    );
    seed = Buffer.from(dump);
  });
  afterAll(() => {
    for (const s of socks) s.destroy();
    for (const s of servers) s.close();
  });

  /** nlmsghdr lengths, and the rtattr lengths after each inet_diag_msg (72 bytes). */
  const diagFields = (b: Buffer): Field[] => {
    const out: Field[] = [];
    for (let m = 0; m + 16 <= b.length; ) {
      const len = b.readUInt32LE(m);
      if (len < 16) break;
      out.push({ off: m, width: 4 });
      for (let a = m + 16 + 72; a + 4 <= m + len; a += (b.readUInt16LE(a) + 3) & ~3) {
        out.push({ off: a, width: 2 });
        if (b.readUInt16LE(a) < 4) break;
      }
      m += (len + 3) & ~3;
    }
    return out;
  };

  const check = (input: Buffer): void => {
    const b = parseDiagBatch(input);
    must(b.decoded + b.filtered + b.parseErrors <= Math.ceil(input.length / 16) + 1, 'more outcomes than messages');
    for (const s of b.sockets) {
      must(Number.isInteger(s.localPort) && s.localPort >= 0 && s.localPort <= 0xffff, `port ${s.localPort}`);
      // The lazily decoded parts, as the table and the exporters read them.
      const ch = s.chrono;
      if (ch !== undefined) for (const v of [ch.busyTime, ch.rwndLimited, ch.sndbufLimited, ch.bytesAcked, ch.rtt, ch.sndCwnd, ch.sndMss]) must(Number.isFinite(v), 'chrono');
      void s.info;
      void s.cong;
      const m = s.skmem;
      if (m !== undefined) must(Number.isFinite(m.sndbuf) && Number.isFinite(m.wmemQueued), 'skmem');
    }
  };

  it('the seed is a real dump with our connection in it', () => {
    const b = parseDiagBatch(seed);
    expect(b.done).toBe(true);
    expect(b.parseErrors).toBe(0);
    expect(b.sockets.filter((s) => s.chrono !== undefined && s.skmem !== undefined).length).toBeGreaterThanOrEqual(1);
  });

  it('mutated kernel dumps', () => {
    fc.assert(fc.property(mutated(seed, diagFields(seed)), check), opts);
  });

  it('random bytes', () => {
    fc.assert(fc.property(bytes(2048), check), opts);
  });
});
