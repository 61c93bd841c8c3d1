// Runs on the app's main thread, and only while armed (`requests track`): attributes the
// async work of each in-flight request to it, and records what a request waits on with the
// app frames that created it. Armed for a bounded time; `disarm()` takes everything off.
//
// Two ways, chosen when armed:
// - 'context', where AsyncLocalStorage runs on AsyncContextFrame (Node 24+ by default;
//   feature-tested, see contextFramesCarryStores): the request is an AsyncLocalStorage
//   store entered when it starts, which V8 carries through every continuation at no cost to
//   the app, and waits are recorded where a channel already shows them: sockets a request
//   opens (net.client.socket, which http.request and fetch go through). No async_hooks hook:
//   timers, file system calls and DNS lookups are not seen.
// - 'hooks' (Node 20-22, or asked for): an async_hooks init hook attributes each new async
//   operation to the request whose code created it (the request rides on the async
//   resource in a symbol field, as AsyncLocalStorage did before AsyncContextFrame) and
//   records timers, sockets, connects, file system calls and DNS lookups. There is no
//   destroy hook (with one, Node tracks every promise's collection through a weak callback,
//   the largest part of what the hook cost): whether a recorded operation is still pending
//   is read when `show` asks (a timer's _destroyed, a socket's handle still its own), and
//   one-shot requests (fs, DNS, connect) are marked done by a `before` hook when their
//   callback runs (enabled on the first one recorded).
//
// Both: a stack is captured for a recorded wait at most CAPTURES_PER_SECOND times a second
// (a capture costs 6-30 us here; at 10,000 requests a second, one per request was most of
// the cost); past that the wait is listed without frames. Promises and ticks are never
// recorded.
//
// A hook or channel listener that throws would reach the app: every callback here is wrapped.

import { AsyncLocalStorage, createHook, executionAsyncResource, type AsyncHook } from 'node:async_hooks';
import * as dc from 'node:diagnostics_channel';
import type { Socket } from 'node:net';
import { appFrames, type Frame } from './frames';
import { now as clock, type LiveRequest } from './table';

export type TrackMode = 'context' | 'hooks';

/** How a recorded operation's end is found out. */
const enum Kind {
  Timer,
  Handle,
  Request,
  Socket,
}

interface PendingOp {
  type: string;
  kind: Kind;
  created: number;
  /** Read when shown: its description and whether it is still pending. */
  resource: any;
  done: boolean;
  /** Its async id, for a one-shot request in the `before` map; else 0. */
  asyncId: number;
  /** Holds the captured stack; formatted only when shown (V8 formats lazily). */
  trace: { stack?: string } | undefined;
}

/** Bounds so tracking a pathological app cannot grow without limit. */
const MAX_OPS_PER_REQUEST = 200;
/** App frames sit within the first dozen frames of an init hook or a channel listener. */
const STACK_DEPTH = 16;
/** Stack captures a second while armed, unless pluginOptions.requests.trackStacksPerSecond says otherwise. */
export const CAPTURES_PER_SECOND = 100;

/** The async resource types recorded in 'hooks' mode: what a request can wait on. */
// A Map, not an object: most types looked up are absent (PROMISE, TickObject), and a keyed
// load of an absent property is a slow path on Node 20's V8.
const RECORDED = new Map<string, Kind>([
  ['Timeout', Kind.Timer],
  ['TCPWRAP', Kind.Handle],
  ['PIPEWRAP', Kind.Handle],
  ['UDPWRAP', Kind.Handle],
  ['PROCESSWRAP', Kind.Handle],
  ['TCPCONNECTWRAP', Kind.Request],
  ['PIPECONNECTWRAP', Kind.Request],
  ['GETADDRINFOREQWRAP', Kind.Request],
  ['GETNAMEINFOREQWRAP', Kind.Request],
  ['QUERYWRAP', Kind.Request],
  ['FSREQCALLBACK', Kind.Request],
  ['FSREQPROMISE', Kind.Request],
]);

const NET_SOCKET = 'net.client.socket';

/** The request an async resource was created for, carried on the resource ('hooks' mode). */
const OWNER = Symbol('ispy.requests.owner');

/** A request's tracking record: on its table entry, and carried through its async context. */
export interface Owner {
  id: number;
  open: boolean;
  tracker: Tracker;
  /** Made on the first recorded operation: most requests of a plain handler record none. */
  ops: PendingOp[] | undefined;
}

type Resource = { [OWNER]?: Owner };

let contextProbe: boolean | undefined;

/**
 * Whether AsyncLocalStorage carries its stores without async_hooks (AsyncContextFrame):
 * the older implementation enables a hook and writes the store onto every async resource
 * made inside `run()`, promises included, so a promise made there either carries the
 * store or (when the app's own hooks are on) at least async ids. Checked once; the probe
 * store is disabled again.
 */
export function contextFramesCarryStores(): boolean {
  if (contextProbe !== undefined) return contextProbe;
  const als = new AsyncLocalStorage<object>();
  const token = {};
  const holds = (v: unknown): boolean => v === token || (typeof v === 'object' && v !== null && Object.getOwnPropertySymbols(v).some((s) => (v as Record<symbol, unknown>)[s] === token));
  try {
    const hooksOnBefore = Object.getOwnPropertySymbols(Promise.resolve()).length > 0;
    let inside: unknown;
    const p = als.run(token, () => {
      inside = als.getStore();
      return Promise.resolve();
    });
    const symbols = Object.getOwnPropertySymbols(p);
    const written = symbols.some((s) => holds((p as unknown as Record<symbol, unknown>)[s]));
    // With no hook of the app's on, a promise made inside carries nothing at all on the new line.
    contextProbe = inside === token && !written && (hooksOnBefore || symbols.length === 0);
  } catch {
    contextProbe = false;
  } finally {
    als.disable();
  }
  return contextProbe;
}

/** The socket that owns a handle (Node sets it under a symbol named owner_symbol). */
function handleOwner(handle: object): any {
  for (const s of Object.getOwnPropertySymbols(handle)) if (s.description === 'owner_symbol') return (handle as Record<symbol, unknown>)[s];
  return undefined;
}

function pendingNow(op: PendingOp): boolean {
  if (op.done) return false;
  const r = op.resource;
  switch (op.kind) {
    case Kind.Timer:
      return r._destroyed !== true;
    case Kind.Socket:
      return r.destroyed !== true;
    case Kind.Handle: {
      const owner = handleOwner(r);
      // A handle whose owner dropped it (closed) is done; one with no owner yet is pending.
      return owner === undefined || (owner._handle === r && owner.destroyed !== true);
    }
    default:
      return true;
  }
}

function describe(op: PendingOp): string | undefined {
  const r = op.resource;
  try {
    switch (op.type) {
      case 'Timeout':
        return `${r._repeat ? 'interval' : 'timer'} of ${r._idleTimeout} ms`;
      case 'GETADDRINFOREQWRAP':
        return r.hostname ? `DNS lookup of ${r.hostname}` : 'DNS lookup';
      case 'TCPCONNECTWRAP':
        return r.address ? `connecting to ${r.address}:${r.port}` : 'TCP connect';
      case 'TCPWRAP':
        return 'TCP socket';
      case 'FSREQCALLBACK':
      case 'FSREQPROMISE':
        return 'file system call';
      case 'PIPEWRAP':
      case 'PIPECONNECTWRAP':
        return 'pipe';
      case 'socket': {
        const s = r as Socket & { _host?: string };
        const peer = s.remoteAddress ? `${s.remoteAddress}:${s.remotePort}` : s._host;
        if (s.connecting) return peer ? `connecting to ${peer}` : 'connecting';
        return peer ? `socket to ${peer}` : 'socket';
      }
    }
  } catch {
    // a resource we cannot read: show the type alone
  }
  return undefined;
}

export class Tracker {
  private hook: AsyncHook | undefined;
  private beforeHook: AsyncHook | undefined;
  private beforeOn = false;
  private als: AsyncLocalStorage<Owner> | undefined;
  private socketListener: ((msg: unknown) => void) | undefined;
  private on = false;
  /** async id → operation, for the one-shot requests recorded ('hooks' mode): `before` ends them. */
  private readonly requests = new Map<number, PendingOp>();
  private readonly until: number;
  /** The stack-capture budget: captures left in the current second, and when it ends. */
  private captures = 0;
  private captureWindowEnd = 0;
  overflowed = 0;
  uncaptured = 0;

  /** `inFlight` walks the table's requests in flight: when armed, and when disarmed. */
  constructor(
    durationMs: number,
    private readonly inFlight: () => Iterable<LiveRequest>,
    readonly mode: TrackMode,
    readonly capturesPerSecond = CAPTURES_PER_SECOND,
  ) {
    this.until = performance.now() + durationMs;
    // Requests already in flight get a record (so `show` says they wait on nothing known),
    // but not their async context, which is gone by now: only requests that start from
    // now on are attributed.
    for (const e of inFlight()) e.track = { id: e.id, open: true, tracker: this, ops: undefined };
  }

  arm(): void {
    this.on = true;
    if (this.mode === 'context') {
      this.als = new AsyncLocalStorage<Owner>();
      this.socketListener = (msg) => {
        try {
          this.onSocket((msg as { socket: Socket }).socket);
        } catch {
          // never into the app
        }
      };
      dc.subscribe(NET_SOCKET, this.socketListener);
      return;
    }
    const self = this;
    this.hook = createHook({
      init(asyncId, type, _trigger, resource) {
        try {
          self.onInit(asyncId, type, resource as Resource);
        } catch {
          // never into the app
        }
      },
    });
    // Its own hook, enabled on the first one-shot request recorded: a `before` hook runs on
    // every callback of the process, and an app whose requests open no file, lookup or
    // connection never needs it.
    this.beforeHook = createHook({
      before(asyncId) {
        try {
          if (self.requests.size === 0) return;
          const op = self.requests.get(asyncId);
          if (op === undefined) return;
          op.done = true;
          self.requests.delete(asyncId);
        } catch {
          // never into the app
        }
      },
    });
    this.hook.enable();
  }

  private record(owner: Owner, type: string, kind: Kind, resource: object): PendingOp | undefined {
    let ops = owner.ops;
    if (ops === undefined) ops = owner.ops = [];
    else if (ops.length >= MAX_OPS_PER_REQUEST) {
      // Finished ones stay in the list until it fills: drop them then.
      const live = ops.filter(pendingNow);
      if (live.length >= MAX_OPS_PER_REQUEST) {
        this.overflowed++;
        return undefined;
      }
      ops = owner.ops = live;
    }
    // The table's clock: a read of the `performance` global is a getter call per recorded wait.
    const now = clock();
    let trace: { stack?: string } | undefined;
    if (now >= this.captureWindowEnd) {
      this.captureWindowEnd = now + 1000;
      this.captures = this.capturesPerSecond;
    }
    if (this.captures > 0) {
      this.captures--;
      trace = {};
      const limit = Error.stackTraceLimit;
      Error.stackTraceLimit = STACK_DEPTH;
      Error.captureStackTrace(trace);
      Error.stackTraceLimit = limit;
    } else {
      this.uncaptured++;
    }
    const op: PendingOp = { type, kind, created: now, resource, done: false, asyncId: 0, trace };
    ops.push(op);
    return op;
  }

  private onInit(asyncId: number, type: string, resource: Resource): void {
    const owner = (executionAsyncResource() as Resource)[OWNER];
    if (owner === undefined || !owner.open || owner.tracker !== this) return;
    resource[OWNER] = owner;
    const kind = RECORDED.get(type);
    if (kind === undefined) return;
    const op = this.record(owner, type, kind, resource);
    if (op !== undefined && kind === Kind.Request) {
      op.asyncId = asyncId;
      this.requests.set(asyncId, op);
      if (!this.beforeOn && this.beforeHook !== undefined) {
        this.beforeOn = true;
        this.beforeHook.enable();
      }
    }
  }

  private onSocket(socket: Socket): void {
    const owner = this.als?.getStore();
    if (owner === undefined || !owner.open || owner.tracker !== this) return;
    this.record(owner, 'socket', Kind.Socket, socket);
  }

  /** Called from the request-start channel, in the request's own async context. */
  onRequestStart(e: LiveRequest): void {
    const owner: Owner = { id: e.id, open: true, tracker: this, ops: undefined };
    e.track = owner;
    if (this.als !== undefined) this.als.enterWith(owner);
    else (executionAsyncResource() as Resource)[OWNER] = owner;
  }

  onRequestEnd(e: LiveRequest): void {
    const owner = e.track;
    if (owner === undefined || owner.tracker !== this) return;
    owner.open = false;
    const ops = owner.ops;
    if (ops === undefined) return;
    if (this.requests.size !== 0) for (const op of ops) if (op.asyncId !== 0) this.requests.delete(op.asyncId);
    // Resources created for it may outlive it (a pooled socket) and still carry the record.
    owner.ops = undefined;
  }

  /** The request whose code is running now, from the async context. */
  currentOwner(): number | undefined {
    const owner = this.als !== undefined ? this.als.getStore() : (executionAsyncResource() as Resource)[OWNER];
    return owner?.open && owner.tracker === this ? owner.id : undefined;
  }

  private opsOf(e: LiveRequest): PendingOp[] | undefined {
    return e.track?.tracker === this ? e.track.ops : undefined;
  }

  pendingCount(e: LiveRequest): number {
    const ops = this.opsOf(e);
    if (!ops) return 0;
    let n = 0;
    for (const op of ops) if (pendingNow(op)) n++;
    return n;
  }

  /** What the request waits on, oldest first, each with the app frames that created it. */
  pending(e: LiveRequest, now: number): { type: string; detail?: string; ageMs: number; createdAt: Frame[] | string }[] {
    const ops = this.opsOf(e);
    if (!ops) return [];
    return ops
      .filter(pendingNow)
      .map((op) => {
        const createdAt = op.trace ? appFrames(op.trace.stack) : `not captured (over ${this.capturesPerSecond} stacks a second)`;
        const row: { type: string; detail?: string; ageMs: number; createdAt: Frame[] | string } = { type: op.type, ageMs: Math.round((now - op.created) * 10) / 10, createdAt };
        const detail = describe(op);
        if (detail) row.detail = detail;
        return row;
      })
      .sort((a, b) => b.ageMs - a.ageMs);
  }

  remainingMs(): number {
    return Math.max(0, this.until - performance.now());
  }

  get armed(): boolean {
    return this.on;
  }

  /** Takes off the hook, or the store and the subscription, and forgets everything. Idempotent. */
  disarm(): void {
    this.on = false;
    this.hook?.disable();
    this.hook = undefined;
    this.beforeHook?.disable();
    this.beforeHook = undefined;
    this.beforeOn = false;
    if (this.socketListener !== undefined) dc.unsubscribe(NET_SOCKET, this.socketListener);
    this.socketListener = undefined;
    // The store stays in the frames of pending callbacks until they run or are collected;
    // its records are closed below, so it attributes nothing, and it is never entered again.
    this.als?.disable();
    this.als = undefined;
    this.requests.clear();
    // Close the records of the requests still in flight and let go of what they hold.
    for (const e of this.inFlight()) {
      const owner = e.track;
      if (owner === undefined || owner.tracker !== this) continue;
      owner.open = false;
      owner.ops = undefined;
      e.track = undefined;
    }
  }
}
