// The one pattern every streaming command needs: events arrive from the app (a finished
// request, a traced call) faster or slower than the client reads them. EventQueue takes
// them in with a bound and an optional per-second cap, counts what it drops instead of
// slowing the app, and hands them to an async generator that ends on cancel, on a
// limit, or when the source says it is over. Public API (`ispy/plugin`).

export interface EventQueueOptions {
  /** Items held at most while the client catches up; past it, items are dropped and counted. */
  capacity: number;
  /** Items accepted per second at most; past it, dropped and counted. */
  perSecond?: number;
  /** Ends the stream (the command's ctx.signal). */
  signal: AbortSignal;
  /** Stop after this many items. */
  limit?: number;
  /** Polled every `pollMs` while idle: true ends the stream (e.g. the watched trace is gone). */
  ended?: () => boolean;
  pollMs?: number;
  /** What to yield in place of dropped items, given how many. */
  dropped: (count: number) => unknown;
}

export class EventQueue<T> {
  private readonly queue: T[] = [];
  private dropped = 0;
  private windowStart = 0;
  private inWindow = 0;
  private wake: (() => void) | undefined;

  constructor(
    private readonly opts: EventQueueOptions,
    initial: readonly T[] = [],
  ) {
    this.queue.push(...initial.slice(-opts.capacity));
  }

  /** Called from the app's side: never blocks, never throws. */
  push(item: T): void {
    const { perSecond, capacity } = this.opts;
    if (perSecond !== undefined) {
      const now = performance.now();
      if (now - this.windowStart >= 1000) {
        this.windowStart = now;
        this.inWindow = 0;
      }
      if (this.inWindow >= perSecond) {
        this.dropped++;
        return;
      }
      this.inWindow++;
    }
    if (this.queue.length >= capacity) {
      this.dropped++;
      return;
    }
    this.queue.push(item);
    this.wake?.();
  }

  async *drain(): AsyncGenerator<T | unknown> {
    const { signal, limit, ended, pollMs = 500 } = this.opts;
    const onAbort = () => this.wake?.();
    signal.addEventListener('abort', onAbort);
    let sent = 0;
    try {
      while (!signal.aborted) {
        if (this.dropped) {
          const n = this.dropped;
          this.dropped = 0;
          yield this.opts.dropped(n);
        }
        const next = this.queue.shift();
        if (next !== undefined) {
          yield next;
          if (limit !== undefined && ++sent >= limit) return;
          continue;
        }
        if (ended?.()) return;
        await new Promise<void>((resolve) => {
          const timer = ended ? setTimeout(resolve, pollMs) : undefined;
          timer?.unref();
          this.wake = () => {
            clearTimeout(timer);
            resolve();
          };
        });
        this.wake = undefined;
      }
    } finally {
      signal.removeEventListener('abort', onAbort);
    }
  }
}
