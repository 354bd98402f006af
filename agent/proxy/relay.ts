// The TCP relay of `tcp-chronograph proxy`: clients connect here, each gets
// its own upstream connection, bytes are copied both ways, and the
// client-facing socket is instrumented (instrument()) so that what the relay
// writes to the client becomes chunk records.
//
// Chunks: one relay write to the client, or, when the upstream speaks
// HTTP/1.x, one response (a unit from its first byte to its last, with records
// requested only for the write holding its last byte). Route names come from
// the client's request lines, matched to the user's path prefixes.
//
// Backpressure: upstream bytes are read into one buffer per connection
// (--buffer-size), reused for every read: reading stops until the client
// socket has taken all of it. Client bytes go the usual stream way (a write
// that fills the upstream's buffer pauses the client until 'drain'). A
// connection holds at most the read buffer plus about one 64 KiB read and one
// stream high-water mark, whatever the client's speed. Reading big and into
// the same memory is what keeps a bulk stream near loopback speed.
// Half-close: an EOF from one side is relayed as a FIN to the other
// (allowHalfOpen on both). A client that closed its side while the upstream
// says nothing (a client that gave up on a hung server) is reset, with the
// upstream, after halfCloseTimeoutMs: otherwise both sockets would be held
// until the upstream closes, which a hung upstream never does.
// Errors: an error or reset on one side resets the other (RST), so the peer
// sees what happened instead of a clean end. The upstream closing (FIN) in the
// middle of an HTTP response, or with a request unanswered, is relayed as a
// FIN and counted as upstream error `truncated`.
import { EventEmitter } from 'node:events';
import net, { type AddressInfo, type Socket } from 'node:net';
import { constants } from 'node:os';
import { instrument, type ChunkRecord, type InstrumentOptions, type Probe } from '../instrument.js';
import type { HostPort } from '../address.js';
import { native } from '../native.js';
import { SOL_SOCKET } from '../parse/cmsg.js';
import { Framer, type Boundary, type RawReason } from './http1.js';
import { proxyHeader, type ProxyProtocolVersion } from './proxy_protocol.js';
import { RouteMap } from './routes.js';

export type { HostPort } from '../address.js';

export interface ProxyOptions {
  listen: HostPort;
  upstream: HostPort;
  /** Send a PROXY protocol header to the upstream before any client byte. */
  proxyProtocol?: ProxyProtocolVersion | undefined;
  /** Path prefixes → route names for HTTP responses. */
  routes?: RouteMap;
  /** 'auto': recognise HTTP/1.x responses (one chunk each); 'off': one chunk per relay write. */
  http?: 'auto' | 'off';
  /** Passed to instrument() for every client socket (finalWritesOnly is always on). */
  instrument?: Omit<InstrumentOptions, 'finalWritesOnly'>;
  /** Give up connecting upstream after this long (ms). Default 10 000. */
  connectTimeoutMs?: number;
  /** Close both sides after this long without a byte either way (ms); 0 = never. Default 0. */
  idleTimeoutMs?: number;
  /**
   * After the client has closed its side (FIN), reset both sides when the
   * upstream relays nothing for this long (ms); 0 = never. Default 60 000.
   */
  halfCloseTimeoutMs?: number;
  /** Most client connections at once; more are closed at accept. Default 10 000. */
  maxConnections?: number;
  /** Turn instrumentation off (a plain relay; for comparison). */
  instrumentClients?: boolean;
  /**
   * Bytes read from the upstream at once, into one buffer per connection that
   * is reused (reading pauses until the client has taken it). Default 256 KiB.
   */
  readBufferBytes?: number;
}

/** A chunk record of one client connection, with where it came from. */
export interface ProxyChunkRecord extends ChunkRecord {
  /** The client's address (ip:port). */
  remote: string;
  /** Local (listening) port the client connected to. */
  port: number;
  /** Route name, where the request's path matched a --route prefix. */
  route?: string;
}

export type UpstreamErrorReason = 'refused' | 'timeout' | 'unreachable' | 'dns' | 'reset' | 'truncated' | 'other';
export const UPSTREAM_ERROR_REASONS: readonly UpstreamErrorReason[] = ['refused', 'timeout', 'unreachable', 'dns', 'reset', 'truncated', 'other'];
export const RAW_REASONS: readonly RawReason[] = ['not-http', 'malformed', 'head-too-large', 'tunnel', 'upgrade'];

export interface ProxyCounters {
  accepted: number;
  /** Closed at accept because --max-connections were open. */
  rejected: number;
  open: number;
  /** Client connections closed because the upstream could not be reached (or failed). */
  upstreamErrors: Record<UpstreamErrorReason, number>;
  /** Errors (mostly resets) on the client side. */
  clientErrors: number;
  /** Connections closed by the idle timeout. */
  idleTimeouts: number;
  /** Connections reset because the client had closed its side and the upstream then sent nothing for the half-close timeout. */
  halfCloseTimeouts: number;
  bytesToClient: number;
  bytesToUpstream: number;
  /** Times a direction was paused because the destination's buffer was full. */
  pausesToClient: number;
  pausesToUpstream: number;
  /** Client connections that could not be instrumented (relayed anyway). */
  uninstrumented: number;
  /** HTTP responses framed (one chunk each). */
  httpResponses: number;
  /** Connections whose response stream left HTTP framing, by reason. */
  rawFallbacks: Record<RawReason, number>;
  /** Largest bytes held in userspace by one connection (both directions). */
  maxBuffered: number;
}

const MAX_QUEUED_REQUESTS = 1024;
const EMPTY = Buffer.alloc(0);
const DEFAULT_READ_BUFFER = 256 * 1024;

function upstreamReason(err: NodeJS.ErrnoException, connected: boolean): UpstreamErrorReason {
  switch (err.code) {
    case 'ECONNREFUSED':
      return 'refused';
    case 'ETIMEDOUT':
      return 'timeout';
    case 'EHOSTUNREACH':
    case 'ENETUNREACH':
    case 'EADDRNOTAVAIL':
      return 'unreachable';
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
      return 'dns';
    case 'ECONNRESET':
    case 'EPIPE':
      return connected ? 'reset' : 'refused';
    default:
      return 'other';
  }
}

const SO_ERROR = 4;
const ERRNO_NAMES = new Map(Object.entries(constants.errno).map(([name, n]) => [n, name]));

/**
 * The error a reset left on a socket whose EOF Node reported instead: when the
 * last data and a RST arrive together, libuv reads the data, sees POLLHUP and
 * reports EOF without the read that would have returned ECONNRESET (seen in
 * about 1 of 100 upstream resets on loopback). The socket's SO_ERROR still
 * holds the error. undefined when there is none (a real FIN) or no way to ask.
 */
function pendingError(s: Socket): NodeJS.ErrnoException | undefined {
  const fd = (s as unknown as { _handle?: { fd?: unknown } })._handle?.fd;
  if (typeof fd !== 'number' || fd < 0) return undefined;
  let errno: number;
  try {
    errno = native().getSockoptInt(fd, SOL_SOCKET, SO_ERROR);
  } catch {
    return undefined;
  }
  if (errno === 0) return undefined;
  const code = ERRNO_NAMES.get(errno) ?? `errno ${errno}`;
  return Object.assign(new Error(`read ${code}`), { code, errno: -errno, syscall: 'read' });
}

export class TcpProxy extends EventEmitter {
  readonly counters: ProxyCounters = {
    accepted: 0,
    rejected: 0,
    open: 0,
    upstreamErrors: { refused: 0, timeout: 0, unreachable: 0, dns: 0, reset: 0, truncated: 0, other: 0 },
    clientErrors: 0,
    idleTimeouts: 0,
    halfCloseTimeouts: 0,
    bytesToClient: 0,
    bytesToUpstream: 0,
    pausesToClient: 0,
    pausesToUpstream: 0,
    uninstrumented: 0,
    httpResponses: 0,
    rawFallbacks: { 'not-http': 0, malformed: 0, 'head-too-large': 0, tunnel: 0, upgrade: 0 },
    maxBuffered: 0,
  };
  readonly relays = new Set<Relay>();
  readonly routes: RouteMap;
  private readonly server: net.Server;
  private listening: HostPort | undefined;

  constructor(readonly opts: ProxyOptions) {
    super();
    this.routes = opts.routes ?? new RouteMap([]);
    this.server = net.createServer({ allowHalfOpen: true, pauseOnConnect: true }, (s) => this.accept(s));
    this.server.maxConnections = opts.maxConnections ?? 10_000;
    this.server.on('drop', () => this.counters.rejected++);
  }

  /** Listens; rejects with the listen error (EADDRINUSE, EACCES, …). */
  async start(): Promise<HostPort> {
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(this.opts.listen.port, this.opts.listen.host, () => {
        this.server.off('error', reject);
        resolve();
      });
    });
    this.server.on('error', (e) => this.emit('error', e));
    const a = this.server.address() as AddressInfo;
    this.listening = { host: a.address, port: a.port };
    return this.listening;
  }

  get address(): HostPort {
    if (this.listening === undefined) throw new Error('the proxy is not listening');
    return this.listening;
  }

  /** Stops accepting; open connections are ended (graceful) and reset after `graceMs`. */
  async close(graceMs = 5000): Promise<void> {
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    for (const r of this.relays) r.shutdown();
    const timer = setTimeout(() => {
      for (const r of this.relays) r.destroy();
    }, graceMs);
    await closed;
    clearTimeout(timer);
  }

  /** Resets every connection at once. */
  destroyAll(): void {
    for (const r of this.relays) r.destroy();
  }

  private accept(client: Socket): void {
    this.counters.accepted++;
    this.counters.open++;
    const relay = new Relay(this, client);
    this.relays.add(relay);
    client.once('close', () => {
      this.relays.delete(relay);
      this.counters.open--;
    });
  }
}

/** One client connection and its upstream connection. */
class Relay {
  private readonly upstream: Socket;
  private readonly readBuffer: Buffer;
  private readonly onClientFlushed = (): void => {
    if (this.client.writableLength > 0) return;
    if (this.pushPending) this.push();
    if (!this.upstreamPaused) return;
    this.noteBuffered();
    this.upstreamPaused = false;
    if (!this.upstream.destroyed) this.upstream.resume();
  };
  private pushPending = false;
  private probe: Probe | undefined;
  private connected = false;
  private done = false;
  private readonly res: Framer | undefined;
  private readonly req: Framer | undefined;
  // Requests seen on the client side and not yet answered: method and route.
  private readonly requests: Array<{ method: string; route: string | undefined }> = [];
  private requestsBase = 0; // index of requests[0] among the connection's requests
  private responsesBegun = 0;
  private labelsLost = false;
  private upstreamPaused = false;
  private clientPaused = false;
  private readonly remote: string;
  private readonly port: number;
  private idleTimer: NodeJS.Timeout | undefined;
  private lastActivity = Date.now();
  private readonly idleMs: number;
  private readonly halfCloseMs: number;
  private clientEnded = false;

  constructor(
    private readonly proxy: TcpProxy,
    private readonly client: Socket,
  ) {
    const o = proxy.opts;
    this.idleMs = o.idleTimeoutMs ?? 0;
    this.halfCloseMs = o.halfCloseTimeoutMs ?? 60_000;
    this.remote = `${client.remoteAddress}:${client.remotePort}`;
    this.port = client.localPort ?? 0;
    // Nagle stays on toward the client (see push()); requests to the upstream
    // are small and go at once.
    client.setNoDelay(false);
    if (o.http !== 'off') {
      this.req = new Framer('request');
      this.res = new Framer('response', { requestMethod: (i) => this.requestAt(i)?.method });
    }
    if (o.instrumentClients !== false) {
      try {
        this.probe = instrument(client, { ...o.instrument, finalWritesOnly: true });
        this.probe.on('chunk', (c: ChunkRecord) => this.emitChunk('chunk', c));
        this.probe.on('stall', (c: ChunkRecord) => this.emitChunk('stall', c));
      } catch (e) {
        proxy.counters.uninstrumented++;
        proxy.emit('uninstrumented', e, client);
      }
    }

    this.readBuffer = Buffer.allocUnsafe(o.readBufferBytes ?? DEFAULT_READ_BUFFER);
    this.upstream = net.connect({
      host: o.upstream.host,
      port: o.upstream.port,
      allowHalfOpen: true,
      onread: { buffer: this.readBuffer, callback: (n: number) => this.fromUpstream(n) },
    });
    this.upstream.setNoDelay(true);
    const connectTimeout = o.connectTimeoutMs ?? 10_000;
    this.upstream.setTimeout(connectTimeout, () => {
      if (!this.connected) this.upstreamFailed(Object.assign(new Error(`no connection to the upstream after ${connectTimeout} ms`), { code: 'ETIMEDOUT' }));
    });
    this.upstream.once('connect', () => this.onConnect());
    this.upstream.on('error', (e: NodeJS.ErrnoException) => {
      if (!this.connected) this.upstreamFailed(e);
      else this.onError('upstream', e);
    });
    this.upstream.once('close', () => {
      // Closed without an error while the client is still open: end the client (a clean close).
      if (!this.client.destroyed && !this.done) this.client.end();
    });

    client.on('error', (e: NodeJS.ErrnoException) => this.onError('client', e));
    client.once('close', () => {
      this.stopIdleTimer();
      if (!this.upstream.destroyed) {
        if (!this.connected) this.upstream.destroy();
        else this.upstream.end();
      }
    });
  }

  /** Graceful: FIN to both sides; their FINs close the connection. */
  shutdown(): void {
    if (!this.connected) {
      this.destroy();
      return;
    }
    this.client.end();
    this.upstream.end();
  }

  destroy(): void {
    this.done = true;
    this.stopIdleTimer();
    if (!this.client.destroyed) this.client.resetAndDestroy();
    if (!this.upstream.destroyed) {
      if (this.connected) this.upstream.resetAndDestroy();
      else this.upstream.destroy();
    }
  }

  private requestAt(index: number): { method: string; route: string | undefined } | undefined {
    return this.requests[index - this.requestsBase];
  }

  private emitChunk(event: 'chunk' | 'stall', c: ChunkRecord): void {
    const rec: ProxyChunkRecord = { ...c, remote: this.remote, port: this.port };
    if (c.label !== undefined) rec.route = c.label;
    this.proxy.emit(event, rec);
  }

  private upstreamFailed(e: NodeJS.ErrnoException): void {
    if (this.done) return;
    this.done = true;
    const reason = upstreamReason(e, false);
    this.proxy.counters.upstreamErrors[reason]++;
    this.proxy.emit('upstream-error', e, reason);
    this.upstream.destroy();
    // The client sees a reset, as it would connecting to a refusing server.
    if (!this.client.destroyed) this.client.resetAndDestroy();
  }

  private onConnect(): void {
    if (this.done || this.client.destroyed) {
      this.upstream.destroy();
      return;
    }
    this.connected = true;
    this.upstream.setTimeout(0);
    const o = this.proxy.opts;
    if (o.proxyProtocol !== undefined) {
      this.upstream.write(
        proxyHeader(o.proxyProtocol, {
          sourceAddress: this.client.remoteAddress,
          sourcePort: this.client.remotePort,
          destAddress: this.client.localAddress,
          destPort: this.client.localPort,
        }),
      );
    }
    this.upstream.on('end', () => this.upstreamEnded());
    this.client.on('data', (b: Buffer) => this.fromClient(b));
    this.client.on('end', () => this.clientEnd());
    this.upstream.on('drain', () => {
      if (this.clientPaused) {
        this.noteBuffered();
        this.clientPaused = false;
        this.client.resume();
      }
    });
    this.armTimer();
    this.client.resume();
  }

  private onError(side: 'client' | 'upstream', e: NodeJS.ErrnoException): void {
    if (side === 'client') this.proxy.counters.clientErrors++;
    else {
      const reason = upstreamReason(e, true);
      this.proxy.counters.upstreamErrors[reason]++;
      this.proxy.emit('upstream-error', e, reason);
    }
    // Node destroys the failed socket itself; the other side gets a reset.
    this.done = true;
    this.stopIdleTimer();
    const other = side === 'client' ? this.upstream : this.client;
    if (!other.destroyed) other.resetAndDestroy();
  }

  private fromClient(buf: Buffer): void {
    if (this.upstream.destroyed) return;
    this.lastActivity = Date.now();
    this.proxy.counters.bytesToUpstream += buf.length;
    if (this.req !== undefined && !this.req.raw) {
      for (const b of this.req.feed(buf)) if (b.kind === 'head' && b.request !== undefined) this.pushRequest(b.request.method, b.request.target);
    }
    if (!this.upstream.write(buf)) {
      this.clientPaused = true;
      this.proxy.counters.pausesToUpstream++;
      this.client.pause();
      this.noteBuffered();
    }
  }

  private pushRequest(method: string, target: string): void {
    if (this.labelsLost) return;
    if (this.requests.length >= MAX_QUEUED_REQUESTS) {
      // Pipelined far ahead of the responses: stop labelling this connection.
      this.labelsLost = true;
      this.requests.length = 0;
      return;
    }
    this.requests.push({ method, route: this.proxy.routes.match(target) });
  }

  // `n` bytes were read into readBuffer. Returns false to stop reading: the
  // buffer is reused by the next read, so reading waits until the client
  // socket has handed every byte of it to the kernel.
  private fromUpstream(n: number): boolean {
    if (this.client.destroyed) return false;
    this.lastActivity = Date.now();
    this.proxy.counters.bytesToClient += n;
    const buf = this.readBuffer.subarray(0, n);
    const res = this.res;
    if (res === undefined || res.raw || this.probe === undefined) this.client.write(buf);
    else this.writeFramed(buf, res.feed(buf), this.probe);
    // A read that did not fill the buffer emptied the upstream's queue: no
    // more bytes are known to follow, so the tail goes out now.
    const more = n === this.readBuffer.length;
    if (this.client.writableLength === 0) {
      if (!more) this.push();
      return true;
    }
    if (!more) this.pushPending = true;
    this.upstreamPaused = true;
    this.proxy.counters.pausesToClient++;
    this.noteBuffered();
    // An empty write completes after every write before it.
    this.client.write(EMPTY, this.onClientFlushed);
    return false;
  }

  // Sends a sub-MSS tail held by Nagle now (setting TCP_NODELAY pushes pending
  // frames), like MSG_MORE left off the last write. Nagle on with a push
  // where the stream pauses: full segments while bytes keep coming (with
  // TCP_NODELAY every relay write would end in a small segment, which halved
  // bulk throughput on loopback), no Nagle delay when they stop.
  private push(): void {
    this.pushPending = false;
    if (this.client.destroyed) return;
    this.client.setNoDelay(true);
    this.client.setNoDelay(false);
  }

  // Splits the relay write at message boundaries so each response is one unit.
  private writeFramed(buf: Buffer, bounds: Boundary[], probe: Probe): void {
    let pos = 0;
    for (let k = 0; k < bounds.length; k++) {
      const b = bounds[k]!;
      if (b.at > pos) {
        // The write that holds a response's last byte (or starts a body that
        // runs to EOF) is announced first: it is the one that needs records.
        if (endsAt(bounds, k, b.at)) probe.finishing();
        this.client.write(buf.subarray(pos, b.at));
        pos = b.at;
      }
      switch (b.kind) {
        case 'begin': {
          const route = this.labelsLost ? undefined : this.requestAt(this.responsesBegun)?.route;
          this.responsesBegun++;
          probe.unit(route);
          break;
        }
        case 'head':
          if (b.untilClose) probe.finishing();
          break;
        case 'end':
          probe.endUnit();
          this.proxy.counters.httpResponses++;
          this.responseDone();
          break;
        case 'raw':
          probe.endUnit();
          this.proxy.counters.rawFallbacks[b.reason]++;
          break;
      }
    }
    if (pos < buf.length) this.client.write(pos === 0 ? buf : buf.subarray(pos));
  }

  // A final response is complete: its request is answered.
  private responseDone(): void {
    if (this.requests.length > 0) {
      this.requests.shift();
      this.requestsBase++;
    } else if (!this.labelsLost) {
      // A response with no request seen (sent early, or unsolicited): later
      // requests are answered by later responses.
      this.requestsBase++;
    }
  }

  // The client closed its side: relayed as a FIN; from now on the upstream
  // has the half-close timeout to answer (or to finish answering).
  private clientEnd(): void {
    const e = pendingError(this.client);
    if (e !== undefined) {
      // A reset reported as an EOF (see pendingError): a reset it is.
      this.onError('client', e);
      this.client.destroy();
      return;
    }
    this.upstream.end();
    if (this.clientEnded) return;
    this.clientEnded = true;
    this.lastActivity = Date.now();
    this.stopIdleTimer();
    this.armTimer();
  }

  private upstreamEnded(): void {
    const e = pendingError(this.upstream);
    if (e !== undefined) {
      // A reset reported as an EOF (see pendingError): the client is reset, not ended.
      this.onError('upstream', e);
      this.upstream.destroy();
      return;
    }
    if (this.res !== undefined && this.probe !== undefined) {
      // A response cut short (its body has a length or chunks still due), or
      // a request left unanswered: the client sees a clean FIN where an
      // answer should have been. Counted; the records stay as they are.
      let truncated = this.res.inMessage && this.res.state !== 'until-close';
      if (this.res.eof()) {
        this.proxy.counters.httpResponses++;
        this.responseDone();
      }
      if (!this.res.raw && this.requests.length > 0) truncated = true;
      this.probe.endUnit();
      if (truncated) {
        this.proxy.counters.upstreamErrors.truncated++;
        this.proxy.emit('upstream-error', Object.assign(new Error('the upstream closed the connection in the middle of an HTTP response or with a request unanswered'), { code: 'EOF' }), 'truncated');
      }
    }
    this.client.end();
  }

  private noteBuffered(): void {
    const held = this.client.writableLength + this.upstream.writableLength + this.client.readableLength + this.upstream.readableLength;
    if (held > this.proxy.counters.maxBuffered) this.proxy.counters.maxBuffered = held;
  }

  /** The inactivity limit in force (ms; 0: none) and whether it is the half-close one. */
  private limit(): { ms: number; halfClose: boolean } {
    if (this.clientEnded && this.halfCloseMs > 0 && (this.idleMs === 0 || this.halfCloseMs <= this.idleMs)) return { ms: this.halfCloseMs, halfClose: true };
    return { ms: this.idleMs, halfClose: false };
  }

  // One timer for both limits, re-armed for what is left of the limit in force.
  private armTimer(): void {
    if (this.done || this.limit().ms === 0) return;
    const check = (): void => {
      this.idleTimer = undefined;
      if (this.done || this.client.destroyed) return;
      const { ms, halfClose } = this.limit();
      // Half-closed, the timeout is for a silent upstream: bytes the proxy
      // still holds for either side mean a slow peer, not a silent upstream
      // (a client that sent its FIN early and reads a long response slowly).
      if (halfClose && (this.upstreamPaused || this.client.writableLength > 0 || this.upstream.writableLength > 0)) this.lastActivity = Date.now();
      const idle = Date.now() - this.lastActivity;
      if (idle >= ms) {
        if (halfClose) this.proxy.counters.halfCloseTimeouts++;
        else this.proxy.counters.idleTimeouts++;
        this.destroy();
        return;
      }
      this.idleTimer = setTimeout(check, ms - idle);
      this.idleTimer.unref();
    };
    this.idleTimer = setTimeout(check, Math.max(0, this.limit().ms - (Date.now() - this.lastActivity)));
    this.idleTimer.unref();
  }

  private stopIdleTimer(): void {
    if (this.idleTimer !== undefined) clearTimeout(this.idleTimer);
    this.idleTimer = undefined;
  }
}

/** Whether a message ends (or a body running to EOF starts) at `at`, among the boundaries from k on. */
function endsAt(bounds: Boundary[], k: number, at: number): boolean {
  for (let j = k; j < bounds.length && bounds[j]!.at === at; j++) {
    const b = bounds[j]!;
    if (b.kind === 'end' || (b.kind === 'head' && b.untilClose)) return true;
  }
  return false;
}
