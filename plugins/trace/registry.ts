// Runs on the app's main thread. The traces of this process, who watches their events,
// and the entry point that ES modules traced from the config call when they finish
// evaluating (see config-traces.ts).

import { IspyError, wrapFunction, type Lifetime, type WrapHandle } from 'ispy/plugin';
import { Trace, type TraceEvent, type TraceOptions } from './tracer';

const RECENT = 500;

type Watcher = (event: TraceEvent | { trace: number; dropped: number }) => void;

export class TraceRegistry {
  private nextId = 1;
  readonly traces = new Map<number, Trace>();
  private readonly ended: Trace[] = [];
  private readonly watchers = new Set<Watcher>();
  /** The latest events, for `trace watch --replay` (config traces fire before anyone connects). */
  readonly recent: TraceEvent[] = [];

  constructor(private readonly lifetime: Lifetime) {}

  create(target: string, opts: TraceOptions, origin: string): Trace {
    const trace = new Trace(this.nextId++, target, opts, (e) => this.publish(e), origin);
    this.traces.set(trace.id, trace);
    const expiry = this.lifetime.setTimeout(() => trace.remove(`its ${Math.round(opts.durationMs / 1000)}s were up`), opts.durationMs);
    const window = this.lifetime.setInterval(() => (trace.inWindow = 0), 1000);
    let undo: () => void = () => {};
    trace.remove = (reason) => {
      if (trace.state === 'removed') return;
      trace.state = 'removed';
      trace.reason = reason;
      expiry.clear();
      window.clear();
      try {
        undo();
      } catch {
        // An undo that fails (a binding that would not take its original back) must not
        // leave the trace half-removed: it is gone from the list either way.
      }
      this.traces.delete(trace.id);
      this.ended.push(trace);
      if (this.ended.length > 20) this.ended.shift();
    };
    trace.activate = (unwrap: () => void) => {
      undo = unwrap;
      trace.state = 'active';
    };
    return trace;
  }

  /** Wraps owner[key] for the trace (undone on removal and on unload). */
  attach(trace: Trace, owner: object, key: string): WrapHandle {
    const handle = this.lifetime.wrap(owner, key, trace.intercept);
    trace.activate(() => handle.unwrap());
    return handle;
  }

  private publish(event: TraceEvent): void {
    this.recent.push(event);
    if (this.recent.length > RECENT) this.recent.shift();
    for (const w of this.watchers) w(event);
  }

  watch(w: Watcher): () => void {
    this.watchers.add(w);
    return () => this.watchers.delete(w);
  }

  list(): Record<string, unknown>[] {
    return [...this.traces.values(), ...this.ended].map((t) => t.status());
  }

  remove(id: string): number[] {
    const chosen = id === 'all' ? [...this.traces.values()] : [this.traces.get(Number(id))].filter((t): t is Trace => t !== undefined);
    if (!chosen.length && id !== 'all') {
      throw new IspyError('ISPY_ERR_NOT_FOUND', `no active trace ${JSON.stringify(id)} (active: ${[...this.traces.keys()].join(', ') || 'none'})`);
    }
    for (const t of chosen) t.remove('removed by a client');
    return chosen.map((t) => t.id);
  }

  removeAll(reason: string): void {
    for (const t of [...this.traces.values()]) t.remove(reason);
  }
}

/**
 * Wraps a function an ES module holds in a binding of its own (the module itself calls
 * this from code appended to it at load): returns the wrapper to assign to the binding,
 * and keeps `restore` to put the exact original back when the trace ends.
 */
export function wrapBinding(trace: Trace, name: string, fn: unknown, restore: (original: unknown) => void): unknown {
  const holder: Record<string, unknown> = { [name]: fn };
  const handle = wrapFunction(holder, name, trace.intercept);
  const wrapped = holder[name];
  trace.activate(() => {
    handle.unwrap();
    try {
      restore(fn);
    } catch {
      // The binding never took the wrapper (a const export): nothing to put back.
    }
  });
  return wrapped;
}
