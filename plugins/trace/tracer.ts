// Runs on the app's main thread. One trace: an interceptor around a function that turns
// calls into events (arguments, result or error, duration, caller's stack), within a
// per-second cap that drops and counts rather than slowing the app, until its limit or
// its time is up.
//
// A promise's settlement is observed with a side chain on the very promise returned, so
// the caller gets the same object; that side chain counts as a handler, so a rejection
// nobody else handles is not reported as unhandled for the calls traced.

import type { Interceptor, Invocation } from 'ispy/plugin';
import { describeError, frames, render } from './render';

export interface TraceOptions {
  args: boolean;
  result: boolean;
  stack: boolean;
  limit: number;
  durationMs: number;
  perSecond: number;
  detached: boolean;
  /** Keys whose values are shown redacted in --args and --result (the config's redact patterns and the built-ins). */
  isSecret?: (key: string) => boolean;
}

export interface TraceEvent {
  trace: number;
  seq: number;
  /** When the call began: ms since the epoch here, an ISO string once sent (formatting costs more than the call). */
  at: number | string;
  durationMs: number;
  async?: boolean;
  construct?: boolean;
  args?: string[];
  result?: string;
  error?: { name: string; message: string; frames: string[] };
  stack?: string[];
}

export class Trace {
  calls = 0;
  emitted = 0;
  dropped = 0;
  state: 'waiting' | 'active' | 'removed' = 'waiting';
  reason: string | undefined;
  /** Events recorded in the current second; reset by the registry's one-second timer, so a call reads no clock. */
  inWindow = 0;
  private readonly created = Date.now();
  /** Set by the registry: removes the wrapper and forgets the trace. */
  remove: (reason: string) => void = () => {};
  /** Set by the registry: marks the trace live, with how to take its wrapper off. */
  activate: (unwrap: () => void) => void = () => {};

  constructor(
    readonly id: number,
    readonly target: string,
    readonly opts: TraceOptions,
    private readonly emit: (event: TraceEvent) => void,
    readonly origin: string,
  ) {}

  readonly intercept: Interceptor = (call: Invocation, proceed: () => unknown): unknown => {
    if (this.state !== 'active') return proceed();
    this.calls++;
    if (this.inWindow >= this.opts.perSecond) {
      this.dropped++;
      return proceed();
    }
    this.inWindow++;
    const seq = ++this.emitted;
    // The last call the limit allows: take the wrapper off now; this call still reports.
    if (seq >= this.opts.limit) this.remove(`limit of ${this.opts.limit} call${this.opts.limit === 1 ? '' : 's'} reached`);
    const now = performance.now();
    const event: TraceEvent = { trace: this.id, seq, at: Date.now(), durationMs: 0 };
    if (call.newTarget) event.construct = true;
    if (this.opts.args) event.args = call.args.map((a) => render(a, this.opts.isSecret));
    if (this.opts.stack) event.stack = frames(new Error().stack, 8, true);
    const done = (outcome: { value?: unknown; error?: unknown; threw: boolean }) => {
      event.durationMs = Math.round((performance.now() - now) * 1000) / 1000;
      if (outcome.threw) event.error = describeError(outcome.error);
      else if (this.opts.result) event.result = render(outcome.value, this.opts.isSecret);
      this.emit(event);
    };
    let result: unknown;
    try {
      result = proceed();
    } catch (err) {
      done({ error: err, threw: true });
      throw err;
    }
    if (result instanceof Promise) {
      event.async = true;
      result.then(
        (value) => done({ value, threw: false }),
        (error) => done({ error, threw: true }),
      );
    } else done({ value: result, threw: false });
    return result;
  };

  status(): Record<string, unknown> {
    const s: Record<string, unknown> = {
      id: this.id,
      target: this.target,
      state: this.state,
      calls: this.calls,
      emitted: this.emitted,
      dropped: this.dropped,
      limit: this.opts.limit,
      origin: this.origin,
    };
    if (this.state !== 'removed') s.leftSeconds = Math.max(0, Math.round((this.created + this.opts.durationMs - Date.now()) / 1000));
    if (this.reason) s.ended = this.reason;
    return s;
  }
}
