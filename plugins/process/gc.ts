// Recent GC pauses of the main thread: a PerformanceObserver feeding a small ring and
// running totals. GC entries arrive in batches, a few per second on a busy server, so the
// cost is a callback per batch; the observer is disconnected when the plugin unloads.
//
// The ring is columns of numbers, objects are built only when `process gc` reads it: a
// ring of objects (each with its ISO time string) kept every pause alive for 100 more
// collections, so each was promoted to the old generation (bench/gc-pattern.js: on
// Fastify's hello-world, 10.8 bytes promoted per request with it, 6.4 with an observer
// that keeps nothing). What remains is Node's own: for each collection it builds the entry
// in JavaScript, and ~3.3 KB of that is promoted at every scavenge. v8.GCProfiler avoids
// that, but writes two heap-statistics records as JSON inside every pause (~110 µs a
// collection on this machine, ~9× the instructions of the scavenge itself under
// callgrind): worse for the app's latency than the promotion.

import type { PerformanceEntry, PerformanceObserver } from 'node:perf_hooks';

// node:perf_hooks loads a dozen modules (~1.5 ms under --cpu-prof): it is loaded when the
// observer starts, which is after the app's first line (start() defers it by a tick).
const perfHooks = (): typeof import('node:perf_hooks') => require('node:perf_hooks');

export interface GcPause {
  at: string;
  kind: string;
  durationMs: number;
}

interface KindTotal {
  count: number;
  totalMs: number;
  maxMs: number;
}

/** Kind names by index: the ring stores the index. */
const KIND_NAMES = ['minor', 'major', 'incremental', 'weakcb', 'other'] as const;

function gcKinds(): Record<number, number> {
  const { constants } = perfHooks();
  return {
    [constants.NODE_PERFORMANCE_GC_MINOR]: 0,
    [constants.NODE_PERFORMANCE_GC_MAJOR]: 1,
    [constants.NODE_PERFORMANCE_GC_INCREMENTAL]: 2,
    [constants.NODE_PERFORMANCE_GC_WEAKCB]: 3,
  };
}

export class GcRecorder {
  /** The ring, in columns: start (ms since timeOrigin), duration (ms), kind index. */
  private readonly starts: Float64Array;
  private readonly durations: Float64Array;
  private readonly kindOf: Uint8Array;
  private next = 0;
  private count = 0;
  /** Totals per kind index: count, total ms, max ms. */
  private readonly counts = new Float64Array(KIND_NAMES.length);
  private readonly totalMs = new Float64Array(KIND_NAMES.length);
  private readonly maxMs = new Float64Array(KIND_NAMES.length);
  private observer: PerformanceObserver | undefined;
  private starting: NodeJS.Timeout | undefined;
  private kinds: Record<number, number> = {};
  readonly since = new Date().toISOString();

  constructor(private readonly capacity = 100) {
    this.starts = new Float64Array(capacity);
    this.durations = new Float64Array(capacity);
    this.kindOf = new Uint8Array(capacity);
  }

  /** Starts observing on the next turn of the loop (unref'd: it never holds the app). */
  start(): void {
    this.starting = setTimeout(() => this.observe(), 0);
    this.starting.unref();
  }

  private observe(): void {
    this.starting = undefined;
    const { PerformanceObserver } = perfHooks();
    this.kinds = gcKinds();
    this.observer = new PerformanceObserver((list) => {
      for (const e of list.getEntries()) this.record(e);
    });
    this.observer.observe({ entryTypes: ['gc'] });
  }

  private record(e: PerformanceEntry): void {
    const detail = (e as PerformanceEntry & { detail?: { kind?: number } }).detail;
    const k = this.kinds[detail?.kind ?? -1] ?? KIND_NAMES.length - 1;
    const ms = e.duration;
    const i = this.next;
    this.starts[i] = e.startTime;
    this.durations[i] = ms;
    this.kindOf[i] = k;
    this.next = (i + 1) % this.capacity;
    if (this.count < this.capacity) this.count++;
    this.counts[k]!++;
    this.totalMs[k]! += ms;
    if (ms > this.maxMs[k]!) this.maxMs[k] = ms;
  }

  stop(): void {
    clearTimeout(this.starting);
    this.starting = undefined;
    this.observer?.disconnect();
    this.observer = undefined;
  }

  get observing(): boolean {
    return this.observer !== undefined;
  }

  snapshot(limit: number): { since: string; totals: (KindTotal & { kind: string })[]; recent: GcPause[] } {
    const round = (n: number) => Math.round(n * 1000) / 1000;
    const totals: (KindTotal & { kind: string })[] = [];
    KIND_NAMES.forEach((kind, k) => {
      if (this.counts[k]) totals.push({ kind, count: this.counts[k]!, totalMs: round(this.totalMs[k]!), maxMs: round(this.maxMs[k]!) });
    });
    const recent: GcPause[] = [];
    const origin = performance.timeOrigin;
    for (let n = 0; n < Math.min(limit, this.count); n++) {
      const i = (this.next - 1 - n + this.capacity) % this.capacity;
      recent.push({ at: new Date(origin + this.starts[i]!).toISOString(), kind: KIND_NAMES[this.kindOf[i]!]!, durationMs: round(this.durations[i]!) });
    }
    return { since: this.since, totals, recent };
  }
}
