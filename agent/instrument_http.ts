// instrumentHttp(server): one chunk per HTTP response, on keep-alive
// connections too, labelled by a route name the application chooses (never the
// raw URL: label cardinality must stay bounded).
import { EventEmitter } from 'node:events';
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { appBytes, instrument, type ChunkRecord, type InstrumentOptions, type Probe } from './instrument.js';

export interface HttpInstrumentOptions extends Omit<InstrumentOptions, 'finalWritesOnly'> {
  /** Names the route of a request (e.g. 'segment', 'manifest'); default: no label. */
  route?: (req: IncomingMessage) => string | undefined;
}

export interface HttpChunkRecord extends ChunkRecord {
  /** The client's address (ip:port). */
  remote: string;
}

export interface HttpProbe extends EventEmitter {
  on(event: 'chunk' | 'stall', listener: (c: HttpChunkRecord) => void): this;
  on(event: 'error', listener: (err: Error, socket: Socket) => void): this;
  /** Connections currently instrumented. */
  readonly connections: number;
  /** Stops instrumenting new connections and closes every probe. */
  close(): void;
}

class HttpInstrumentation extends EventEmitter implements HttpProbe {
  private readonly probes = new Map<Socket, Probe>();
  private readonly onConnection = (socket: Socket): void => this.attach(socket);
  private readonly onRequest = (req: IncomingMessage, res: ServerResponse): void => this.track(req, res);

  constructor(
    private readonly server: Server,
    private readonly opts: HttpInstrumentOptions,
  ) {
    super();
    // prependListener: the probe must be in place before the first byte is written.
    server.prependListener('connection', this.onConnection);
    server.prependListener('request', this.onRequest);
  }

  get connections(): number {
    return this.probes.size;
  }

  close(): void {
    this.server.off('connection', this.onConnection);
    this.server.off('request', this.onRequest);
    for (const p of this.probes.values()) p.close();
    this.probes.clear();
  }

  private attach(socket: Socket): void {
    let probe: Probe;
    try {
      probe = instrument(socket, { ...this.opts, finalWritesOnly: true });
    } catch (err) {
      // Not fatal for the server: this connection goes uninstrumented.
      if (this.listenerCount('error') > 0) this.emit('error', err, socket);
      return;
    }
    const remote = `${socket.remoteAddress}:${socket.remotePort}`;
    this.probes.set(socket, probe);
    probe.on('chunk', (c: ChunkRecord) => this.emit('chunk', { ...c, remote }));
    probe.on('stall', (c: ChunkRecord) => this.emit('stall', { ...c, remote }));
    probe.once('close', () => this.probes.delete(socket));
  }

  private track(req: IncomingMessage, res: ServerResponse): void {
    const probe = this.probes.get(req.socket);
    if (probe === undefined) return;
    const label = this.opts.route?.(req);
    // A pipelined response waits for the previous one: its unit starts when it gets the socket.
    const start = (): void => probe.unit(label);
    if (res.socket !== null && (res.socket as unknown as { _httpMessage?: unknown })._httpMessage === res) start();
    else res.once('socket', start);

    let body = 0;
    // Headers cannot change once the first write sent them: read Content-Length once.
    let declared: number | undefined | null = null;
    const write = res.write;
    const end = res.end;
    // The write that completes a declared Content-Length is the unit's last.
    res.write = function (this: ServerResponse, chunk: unknown, encoding?: unknown, cb?: unknown) {
      if (declared === null) {
        const v = res.getHeader('content-length');
        const n = typeof v === 'string' ? Number(v) : typeof v === 'number' ? v : NaN;
        declared = Number.isFinite(n) ? n : undefined;
      }
      body += appBytes(chunk, encoding);
      if (declared !== undefined && body >= declared) probe.finishing();
      return (write as (...a: unknown[]) => boolean).call(this, chunk, encoding, cb);
    } as ServerResponse['write'];
    res.end = function (this: ServerResponse, ...args: unknown[]) {
      probe.finishing();
      return (end as (...a: unknown[]) => ServerResponse).apply(this, args);
    } as ServerResponse['end'];
    res.once('finish', () => probe.endUnit());
  }
}

export function instrumentHttp(server: Server, opts: HttpInstrumentOptions = {}): HttpProbe {
  return new HttpInstrumentation(server, opts);
}
