// `ispy bridge <socket>`: stdin/stdout ↔ the agent's UNIX socket, byte for byte. It
// knows nothing of WebSocket or ispy's protocol; it is the far end of
// `ssh host ispy bridge /path.sock` or `kubectl exec pod -- ispy bridge …`, so a client
// on another machine reaches the socket with no TCP port opened anywhere.
//
// It ends when either side does: stdin closing half-closes the socket (the agent then
// closes too, or is cut off after a grace period); the socket closing ends stdout.

import * as net from 'node:net';
import { EXIT_FAILED, EXIT_OK } from './report';

const HALF_CLOSE_GRACE_MS = 2000;

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

/** Pipes until either side closes; resolves with the exit status. */
export function bridge(file: string, io: BridgeIO): Promise<number> {
  return new Promise((resolve) => {
    const sock = net.connect(file);
    let connected = false;
    let done = false;
    const finish = (status: number) => {
      if (done) return;
      done = true;
      io.input.unpipe(sock);
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
      io.input.pipe(sock);
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
