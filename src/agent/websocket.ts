// Runs in the agent worker. The server side of the WebSocket protocol (RFC 6455) on a raw
// net.Socket: the HTTP upgrade request read by hand, then frames.
//
// Why not `ws` and node:http, as the client uses: loading them in the worker (ws pulls in
// http, https, tls, crypto, zlib) was most of what a never-visited agent's first visit
// cost the app (64-100 ms of CPU, and megabytes of heap that then had to be compacted).
// The agent needs little of them: one path, no extensions (no compression), no
// subprotocols, text and binary messages, ping/pong and the closing handshake. What a
// client sees is what `ws` did: the same status lines for a refused upgrade, the same
// close codes for a protocol violation (1002), invalid UTF-8 (1007) and a message over the
// limit (1009). The client side stays `ws` (src/client/), so any RFC 6455 client works.
//
//   socket ─► readHead (bounded) ─► upgrade checks ─► 101 ─► WebSocketConnection
//                                        └─► 4xx/5xx text answer, connection: close

import { EventEmitter } from 'node:events';
import type * as net from 'node:net';

/** The RFC's fixed suffix of Sec-WebSocket-Key for Sec-WebSocket-Accept. */
const GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';
/** Node's own limit on a request's head (--max-http-header-size's default). */
export const MAX_HEAD_BYTES = 16 * 1024;
/** After our close frame, how long the peer has to answer with its own before the socket is cut. */
export const CLOSE_TIMEOUT_MS = 5_000;

const STATUS_TEXT: Record<number, string> = {
  400: 'Bad Request',
  404: 'Not Found',
  405: 'Method Not Allowed',
  426: 'Upgrade Required',
  431: 'Request Header Fields Too Large',
  503: 'Service Unavailable',
};

/** Sec-WebSocket-Accept for a client's Sec-WebSocket-Key. */
export function acceptKey(key: string): string {
  // node:crypto is loaded here, at the first handshake, not with the worker: ~5-9 ms once.
  const { createHash } = require('node:crypto') as typeof import('node:crypto');
  return createHash('sha1').update(key + GUID, 'latin1').digest('base64');
}

export interface RequestHead {
  method: string;
  url: string;
  /** Header names lower-cased; a repeated header's values joined with ", ". */
  headers: Record<string, string>;
}

/** An HTTP/1.x request head (without its blank line), or undefined when it is not one. */
export function parseRequestHead(text: string): RequestHead | undefined {
  const lines = text.split('\r\n');
  const m = /^([A-Z]+) (\S+) HTTP\/1\.[01]$/.exec(lines[0]!);
  if (!m) return undefined;
  const headers: Record<string, string> = Object.create(null);
  for (let i = 1; i < lines.length; i++) {
    const line = lines[i]!;
    const colon = line.indexOf(':');
    if (colon <= 0 || !/^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/.test(line.slice(0, colon))) return undefined;
    const name = line.slice(0, colon).toLowerCase();
    const value = line.slice(colon + 1).trim();
    headers[name] = headers[name] === undefined ? value : `${headers[name]}, ${value}`;
  }
  return { method: m[1]!, url: m[2]!, headers };
}

/** A plain-text HTTP answer that closes the connection (a refused or non-WebSocket request). */
export function httpAnswer(status: number, text: string, extraHeaders = ''): string {
  const body = Buffer.from(`${text}\n`);
  return `HTTP/1.1 ${status} ${STATUS_TEXT[status] ?? 'Error'}\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: ${body.length}\r\n${extraHeaders}connection: close\r\n\r\n${body}`;
}

/**
 * Reads a request head off the socket: calls `onHead` with it and the bytes that came after
 * it, once. A socket that is not sending HTTP, or whose head passes MAX_HEAD_BYTES, is cut.
 */
export function readHead(socket: net.Socket, onHead: (head: RequestHead, rest: Buffer) => void): void {
  let chunks: Buffer[] = [];
  let size = 0;
  const onData = (chunk: Buffer) => {
    // HTTP's methods are letters: anything else (TLS, a WebSocket frame, noise) is not for us.
    if (size === 0 && !(chunk[0]! >= 0x41 && chunk[0]! <= 0x5a)) return void socket.destroy();
    chunks.push(chunk);
    size += chunk.length;
    const all = chunks.length === 1 ? chunk : Buffer.concat(chunks, size);
    chunks = [all];
    // Search only where the end may be: the last chunk and 3 bytes before it.
    const end = all.indexOf('\r\n\r\n', Math.max(0, size - chunk.length - 3), 'latin1');
    if (end === -1) {
      if (size > MAX_HEAD_BYTES) {
        socket.off('data', onData);
        socket.end(httpAnswer(431, 'the request head is too large'));
      }
      return;
    }
    socket.off('data', onData);
    const head = end <= MAX_HEAD_BYTES ? parseRequestHead(all.toString('latin1', 0, end)) : undefined;
    if (!head) return void socket.destroy();
    onHead(head, all.subarray(end + 4));
  };
  socket.on('data', onData);
}

/** Why an upgrade request is refused (status and text), or undefined when it may go on. */
export function checkUpgrade(head: RequestHead): { status: number; text: string; headers?: string } | undefined {
  // The same checks, and answers, as ws's WebSocketServer.handleUpgrade.
  if (head.method !== 'GET') return { status: 405, text: 'Invalid HTTP method' };
  if ((head.headers.upgrade ?? '').toLowerCase() !== 'websocket') return { status: 400, text: 'Invalid Upgrade header' };
  if (!/^[+/0-9A-Za-z]{22}==$/.test(head.headers['sec-websocket-key'] ?? '')) return { status: 400, text: 'Missing or invalid Sec-WebSocket-Key header' };
  const version = head.headers['sec-websocket-version'];
  if (version !== '13' && version !== '8') return { status: 400, text: 'Missing or invalid Sec-WebSocket-Version header', headers: 'sec-websocket-version: 13, 8\r\n' };
  return undefined;
}

/** Whether a request asks to switch protocols (Upgrade header and `upgrade` among Connection's tokens), as Node's HTTP parser decides. */
export function wantsUpgrade(head: RequestHead): boolean {
  return head.headers.upgrade !== undefined && (head.headers.connection ?? '').split(',').some((t) => t.trim().toLowerCase() === 'upgrade');
}

/** Answers 101 and returns the connection; the caller has checked the request (checkUpgrade). */
export function acceptUpgrade(socket: net.Socket, head: RequestHead, rest: Buffer, opts: { maxPayload: number }): WebSocketConnection {
  socket.write(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${acceptKey(head.headers['sec-websocket-key']!)}\r\n\r\n`);
  return new WebSocketConnection(socket, rest, opts.maxPayload);
}

class ProtocolError extends Error {
  constructor(
    readonly code: number,
    message: string,
  ) {
    super(message);
  }
}

const isUtf8: (b: Buffer) => boolean = (() => {
  const fromNode = (require('node:buffer') as { isUtf8?: (b: Buffer) => boolean }).isUtf8;
  return typeof fromNode === 'function' ? fromNode : (b: Buffer) => Buffer.from(b.toString('utf8'), 'utf8').equals(b);
})();

function validCloseCode(code: number): boolean {
  return (code >= 1000 && code <= 1014 && code !== 1004 && code !== 1005 && code !== 1006) || (code >= 3000 && code <= 4999);
}

/**
 * One upgraded connection: emits 'message' (data: Buffer, isBinary), 'error' (a protocol
 * violation by the peer, before the connection closes with its code) and 'close' (code,
 * reason: Buffer) once the socket is gone. The surface server.ts uses of ws's WebSocket.
 */
export class WebSocketConnection extends EventEmitter {
  static readonly CONNECTING = 0;
  static readonly OPEN = 1;
  static readonly CLOSING = 2;
  static readonly CLOSED = 3;
  readyState = WebSocketConnection.OPEN;
  private chunks: Buffer[] = [];
  private buffered = 0;
  /** The message being assembled from fragments: its opcode and parts. */
  private fragments: Buffer[] = [];
  private fragmentsOpcode = 0;
  private fragmentsSize = 0;
  private closeSent = false;
  private closeReceived = false;
  private closeCode = 1006;
  private closeReason = Buffer.alloc(0);
  private closeTimer: NodeJS.Timeout | undefined;
  /** Stops reading frames (after a close frame or a violation). */
  private reading = true;

  constructor(
    private readonly socket: net.Socket,
    head: Buffer,
    private readonly maxPayload: number,
  ) {
    super();
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.once('close', () => {
      clearTimeout(this.closeTimer);
      this.readyState = WebSocketConnection.CLOSED;
      this.emit('close', this.closeCode, this.closeReason);
    });
    if (head.length) process.nextTick(() => this.onData(head));
  }

  /** Sends a text (string) or binary (Buffer) message; `cb` once it is written to the socket. */
  send(data: string | Buffer, cb?: (err?: Error | null) => void): void {
    if (this.readyState !== WebSocketConnection.OPEN) {
      if (cb) process.nextTick(cb, new Error('WebSocket is not open'));
      return;
    }
    const binary = typeof data !== 'string';
    this.writeFrame(binary ? 0x2 : 0x1, binary ? data : Buffer.from(data, 'utf8'), cb);
  }

  /** Starts the closing handshake; the socket ends when the peer answers, or is cut after CLOSE_TIMEOUT_MS. */
  close(code?: number, reason = ''): void {
    if (this.readyState === WebSocketConnection.CLOSED) return;
    if (this.closeSent) {
      if (this.closeReceived) this.socket.end();
      return;
    }
    this.readyState = WebSocketConnection.CLOSING;
    this.closeSent = true;
    let payload = Buffer.alloc(0);
    if (code !== undefined) {
      const text = Buffer.from(reason, 'utf8');
      payload = Buffer.alloc(2 + text.length);
      payload.writeUInt16BE(code, 0);
      text.copy(payload, 2);
    }
    this.writeFrame(0x8, payload, () => {
      if (this.closeReceived) this.socket.end();
    });
    this.closeTimer = setTimeout(() => this.socket.destroy(), CLOSE_TIMEOUT_MS);
    this.closeTimer.unref();
  }

  /** Cuts the socket at once. */
  terminate(): void {
    this.readyState = WebSocketConnection.CLOSING;
    this.socket.destroy();
  }

  private writeFrame(opcode: number, payload: Buffer, cb?: (err?: Error | null) => void): void {
    const len = payload.length;
    const headLen = len < 126 ? 2 : len < 65536 ? 4 : 10;
    const frame = Buffer.allocUnsafe(headLen + (len < 16384 ? len : 0));
    frame[0] = 0x80 | opcode;
    if (len < 126) frame[1] = len;
    else if (len < 65536) {
      frame[1] = 126;
      frame.writeUInt16BE(len, 2);
    } else {
      frame[1] = 127;
      frame.writeUInt32BE(Math.floor(len / 2 ** 32), 2);
      frame.writeUInt32BE(len >>> 0, 6);
    }
    // Small frames in one write; big ones (artefact chunks) without copying their payload.
    if (len < 16384) {
      payload.copy(frame, headLen);
      this.socket.write(frame, cb);
    } else {
      this.socket.cork();
      this.socket.write(frame);
      this.socket.write(payload, cb);
      this.socket.uncork();
    }
  }

  private onData(chunk: Buffer): void {
    if (!this.reading) return;
    this.chunks.push(chunk);
    this.buffered += chunk.length;
    try {
      while (this.reading && this.parseFrame());
    } catch (err) {
      if (!(err instanceof ProtocolError)) throw err;
      this.reading = false;
      this.chunks = [];
      this.buffered = 0;
      this.emit('error', err);
      this.close(err.code, '');
    }
  }

  /** The first n buffered bytes (n ≤ what is buffered), without consuming them. */
  private peek(n: number): Buffer {
    if (this.chunks[0]!.length >= n) return this.chunks[0]!;
    const all = Buffer.concat(this.chunks, this.buffered);
    this.chunks = [all];
    return all;
  }

  /** Consumes n buffered bytes. */
  private take(n: number): Buffer {
    this.buffered -= n;
    const first = this.chunks[0]!;
    if (first.length === n) {
      this.chunks.shift();
      return first;
    }
    if (first.length > n) {
      this.chunks[0] = first.subarray(n);
      return first.subarray(0, n);
    }
    const all = Buffer.concat(this.chunks);
    this.chunks = all.length > n ? [all.subarray(n)] : [];
    return all.subarray(0, n);
  }

  /** Parses one complete frame off the buffer; false when more bytes are needed. */
  private parseFrame(): boolean {
    if (this.buffered < 2) return false;
    let b = this.peek(2);
    const fin = (b[0]! & 0x80) !== 0;
    const opcode = b[0]! & 0x0f;
    if ((b[0]! & 0x70) !== 0) throw new ProtocolError(1002, 'RSV bits must be clear: this agent takes no extensions');
    if ((b[1]! & 0x80) === 0) throw new ProtocolError(1002, 'MASK must be set');
    const control = opcode >= 0x8;
    if (control) {
      if (opcode > 0xa) throw new ProtocolError(1002, `invalid opcode ${opcode}`);
      if (!fin) throw new ProtocolError(1002, 'FIN must be set on a control frame');
    } else if (opcode === 0x0) {
      if (this.fragmentsOpcode === 0) throw new ProtocolError(1002, 'invalid opcode 0: no message to continue');
    } else if (opcode === 0x1 || opcode === 0x2) {
      if (this.fragmentsOpcode !== 0) throw new ProtocolError(1002, `invalid opcode ${opcode}: a fragmented message is unfinished`);
    } else throw new ProtocolError(1002, `invalid opcode ${opcode}`);
    const len7 = b[1]! & 0x7f;
    if (control && len7 > 125) throw new ProtocolError(1002, `invalid payload length ${len7} for a control frame`);
    const lenBytes = len7 === 126 ? 2 : len7 === 127 ? 8 : 0;
    const headLen = 2 + lenBytes + 4;
    if (this.buffered < headLen) return false;
    b = this.peek(headLen);
    let len = len7;
    if (len7 === 126) len = b.readUInt16BE(2);
    else if (len7 === 127) {
      const hi = b.readUInt32BE(2);
      if (hi > 2 ** 21 - 1) throw new ProtocolError(1009, 'Unsupported WebSocket frame: payload length > 2^53 - 1');
      len = hi * 2 ** 32 + b.readUInt32BE(6);
    }
    if (!control && this.fragmentsSize + len > this.maxPayload) throw new ProtocolError(1009, 'Max payload size exceeded');
    if (this.buffered < headLen + len) return false;
    const mask = Buffer.from(b.subarray(2 + lenBytes, headLen));
    this.take(headLen);
    // A copy: the frame's bytes may share memory with the next frame's, and are unmasked in place.
    const payload = len === 0 ? Buffer.alloc(0) : Buffer.from(this.take(len));
    for (let i = 0; i < len; i++) payload[i]! ^= mask[i & 3]!;
    if (control) this.onControl(opcode, payload);
    else this.onDataFrame(opcode, fin, payload);
    return true;
  }

  private onDataFrame(opcode: number, fin: boolean, payload: Buffer): void {
    if (!fin || this.fragmentsOpcode !== 0) {
      if (opcode !== 0) this.fragmentsOpcode = opcode;
      this.fragments.push(payload);
      this.fragmentsSize += payload.length;
      if (!fin) return;
      opcode = this.fragmentsOpcode;
      payload = Buffer.concat(this.fragments, this.fragmentsSize);
      this.fragments = [];
      this.fragmentsOpcode = 0;
      this.fragmentsSize = 0;
    }
    if (opcode === 0x1 && !isUtf8(payload)) throw new ProtocolError(1007, 'invalid UTF-8 sequence');
    this.emit('message', payload, opcode === 0x2);
  }

  private onControl(opcode: number, payload: Buffer): void {
    if (opcode === 0x9) {
      if (this.readyState === WebSocketConnection.OPEN) this.writeFrame(0xa, payload);
      return;
    }
    if (opcode === 0xa) return;
    // A close frame: echo its code (as ws does), and end the socket once ours is written.
    if (payload.length === 1) throw new ProtocolError(1002, 'invalid payload length 1 for a close frame');
    let code: number | undefined;
    if (payload.length >= 2) {
      code = payload.readUInt16BE(0);
      if (!validCloseCode(code)) throw new ProtocolError(1002, `invalid status code ${code}`);
      const reason = payload.subarray(2);
      if (!isUtf8(reason)) throw new ProtocolError(1007, 'invalid UTF-8 sequence in the close reason');
      this.closeReason = Buffer.from(reason);
    }
    this.closeReceived = true;
    this.closeCode = code ?? 1005;
    this.reading = false;
    if (this.closeSent) this.socket.end();
    else this.close(code);
  }
}
