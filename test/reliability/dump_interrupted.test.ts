// NLM_F_DUMP_INTR: the kernel marks a sock_diag dump interrupted when the
// socket tables changed while it was being walked; such a dump may miss
// sockets. The kernel cannot be made to interrupt a dump on demand, so this
// test wraps the real native dump in a fake binding: it takes a real dump of
// this process's loopback connections and, on the attempts it is told to,
// drops one connection's message and sets NLM_F_DUMP_INTR on NLMSG_DONE (the
// kernel sets it on the messages it sends after the change, NLMSG_DONE
// included). Asserted: the retry, the tcp_chrono_agent_dump_interrupted_total
// count, and that nothing is closed for being absent from an interrupted dump.
import { once } from 'node:events';
import { createServer, connect, type Server, type Socket } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AF_INET } from '../../agent/parse/inet_diag.js';
import { NLMSG_DONE, NLM_F_DUMP_INTR, align4 } from '../../agent/parse/netlink.js';
import { DiagSource, MAX_INTR_RETRIES, diagBinding, type DiagBinding } from '../../agent/sources/diag.js';
import { ConnectionTable } from '../../agent/model/connections.js';
import { WatchMetrics } from '../../agent/export/metrics.js';
import { DiagPoller, newPollStats, type PollStats } from '../../agent/sources/diag_poller.js';

const SOCK_DIAG_BY_FAMILY = 20;

/** The dump with the first established connection on local port `port` left out, and NLM_F_DUMP_INTR on NLMSG_DONE. */
function interruptedCopy(dump: Buffer, port: number): Buffer {
  const parts: Buffer[] = [];
  let dropped = false;
  for (let off = 0; off + 16 <= dump.length; ) {
    const len = dump.readUInt32LE(off);
    const type = dump.readUInt16LE(off + 4);
    const msg = Buffer.from(dump.subarray(off, off + align4(len)));
    // struct inet_diag_msg: family, state, timer, retrans, then sport (big-endian); the listener is left in.
    if (!dropped && type === SOCK_DIAG_BY_FAMILY && msg[16 + 1] === 1 && msg.readUInt16BE(16 + 4) === port) {
      dropped = true;
    } else {
      if (type === NLMSG_DONE) msg.writeUInt16LE(msg.readUInt16LE(6) | NLM_F_DUMP_INTR, 6);
      parts.push(msg);
    }
    off += align4(len);
  }
  expect(dropped).toBe(true);
  return Buffer.concat(parts);
}

/** A binding whose AF_INET dumps are interrupted on the attempts `interrupt` says (counted from 0). */
function fakeBinding(port: number, interrupt: (attempt: number) => boolean): DiagBinding & { calls: number } {
  const real = diagBinding();
  let last = Buffer.alloc(0);
  const fake = {
    calls: 0,
    dump(family: number, states: number, ext: number, bytecode: Buffer | undefined): Buffer {
      const raw = real.diagDump(family, states, ext, bytecode);
      if (family !== AF_INET) return raw;
      return interrupt(fake.calls++) ? interruptedCopy(raw, port) : raw;
    },
    diagDump(family: number, states: number, ext: number, bytecode?: Buffer): Buffer {
      return fake.dump(family, states, ext, bytecode);
    },
    diagDumpInto(family: number, states: number, ext: number, bytecode: Buffer | undefined, into: Buffer): number {
      last = fake.dump(family, states, ext, bytecode);
      if (last.length > into.length) return -last.length;
      last.copy(into);
      return last.length;
    },
    diagCopyLast(into: Buffer): number {
      return last.copy(into);
    },
    DestroyFeed: real.DestroyFeed,
  };
  return fake;
}

const newStats = newPollStats;
/** One poll of `source` into `table`, counted in `stats` (the agent's poller, with the stats carried across pollers). */
function pollTable(source: DiagSource, table: ConnectionTable, stats: PollStats) {
  const poller = new DiagPoller(source, table);
  Object.assign(poller.stats, stats);
  const r = poller.poll();
  Object.assign(stats, poller.stats);
  return r;
}

async function interruptedTotal(table: ConnectionTable, stats: PollStats): Promise<number> {
  const m = new WatchMetrics(
    table,
    undefined,
    () => ({
      polls: stats.polls,
      pollErrors: stats.pollErrors,
      parseErrors: { dump: stats.dumpParseErrors, destroy: 0 },
      dumpInterrupted: stats.dumpInterrupted,
      socketsSeen: stats.socketsSeen,
      destroyFeedUp: false,
      destroyedSockets: 0,
      destroyFeedLost: 0,
      ownerScans: 0,
    }),
    { maxConnections: 10, info: { version: 'test', kernel: 'test', destroyFeed: 'off' } },
  );
  const text = await m.render();
  const line = text.split('\n').find((l) => l.startsWith('tcp_chrono_agent_dump_interrupted_total '));
  expect(line).toBeDefined();
  return Number(line!.split(' ').pop());
}

describe('interrupted sock_diag dump (NLM_F_DUMP_INTR, injected)', () => {
  let server: Server;
  let port = 0;
  const sockets: Socket[] = [];
  const CONNECTIONS = 3;

  beforeAll(async () => {
    server = createServer((c) => {
      sockets.push(c);
      c.write(Buffer.alloc(10_000));
    });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    port = (server.address() as { port: number }).port;
    for (let i = 0; i < CONNECTIONS; i++) {
      const c = connect(port, '127.0.0.1');
      c.on('data', () => undefined);
      sockets.push(c);
      await once(c, 'connect');
    }
    await new Promise((r) => setTimeout(r, 100));
  });

  afterAll(() => {
    for (const s of sockets) s.destroy();
    server.close();
  });

  const spec = () => ({ ports: [{ from: port, to: port }], remoteCidrs: [], states: [1] });

  it('retries an interrupted dump; the retry is used and counted once', async () => {
    const binding = fakeBinding(port, (attempt) => attempt === 0);
    const source = new DiagSource(spec(), binding);
    const table = new ConnectionTable({ closeGraceMs: 0 });
    const stats = newStats();
    const r = pollTable(source, table, stats);
    expect(binding.calls).toBe(2);
    expect(r.interruptedRetries).toBe(1);
    expect(r.interrupted).toBe(false);
    expect(r.kept).toBe(CONNECTIONS);
    expect(table.open.size).toBe(CONNECTIONS);
    expect(stats.dumpInterrupted).toBe(1);
    expect(await interruptedTotal(table, stats)).toBe(1);
  });

  it('collected sockets of a discarded attempt are neither listed nor counted twice', () => {
    const source = new DiagSource(spec(), fakeBinding(port, (attempt) => attempt === 0));
    const r = source.poll();
    expect(r.interruptedRetries).toBe(1);
    expect(r.kept).toBe(CONNECTIONS);
    expect(r.sockets).toHaveLength(CONNECTIONS);
    expect(new Set(r.sockets.map((s) => s.key)).size).toBe(CONNECTIONS);
  });

  it('still interrupted after the retries: used, counted, and nothing closed for being absent', async () => {
    const table = new ConnectionTable({ closeGraceMs: 0 });
    const stats = newStats();
    // A clean poll first: every connection open.
    pollTable(new DiagSource(spec(), fakeBinding(port, () => false)), table, stats);
    expect(table.open.size).toBe(CONNECTIONS);
    const keys = [...table.open.keys()];

    // Then every attempt interrupted, each missing one connection.
    const binding = fakeBinding(port, () => true);
    const r = pollTable(new DiagSource(spec(), binding), table, stats);
    expect(binding.calls).toBe(MAX_INTR_RETRIES + 1);
    expect(r.interruptedRetries).toBe(MAX_INTR_RETRIES);
    expect(r.interrupted).toBe(true);
    expect(r.kept).toBe(CONNECTIONS - 1);
    expect([...table.open.keys()].sort()).toEqual(keys.sort());
    expect(table.takeClosed()).toHaveLength(0);
    expect(stats.dumpInterrupted).toBe(MAX_INTR_RETRIES + 1);
    expect(await interruptedTotal(table, stats)).toBe(MAX_INTR_RETRIES + 1);

    // A clean poll after it: all still there, nothing closed, count unchanged.
    pollTable(new DiagSource(spec(), fakeBinding(port, () => false)), table, stats);
    expect(table.open.size).toBe(CONNECTIONS);
    expect(table.takeClosed()).toHaveLength(0);
    expect(stats.dumpInterrupted).toBe(MAX_INTR_RETRIES + 1);
  });

  it('control: the same connection missing from a clean dump is closed', () => {
    const table = new ConnectionTable({ closeGraceMs: 0 });
    const stats = newStats();
    pollTable(new DiagSource(spec(), fakeBinding(port, () => false)), table, stats);
    // A "clean" dump missing one connection: interruptedCopy without the flag.
    const real = diagBinding();
    const binding: DiagBinding = {
      ...real,
      diagDump: (f, st, e, bc) => {
        const raw = real.diagDump(f, st, e, bc);
        if (f !== AF_INET) return raw;
        const cut = interruptedCopy(raw, port);
        // clear the flag again
        for (let off = 0; off + 16 <= cut.length; off += align4(cut.readUInt32LE(off))) {
          cut.writeUInt16LE(cut.readUInt16LE(off + 6) & ~NLM_F_DUMP_INTR, off + 6);
        }
        return cut;
      },
    };
    const r = new DiagSource(spec(), binding).poll();
    table.applyPoll(r.sockets, Date.now(), r.listeningPorts, !r.interrupted);
    expect(r.interrupted).toBe(false);
    expect(table.open.size).toBe(CONNECTIONS - 1);
    expect(table.takeClosed()).toHaveLength(1);
  });
});
