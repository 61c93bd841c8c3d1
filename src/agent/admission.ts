// Runs in the agent worker. Which client sockets the agent holds, so that it can never take
// the app's file descriptors: every socket counts against one limit from the moment it is
// accepted, upgraded or not, and that limit is held to a share of RLIMIT_NOFILE. A socket
// must finish its WebSocket handshake within HANDSHAKE_TIMEOUT_MS (server.ts holds the
// hello's deadline). At the limit a newcomer (an operator arriving in an incident) takes the
// place of a socket stuck before its hello for CONNECTING_GRACE_MS, else of the connection
// idle longest, if idle for limits.idleBeforeEviction (a script between two of its commands
// is not idle); when none can give way, the refusal names who holds the places.

import * as fs from 'node:fs';
import type * as net from 'node:net';
import type { AgentConnections, ConnectedClient } from '../plugin/define';
import type { ClientIdentity } from './audit';
import { agentLogThrottled } from './log';

export interface AdmissionOptions {
  maxConnections: number;
  /** How long a ready connection must have been idle (no frame, no call) before it gives its place to a newcomer. */
  idleBeforeEvictionMs: number;
  /** Reads the process's RLIMIT_NOFILE (soft), when it can. */
  fdLimit(): number | undefined;
}

/** What admission needs of an upgraded connection (server.ts's Connection). */
export interface AdmittedConnection {
  readonly isReady: boolean;
  readonly identity: ClientIdentity;
  /** Calls (streams included) running on it now. */
  readonly running: number;
  /** Its last frame or finished call, ms since the epoch. */
  readonly lastActive: number;
  /** Gives its place away: says why, closes, cuts the socket if the peer lingers. */
  evict(limit: number): void;
  close(code: number, reason: string): void;
}

/** From accept to a completed WebSocket upgrade. */
export const HANDSHAKE_TIMEOUT_MS = 5_000;
/** The agent's connections take at most this fraction (1/n) of the process's file descriptors. */
export const FD_SHARE_DIVISOR = 8;
/** A socket younger than this that has not said hello is a client still connecting: it keeps its place. */
export const CONNECTING_GRACE_MS = 2_000;
/** How long a peer that was let go (evicted, refused) may take to read why before its socket is cut. */
export const EVICT_GRACE_MS = 1_000;
/** A refusal names at most this many holders. */
const HOLDERS_NAMED = 8;

/** The soft RLIMIT_NOFILE of this process, from /proc (Node has no getrlimit). */
export function readFdLimit(): number | undefined {
  try {
    const m = /^Max open files\s+(\d+|unlimited)\s/m.exec(fs.readFileSync('/proc/self/limits', 'utf8'));
    return m && m[1] !== 'unlimited' ? Number(m[1]) : undefined;
  } catch {
    return undefined;
  }
}

interface Limit {
  /** Connections held at once. */
  limit: number;
  limitedBy: string;
  /** Sockets of any kind held at once (connections, and refused ones letting go): the fd share. */
  share: number;
}

/** When the fd limit cannot be read, refused sockets letting go are held to this many. */
const SHARE_UNKNOWN = 256;

/** The most connections held at once: limits.maxConnections, or less when the fd limit is low. */
export function connectionLimit(maxConnections: number, fdLimit: number | undefined): Limit {
  if (fdLimit !== undefined) {
    const share = Math.max(1, Math.floor(fdLimit / FD_SHARE_DIVISOR));
    if (share < maxConnections) {
      return { limit: share, share, limitedBy: `the process's file-descriptor limit (RLIMIT_NOFILE ${fdLimit}, of which the agent takes at most 1/${FD_SHARE_DIVISOR})` };
    }
    return { limit: maxConnections, share, limitedBy: 'limits.maxConnections' };
  }
  return { limit: maxConnections, share: Math.max(maxConnections, SHARE_UNKNOWN), limitedBy: 'limits.maxConnections' };
}

function age(ms: number): string {
  const s = Math.round(ms / 1000);
  return s < 60 ? `${s}s` : s < 3600 ? `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s` : `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
}

let nextConnectionId = 1;

/** One accepted socket, from accept to close: what the limit counts. */
export class Slot {
  readonly since = Date.now();
  readonly id = nextConnectionId++;
  conn: AdmittedConnection | undefined;
  /** Cuts a socket that has not upgraded in time (a slow or stuck client, or a flood of them). */
  deadline: NodeJS.Timeout | undefined;

  constructor(readonly socket: net.Socket) {
    this.deadline = setTimeout(() => socket.destroy(), HANDSHAKE_TIMEOUT_MS);
  }

  upgraded(conn: AdmittedConnection): void {
    clearTimeout(this.deadline);
    this.conn = conn;
  }

  describe(now: number): ConnectedClient {
    const c = this.conn;
    const base: ConnectedClient = {
      id: this.id,
      state: !c ? 'handshake' : c.isReady ? 'ready' : 'hello',
      connectedForMs: now - this.since,
      idleForMs: now - (c?.lastActive ?? this.since),
      calls: c?.running ?? 0,
    };
    return c?.isReady ? { ...base, ...c.identity, id: this.id } : base;
  }
}

export class Admission {
  /** Every accepted socket still counted, oldest first (a Map keeps insertion order). */
  private readonly slots = new Map<net.Socket, Slot>();
  /** Refused sockets waiting for their peer to read the refusal and close. */
  private lingering = 0;

  constructor(private readonly opts: AdmissionOptions) {}

  /** Read at each arrival: the process's fd limit can change while it runs (prlimit). */
  private current(): Limit & { fdLimit: number | undefined } {
    const fdLimit = this.opts.fdLimit();
    return { ...connectionLimit(this.opts.maxConnections, fdLimit), fdLimit };
  }

  /** A place for a new socket (making room if it must), or undefined when it was refused. */
  admit(socket: net.Socket): Slot | undefined {
    socket.on('error', () => {});
    const limit = this.current();
    // At or over the limit (it may have dropped): make room, one place per arrival.
    while (this.slots.size >= limit.limit) {
      if (!this.evictOne(limit)) {
        this.refuse(socket, limit);
        return undefined;
      }
    }
    const slot = new Slot(socket);
    this.slots.set(socket, slot);
    socket.once('close', () => {
      clearTimeout(slot.deadline);
      if (this.slots.get(socket) === slot) this.slots.delete(socket);
    });
    return slot;
  }

  /** The place of a socket still counted (not evicted, not timed out). */
  slotOf(socket: net.Socket): Slot | undefined {
    return this.slots.get(socket);
  }

  connections(): AgentConnections {
    const now = Date.now();
    const { limit, limitedBy, fdLimit } = this.current();
    const out: AgentConnections = { open: this.slots.size, limit, limitedBy, clients: [...this.slots.values()].map((s) => s.describe(now)) };
    if (fdLimit !== undefined) out.fdLimit = fdLimit;
    return out;
  }

  /** The agent stops: every connection is closed (1001), every other socket cut. */
  closeAll(): void {
    for (const s of this.slots.values()) {
      clearTimeout(s.deadline);
      if (s.conn) s.conn.close(1001, 'agent stopping');
      else s.socket.destroy();
    }
  }

  /**
   * Frees one place for a newcomer: the oldest socket stuck before its hello for
   * CONNECTING_GRACE_MS, else the ready connection idle longest, if idle (no call, no frame)
   * for idleBeforeEvictionMs. False when none can give way.
   */
  private evictOne(limit: Limit): boolean {
    const now = Date.now();
    let victim: Slot | undefined;
    for (const s of this.slots.values()) {
      if (!s.conn?.isReady && now - s.since >= CONNECTING_GRACE_MS) {
        victim = s;
        break;
      }
    }
    if (!victim) {
      for (const s of this.slots.values()) {
        const c = s.conn;
        if (!c?.isReady || c.running > 0 || now - c.lastActive < this.opts.idleBeforeEvictionMs) continue;
        if (!victim || c.lastActive < victim.conn!.lastActive) victim = s;
      }
    }
    if (!victim) return false;
    this.slots.delete(victim.socket);
    clearTimeout(victim.deadline);
    const was = victim.describe(now);
    agentLogThrottled(
      'evict',
      `closed ${was.state === 'ready' ? `idle client ${was.name ?? '?'}${was.pid ? ` (pid ${was.pid})` : ''}, idle for ${age(was.idleForMs)},` : `a connection that had not said hello in ${age(was.connectedForMs)}`} to make room for a new client (limit ${limit.limit}: ${limit.limitedBy})`,
    );
    if (victim.conn) victim.conn.evict(limit.limit);
    else victim.socket.destroy();
    return true;
  }

  /** No place can be freed: answer 503 naming the holders, and let go. */
  private refuse(socket: net.Socket, limit: Limit): void {
    const now = Date.now();
    const holders = [...this.slots.values()].map((s) => s.describe(now));
    const named = holders.slice(0, HOLDERS_NAMED).map((c) => {
      if (c.state !== 'ready') return `a client still connecting (${age(c.connectedForMs)})`;
      const who = [c.user && c.host ? `${c.user}@${c.host}` : (c.user ?? c.host), c.pid ? `pid ${c.pid}` : undefined, c.via].filter(Boolean).join(', ');
      const doing = c.calls > 0 ? `${c.calls} call${c.calls === 1 ? '' : 's'} running` : `active ${age(c.idleForMs)} ago`;
      return `${c.name ?? '?'}${who ? ` (${who})` : ''} connected ${age(c.connectedForMs)}, ${doing}`;
    });
    if (holders.length > HOLDERS_NAMED) named.push(`and ${holders.length - HOLDERS_NAMED} more`);
    const text =
      `ispy agent (pid ${process.pid}) is at its limit of ${limit.limit} connections (${limit.limitedBy}) and none can give way ` +
      `(each is running a command, was active in the last ${age(this.opts.idleBeforeEvictionMs)}, or is still connecting): ` +
      `${named.join('; ')}. Try again in a moment${limit.limitedBy === 'limits.maxConnections' ? ', or raise limits.maxConnections' : ''}.`;
    agentLogThrottled('refuse', `refused a client: at the limit of ${limit.limit} connections, none idle`);
    const body = Buffer.from(`${text}\n`);
    // Closing at once would lose this answer: with the peer's request unread, the kernel resets
    // the connection (ECONNRESET, or EPIPE while it still writes). So a refused socket reads
    // and drops what comes and lingers, half-closed, until the peer closes, for at most
    // EVICT_GRACE_MS, while the agent's sockets of every kind stay within its share of the
    // fds; past that (a flood) it is let go as soon as the answer is written.
    const answer = `HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: ${body.length}\r\nconnection: close\r\n\r\n${body}`;
    if (this.slots.size + this.lingering >= limit.share) return void socket.end(answer, () => socket.destroy());
    this.lingering++;
    socket.resume();
    socket.end(answer);
    const cut = setTimeout(() => socket.destroy(), EVICT_GRACE_MS);
    socket.once('close', () => {
      clearTimeout(cut);
      this.lingering--;
    });
  }
}
