// Runs on the app's main thread. A gate wraps one function of the app and, at most once
// per `every` ms, profiles one call of it from entry to completion (for a promise, until
// it settles), using an inspector session on this same thread: its Profiler.start/stop
// are synchronous, so the profile brackets the call exactly. After `want` samples the
// profiles are merged and the gate takes itself off.
//
// A promise's settlement is observed with a side chain on the same promise object, so
// the caller gets the very object the function returned (a promise with extra properties,
// like a promisified child process, keeps them). That side chain counts as a handler:
// a rejection no one else handles is not reported as unhandled for the calls sampled.
// Non-native thenables (query builders) are never `then`ed: calling then could run them.

import { Session } from 'node:inspector';
import { trimProfile, type CpuProfile, type WrapHandle } from 'ispy/plugin';

export interface GateOptions {
  spec: string;
  everyMs: number;
  want: number;
  intervalUs: number;
}

export interface GateStatus {
  id: number;
  target: string;
  taken: number;
  of: number;
  everyMs: number;
  ageSeconds: number;
  state: 'armed' | 'done' | 'removed';
  file?: string;
}

/** The CPU profiler's clock: process.hrtime (monotonic) in microseconds. */
function microseconds(): number {
  return Number(process.hrtime.bigint() / 1000n);
}

export class Gate {
  readonly profiles: CpuProfile[] = [];
  /** performance.now() at the start of each sampled call. */
  readonly sampleTimes: number[] = [];
  /** Duration of each sampled call, ms. */
  readonly callDurations: number[] = [];
  state: 'armed' | 'done' | 'removed' = 'armed';
  file: string | undefined;
  handle: WrapHandle | undefined;
  private session: Session | undefined;
  private inCall = false;
  /** True while a call may be profiled: closed by each sample, reopened by a timer after `every`. */
  private open = true;
  private reopen: NodeJS.Timeout | undefined;
  private readonly created = performance.now();
  private ended: number | undefined;
  private readonly waiters = new Set<() => void>();
  onSample: ((taken: number) => void) | undefined;

  constructor(
    readonly id: number,
    readonly opts: GateOptions,
  ) {}

  /** The interceptor handed to ctx.wrap. */
  readonly intercept = (_call: unknown, proceed: () => unknown): unknown => {
    // The hot path of a waiting gate: one flag, no clock read.
    if (!this.open) return proceed();
    if (!this.startProfiler()) return proceed();
    this.open = false;
    this.inCall = true;
    const now = performance.now();
    // Starting the profiler takes a few ms (V8 logs the code it knows); the samples kept
    // are only those between entry and exit of the call itself, on the profiler's clock.
    const entryUs = microseconds();
    let result: unknown;
    try {
      result = proceed();
    } catch (err) {
      this.finishCall(now, entryUs);
      throw err;
    }
    if (result instanceof Promise) {
      result.then(
        () => this.finishCall(now, entryUs),
        () => this.finishCall(now, entryUs),
      );
    } else this.finishCall(now, entryUs);
    return result;
  };

  private startProfiler(): boolean {
    try {
      if (!this.session) {
        this.session = new Session();
        this.session.connect();
        this.post('Profiler.enable');
      }
      this.post('Profiler.setSamplingInterval', { interval: this.opts.intervalUs });
      this.post('Profiler.start');
      return true;
    } catch {
      return false;
    }
  }

  /** Same-thread inspector calls complete synchronously; this returns the result or throws. */
  private post(method: string, params: Record<string, unknown> = {}): any {
    let out: any;
    let error: Error | null = null;
    this.session!.post(method, params, (err, res) => {
      error = err;
      out = res;
    });
    if (error) throw error;
    return out;
  }

  private finishCall(startedAt: number, entryUs: number): void {
    const exitUs = microseconds();
    this.inCall = false;
    let profile: CpuProfile | undefined;
    try {
      profile = (this.post('Profiler.stop') as { profile: CpuProfile }).profile;
    } catch {
      // the session went away (gate removed mid-call): nothing to record
    }
    if (!profile || this.state !== 'armed') {
      if (this.state === 'armed') this.open = true;
      return;
    }
    this.profiles.push(trimProfile(profile, entryUs, exitUs));
    this.sampleTimes.push(startedAt);
    this.callDurations.push((exitUs - entryUs) / 1000);
    this.onSample?.(this.profiles.length);
    if (this.profiles.length >= this.opts.want) {
      this.close('done');
      return;
    }
    // The next call may be profiled `every` ms after this one began.
    this.reopen = setTimeout(() => (this.open = this.state === 'armed'), Math.max(0, this.opts.everyMs - (performance.now() - startedAt)));
    this.reopen.unref();
  }

  /** Takes the wrapper off, closes the session, wakes whoever waits. Idempotent. */
  close(state: 'done' | 'removed'): void {
    if (this.state !== 'armed') return;
    this.state = state;
    this.open = false;
    clearTimeout(this.reopen);
    this.ended = performance.now();
    this.handle?.unwrap();
    if (this.session) {
      try {
        if (this.inCall) this.post('Profiler.stop');
        this.post('Profiler.disable');
      } catch {
        // already stopped
      }
      this.session.disconnect();
      this.session = undefined;
    }
    for (const w of this.waiters) w();
    this.waiters.clear();
  }

  /** Resolves when the gate is done or removed. */
  finished(): Promise<void> {
    if (this.state !== 'armed') return Promise.resolve();
    return new Promise((resolve) => this.waiters.add(resolve));
  }

  status(): GateStatus {
    const s: GateStatus = {
      id: this.id,
      target: this.opts.spec,
      taken: this.profiles.length,
      of: this.opts.want,
      everyMs: this.opts.everyMs,
      ageSeconds: Math.round(((this.ended ?? performance.now()) - this.created) / 100) / 10,
      state: this.state,
    };
    if (this.file) s.file = this.file;
    return s;
  }
}
