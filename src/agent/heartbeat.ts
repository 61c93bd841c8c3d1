// The main thread's heartbeat: a timestamp it writes into shared memory every
// HEARTBEAT_MS from an unref'd timer. The worker reads it without touching the main
// thread, so it can tell "the event loop is turning" from "stuck for N ms" even when the
// main thread is blocked in native code where no inspector message can reach it.

export const HEARTBEAT_MS = 100;

// The buffer also carries, as an Int32 at byte 8, whether the worker has an inspector
// session connected to the main thread: Node prints "Waiting for the debugger to
// disconnect..." into the app's stderr when the process exits with one connected, so at exit
// the main thread asks the worker to let go and waits for this to drop (briefly, bounded).
const SESSION_SLOT = 2;

export class HeartbeatWriter {
  readonly buffer = new SharedArrayBuffer(16);
  private readonly view = new Float64Array(this.buffer, 0, 1);
  private readonly sessions = new Int32Array(this.buffer);
  private timer: NodeJS.Timeout | undefined;

  /** Whether the worker has an inspector session connected to this (the main) thread. */
  sessionOpen(): boolean {
    return Atomics.load(this.sessions, SESSION_SLOT) !== 0;
  }

  /** Blocks this thread until the worker's session is closed or `ms` have passed; true if closed. */
  waitSessionClosed(ms: number): boolean {
    const deadline = Date.now() + ms;
    for (let left = ms; this.sessionOpen() && left > 0; left = deadline - Date.now()) {
      Atomics.wait(this.sessions, SESSION_SLOT, 1, left);
    }
    return !this.sessionOpen();
  }

  start(): void {
    this.beat();
    this.timer = setInterval(() => this.beat(), HEARTBEAT_MS);
    this.timer.unref();
  }

  private beat(): void {
    this.view[0] = Date.now();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }
}

export class HeartbeatReader {
  private readonly view: Float64Array;
  private readonly sessions: Int32Array;

  constructor(buffer: SharedArrayBuffer) {
    this.view = new Float64Array(buffer, 0, 1);
    this.sessions = new Int32Array(buffer);
  }

  /** The worker says whether its session to the main thread is connected (see SESSION_SLOT). */
  setSessionOpen(open: boolean): void {
    Atomics.store(this.sessions, SESSION_SLOT, open ? 1 : 0);
    if (!open) Atomics.notify(this.sessions, SESSION_SLOT);
  }

  /** Milliseconds since the main thread's event loop last ran its heartbeat timer. */
  ageMs(): number {
    return Math.max(0, Date.now() - this.view[0]!);
  }

  /** True when the loop has missed a couple of beats. */
  stale(): boolean {
    return this.ageMs() > HEARTBEAT_MS * 2.5;
  }
}
