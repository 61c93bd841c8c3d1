// Runs on the app's main thread, and only while armed (`requests track`): an async_hooks
// hook that attributes each new async operation to the in-flight request whose code
// created it, and records the ones a request waits on (timer, socket, fs call, DNS lookup)
// with the app frames that created them, forgetting each when it completes. It is armed
// for a bounded time and disarms itself; `disarm()` disables the hook and drops every map.
//
// Where the cost goes, and how it is kept down (every async operation in the process,
// promises and ticks included, passes through `init`):
// - The request rides on the async resource itself (a symbol field, as AsyncLocalStorage
//   does), copied from the running resource to each new one: no map of async ids to grow,
//   and nothing to forget when a resource goes (the collector takes the field with it).
// - A stack is captured only for the operations shown as waits, never for promises or
//   ticks: a capture costs 6-30 us on this kind of machine, and a promise-heavy framework
//   (Fastify) creates several promises per request.
// - `destroy` only looks up the few recorded operations; there is no promiseResolve hook.
//
// A hook that throws kills the process, so every callback here is wrapped.

import { createHook, executionAsyncResource, type AsyncHook } from 'node:async_hooks';
import { appFrames, type Frame } from './frames';
import type { LiveRequest } from './table';

interface PendingOp {
  type: string;
  detail?: string;
  created: number;
  /** Holds the captured stack; formatted only when shown (V8 formats lazily). */
  trace: { stack?: string };
}

/** Bounds so tracking a pathological app cannot grow without limit. */
const MAX_OPS_PER_REQUEST = 200;
const STACK_DEPTH = 30;

// Async resources that are plumbing rather than something a request waits on, and
// promises: a pending promise says little without the frames that created it, and
// capturing those on every promise is what made tracking cost x3 on Fastify.
const IGNORED = new Set(['PROMISE', 'TickObject', 'Immediate', 'Microtask', 'PROMISEWRAP', 'HTTPINCOMINGMESSAGE', 'HTTPCLIENTREQUEST', 'WRITEWRAP', 'SHUTDOWNWRAP', 'ELDHISTOGRAM']);

/** The request an async resource was created for, carried on the resource. */
const OWNER = Symbol('ispy.requests.owner');

/** A request's tracking record: on its table entry and on every async resource made for it. */
export interface Owner {
  id: number;
  open: boolean;
  tracker: Tracker;
  /** Made on the first recorded operation: most requests of a plain handler record none. */
  ops: Map<number, PendingOp> | undefined;
}

type Resource = { [OWNER]?: Owner };

function describe(type: string, resource: any): string | undefined {
  try {
    if (type === 'Timeout') return `${resource._repeat ? 'interval' : 'timer'} of ${resource._idleTimeout} ms`;
    if (type === 'GETADDRINFOREQWRAP') return resource.hostname ? `DNS lookup of ${resource.hostname}` : 'DNS lookup';
    if (type === 'TCPCONNECTWRAP') return resource.address ? `connecting to ${resource.address}:${resource.port}` : 'TCP connect';
    if (type === 'TCPWRAP') return 'TCP socket';
    if (type === 'FSREQCALLBACK' || type === 'FSREQPROMISE') return 'file system call';
    if (type === 'PIPEWRAP' || type === 'PIPECONNECTWRAP') return 'pipe';
  } catch {
    // a resource we cannot read: show the type alone
  }
  return undefined;
}

export class Tracker {
  private hook: AsyncHook | undefined;
  /** async id → the record holding it, for the recorded operations only. */
  private readonly recorded = new Map<number, Owner>();
  private readonly until: number;
  overflowed = 0;

  constructor(durationMs: number, existing: Iterable<LiveRequest>) {
    this.until = performance.now() + durationMs;
    // Requests already in flight get a record (so `show` says they wait on nothing known),
    // but not their async context, which is gone by now: only requests that start from
    // now on are attributed.
    for (const e of existing) e.track = { id: e.id, open: true, tracker: this, ops: undefined };
  }

  arm(): void {
    const self = this;
    this.hook = createHook({
      init(asyncId, type, _trigger, resource) {
        try {
          self.onInit(asyncId, type, resource as Resource);
        } catch {
          // never into the app
        }
      },
      destroy(asyncId) {
        try {
          if (self.recorded.size === 0) return;
          const owner = self.recorded.get(asyncId);
          if (owner === undefined) return;
          self.recorded.delete(asyncId);
          owner.ops?.delete(asyncId);
        } catch {
          // never into the app
        }
      },
    });
    this.hook.enable();
  }

  private onInit(asyncId: number, type: string, resource: Resource): void {
    const owner = (executionAsyncResource() as Resource)[OWNER];
    if (owner === undefined || !owner.open || owner.tracker !== this) return;
    resource[OWNER] = owner;
    if (IGNORED.has(type)) return;
    const ops = (owner.ops ??= new Map());
    if (ops.size >= MAX_OPS_PER_REQUEST) {
      this.overflowed++;
      return;
    }
    const trace: { stack?: string } = {};
    const limit = Error.stackTraceLimit;
    Error.stackTraceLimit = STACK_DEPTH;
    Error.captureStackTrace(trace);
    Error.stackTraceLimit = limit;
    const op: PendingOp = { type, created: performance.now(), trace };
    const detail = describe(type, resource);
    if (detail) op.detail = detail;
    ops.set(asyncId, op);
    this.recorded.set(asyncId, owner);
  }

  /** Called from the request-start channel, in the request's own async context. */
  onRequestStart(e: LiveRequest): void {
    const owner: Owner = { id: e.id, open: true, tracker: this, ops: undefined };
    e.track = owner;
    (executionAsyncResource() as Resource)[OWNER] = owner;
  }

  onRequestEnd(e: LiveRequest): void {
    const owner = e.track;
    if (owner === undefined || owner.tracker !== this) return;
    owner.open = false;
    if (owner.ops === undefined) return;
    for (const asyncId of owner.ops.keys()) this.recorded.delete(asyncId);
    // Resources created for it may outlive it (a pooled socket) and still carry the record.
    owner.ops = undefined;
  }

  /** The request whose code is running now, from the async context. */
  currentOwner(): number | undefined {
    const owner = (executionAsyncResource() as Resource)[OWNER];
    return owner?.open ? owner.id : undefined;
  }

  private opsOf(e: LiveRequest): Map<number, PendingOp> | undefined {
    return e.track?.tracker === this ? e.track.ops : undefined;
  }

  pendingCount(e: LiveRequest): number {
    return this.opsOf(e)?.size ?? 0;
  }

  /** What the request waits on, oldest first, each with the app frames that created it. */
  pending(e: LiveRequest, now: number): { type: string; detail?: string; ageMs: number; createdAt: Frame[] }[] {
    const ops = this.opsOf(e);
    if (!ops) return [];
    return [...ops.values()]
      .map((op) => {
        const row: { type: string; detail?: string; ageMs: number; createdAt: Frame[] } = { type: op.type, ageMs: Math.round((now - op.created) * 10) / 10, createdAt: appFrames(op.trace.stack) };
        if (op.detail) row.detail = op.detail;
        return row;
      })
      .sort((a, b) => b.ageMs - a.ageMs);
  }

  remainingMs(): number {
    return Math.max(0, this.until - performance.now());
  }

  get armed(): boolean {
    return this.hook !== undefined;
  }

  /** Disables the hook and forgets everything. Idempotent. */
  disarm(): void {
    this.hook?.disable();
    this.hook = undefined;
    // Every record holding operations is in `recorded`; the others hold nothing.
    for (const owner of this.recorded.values()) {
      owner.open = false;
      owner.ops = undefined;
    }
    this.recorded.clear();
  }
}
