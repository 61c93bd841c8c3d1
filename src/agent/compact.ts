// Runs in the agent worker. Gives the worker's unused heap pages back to the system.
//
// A worker thread bootstraps by compiling Node's internals into a fresh heap, then the
// agent loads its own modules (and, on a first client, the WebSocket layer and a plugin's
// worker side): megabytes that are garbage a moment later. V8 never runs a full collection in a worker that goes
// idle right after, so those pages stay resident for the life of the app (measured on
// Node 20: ~2.5 MiB of the 7.7 MiB a bare idle worker adds). A full, compacting
// collection of the worker's own heap — `HeapProfiler.collectGarbage` on an inspector
// session to this thread, never the main thread — releases them. It runs on the worker's
// time only, once the agent is ready and again when the last client has left; the app's
// heap is not touched.
//
// That collection is V8's memory-reducing one (several full mark-compacts in a row, with
// parallel helper threads): ~20–30 ms of the process's CPU, even on a heap that holds
// nothing to give back. A visit, the first included since the agent speaks WebSocket
// itself (websocket.ts) instead of loading ws and node:http, leaves a few hundred KiB that
// the worker's own young generation collections mostly reclaim (measured on Node 20:
// heapTotal +0.3-0.5 MiB for a first `process info` visit, +0-0.3 MiB for later ones;
// Node 26: +0.8-1 MiB for a first one). So it compacts only when the heap has grown by
// COMPACT_MIN_GROWTH_BYTES since the last compaction: a burst of visits, or a big answer,
// still gets its memory back, and a routine visit costs the app no full collection.
// A cheaper single `gc()` was measured too: it frees objects but keeps the pages.

import { agentLog } from './log';

/** How long after the last client leaves before the worker's heap is compacted. */
export const COMPACT_AFTER_IDLE_MS = 1000;

/**
 * Growth of the worker's heap (heapTotal) since the last compaction that makes the next one
 * worth its CPU: above what a first visit grows it by on Node 20-26 (up to ~1 MiB, much of
 * it code that stays), so a visit never pays a full collection, while a burst of visits or
 * a big answer (megabytes) still gets its memory back.
 */
export const COMPACT_MIN_GROWTH_BYTES = 2 << 20;

export class WorkerHeapCompactor {
  private timer: NodeJS.Timeout | undefined;
  private running = false;
  private closed = false;
  /** How many compactions have finished (tests and diagnostics). */
  runs = 0;
  /** How many idle waits ended without a compaction because the heap had not grown enough (tests and diagnostics). */
  skipped = 0;
  /** The worker's heapTotal right after the last compaction; 0 before the first, so the first always runs. */
  private baseline = 0;

  constructor(private readonly minGrowthBytes = COMPACT_MIN_GROWTH_BYTES) {}

  /** Compacts once the worker has been idle for `delayMs`; a later call restarts the wait. */
  schedule(delayMs = COMPACT_AFTER_IDLE_MS): void {
    if (this.closed) return;
    if (this.timer) clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      this.timer = undefined;
      const grown = process.memoryUsage().heapTotal - this.baseline;
      if (grown < this.minGrowthBytes) {
        this.skipped++;
        if (process.env.ISPY_VERBOSE === '1') agentLog(`agent worker heap not compacted: it grew ${(grown / 2 ** 20).toFixed(1)} MiB since the last compaction`);
        return;
      }
      this.compactNow();
    }, delayMs);
    // Never what keeps the worker (and so the agent) running.
    this.timer.unref();
  }

  /** Cancels a pending compaction (a client arrived, or the agent stops). */
  cancel(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
  }

  close(): void {
    this.closed = true;
    this.cancel();
  }

  compactNow(): void {
    if (this.running || this.closed) return;
    let session: import('node:inspector').Session;
    try {
      const { Session } = require('node:inspector') as typeof import('node:inspector');
      session = new Session();
      session.connect();
    } catch (err) {
      // A Node built without the inspector: the pages stay resident, nothing else changes,
      // and it is not worth a line in the app's stderr at every start.
      this.close();
      if (process.env.ISPY_VERBOSE === '1') agentLog(`cannot compact the agent worker's heap: ${(err as Error).message}`);
      return;
    }
    this.running = true;
    const before = process.memoryUsage();
    session.post('HeapProfiler.collectGarbage', () => {
      // Not from inside the session's own callback: a disconnect there never returns, and
      // a worker left with a session to itself keeps the whole process from exiting.
      setImmediate(() => {
        session.disconnect();
        this.running = false;
        this.runs++;
        const after = process.memoryUsage();
        this.baseline = after.heapTotal;
        if (process.env.ISPY_VERBOSE === '1') {
          const mb = (n: number) => (n / 2 ** 20).toFixed(1);
          agentLog(`agent worker heap compacted: ${mb(before.heapTotal)} → ${mb(after.heapTotal)} MiB (process RSS ${mb(before.rss)} → ${mb(after.rss)} MiB)`);
        }
      });
    });
  }
}
