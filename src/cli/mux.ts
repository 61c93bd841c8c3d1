// The mux transport: many agent sockets over one byte stream (one ssh channel), so a run
// over fifty processes on a host costs one channel and one remote `ispy bridge --mux`,
// not fifty of each. This file is its wire (the hello, the frames, the limits) and the
// client's end; the far end is `bridgeMux()` in bridge.ts.
//
//   client (ssh.ts)                    ssh channel                 ispy bridge --mux
//   ws ─ MuxStream 1 ─┐                                        ┌─ net.Socket /p/a.sock
//   ws ─ MuxStream 2 ─┼─ MuxSession ═ stdin/stdout of ssh ═ ───┼─ net.Socket /p/b.sock
//   ws ─ MuxStream 3 ─┘                                        └─ net.Socket /p/c.sock
//
// The bridge speaks first, one line: `ispy-mux 1\n` (the version). A client that does not
// see it in time (an older ispy that knows no --mux and exits, or something else) falls
// back to one channel per socket. After it, both ways, frames:
//
//   [u32 stream id][u8 type][u32 payload length][payload]      big-endian, 9-byte header
//
//   1 open   client → bridge  payload: the socket path (UTF-8); the client picks the id
//   2 data   both ways        payload: bytes for / from the socket (at most 64 KiB)
//   3 end    both ways        no more data from the sender (half-close); empty
//   4 close  both ways        the stream is gone (socket closed / client let go); empty
//   5 error  bridge → client  the stream failed, payload the reason (UTF-8); nothing follows
//
// A frame longer than MAX_PAYLOAD_BYTES or of an unknown type ends the whole channel:
// neither end can find the next frame boundary after it. Frames for a stream id that is
// no longer open are dropped (they crossed a close on the way).
//
// Backpressure is by pausing the source: when a reader cannot keep up, the shared stream
// feeding it is paused until it drains. Every stream on the channel waits meanwhile, which
// suits ispy's traffic (small calls; the big artefacts are read as fast as they arrive).

import { Duplex, type Readable, type Writable } from 'node:stream';

export const MUX_VERSION = 1;
/** The bridge's first bytes: the client's proof that the far end speaks this protocol. */
export const MUX_HELLO = `ispy-mux ${MUX_VERSION}\n`;
/** Longest hello line read before deciding the far end is something else. */
const MAX_HELLO_BYTES = 64;

export const HEADER_BYTES = 9;
/** Largest payload of one frame; data is split to fit. Both ends are ispy's, so one limit. */
export const MAX_PAYLOAD_BYTES = 64 * 1024;
/** Longest socket path an open frame may carry (a UNIX socket path is at most ~108 bytes). */
export const MAX_PATH_BYTES = 4096;

export const FrameType = { open: 1, data: 2, end: 3, close: 4, error: 5 } as const;
export type FrameType = (typeof FrameType)[keyof typeof FrameType];
const TYPE_NAMES = Object.fromEntries(Object.entries(FrameType).map(([name, n]) => [n, name])) as Record<number, string>;

export interface Frame {
  id: number;
  type: FrameType;
  payload: Buffer;
}

/** A frame that cannot be read: the channel carrying it is over. */
export class MuxError extends Error {
  override name = 'MuxError';
}

const EMPTY = Buffer.alloc(0);

/** One frame as bytes. Data longer than a frame may carry goes through dataFrames(). */
export function encodeFrame(id: number, type: FrameType, payload: Buffer = EMPTY): Buffer {
  if (payload.length > MAX_PAYLOAD_BYTES) throw new MuxError(`mux frame payload of ${payload.length} bytes is over the limit of ${MAX_PAYLOAD_BYTES}`);
  const header = Buffer.allocUnsafe(HEADER_BYTES);
  header.writeUInt32BE(id, 0);
  header.writeUInt8(type, 4);
  header.writeUInt32BE(payload.length, 5);
  return payload.length === 0 ? header : Buffer.concat([header, payload]);
}

/** A chunk of any size as data frames of at most MAX_PAYLOAD_BYTES, in one buffer (one write). */
export function dataFrames(id: number, chunk: Buffer): Buffer {
  if (chunk.length <= MAX_PAYLOAD_BYTES) return encodeFrame(id, FrameType.data, chunk);
  const parts: Buffer[] = [];
  for (let at = 0; at < chunk.length; at += MAX_PAYLOAD_BYTES) parts.push(encodeFrame(id, FrameType.data, chunk.subarray(at, at + MAX_PAYLOAD_BYTES)));
  return Buffer.concat(parts);
}

/** Frames out of a byte stream cut anywhere. Throws MuxError on a frame it cannot accept. */
export class FrameDecoder {
  private pending: Buffer = EMPTY;

  push(chunk: Buffer): Frame[] {
    const buf = this.pending.length > 0 ? Buffer.concat([this.pending, chunk]) : chunk;
    const frames: Frame[] = [];
    let at = 0;
    while (buf.length - at >= HEADER_BYTES) {
      const id = buf.readUInt32BE(at);
      const type = buf.readUInt8(at + 4);
      const length = buf.readUInt32BE(at + 5);
      // Checked on the header alone, so an oversized frame is refused before it is buffered.
      if (TYPE_NAMES[type] === undefined) throw new MuxError(`unknown mux frame type ${type} on stream ${id} (expected 1-5: open, data, end, close, error)`);
      if (length > MAX_PAYLOAD_BYTES) throw new MuxError(`mux frame on stream ${id} is ${length} bytes, over the limit of ${MAX_PAYLOAD_BYTES}`);
      if (buf.length - at - HEADER_BYTES < length) break;
      frames.push({ id, type: type as FrameType, payload: buf.subarray(at + HEADER_BYTES, at + HEADER_BYTES + length) });
      at += HEADER_BYTES + length;
    }
    this.pending = at === buf.length ? EMPTY : buf.subarray(at);
    return frames;
  }
}

/**
 * The methods the WebSocket layer calls on its socket (http.ClientRequest sets them up);
 * a stream over stdio or a mux channel has no such knobs, so they do nothing.
 */
export function likeSocket<T extends Duplex>(stream: T): T {
  const s = stream as unknown as Record<string, unknown>;
  for (const method of ['setTimeout', 'setNoDelay', 'setKeepAlive', 'ref', 'unref']) s[method] = () => stream;
  return stream;
}

/** One agent socket's byte stream inside a MuxSession. */
export class MuxStream extends Duplex {
  /** Why the bridge could not serve this stream (its words: "stale socket …"), once it said. */
  remoteError: string | undefined;
  /** The bridge has said close or error: nothing more will come, and nothing need be sent. */
  remoteClosed = false;

  constructor(
    private readonly session: MuxSession,
    readonly id: number,
  ) {
    super({ allowHalfOpen: true });
  }

  override _read(): void {
    this.session.readable(this);
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (err?: Error | null) => void): void {
    if (this.remoteClosed) return callback();
    this.session.send(dataFrames(this.id, chunk), callback);
  }

  override _final(callback: (err?: Error | null) => void): void {
    if (!this.remoteClosed) this.session.send(encodeFrame(this.id, FrameType.end));
    callback();
  }

  override _destroy(err: Error | null, callback: (err?: Error | null) => void): void {
    this.session.forget(this, !this.remoteClosed);
    callback(err);
  }
}

/**
 * The client's end of one mux channel: opens streams, routes frames to them, and fails
 * them all with one reason when the channel goes. `ready` says whether the far end
 * greeted with the mux hello within the wait; until it has, nothing is sent.
 */
export class MuxSession {
  readonly ready: Promise<boolean>;
  private readonly streams = new Map<number, MuxStream>();
  private readonly decoder = new FrameDecoder();
  /** Streams whose reader is full: the channel's input stays paused while any is. */
  private readonly full = new Set<MuxStream>();
  private drainWaiters: ((err?: Error | null) => void)[] = [];
  private nextId = 1;
  private greeted = false;
  private hello = '';
  private failure: string | undefined;

  constructor(
    private readonly input: Readable,
    private readonly output: Writable,
    helloWaitMs: number,
  ) {
    output.on('error', () => {});
    output.on('drain', () => this.flushWaiters());
    this.ready = new Promise<boolean>((resolve) => {
      const timer = setTimeout(() => settle(false), helloWaitMs);
      const settle = (ok: boolean) => {
        clearTimeout(timer);
        resolve(ok);
      };
      this.onHello = settle;
    });
    // The owner calls fail() when the channel ends: it knows why (ssh's exit status, stderr).
    input.on('data', (chunk: Buffer) => this.receive(chunk));
    input.on('error', () => {});
  }

  private onHello: (ok: boolean) => void = () => {};

  /** Why the channel is over, once it is. */
  get closedWith(): string | undefined {
    return this.failure;
  }

  /** A stream to the socket at `file` on the far host. */
  open(file: string): MuxStream {
    const stream = likeSocket(new MuxStream(this, this.nextId++));
    if (this.failure !== undefined) {
      stream.remoteError = this.failure;
      stream.remoteClosed = true;
      process.nextTick(() => stream.destroy(new Error(this.failure)));
      return stream;
    }
    this.streams.set(stream.id, stream);
    this.send(encodeFrame(stream.id, FrameType.open, Buffer.from(file, 'utf8')));
    return stream;
  }

  /** Ends the channel politely: the bridge sees its stdin end, closes every socket and exits. */
  end(): void {
    this.output.end();
  }

  /** Fails every open stream with `reason`; later opens fail with it at once. Idempotent. */
  fail(reason: string): void {
    if (this.failure === undefined) this.failure = reason;
    this.onHello(false);
    for (const stream of [...this.streams.values()]) {
      stream.remoteError ??= this.failure;
      stream.remoteClosed = true;
      stream.destroy(new Error(stream.remoteError));
    }
    this.flushWaiters(new Error(this.failure));
  }

  /** @internal Writes to the channel; `callback` waits while the channel is congested. */
  send(bytes: Buffer, callback?: (err?: Error | null) => void): void {
    if (this.failure !== undefined) return callback?.(new Error(this.failure));
    const ok = this.output.write(bytes);
    if (!callback) return;
    if (ok) callback();
    else this.drainWaiters.push(callback);
  }

  /** @internal A stream's reader wants more: resume the channel once no reader is full. */
  readable(stream: MuxStream): void {
    if (this.full.delete(stream) && this.full.size === 0) this.input.resume();
  }

  /** @internal A stream is gone on this side; tell the bridge unless it already knows. */
  forget(stream: MuxStream, tellBridge: boolean): void {
    if (this.streams.get(stream.id) !== stream) return;
    this.streams.delete(stream.id);
    this.readable(stream);
    if (tellBridge && this.failure === undefined) this.send(encodeFrame(stream.id, FrameType.close));
  }

  private flushWaiters(err?: Error): void {
    const waiters = this.drainWaiters;
    this.drainWaiters = [];
    for (const w of waiters) w(err);
  }

  private receive(chunk: Buffer): void {
    if (this.failure !== undefined) return;
    if (!this.greeted) {
      // The hello line, possibly split across chunks, possibly followed by frames.
      const newline = chunk.indexOf(10);
      const take = newline < 0 ? chunk : chunk.subarray(0, newline + 1);
      this.hello += take.toString('latin1');
      if (newline < 0) {
        if (this.hello.length > MAX_HELLO_BYTES) this.fail('the bridge did not greet with the mux hello');
        return;
      }
      if (this.hello !== MUX_HELLO) return this.fail(`the bridge greeted with ${JSON.stringify(this.hello.slice(0, MAX_HELLO_BYTES))}, not ${JSON.stringify(MUX_HELLO)}`);
      this.greeted = true;
      this.onHello(true);
      chunk = chunk.subarray(newline + 1);
      if (chunk.length === 0) return;
    }
    let frames: Frame[];
    try {
      frames = this.decoder.push(chunk);
    } catch (err) {
      return this.fail(`the mux channel is broken: ${(err as Error).message}`);
    }
    for (const frame of frames) this.dispatch(frame);
  }

  private dispatch({ id, type, payload }: Frame): void {
    if (type === FrameType.open) return this.fail(`the bridge sent an open frame (stream ${id}); only the client opens streams`);
    const stream = this.streams.get(id);
    if (!stream) return; // closed here while the frame was on its way
    switch (type) {
      case FrameType.data:
        if (!stream.push(payload)) {
          this.full.add(stream);
          this.input.pause();
        }
        return;
      case FrameType.end:
        stream.push(null);
        return;
      case FrameType.close:
        stream.remoteClosed = true;
        stream.push(null);
        // Whatever the reader has not taken yet is still delivered; then the stream goes.
        if (stream.readableEnded) stream.destroy();
        else stream.once('end', () => stream.destroy());
        return;
      case FrameType.error:
        stream.remoteError = payload.toString('utf8');
        stream.remoteClosed = true;
        stream.destroy(new Error(stream.remoteError));
        return;
    }
  }
}
