// Where a bridged connection came from. `ispy bridge` runs on the agent's host under sshd;
// the client at the other end states its own user, host and pid in its hello, and this
// adds what only the bridge can see: the ssh origin (SSH_CONNECTION), as a header of the
// client's WebSocket upgrade request, which the agent writes into its audit log. A header
// of the same name sent by the client is dropped, so the origin is the bridge's word.
// Only the request head is read; every byte after it passes untouched.

import { VIA_HEADER } from '../protocol/index';

/** The origin `ispy bridge` states for its connections, or undefined outside an ssh session. */
export function viaFromEnv(env: NodeJS.ProcessEnv): string | undefined {
  const parts = (env.SSH_CONNECTION ?? env.SSH_CLIENT ?? '').trim().split(/\s+/);
  if (!parts[0]) return undefined;
  return `ssh from ${parts[0]}${parts[1] ? ` port ${parts[1]}` : ''}`.replace(/[^\x20-\x7e]/g, '?').slice(0, 200);
}

/** A request head longer than this is not the upgrade request ispy sends: left alone. */
const MAX_HEAD_BYTES = 16 * 1024;
const EMPTY = Buffer.alloc(0);
const HEAD_END = Buffer.from('\r\n\r\n');

/** Rewrites the request head at the start of one client's byte stream. */
export class ViaInjector {
  /** Bytes held until the head is complete; undefined once it has passed. */
  private held: Buffer | undefined = EMPTY;

  constructor(private readonly via: string) {}

  /** The bytes to forward for this chunk (possibly none yet). */
  push(chunk: Buffer): Buffer {
    if (!this.held) return chunk;
    const buf = this.held.length ? Buffer.concat([this.held, chunk]) : chunk;
    const end = buf.indexOf(HEAD_END);
    if (end === -1) {
      if (buf.length <= MAX_HEAD_BYTES) {
        this.held = buf;
        return EMPTY;
      }
      this.held = undefined;
      return buf;
    }
    this.held = undefined;
    const [requestLine, ...headers] = buf.subarray(0, end).toString('latin1').split('\r\n');
    const name = `${VIA_HEADER}:`;
    const kept = headers.filter((h) => !h.toLowerCase().startsWith(name));
    return Buffer.concat([Buffer.from([requestLine, ...kept, `${VIA_HEADER}: ${this.via}`].join('\r\n'), 'latin1'), buf.subarray(end)]);
  }

  /** What is still held when the client's stream ends (a head that never completed). */
  flush(): Buffer {
    const rest = this.held ?? EMPTY;
    this.held = undefined;
    return rest;
  }
}
