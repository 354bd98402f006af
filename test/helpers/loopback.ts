// Loopback plumbing for the real-kernel tests: servers, clients, and a slow
// reader with a small receive buffer (python3: Node cannot set SO_RCVBUF on TCP).
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import net from 'node:net';

export async function listen(host: '127.0.0.1' | '::1', onConn: (s: net.Socket) => void): Promise<net.Server> {
  const server = net.createServer(onConn);
  server.listen(0, host);
  await once(server, 'listening');
  return server;
}

export function portOf(server: net.Server): number {
  return (server.address() as net.AddressInfo).port;
}

/** A loopback port nothing listens on right now (for a server started in another process). */
export async function freePort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const port = portOf(s);
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

export async function connect(host: string, port: number): Promise<net.Socket> {
  const s = net.connect({ host, port });
  await once(s, 'connect');
  return s;
}

/** Resolves with the first `n` events, or rejects after `ms`. */
export function collect<T>(emitter: NodeJS.EventEmitter, event: string, n: number, ms: number): Promise<T[]> {
  return new Promise((resolve, reject) => {
    const got: T[] = [];
    const timer = setTimeout(() => {
      emitter.off(event, on);
      reject(new Error(`timed out after ${ms} ms with ${got.length}/${n} '${event}' events`));
    }, ms);
    const on = (x: T): void => {
      got.push(x);
      if (got.length === n) {
        clearTimeout(timer);
        emitter.off(event, on);
        resolve(got);
      }
    };
    emitter.on(event, on);
  });
}

const SLOW_READER = `
import socket, sys, time
host, port, rcvbuf, chunk, pause, total, limit = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5]), int(sys.argv[6]), float(sys.argv[7])
s = socket.socket(socket.AF_INET6 if ':' in host else socket.AF_INET)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
s.connect((host, port))
got, deadline = 0, time.time() + limit
while got < total and time.time() < deadline:
    b = s.recv(chunk)
    if not b: break
    got += len(b)
    time.sleep(pause)
print(got, flush=True)
s.close()
`;

/**
 * A client that reads `chunk` bytes every `pause` seconds through a receive
 * buffer of `rcvbuf` bytes, until `total` bytes or `limitSeconds`.
 */
export function slowReader(host: string, port: number, o: { rcvbuf: number; chunk: number; pause: number; total: number; limitSeconds: number }): ChildProcess {
  return spawn('python3', ['-c', SLOW_READER, host, String(port), String(o.rcvbuf), String(o.chunk), String(o.pause), String(o.total), String(o.limitSeconds)], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
