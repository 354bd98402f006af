// HTTP/1.x message framing, seen from a relay: where does each message begin
// and end in a byte stream that is forwarded as it arrives (never held back)?
//
// One Framer per direction. feed() returns the boundaries inside the buffer it
// was given; the caller splits its writes there. Anything that is not
// well-formed HTTP/1.x (a binary protocol, a header block over the cap, a bad
// chunk-size line, conflicting Content-Length) switches the framer to `raw`
// for the rest of the connection, as do tunnels (CONNECT 2xx, 101 upgrades).
// Responses need the method of the request they answer (HEAD and CONNECT
// change the framing): the caller supplies it through `requestMethod`.

export interface RequestHead {
  method: string;
  /** The request-target as sent (origin form `/a?b`, or absolute form). */
  target: string;
}

export interface ResponseHead {
  status: number;
}

export type Boundary =
  /** The first byte of a message is at `at`. */
  | { kind: 'begin'; at: number }
  /** The message head ends just before `at`; `untilClose`: its body runs to the end of the stream. */
  | { kind: 'head'; at: number; request?: RequestHead; response?: ResponseHead; untilClose: boolean }
  /** The message's last byte is just before `at`. */
  | { kind: 'end'; at: number }
  /** From `at` on the stream is not framed as HTTP (tunnel, upgrade, or not HTTP at all). */
  | { kind: 'raw'; at: number; reason: RawReason };

export type RawReason = 'not-http' | 'malformed' | 'head-too-large' | 'tunnel' | 'upgrade';

export interface FramerOptions {
  /** Largest header block accepted (bytes). Default 64 KiB. */
  maxHeadBytes?: number;
  /**
   * For response framers: the method of the request that response number
   * `index` (0, 1, … on this connection) answers; undefined if unknown.
   */
  requestMethod?: (index: number) => string | undefined;
}

type State = 'idle' | 'head' | 'fixed' | 'chunk-size' | 'chunk-data' | 'chunk-crlf' | 'trailers' | 'until-close' | 'raw';

const MAX_CHUNK_LINE = 1024;
const TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;
const REQUEST_LINE = /^([!#$%&'*+.^_`|~0-9A-Za-z-]+) (\S+) HTTP\/1\.[01]$/;
const STATUS_LINE = /^HTTP\/1\.[01] (\d{3})(?: .*)?$/;
const RESPONSE_PREFIX = 'HTTP/1.';

export class Framer {
  state: State = 'idle';
  /** Messages completed. */
  messages = 0;
  rawReason: RawReason | undefined;
  private readonly maxHead: number;
  private head = ''; // latin1 text of the head so far (bounded by maxHead)
  private remaining = 0; // fixed body or chunk data bytes left
  private line = ''; // chunk-size or trailer line so far
  private crlfSeen = 0;

  constructor(
    readonly kind: 'request' | 'response',
    private readonly opts: FramerOptions = {},
  ) {
    this.maxHead = opts.maxHeadBytes ?? 64 * 1024;
  }

  get raw(): boolean {
    return this.state === 'raw';
  }

  /** Whether a message has begun and not ended. */
  get inMessage(): boolean {
    return this.state !== 'idle' && this.state !== 'raw';
  }

  /** Boundaries inside `buf`, in order. */
  feed(buf: Uint8Array): Boundary[] {
    const out: Boundary[] = [];
    let i = 0;
    const n = buf.length;
    while (i < n) {
      switch (this.state) {
        case 'raw':
          return out;
        case 'idle': {
          // Requests may be preceded by stray CRLFs (RFC 9112 §2.2).
          if (this.kind === 'request' && (buf[i] === 0x0d || buf[i] === 0x0a)) {
            i++;
            break;
          }
          if (!this.plausibleStart(buf, i)) {
            this.toRaw(out, i, 'not-http');
            return out;
          }
          out.push({ kind: 'begin', at: i });
          this.state = 'head';
          this.head = '';
          break;
        }
        case 'head': {
          const end = this.scanHead(buf, i);
          if (end < 0) {
            if (this.head.length > this.maxHead) {
              this.toRaw(out, n, 'head-too-large');
              return out;
            }
            // Early rejection: a first line that cannot become a valid one.
            if (!this.headPrefixOk()) {
              this.toRaw(out, n, this.messages === 0 ? 'not-http' : 'malformed');
              return out;
            }
            i = n;
            break;
          }
          i = end;
          if (!this.onHead(out, i)) return out;
          break;
        }
        case 'fixed': {
          const take = Math.min(this.remaining, n - i);
          i += take;
          this.remaining -= take;
          if (this.remaining === 0) this.endMessage(out, i);
          break;
        }
        case 'chunk-size': {
          const lf = buf.indexOf(0x0a, i);
          const stop = lf < 0 ? n : lf;
          this.line += latin1(buf, i, stop);
          if (this.line.length > MAX_CHUNK_LINE) {
            this.toRaw(out, stop, 'malformed');
            return out;
          }
          if (lf < 0) {
            i = n;
            break;
          }
          i = lf + 1;
          const size = parseChunkSize(this.line);
          this.line = '';
          if (size === undefined) {
            this.toRaw(out, i, 'malformed');
            return out;
          }
          if (size === 0) this.state = 'trailers';
          else {
            this.remaining = size;
            this.state = 'chunk-data';
          }
          break;
        }
        case 'chunk-data': {
          const take = Math.min(this.remaining, n - i);
          i += take;
          this.remaining -= take;
          if (this.remaining === 0) {
            this.state = 'chunk-crlf';
            this.crlfSeen = 0;
          }
          break;
        }
        case 'chunk-crlf': {
          // CRLF after the chunk data (a bare LF is tolerated).
          const b = buf[i]!;
          if (b === 0x0d && this.crlfSeen === 0) {
            this.crlfSeen = 1;
            i++;
          } else if (b === 0x0a) {
            i++;
            this.state = 'chunk-size';
          } else {
            this.toRaw(out, i, 'malformed');
            return out;
          }
          break;
        }
        case 'trailers': {
          const lf = buf.indexOf(0x0a, i);
          const stop = lf < 0 ? n : lf;
          this.line += latin1(buf, i, stop);
          if (this.line.length > this.maxHead) {
            this.toRaw(out, stop, 'head-too-large');
            return out;
          }
          if (lf < 0) {
            i = n;
            break;
          }
          i = lf + 1;
          const empty = this.line === '' || this.line === '\r';
          this.line = '';
          if (empty) this.endMessage(out, i);
          break;
        }
        case 'until-close':
          return out;
      }
    }
    return out;
  }

  /**
   * The stream ended. Returns true when this ended a message whose body runs to
   * the end of the stream (the caller closes its unit there).
   */
  eof(): boolean {
    if (this.state === 'until-close') {
      this.messages++;
      this.state = 'idle';
      return true;
    }
    return false;
  }

  private plausibleStart(buf: Uint8Array, i: number): boolean {
    if (this.kind === 'response') {
      // As many bytes of "HTTP/1." as are here must match.
      for (let k = 0; k < RESPONSE_PREFIX.length && i + k < buf.length; k++) {
        if (buf[i + k] !== RESPONSE_PREFIX.charCodeAt(k)) return false;
      }
      return true;
    }
    const b = buf[i]!;
    return b >= 0x41 && b <= 0x5a; // methods are upper-case tokens in practice
  }

  private headPrefixOk(): boolean {
    const nl = this.head.indexOf('\n');
    const first = nl < 0 ? this.head : this.head.slice(0, nl);
    if (first.length > 8192) return false;
    if (this.kind === 'response') return first.startsWith(RESPONSE_PREFIX.slice(0, Math.min(first.length, RESPONSE_PREFIX.length)));
    const sp = first.indexOf(' ');
    const method = sp < 0 ? first : first.slice(0, sp);
    return method.length <= 32 && (method === '' || TOKEN.test(method));
  }

  // Appends head bytes; returns the offset in `buf` just after the blank line
  // that ends the head, or -1 (then the head may be over the cap).
  private scanHead(buf: Uint8Array, from: number): number {
    const before = this.head.length;
    // The blank line may straddle the previous buffer: look back 3 characters.
    const lookBack = Math.min(before, 3);
    const take = Math.min(buf.length - from, this.maxHead + 4 - before);
    const text = this.head.slice(before - lookBack) + latin1(buf, from, from + take);
    let idx = -1;
    for (let p = text.indexOf('\n'); p >= 0; p = text.indexOf('\n', p + 1)) {
      if (text[p + 1] === '\n') idx = p + 2;
      else if (text[p + 1] === '\r' && text[p + 2] === '\n') idx = p + 3;
      if (idx >= 0) break;
    }
    if (idx < 0) {
      this.head += text.slice(lookBack);
      return -1;
    }
    this.head += text.slice(lookBack, idx);
    return from + idx - lookBack;
  }

  // The head is complete (it ends at `at`): decide the body's framing.
  private onHead(out: Boundary[], at: number): boolean {
    if (this.head.length > this.maxHead) {
      this.toRaw(out, at, 'head-too-large');
      return false;
    }
    const lines = this.head.split(/\r?\n/);
    const first = lines[0]!;
    const fields = parseFields(lines.slice(1));
    if (fields === undefined) {
      this.toRaw(out, at, 'malformed');
      return false;
    }
    const te = fields.get('transfer-encoding');
    const cl = fields.get('content-length');
    let length: number | 'chunked' | 'close';
    if (te !== undefined) {
      const codings = te.split(',').map((s) => s.trim().toLowerCase()).filter((s) => s !== '');
      length = codings[codings.length - 1] === 'chunked' ? 'chunked' : 'close';
      if (length === 'close' && this.kind === 'request') {
        this.toRaw(out, at, 'malformed'); // a request body without a length cannot be framed
        return false;
      }
    } else if (cl !== undefined) {
      const n = parseContentLength(cl);
      if (n === undefined) {
        this.toRaw(out, at, 'malformed');
        return false;
      }
      length = n;
    } else length = this.kind === 'request' ? 0 : 'close';

    if (this.kind === 'request') {
      const m = REQUEST_LINE.exec(first);
      if (m === null) {
        this.toRaw(out, at, 'malformed');
        return false;
      }
      const request = { method: m[1]!, target: m[2]! };
      out.push({ kind: 'head', at, request, untilClose: false });
      if (request.method === 'CONNECT') {
        this.endMessage(out, at);
        this.toRaw(out, at, 'tunnel');
        return false;
      }
      return this.body(out, at, length);
    }

    const m = STATUS_LINE.exec(first);
    if (m === null) {
      this.toRaw(out, at, 'malformed');
      return false;
    }
    const status = Number(m[1]);
    if (status >= 100 && status < 200 && status !== 101) {
      // Interim response (100 Continue, 103 Early Hints): the final one follows
      // and belongs to the same message.
      this.head = '';
      return true;
    }
    const method = this.opts.requestMethod?.(this.messages);
    const response = { status };
    if (status === 101 || (method === 'CONNECT' && status >= 200 && status < 300)) {
      out.push({ kind: 'head', at, response, untilClose: false });
      this.endMessage(out, at);
      this.toRaw(out, at, status === 101 ? 'upgrade' : 'tunnel');
      return false;
    }
    if (method === 'HEAD' || status === 204 || status === 304) length = 0;
    out.push({ kind: 'head', at, response, untilClose: length === 'close' });
    return this.body(out, at, length);
  }

  private body(out: Boundary[], at: number, length: number | 'chunked' | 'close'): boolean {
    this.head = '';
    if (length === 'chunked') {
      this.state = 'chunk-size';
      this.line = '';
    } else if (length === 'close') {
      this.state = 'until-close';
    } else if (length === 0) {
      this.endMessage(out, at);
    } else {
      this.remaining = length;
      this.state = 'fixed';
    }
    return true;
  }

  private endMessage(out: Boundary[], at: number): void {
    out.push({ kind: 'end', at });
    this.messages++;
    this.state = 'idle';
  }

  private toRaw(out: Boundary[], at: number, reason: RawReason): void {
    out.push({ kind: 'raw', at, reason });
    this.state = 'raw';
    this.rawReason = reason;
    this.head = '';
    this.line = '';
  }
}

function latin1(buf: Uint8Array, from: number, to: number): string {
  return Buffer.from(buf.buffer, buf.byteOffset + from, to - from).toString('latin1');
}

/** Header fields, lower-case names; repeated fields joined with ", ". undefined if malformed. */
function parseFields(lines: string[]): Map<string, string> | undefined {
  const fields = new Map<string, string>();
  let last: string | undefined;
  for (const line of lines) {
    if (line === '') continue;
    if (line[0] === ' ' || line[0] === '\t') {
      // obs-fold: a continuation of the previous field.
      if (last === undefined) return undefined;
      fields.set(last, `${fields.get(last)!} ${line.trim()}`);
      continue;
    }
    const colon = line.indexOf(':');
    if (colon <= 0) return undefined;
    const name = line.slice(0, colon).toLowerCase();
    if (!TOKEN.test(name)) return undefined;
    const value = line.slice(colon + 1).trim();
    const prev = fields.get(name);
    fields.set(name, prev === undefined ? value : `${prev}, ${value}`);
    last = name;
  }
  return fields;
}

/** "123" or "123, 123" (repeated equal values); undefined when invalid or conflicting. */
export function parseContentLength(v: string): number | undefined {
  let n: number | undefined;
  for (const part of v.split(',')) {
    const t = part.trim();
    if (!/^\d{1,15}$/.test(t)) return undefined;
    const x = Number(t);
    if (n !== undefined && x !== n) return undefined;
    n = x;
  }
  return n;
}

/** "1a2b;ext=1\r" → 6699; undefined when not a chunk-size line. */
export function parseChunkSize(line: string): number | undefined {
  const semi = line.indexOf(';');
  const t = (semi < 0 ? line : line.slice(0, semi)).trim();
  if (!/^[0-9a-fA-F]{1,13}$/.test(t)) return undefined;
  return parseInt(t, 16);
}
