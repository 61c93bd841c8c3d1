// Messages between the agent worker and the app's main thread, over a MessagePort. The
// worker owns the socket; commands declared `thread: "main"` are forwarded here.
//
//   worker ── call {id, plugin, command, args, deadline} ──► main
//   worker ◄── ack {id} ── (then) data / progress / artefact ── result | error
//   worker ── cancel {id} ──► main
//
// `deadline` lets the main thread skip a call whose caller already gave up on it because
// the thread was busy: a late command must not run with no one waiting for it.

import type { WireError } from '../protocol/errors';

export interface ClientRef {
  id: number;
  name: string;
}

export type ToMain =
  | { t: 'call'; id: number; plugin: string; command: string; args: Record<string, unknown>; deadline: number; client: ClientRef }
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
