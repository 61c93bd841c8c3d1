// Recent GC pauses of the main thread: a PerformanceObserver feeding a small ring and
// running totals. GC entries arrive in batches, a few per second on a busy server, so the
// cost is a callback per batch; the observer is disconnected when the plugin unloads.

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

function gcKinds(): Record<number, string> {
  const { constants } = perfHooks();
  return {
    [constants.NODE_PERFORMANCE_GC_MINOR]: 'minor',
    [constants.NODE_PERFORMANCE_GC_MAJOR]: 'major',
    [constants.NODE_PERFORMANCE_GC_INCREMENTAL]: 'incremental',
    [constants.NODE_PERFORMANCE_GC_WEAKCB]: 'weakcb',
  };
}

export class GcRecorder {
  private readonly ring: GcPause[] = [];
  private readonly totals = new Map<string, KindTotal>();
  private observer: PerformanceObserver | undefined;
  private starting: NodeJS.Timeout | undefined;
  private kinds: Record<number, string> = {};
  readonly since = new Date().toISOString();

  constructor(private readonly capacity = 100) {}

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
    const kind = this.kinds[detail?.kind ?? -1] ?? 'other';
    const durationMs = Math.round(e.duration * 1000) / 1000;
    this.ring.push({ at: new Date(performance.timeOrigin + e.startTime).toISOString(), kind, durationMs });
    if (this.ring.length > this.capacity) this.ring.shift();
    const t = this.totals.get(kind) ?? { count: 0, totalMs: 0, maxMs: 0 };
    t.count++;
    t.totalMs += e.duration;
    t.maxMs = Math.max(t.maxMs, e.duration);
    this.totals.set(kind, t);
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
    return {
      since: this.since,
      totals: [...this.totals].map(([kind, t]) => ({ kind, count: t.count, totalMs: round(t.totalMs), maxMs: round(t.maxMs) })),
      recent: this.ring.slice(-limit).reverse(),
    };
  }
}
