// The main thread's heartbeat: a timestamp it writes into shared memory every
// HEARTBEAT_MS from an unref'd timer. The worker reads it without touching the main
// thread, so it can tell "the event loop is turning" from "stuck for N ms" even when the
// main thread is blocked in native code where no inspector message can reach it.

export const HEARTBEAT_MS = 100;

export class HeartbeatWriter {
  readonly buffer = new SharedArrayBuffer(8);
  private readonly view = new Float64Array(this.buffer);
  private timer: NodeJS.Timeout | undefined;

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

  constructor(buffer: SharedArrayBuffer) {
    this.view = new Float64Array(buffer);
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
