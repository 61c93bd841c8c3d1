// `ispy bridge <socket>`: stdin/stdout ↔ the agent's UNIX socket, byte for byte. It
// knows nothing of WebSocket or ispy's protocol; it is the far end of
// `ssh host ispy bridge /path.sock` or `kubectl exec pod -- ispy bridge …`, so a client
// on another machine reaches the socket with no TCP port opened anywhere.
//
// It ends when either side does: stdin closing half-closes the socket (the agent then
// closes too, or is cut off after a grace period); the socket closing ends stdout.
//
// `ispy bridge --mux` is the same for many sockets at once over one stdin/stdout, in the
// framed protocol of mux.ts: the client opens a stream per socket, each fails or ends on
// its own, and stdin ending closes them all. It lets `ispy run` reach every agent on a
// host through one ssh channel and one Node process.

import * as net from 'node:net';
import { Transform } from 'node:stream';
import { ViaInjector, viaFromEnv } from './via';
import { EXIT_FAILED, EXIT_OK } from './report';
import { FrameDecoder, FrameType, MAX_PATH_BYTES, MUX_HELLO, dataFrames, encodeFrame, type Frame } from './mux';

const HALF_CLOSE_GRACE_MS = 2000;
/** Sockets open at once through one --mux bridge at most (each is a file descriptor). */
const MAX_MUX_STREAMS = 1024;

function reachError(file: string, err: NodeJS.ErrnoException): string {
  switch (err.code) {
    case 'ENOENT':
      return `no agent socket at ${file} (no such file); \`ispy ps\` lists live agents`;
    case 'ECONNREFUSED':
      return `stale socket ${file}: nothing is listening on it (the process that created it is gone)`;
    case 'EACCES':
    case 'EPERM':
      return `permission denied for ${file}: the socket belongs to another user; run ispy bridge as that user`;
    case 'ENOTSOCK':
      return `${file} is not a socket`;
    default:
      return `cannot connect to ${file}: ${err.message}`;
  }
}

export interface BridgeIO {
  input: NodeJS.ReadableStream & { destroy?(): void };
  output: NodeJS.WritableStream;
  error: NodeJS.WritableStream;
}

/** The client's bytes with the ssh origin added to its upgrade request (via.ts). */
function withVia(input: NodeJS.ReadableStream, via: string): Transform {
  const injector = new ViaInjector(via);
  const t = new Transform({
    transform(chunk: Buffer, _enc, done) {
      const out = injector.push(chunk);
      done(null, out.length ? out : undefined);
    },
    flush(done) {
      const rest = injector.flush();
      done(null, rest.length ? rest : undefined);
    },
  });
  input.pipe(t);
  return t;
}

/** Pipes until either side closes; resolves with the exit status. `via`: the ssh origin to state (default: from SSH_CONNECTION). */
export function bridge(file: string, io: BridgeIO, via = viaFromEnv(process.env)): Promise<number> {
  return new Promise((resolve) => {
    const sock = net.connect(file);
    const source = via ? withVia(io.input, via) : io.input;
    let connected = false;
    let done = false;
    const finish = (status: number) => {
      if (done) return;
      done = true;
      source.unpipe(sock);
      // stdin may be a pipe whose writer stays open: stop reading so it cannot hold us.
      io.input.pause();
      io.input.destroy?.();
      resolve(status);
    };
    sock.once('error', (err: NodeJS.ErrnoException) => {
      if (!connected) {
        io.error.write(`ispy bridge: ${reachError(file, err)}\n`);
        finish(EXIT_FAILED);
      } else {
        io.error.write(`ispy bridge: connection to ${file} failed: ${err.message}\n`);
      }
    });
    // The reader went away (EPIPE): nobody is left to deliver to.
    io.output.on('error', () => sock.destroy());
    sock.once('connect', () => {
      connected = true;
      source.pipe(sock);
      sock.pipe(io.output, { end: false });
    });
    io.input.once('end', () => {
      if (!connected) return;
      // Half-close: the agent sees EOF and closes its side, flushing what it had.
      const t = setTimeout(() => sock.destroy(), HALF_CLOSE_GRACE_MS);
      t.unref();
    });
    sock.once('close', (hadError) => finish(hadError && !connected ? EXIT_FAILED : EXIT_OK));
  });
}

interface MuxSocket {
  sock: net.Socket;
  file: string;
  via: ViaInjector | undefined;
  connected: boolean;
  /** The client said close, or we sent error: no close frame is owed. */
  quiet: boolean;
  grace?: NodeJS.Timeout;
}

/**
 * `ispy bridge --mux`: many sockets over stdin/stdout (frames of mux.ts). Resolves with the
 * exit status once stdin ends (0) or carries a frame it cannot read (1, said on stderr).
 */
export function bridgeMux(io: BridgeIO, via = viaFromEnv(process.env)): Promise<number> {
  return new Promise((resolve) => {
    const streams = new Map<number, MuxSocket>();
    const decoder = new FrameDecoder();
    /** Sockets whose write side is full: stdin (every stream's source) waits for them. */
    const full = new Set<number>();
    let outputFull = false;
    let done = false;

    const send = (bytes: Buffer) => {
      if (done || io.output.write(bytes)) return;
      if (outputFull) return;
      // The client is not reading as fast as the agents talk: hold every socket until it does.
      outputFull = true;
      for (const s of streams.values()) s.sock.pause();
      io.output.once('drain', () => {
        outputFull = false;
        if (!done) for (const s of streams.values()) s.sock.resume();
      });
    };
    const unblock = (id: number) => {
      if (full.delete(id) && full.size === 0 && !done) io.input.resume();
    };
    const finish = (status: number) => {
      if (done) return;
      done = true;
      for (const s of streams.values()) {
        clearTimeout(s.grace);
        s.sock.destroy();
      }
      streams.clear();
      io.input.pause();
      io.input.destroy?.();
      resolve(status);
    };

    const open = (id: number, file: string) => {
      if (streams.has(id)) return send(encodeFrame(id, FrameType.error, Buffer.from(`stream ${id} is already open; the client picks a new id for each socket`)));
      if (streams.size >= MAX_MUX_STREAMS) return send(encodeFrame(id, FrameType.error, Buffer.from(`too many sockets open through one bridge (${MAX_MUX_STREAMS}); close some first`)));
      if (file === '' || Buffer.byteLength(file) > MAX_PATH_BYTES) return send(encodeFrame(id, FrameType.error, Buffer.from(`bad socket path in open frame: expected 1 to ${MAX_PATH_BYTES} bytes`)));
      const s: MuxSocket = { sock: net.connect(file), file, via: via ? new ViaInjector(via) : undefined, connected: false, quiet: false };
      streams.set(id, s);
      if (outputFull) s.sock.pause();
      s.sock.once('connect', () => (s.connected = true));
      s.sock.on('data', (d: Buffer) => send(dataFrames(id, d)));
      s.sock.once('end', () => send(encodeFrame(id, FrameType.end)));
      s.sock.on('drain', () => unblock(id));
      s.sock.once('error', (err: NodeJS.ErrnoException) => {
        if (s.quiet) return;
        s.quiet = true;
        send(encodeFrame(id, FrameType.error, Buffer.from(s.connected ? `connection to ${file} failed: ${err.message}` : reachError(file, err))));
      });
      s.sock.once('close', () => {
        clearTimeout(s.grace);
        if (streams.get(id) === s) streams.delete(id);
        unblock(id);
        if (!s.quiet) send(encodeFrame(id, FrameType.close));
      });
    };

    const handle = ({ id, type, payload }: Frame) => {
      if (type === FrameType.open) return open(id, payload.toString('utf8'));
      const s = streams.get(id);
      if (!s) return; // closed here while the frame was on its way
      switch (type) {
        case FrameType.data: {
          const bytes = s.via ? s.via.push(payload) : payload;
          if (bytes.length && !s.sock.write(bytes)) {
            full.add(id);
            io.input.pause();
          }
          return;
        }
        case FrameType.end:
          // Half-close, as the single bridge does when its stdin ends.
          s.sock.end(s.via?.flush() ?? Buffer.alloc(0));
          s.grace = setTimeout(() => s.sock.destroy(), HALF_CLOSE_GRACE_MS);
          s.grace.unref();
          return;
        default:
          // close (or an error frame, which only the bridge should send): let go of it.
          s.quiet = true;
          s.sock.destroy();
      }
    };

    io.input.on('data', (chunk: Buffer) => {
      if (done) return;
      let frames: Frame[];
      try {
        frames = decoder.push(chunk);
      } catch (err) {
        io.error.write(`ispy bridge: ${(err as Error).message}; closing every socket\n`);
        return finish(EXIT_FAILED);
      }
      for (const frame of frames) handle(frame);
    });
    io.input.once('end', () => finish(EXIT_OK));
    io.input.once('close', () => finish(EXIT_OK));
    // The reader went away (EPIPE): nobody is left to deliver to.
    io.output.on('error', () => finish(EXIT_OK));
    io.output.write(MUX_HELLO);
  });
}
