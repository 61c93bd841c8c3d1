// Messages between the agent worker and the app's main thread, over a MessagePort. The
// worker owns the socket; commands declared `thread: "main"` are forwarded here.
//
//   worker ── call {id, plugin, command, args} ──► main
//   worker ◄── ack {id} ── (then) data / progress / artefact ── result | error
//   worker ── cancel {id} ──► main
//
// Who decides whether a call runs, when the main thread picks it up late: a claim table in
// shared memory (Claims), one slot per call in flight. The worker offers the call; the main
// thread takes it before running it, or the worker withdraws it when it stops waiting (the
// thread busy past the limit), whichever comes first, atomically. So a command never runs
// with no one waiting for it, and a caller is never told "busy" about a command that runs.

import type { WireError } from '../protocol/errors';

export interface ClientRef {
  id: number;
  name: string;
}

export type ToMain =
  | { t: 'call'; id: number; plugin: string; command: string; args: Record<string, unknown>; client: ClientRef }
  | { t: 'client-closed'; client: number }
  | { t: 'cancel'; id: number }
  | { t: 'unload-plugin'; name: string };

export type FromMain =
  | { t: 'ack'; id: number }
  | { t: 'data'; id: number; data: unknown }
  | { t: 'progress'; id: number; done?: number; total?: number; message?: string }
  | { t: 'artefact'; id: number; path: string; name: string; size: number }
  | { t: 'result'; id: number; value: unknown }
  | { t: 'error'; id: number; error: WireError };

/** What the worker tells the thread that started it (over parentPort). */
export type WorkerStatus =
  | { t: 'ready'; socket: { path: string; ino: number; dev: number }; failedPlugins: { name: string; source: string; error: WireError }[] }
  | { t: 'failed'; error: WireError }
  | { t: 'stopped' };

/** What the main thread tells the worker (over parentPort). */
/** 'exit': the process is exiting; close the inspector session to the main thread now. */
export type WorkerControl = { t: 'stop' } | { t: 'exit' };

export interface PluginLocation {
  name?: string;
  /** `builtin` or the specifier as written in the config. */
  source: string;
  /** Absolute path of the module to import. */
  location: string;
}

/** Calls the main thread can have in flight at once (a slot each, by id). */
export const CLAIM_SLOTS = 256;

/**
 * The claim table, over a SharedArrayBuffer of CLAIM_SLOTS Int32 slots that both threads
 * hold. A slot is 0 (free), id (offered: the worker waits for call `id`), or −id (taken: the
 * main thread runs it). Call ids are positive Int32s.
 */
export class Claims {
  private readonly slots: Int32Array;

  constructor(buffer: SharedArrayBuffer) {
    this.slots = new Int32Array(buffer);
  }

  static buffer(): SharedArrayBuffer {
    return new SharedArrayBuffer(CLAIM_SLOTS * Int32Array.BYTES_PER_ELEMENT);
  }

  /** Worker: call `id` is waiting. False when its slot still holds an older call (256 in flight). */
  offer(id: number): boolean {
    return Atomics.compareExchange(this.slots, id % CLAIM_SLOTS, 0, id) === 0;
  }

  /** Main: takes call `id` to run it. False when the worker has stopped waiting for it. */
  take(id: number): boolean {
    return Atomics.compareExchange(this.slots, id % CLAIM_SLOTS, id, -id) === id;
  }

  /** Worker: stops waiting for call `id`, unless the main thread took it first (then false). */
  withdraw(id: number): boolean {
    return Atomics.compareExchange(this.slots, id % CLAIM_SLOTS, id, 0) === id;
  }

  /** Worker: call `id` is over (answered, failed, or the agent stopped): its slot is free. */
  release(id: number): void {
    Atomics.compareExchange(this.slots, id % CLAIM_SLOTS, -id, 0);
    Atomics.compareExchange(this.slots, id % CLAIM_SLOTS, id, 0);
  }
}
