// A target server for the attach tests and benchmark: a plain Node process
// with three listeners, printed as one JSON line {bulk, paced, idle}:
//   bulk:  writes 64 KiB buffers back to back (until `BULK_BYTES`, default 1 GiB, or the client leaves)
//   paced: writes one buffer every 10 ms, sizes from a fixed sequence, and logs
//          each write as {"paced": remotePort, "size": n}
//   idle:  writes nothing and keeps the connection open (closes when the client does)
// SIGUSR2 stops all writing (connections stay open). Nothing here knows about
// the agent: it is any server.
import net from 'node:net';

const BULK_BYTES = Number(process.env.BULK_BYTES ?? 2 ** 30);
const BLOCK = Buffer.alloc(65536, 0x61);
let stopped = false;
process.on('SIGUSR2', () => {
  stopped = true;
});

const bulk = net.createServer((s) => {
  s.on('error', () => {});
  let sent = 0;
  const pump = () => {
    while (!stopped && !s.destroyed && sent < BULK_BYTES) {
      sent += BLOCK.length;
      if (!s.write(BLOCK)) {
        s.once('drain', pump);
        return;
      }
    }
    if (!stopped && sent >= BULK_BYTES) s.end();
  };
  pump();
});

const size = (i) => 1000 + ((i * 7919) % 30011);
const paced = net.createServer((s) => {
  s.on('error', () => {});
  let i = 0;
  const peer = s.remotePort;
  const t = setInterval(() => {
    if (stopped || s.destroyed) return;
    const n = size(i++);
    s.write(Buffer.alloc(n, 0x62));
    process.stdout.write(JSON.stringify({ paced: peer, size: n }) + '\n');
  }, 10);
  s.on('close', () => clearInterval(t));
  s.on('end', () => s.end());
});

// Closes with a bare close() (no shutdown()) when the client leaves: its FIN
// must not wait for anyone else holding the socket.
const idle = net.createServer((s) => {
  s.on('error', () => {});
  s.on('end', () => s.destroy());
});

const ports = {};
for (const [name, srv] of Object.entries({ bulk, paced, idle })) {
  await new Promise((r) => srv.listen(0, '127.0.0.1', r));
  ports[name] = srv.address().port;
}
process.stdout.write(JSON.stringify(ports) + '\n');
