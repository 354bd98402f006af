// The server of churn_instrument.mjs, in a process of its own (node
// --expose-gc, an IPC channel to its parent): on 127.0.0.1 below the
// ephemeral range, each accepted socket is instrument()ed (the built
// library, dist/agent/index.js), gets one write of BYTES bytes and is ended.
// Counts every chunk and stall event and, at each socket's close, its
// probe's final stats(). On 'report' it collects garbage twice and answers
// with the counts, its fds, its memory and the error-queue reader's state.
import { readdirSync } from 'node:fs';
import net from 'node:net';
import { instrument } from '../../dist/agent/index.js';
import { errqueue } from '../../dist/agent/sources/errqueue.js';
import { listenBelowEphemeral } from './common.mjs';

const bytes = Number(process.argv[2]);
const payload = Buffer.alloc(bytes, 121);
const t = {
  accepted: 0,
  closed: 0,
  instrumentErrors: 0,
  socketErrors: 0,
  // from the events
  chunkEvents: 0,
  chunkBytes: 0,
  inexactEvents: 0,
  stallEvents: 0,
  // from each probe's stats() once its socket closed
  chunks: 0,
  stalls: 0,
  inexact: 0,
  lostRecords: 0,
  pending: 0,
  unaccountedWrites: 0,
  bytesWritten: 0,
};

const server = net.createServer((s) => {
  t.accepted++;
  s.on('error', () => t.socketErrors++);
  let probe;
  try {
    probe = instrument(s);
  } catch {
    t.instrumentErrors++;
    s.destroy();
    return;
  }
  probe.on('chunk', (c) => {
    t.chunkEvents++;
    t.chunkBytes += c.bytes;
    if (!c.exact) t.inexactEvents++;
  });
  probe.on('stall', () => t.stallEvents++);
  // After the probe's own 'close' listener (added by instrument()): final figures.
  s.once('close', () => {
    const st = probe.stats();
    t.closed++;
    t.chunks += st.chunks;
    t.stalls += st.stalls;
    t.inexact += st.inexact;
    t.lostRecords += st.lostRecords;
    t.pending += st.pending;
    t.unaccountedWrites += st.unaccountedWrites;
    t.bytesWritten += st.bytesWritten;
  });
  s.end(payload);
});
const port = await listenBelowEphemeral(server);

process.on('message', (m) => {
  if (m === 'report') {
    globalThis.gc();
    globalThis.gc();
    const mem = process.memoryUsage();
    process.send({
      ...t,
      fds: readdirSync('/proc/self/fd').length,
      rss: mem.rss,
      heapUsed: mem.heapUsed,
      heapTotal: mem.heapTotal,
      external: mem.external,
      watched: errqueue.watched,
      errqueue: { ...errqueue.counters },
    });
  } else if (m === 'exit') {
    server.close();
    process.disconnect();
  }
});
process.send({ port });
