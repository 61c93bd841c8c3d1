// Runs in the agent worker. One inspector session connected to the main thread
// (connectToMainThread), opened on first use and closed when the agent stops.
//
// Inspector messages reach a main thread that is running JavaScript through V8
// interrupts, so they work mid-busy-loop; a thread blocked in native code (execSync, a
// sync read on a hung mount) services no interrupts, so every call here has a timeout and
// the heartbeat tells the two apart. The Debugger domain is enabled only for the moment
// of a capture (left on it slows async code several times over), and a pause that
// arrives after we stopped waiting for it is resumed at once.

import { Session } from 'node:inspector';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { IspyError } from '../protocol/errors';
import type { InspectorAccess, MainThreadStack, StackFrame } from '../plugin/define';
import type { HeartbeatReader } from './heartbeat';
import { inspectorWithheld } from './permission';
import { mainThreadTimeout } from './sched';

interface CallFrame {
  functionName: string;
  url?: string;
  location: { scriptId: string; lineNumber: number; columnNumber?: number };
}

/** Node's timer processing (where the agent's own heartbeat runs too): the loop doing its rounds. */
const TIMER_INTERNALS = /^node:internal\/(timers|priority_queue)$/;
const HEARTBEAT_FILE = path.join(__dirname, 'heartbeat.js');

/**
 * True when a captured stack is only the event loop's own timer processing (and the
 * heartbeat the agent runs in it) with no frame of the app: a capture that landed in the
 * few microseconds the loop spends on a timer. With the loop turning, that is idle; the
 * agent's heartbeat (every 100 ms) would otherwise show up as the app "running".
 */
export function onlyTimerBookkeeping(frames: readonly StackFrame[]): boolean {
  return frames.length > 0 && frames.every((f) => TIMER_INTERNALS.test(f.file) || f.file === HEARTBEAT_FILE);
}

/** How long to wait for a pause when the heartbeat says the loop is idle. */
const IDLE_PAUSE_WAIT_MS = 120;

export function urlToFile(url: string): string {
  if (url.startsWith('file://')) {
    try {
      return fileURLToPath(url);
    } catch {
      return url;
    }
  }
  return url;
}

const STACK_EXPRESSION = `(function ispyCaptureStack() {
  const E = Error, limit = E.stackTraceLimit, prepare = E.prepareStackTrace;
  try {
    E.stackTraceLimit = 200;
    E.prepareStackTrace = (_, sites) => sites.map((s) => {
      let type = null; try { type = s.getTypeName(); } catch {}
      return [s.getFunctionName(), type, s.getMethodName(), s.getFileName() || s.getScriptNameOrSourceURL() || '', s.getLineNumber(), s.getColumnNumber(), s.isAsync ? s.isAsync() : false];
    });
    const holder = {};
    E.captureStackTrace(holder, ispyCaptureStack);
    return holder.stack;
  } finally {
    E.stackTraceLimit = limit;
    E.prepareStackTrace = prepare;
  }
})()`;

type RawSite = [string | null, string | null, string | null, string, number | null, number | null, boolean];

function siteName(site: RawSite): string {
  const [fn, type, method, , , , isAsync] = site;
  let name = fn ?? (method ? `<anonymous>.${method}` : '(anonymous)');
  if (type && fn && !fn.startsWith(`${type}.`) && type !== 'Object' && type !== 'global') name = `${type}.${fn}`;
  return isAsync ? `async ${name}` : name;
}

export class MainThreadInspector implements InspectorAccess {
  private session: Session | undefined;
  /** Operations using the session; it is connected only while this is above zero. */
  private users = 0;
  private closed = false;
  private pauseWaiter: ((frames: CallFrame[]) => void) | undefined;
  private listeners = new Map<string, Set<(msg: { params: unknown }) => void>>();

  constructor(
    private readonly timeoutMs: number,
    private readonly heartbeat: HeartbeatReader,
    /**
     * Why no session can be opened: Node's permission model withholds the inspector (a
     * connect from a worker then fails an assertion in Node and aborts the process, on 24).
     * Answered by the main thread, which always sees the model; the agent runs on without it.
     */
    private readonly withheld: string | undefined = inspectorWithheld(),
  ) {}

  private assertAvailable(): void {
    if (this.withheld) throw new IspyError('ISPY_ERR_UNAVAILABLE', this.withheld);
  }

  /**
   * The session is connected only while someone uses it: a session left connected makes
   * Node print "Waiting for the debugger to disconnect..." into the app's stderr at exit.
   */
  private acquire(): Session {
    if (this.closed) throw new IspyError('ISPY_ERR_AGENT_STOPPED', 'the agent is stopping');
    this.assertAvailable();
    this.users++;
    if (!this.session) {
      const session = new Session();
      session.connectToMainThread();
      this.heartbeat.setSessionOpen(true);
      session.on('Debugger.paused', (msg: { params: { callFrames: CallFrame[] } }) => {
        const waiter = this.pauseWaiter;
        this.pauseWaiter = undefined;
        if (waiter) waiter(msg.params.callFrames);
        // Whether wanted or late, the app never stays paused.
        session.post('Debugger.resume', () => {});
      });
      for (const [event, set] of this.listeners) for (const l of set) session.on(event, l);
      this.session = session;
    }
    return this.session;
  }

  private release(): void {
    this.users = Math.max(0, this.users - 1);
    if (this.users === 0 && this.listeners.size === 0) this.disconnect();
  }

  private disconnect(): void {
    const s = this.session;
    this.session = undefined;
    this.pauseWaiter = undefined;
    if (s) {
      try {
        s.disconnect();
      } catch {
        // already gone
      }
      this.heartbeat.setSessionOpen(false);
    }
  }

  post<T = unknown>(method: string, params: Record<string, unknown> = {}, opts: { timeoutMs?: number } = {}): Promise<T> {
    const session = this.acquire();
    const timeoutMs = opts.timeoutMs ?? this.timeoutMs;
    return new Promise<T>((resolve, reject) => {
      // A main thread that spent the wait queued for a CPU is not blocked: it gets more time.
      const cancel = mainThreadTimeout(timeoutMs, (starved, waited) =>
        reject(
          starved
            ? new IspyError('ISPY_ERR_INSPECTOR', `inspector ${method} did not answer within ${waited} ms: the main thread spent much of that waiting for a CPU (every core of the host is busy)`, {
                details: { starved: true },
              })
            : this.timeoutError(method, timeoutMs),
        ),
      );
      session.post(method, params, (err, result) => {
        cancel();
        if (err) reject(new IspyError('ISPY_ERR_INSPECTOR', `inspector ${method} failed: ${err.message}`));
        else resolve(result as T);
      });
    }).finally(() => this.release());
  }

  private timeoutError(method: string, timeoutMs: number): IspyError {
    const age = this.heartbeat.ageMs();
    if (this.heartbeat.stale()) {
      return new IspyError(
        'ISPY_ERR_MAIN_BLOCKED',
        `main thread blocked outside JavaScript for ${age} ms (a synchronous call or native code: the inspector could not interrupt it within ${timeoutMs} ms)`,
        { details: { blockedForMs: age } },
      );
    }
    return new IspyError('ISPY_ERR_INSPECTOR', `inspector ${method} did not answer within ${timeoutMs} ms`);
  }

  /** Listens to an inspector event; the session stays connected until every listener is removed. */
  on(event: string, listener: (params: any) => void): () => void {
    const wrapped = (msg: { params: unknown }) => listener(msg.params);
    let set = this.listeners.get(event);
    if (!set) this.listeners.set(event, (set = new Set()));
    set.add(wrapped);
    this.session?.on(event, wrapped);
    return () => {
      set!.delete(wrapped);
      if (set!.size === 0) this.listeners.delete(event);
      this.session?.off(event, wrapped);
      if (this.users === 0 && this.listeners.size === 0) this.disconnect();
    };
  }

  /**
   * Runs `fn` with the domains enabled, holding the session connected throughout. Users
   * of one domain queue behind each other (one enables, works, disables; the next starts
   * clean, so e.g. Debugger.enable replays scriptParsed for each); users of different
   * domains run side by side, so a 30 s CPU profile never holds up a stack capture.
   */
  async withDomains<T>(domains: string[], fn: () => Promise<T>, opts: { timeoutMs?: number } = {}): Promise<T> {
    const session = this.acquire();
    const ordered = [...new Set(domains)].sort();
    const releases: (() => void)[] = [];
    const enabled: string[] = [];
    try {
      for (const d of ordered) releases.push(await this.lockDomain(d));
      for (const d of ordered) {
        enabled.push(d);
        await this.post(`${d}.enable`, {}, opts);
      }
      return await fn();
    } finally {
      // Queued even when enable timed out: it runs right after the enable once the main
      // thread comes back, so the domain never stays on.
      for (const d of enabled.reverse()) session.post(`${d}.disable`, () => {});
      for (const r of releases.reverse()) r();
      this.release();
    }
  }

  private readonly domainLocks = new Map<string, Promise<void>>();

  private async lockDomain(domain: string): Promise<() => void> {
    const previous = this.domainLocks.get(domain) ?? Promise.resolve();
    let release!: () => void;
    const mine = new Promise<void>((r) => (release = r));
    const chained = previous.then(() => mine);
    this.domainLocks.set(domain, chained);
    await previous;
    return () => {
      release();
      if (this.domainLocks.get(domain) === chained) this.domainLocks.delete(domain);
    };
  }

  /**
   * The main thread's stack. Evaluating a tiny expression through the inspector runs it
   * inside the V8 interrupt, on top of whatever JavaScript was running, so its captured
   * stack is the app's stack (or empty when the loop is idle), in about a millisecond and
   * without enabling the Debugger domain. If the app has made Error unusable for that
   * (frozen, say), fall back to a Debugger pause.
   */
  async captureStack(): Promise<MainThreadStack> {
    this.assertAvailable();
    const started = performance.now();
    let sites: unknown;
    // With a stale heartbeat the thread is either running JavaScript (the evaluation
    // answers within a millisecond) or blocked in native code (it never does): no need to
    // wait the full timeout to tell which.
    const timeoutMs = this.heartbeat.stale() ? Math.min(300, this.timeoutMs) : this.timeoutMs;
    try {
      sites = await this.evaluate(STACK_EXPRESSION, { timeoutMs });
    } catch (err) {
      if (err instanceof IspyError && err.code === 'ISPY_ERR_MAIN_BLOCKED') {
        return { state: 'blocked', blockedForMs: (err.details?.blockedForMs as number) ?? this.heartbeat.ageMs() };
      }
      // A pause would wait for the same CPU: say so now.
      if (err instanceof IspyError && err.details?.starved) throw err;
      sites = undefined;
    }
    if (!Array.isArray(sites)) return this.captureStackByPause(started);
    const frames: StackFrame[] = [];
    for (const site of sites as RawSite[]) {
      // Frames of the evaluation's own script (no file) sit on top of the app's.
      if (frames.length === 0 && !site[3]) continue;
      frames.push({ functionName: siteName(site), file: urlToFile(site[3]), line: site[4] ?? 0, column: site[5] ?? 0 });
    }
    return this.stateOf(frames, started);
  }

  /** Idle when nothing of the app is on the stack and the loop is turning; else running, with the frames. */
  private stateOf(frames: StackFrame[], started: number): MainThreadStack {
    if (frames.length === 0 || (onlyTimerBookkeeping(frames) && !this.heartbeat.stale())) return { state: 'idle', heartbeatAgeMs: this.heartbeat.ageMs() };
    return { state: 'running', frames, capturedInMs: Math.round((performance.now() - started) * 100) / 100 };
  }

  private async captureStackByPause(started: number): Promise<MainThreadStack> {
    const scripts = new Map<string, string>();
    const off = this.on('Debugger.scriptParsed', (p: { scriptId: string; url: string }) => {
      scripts.set(p.scriptId, p.url);
    });
    try {
      return await this.withDomains(['Debugger'], async () => {
        const idle = !this.heartbeat.stale();
        const asked = Date.now();
        let starved = false;
        const frames = await new Promise<CallFrame[] | undefined>((resolve) => {
          // As post(): a thread queued for a CPU gets more time before any verdict.
          const cancel = mainThreadTimeout(idle ? IDLE_PAUSE_WAIT_MS : this.timeoutMs, (wasStarved) => {
            starved = wasStarved;
            this.pauseWaiter = undefined;
            resolve(undefined);
          });
          this.pauseWaiter = (f) => {
            cancel();
            resolve(f);
          };
          this.session!.post('Debugger.pause', () => {});
        });
        if (!frames) {
          if (starved) {
            throw new IspyError('ISPY_ERR_INSPECTOR', `the main thread did not pause within ${Date.now() - asked} ms: it spent much of that waiting for a CPU (every core of the host is busy); try again`);
          }
          if (this.heartbeat.stale()) return { state: 'blocked', blockedForMs: this.heartbeat.ageMs() } as const;
          return { state: 'idle', heartbeatAgeMs: this.heartbeat.ageMs() } as const;
        }
        const stack = frames.map((f): StackFrame => ({
          functionName: f.functionName || '(anonymous)',
          file: urlToFile(f.url || scripts.get(f.location.scriptId) || `<script ${f.location.scriptId}>`),
          line: f.location.lineNumber + 1,
          column: (f.location.columnNumber ?? 0) + 1,
        }));
        return this.stateOf(stack, started);
      });
    } catch (err) {
      if (err instanceof IspyError && err.code === 'ISPY_ERR_MAIN_BLOCKED') {
        return { state: 'blocked', blockedForMs: (err.details?.blockedForMs as number) ?? this.heartbeat.ageMs() };
      }
      // A pause would wait for the same CPU: say so now.
      if (err instanceof IspyError && err.details?.starved) throw err;
      throw err;
    } finally {
      off();
    }
  }

  async evaluate(expression: string, opts: { timeoutMs?: number } = {}): Promise<unknown> {
    const res = await this.post<{ result: { value?: unknown; type: string; description?: string }; exceptionDetails?: { text: string; exception?: { description?: string } } }>(
      'Runtime.evaluate',
      { expression, returnByValue: true, silent: true, awaitPromise: false },
      opts,
    );
    if (res.exceptionDetails) {
      const text = res.exceptionDetails.exception?.description ?? res.exceptionDetails.text;
      throw new IspyError('ISPY_ERR_PLUGIN_FAILED', `evaluation in the main thread threw: ${text}`);
    }
    return res.result.value;
  }

  /** Idempotent. A pending call does not keep the worker alive, so nothing else is needed. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.listeners.clear();
    this.disconnect();
  }

}
