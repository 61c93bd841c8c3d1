// Runs on the app's main thread, and only while armed (`requests track`): an async_hooks
// hook that attributes each new async operation (timer, socket, fs call, DNS lookup,
// promise, ...) to the in-flight request whose code created it, with the app frames that
// created it, and forgets it when it completes. It costs a lot on a busy server (every
// async operation passes through it), which is why it is armed for a bounded time and
// disarms itself; `disarm()` disables the hook and drops every map.
//
// A hook that throws kills the process, so every callback here is wrapped.

import { createHook, executionAsyncId, type AsyncHook } from 'node:async_hooks';
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
const MAX_CONTEXTS = 200_000;
const STACK_DEPTH = 30;

// Async resources that are plumbing rather than something a request waits on.
const IGNORED = new Set(['TickObject', 'Immediate', 'Microtask', 'PROMISEWRAP', 'HTTPINCOMINGMESSAGE', 'HTTPCLIENTREQUEST', 'WRITEWRAP', 'SHUTDOWNWRAP', 'ELDHISTOGRAM']);

function describe(type: string, resource: any): string | undefined {
  try {
    if (type === 'Timeout') return `${resource._repeat ? 'interval' : 'timer'} of ${resource._idleTimeout} ms`;
    if (type === 'GETADDRINFOREQWRAP') return resource.hostname ? `DNS lookup of ${resource.hostname}` : 'DNS lookup';
    if (type === 'TCPCONNECTWRAP') return resource.address ? `connecting to ${resource.address}:${resource.port}` : 'TCP connect';
    if (type === 'TCPWRAP') return 'TCP socket';
    if (type === 'FSREQCALLBACK' || type === 'FSREQPROMISE') return 'file system call';
    if (type === 'PROMISE') return 'promise';
    if (type === 'PIPEWRAP' || type === 'PIPECONNECTWRAP') return 'pipe';
  } catch {
    // a resource we cannot read: show the type alone
  }
  return undefined;
}

export class Tracker {
  private hook: AsyncHook | undefined;
  /** async id → the request that (transitively) created it. */
  private readonly owners = new Map<number, number>();
  private readonly ops = new Map<number, Map<number, PendingOp>>();
  private readonly live = new Set<number>();
  private readonly until: number;
  overflowed = 0;

  constructor(durationMs: number, existing: Iterable<LiveRequest>) {
    this.until = performance.now() + durationMs;
    // Requests already in flight: anything their first tick still creates is theirs.
    for (const e of existing) this.onRequestStart(e);
  }

  arm(): void {
    const self = this;
    this.hook = createHook({
      init(asyncId, type, _trigger, resource) {
        try {
          self.onInit(asyncId, type, resource);
        } catch {
          // never into the app
        }
      },
      promiseResolve(asyncId) {
        try {
          self.complete(asyncId);
        } catch {
          // never into the app
        }
      },
      destroy(asyncId) {
        try {
          self.complete(asyncId);
          self.owners.delete(asyncId);
        } catch {
          // never into the app
        }
      },
    });
    this.hook.enable();
  }

  private onInit(asyncId: number, type: string, resource: unknown): void {
    const owner = this.owners.get(executionAsyncId());
    if (owner === undefined || !this.live.has(owner)) return;
    if (this.owners.size >= MAX_CONTEXTS) {
      this.overflowed++;
      return;
    }
    this.owners.set(asyncId, owner);
    if (IGNORED.has(type)) return;
    const ops = this.ops.get(owner);
    if (!ops || ops.size >= MAX_OPS_PER_REQUEST) {
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
  }

  private complete(asyncId: number): void {
    const owner = this.owners.get(asyncId);
    if (owner !== undefined) this.ops.get(owner)?.delete(asyncId);
  }

  onRequestStart(e: LiveRequest): void {
    this.live.add(e.id);
    this.ops.set(e.id, new Map());
    this.owners.set(e.rootAsyncId, e.id);
  }

  onRequestEnd(id: number): void {
    this.live.delete(id);
    this.ops.delete(id);
  }

  ownerOf(asyncId: number): number | undefined {
    return this.owners.get(asyncId);
  }

  pendingCount(id: number): number {
    return this.ops.get(id)?.size ?? 0;
  }

  /** What the request waits on, oldest first, each with the app frames that created it. */
  pending(id: number, now: number): { type: string; detail?: string; ageMs: number; createdAt: Frame[] }[] {
    const ops = this.ops.get(id);
    if (!ops) return [];
    return [...ops.values()]
      .map((op) => {
        const row: { type: string; detail?: string; ageMs: number; createdAt: Frame[] } = { type: op.type, ageMs: Math.round((now - op.created) * 10) / 10, createdAt: appFrames(op.trace.stack) };
        if (op.detail) row.detail = op.detail;
        return row;
      })
      .filter((r) => r.createdAt.length > 0 || r.type !== 'PROMISE')
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
    this.owners.clear();
    this.ops.clear();
    this.live.clear();
  }
}
