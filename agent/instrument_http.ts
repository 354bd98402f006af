// instrumentHttp(server): one chunk per HTTP response, on keep-alive
// connections too, labelled by a route name the application chooses (never the
// raw URL: label cardinality must stay bounded).
//
// Each connection gets a units-only probe (instrument({ unitsOnly })): nothing
// of the socket or its handle is hooked, and a response's bytes are read from
// the socket's byte count at its boundaries. A response is a unit from the
// moment it has the socket ('request', or 'socket' for a pipelined one) to its
// 'finish' (the http.server.response.finish channel, published before the
// next pipelined response is given the socket). The record flags go on when
// its last bytes are written: end(), or the write that completes a declared
// Content-Length. ServerResponse.prototype.write/end are wrapped once per
// process to see those calls; a response that is not instrumented costs them
// one WeakMap lookup.
import diagnostics_channel from 'node:diagnostics_channel';
import { EventEmitter } from 'node:events';
import { ServerResponse, type IncomingMessage, type Server } from 'node:http';
import type { Socket } from 'node:net';
import { appBytes, UnitProbe, type ChunkRecord, type InstrumentOptions } from './instrument.js';

export interface HttpInstrumentOptions extends Omit<InstrumentOptions, 'finalWritesOnly' | 'unitsOnly'> {
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

/** One instrumented response. */
interface ResponseUnit {
  readonly probe: UnitProbe;
  /** The probe's unit id once the response has the socket; -1 before. */
  id: number;
  /** A write (or end) was made. */
  wrote: boolean;
  /** Its last bytes are written: end(), or the declared Content-Length is complete. */
  finishing: boolean;
  /** Body bytes written, against the declared Content-Length (null: not read yet; undefined: none declared). */
  body: number;
  declared: number | undefined | null;
}

const units = new WeakMap<ServerResponse, ResponseUnit>();
// The last response looked up: a response's writes come in runs, and this
// spares the WeakMap's hashing on all but the first of a run.
let lastRes: ServerResponse | undefined;
let lastUnit: ResponseUnit | undefined;

function unitOf(res: ServerResponse): ResponseUnit | undefined {
  if (res === lastRes) return lastUnit;
  lastUnit = units.get(res);
  lastRes = res;
  return lastUnit;
}

function forget(res: ServerResponse): void {
  units.delete(res);
  if (res === lastRes) lastRes = lastUnit = undefined;
}

// Before a write or end of an instrumented response's own bytes.
function beforeWrite(u: ResponseUnit, res: ServerResponse, chunk: unknown, encoding: unknown, end: boolean): void {
  if (!u.wrote) {
    u.wrote = true;
    if (u.id >= 0) u.probe.writing(u.id);
  }
  if (u.finishing) return;
  if (!end) {
    // Headers cannot change once the first write sent them: read Content-Length once.
    if (u.declared === null) {
      const v = res.getHeader('content-length');
      const n = typeof v === 'string' ? Number(v) : typeof v === 'number' ? v : NaN;
      u.declared = Number.isFinite(n) ? n : undefined;
    }
    if (u.declared === undefined) return;
    u.body += appBytes(chunk, encoding);
    if (u.body < u.declared) return;
  }
  u.finishing = true;
  if (u.id >= 0) u.probe.finishingUnit(u.id);
}

let responsesHooked = false;

/** Wraps ServerResponse.prototype.write/end once per process (fixed arity: they run on every write). */
function hookResponses(): void {
  if (responsesHooked) return;
  responsesHooked = true;
  const proto = ServerResponse.prototype as unknown as Record<string, unknown>;
  const write = proto.write as (this: ServerResponse, chunk: unknown, encoding: unknown, cb: unknown) => boolean;
  const end = proto.end as (this: ServerResponse, chunk: unknown, encoding: unknown, cb: unknown) => ServerResponse;
  proto.write = function (this: ServerResponse, chunk: unknown, encoding?: unknown, cb?: unknown): boolean {
    const u = unitOf(this);
    if (u !== undefined) {
      try {
        beforeWrite(u, this, chunk, encoding, false);
      } catch {
        /* never let instrumentation break a write */
      }
    }
    return write.call(this, chunk, encoding, cb);
  };
  proto.end = function (this: ServerResponse, chunk?: unknown, encoding?: unknown, cb?: unknown): ServerResponse {
    const u = unitOf(this);
    if (u !== undefined) {
      try {
        // end(cb): no data of its own.
        beforeWrite(u, this, typeof chunk === 'function' ? undefined : chunk, encoding, true);
      } catch {
        /* never let instrumentation break a write */
      }
    }
    return end.call(this, chunk, encoding, cb);
  };
}

// A response finished: all its bytes reached the kernel. Published by Node
// before the next pipelined response is given the socket.
const FINISH = 'http.server.response.finish';
let subscribers = 0;

function onResponseFinish(message: unknown): void {
  const res = (message as { response?: ServerResponse }).response;
  if (res === undefined) return;
  const u = unitOf(res);
  if (u === undefined) return;
  forget(res);
  if (u.id >= 0) u.probe.endUnitOf(u.id);
}

class HttpInstrumentation extends EventEmitter implements HttpProbe {
  private readonly probes = new Map<Socket, UnitProbe>();
  private readonly onConnection = (socket: Socket): void => this.attach(socket);
  private readonly onRequest = (req: IncomingMessage, res: ServerResponse): void => this.track(req, res);
  private closed = false;

  constructor(
    private readonly server: Server,
    private readonly opts: HttpInstrumentOptions,
  ) {
    super();
    hookResponses();
    if (subscribers++ === 0) diagnostics_channel.subscribe(FINISH, onResponseFinish);
    // prependListener: the probe must be in place before the first byte is written.
    server.prependListener('connection', this.onConnection);
    server.prependListener('request', this.onRequest);
  }

  get connections(): number {
    return this.probes.size;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.server.off('connection', this.onConnection);
    this.server.off('request', this.onRequest);
    for (const p of this.probes.values()) p.close();
    this.probes.clear();
    if (--subscribers === 0) diagnostics_channel.unsubscribe(FINISH, onResponseFinish);
  }

  private attach(socket: Socket): void {
    let probe: UnitProbe;
    try {
      probe = new UnitProbe(socket, { ...this.opts, finalWritesOnly: true, unitsOnly: true });
    } catch (err) {
      // Not fatal for the server: this connection goes uninstrumented.
      if (this.listenerCount('error') > 0) this.emit('error', err, socket);
      return;
    }
    const remote = `${socket.remoteAddress}:${socket.remotePort}`;
    this.probes.set(socket, probe);
    // The record is copied (with its remote) only for someone to hear it.
    probe.on('chunk', (c: ChunkRecord) => this.listenerCount('chunk') > 0 && this.emit('chunk', { ...c, remote }));
    probe.on('stall', (c: ChunkRecord) => this.listenerCount('stall') > 0 && this.emit('stall', { ...c, remote }));
    probe.once('close', () => this.probes.delete(socket));
  }

  private track(req: IncomingMessage, res: ServerResponse): void {
    const probe = this.probes.get(req.socket);
    if (probe === undefined) return;
    const label = this.opts.route?.(req);
    const u: ResponseUnit = { probe, id: -1, wrote: false, finishing: false, body: 0, declared: null };
    units.set(res, u);
    if (res === lastRes) lastUnit = u;
    // A pipelined response waits for the previous one: its unit starts when it
    // gets the socket, and what it wrote meanwhile is flushed right after.
    const start = (): void => {
      u.id = probe.startUnit(label);
      if (u.id < 0) return;
      if (u.wrote) probe.writing(u.id);
      if (u.finishing) probe.finishingUnit(u.id);
    };
    if (res.socket !== null && (res.socket as unknown as { _httpMessage?: unknown })._httpMessage === res) start();
    else res.once('socket', start);
  }
}

export function instrumentHttp(server: Server, opts: HttpInstrumentOptions = {}): HttpProbe {
  return new HttpInstrumentation(server, opts);
}
