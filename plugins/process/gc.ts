// Recent GC pauses of the main thread: a v8.GCProfiler, folded into a small ring and running
// totals once a second (and when `process gc` reads them), then started afresh.
//
// Not a PerformanceObserver on 'gc' entries: for each collection Node builds an entry in
// JavaScript (a Map, two deprecation wrappers per detail field, accessors defined on it),
// about 3 KB of which outlives the next scavenge and is promoted (bench/gc-pattern.js:
// 0.1 → 6.5 bytes promoted per request on Fastify's hello-world). The old generation then
// grows until a mark-compact, after which V8 sizes the young generation up: the app made
// fewer, longer scavenges, and its p99 rose with them. The profiler records in C++, outside
// the JavaScript heap; what it holds is bounded by the second between two folds.

import type { GCProfiler } from 'node:v8';

/** How often the profiler's records are folded in (their native memory is freed then). */
const FOLD_MS = 1000;

export interface GcPause {
  /** When the pause was folded into the ring: within FOLD_MS after it happened. */
  at: string;
  kind: string;
  durationMs: number;
}

interface KindTotal {
  count: number;
  totalMs: number;
  maxMs: number;
}

interface ProfileResult {
  endTime?: number;
  statistics?: { gcType?: string; cost?: number }[];
}

// GCProfiler's gcType names (V8's GCType), as the kinds perf_hooks called them.
const KINDS: Record<string, string> = {
  Scavenge: 'minor',
  MinorMarkSweep: 'minor',
  MinorMarkCompact: 'minor',
  MarkSweepCompact: 'major',
  IncrementalMarking: 'incremental',
  ProcessWeakCallbacks: 'weakcb',
};

type ProfilerClass = new () => GCProfiler;

/** v8.GCProfiler where this runtime has it (Node 18.15+, 19.6+), else undefined. */
function profilerClass(): ProfilerClass | undefined {
  const v8 = require('node:v8') as { GCProfiler?: ProfilerClass };
  return typeof v8.GCProfiler === 'function' ? v8.GCProfiler : undefined;
}

export class GcRecorder {
  private readonly ring: GcPause[] = [];
  /** Where the next pause goes in the ring once it is full (the oldest is overwritten). */
  private next = 0;
  private readonly totals = new Map<string, KindTotal>();
  private Profiler: ProfilerClass | undefined;
  private profiler: GCProfiler | undefined;
  private starting: NodeJS.Timeout | undefined;
  private folding: NodeJS.Timeout | undefined;
  readonly since = new Date().toISOString();

  constructor(private readonly capacity = 100) {}

  /**
   * Starts on the next turn of the loop: node:v8 is loaded then, after the app's first line.
   * Its timers are unref'd: they never hold the app open.
   */
  start(): void {
    this.starting = setTimeout(() => this.begin(), 0);
    this.starting.unref();
  }

  private begin(): void {
    this.starting = undefined;
    this.Profiler = profilerClass();
    if (!this.Profiler) return;
    this.profiler = new this.Profiler();
    this.profiler.start();
    this.folding = setInterval(() => this.fold(), FOLD_MS);
    this.folding.unref();
  }

  /** Moves what the profiler recorded into the ring and totals, and starts a fresh one. */
  private fold(): void {
    const done = this.profiler;
    if (!done || !this.Profiler) return;
    this.profiler = new this.Profiler();
    this.profiler.start();
    const result = done.stop() as ProfileResult | undefined;
    const stats = result?.statistics;
    if (!stats?.length) return;
    const at = new Date(result?.endTime ?? Date.now()).toISOString();
    for (const s of stats) this.record(at, KINDS[s.gcType ?? ''] ?? 'other', (s.cost ?? 0) / 1000);
  }

  private record(at: string, kind: string, ms: number): void {
    const pause: GcPause = { at, kind, durationMs: Math.round(ms * 1000) / 1000 };
    // A ring that overwrites in place: no array growth or shift per pause.
    if (this.ring.length < this.capacity) this.ring.push(pause);
    else this.ring[this.next] = pause;
    this.next = (this.next + 1) % this.capacity;
    let t = this.totals.get(kind);
    if (!t) this.totals.set(kind, (t = { count: 0, totalMs: 0, maxMs: 0 }));
    t.count++;
    t.totalMs += ms;
    if (ms > t.maxMs) t.maxMs = ms;
  }

  stop(): void {
    clearTimeout(this.starting);
    clearInterval(this.folding);
    this.starting = this.folding = undefined;
    this.profiler?.stop();
    this.profiler = undefined;
  }

  get observing(): boolean {
    return this.profiler !== undefined;
  }

  /** The ring newest first, and the totals, with the pauses recorded up to now folded in. */
  snapshot(limit: number): { since: string; totals: (KindTotal & { kind: string })[]; recent: GcPause[] } {
    this.fold();
    const round = (n: number) => Math.round(n * 1000) / 1000;
    const oldestFirst = this.ring.length < this.capacity ? this.ring : [...this.ring.slice(this.next), ...this.ring.slice(0, this.next)];
    return {
      since: this.since,
      totals: [...this.totals].map(([kind, t]) => ({ kind, count: t.count, totalMs: round(t.totalMs), maxMs: round(t.maxMs) })),
      recent: oldestFirst.slice(-limit).reverse(),
    };
  }
}
