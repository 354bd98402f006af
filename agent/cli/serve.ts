// The HTTP server of proxy and attach mode (/metrics, /healthz, /api/…).
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type express from 'express';

export interface HostPort {
  host: string;
  port: number;
}

/** "127.0.0.1:9466", "[::1]:9466". */
export const hostPort = (a: HostPort): string => (a.host.includes(':') ? `[${a.host}]:${a.port}` : `${a.host}:${a.port}`);

/** Listens on `a`; resolves with the server and the address it got (port 0 chosen by the kernel), rejects with the listen error. */
export function startServer(app: express.Express, a: HostPort): Promise<{ server: Server; address: HostPort }> {
  return new Promise((resolve, reject) => {
    const server: Server = app.listen(a.port, a.host);
    server.once('error', reject);
    server.once('listening', () => {
      server.off('error', reject);
      const addr = server.address() as AddressInfo;
      resolve({ server, address: { host: addr.address, port: addr.port } });
    });
  });
}
