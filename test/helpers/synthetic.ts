// Synthetic sock_diag sockets for tests of the connection table and the
// exposition (what DiagSource.poll() decodes from the kernel).
import type { InetDiagSocket, TcpChrono } from '../../agent/parse/inet_diag.js';

/** An established IPv4 connection 10.0.0.1:8080 → 10.0.0.2:(40000 + key), cookie = key, with the given figures. */
export function syntheticSocket(key: number, over: Partial<InetDiagSocket> = {}, chrono: Partial<TcpChrono> = {}): InetDiagSocket {
  return {
    family: 4,
    state: 1,
    timer: 0,
    retrans: 0,
    localAddress: '10.0.0.1',
    localPort: 8080,
    remoteAddress: '10.0.0.2',
    remotePort: 40000 + key,
    ifindex: 0,
    cookie: BigInt(key),
    key,
    rqueue: 0,
    wqueue: 0,
    uid: 0,
    inode: 0,
    ...over,
    chrono: {
      state: 1,
      busyTime: 0,
      rwndLimited: 0,
      sndbufLimited: 0,
      bytesAcked: 0,
      bytesReceived: 0,
      bytesRetrans: 0,
      rtt: 0.001,
      sndCwnd: 10,
      deliveryRate: 1000,
      sndWnd: 65535,
      notsentBytes: 0,
      appLimited: false,
      ...chrono,
    },
  };
}
