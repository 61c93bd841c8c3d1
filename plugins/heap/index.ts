// The `heap` plugin: heap statistics, a forced GC, live instance counts of a constructor
// (`count`; its main-thread side is ./count.ts), and heap snapshots streamed to disk.
//
// All of them run in the agent worker through the inspector, so they answer while the main
// thread is busy. A snapshot freezes the main thread while V8 walks the heap and needs
// many times the heap's size in extra memory, so it first compares an estimate with the
// memory actually available and refuses (unless --force) when it would not fit.
//
// The snapshot itself is `v8.writeHeapSnapshot()` run on the main thread (reached through
// the inspector, so it starts even while the thread spins), writing straight into the
// artefact's partial file. Streaming it through the inspector instead
// (HeapProfiler.takeHeapSnapshot) JSON-escapes every chunk on the frozen thread: measured
// on Node 20 with a 100 MB heap, that froze the app 1.33x as long for the same file.
// Progress is the file growing, read from the worker while the main thread writes.

import * as fs from 'node:fs';
import { arg, command, definePlugin, IspyError, type CommandContext, type ErrorCode } from 'ispy/plugin';
import { mb, memoryPreflight } from './memory';

/**
 * Extra memory a snapshot takes, as a multiple of the used heap. Measured on Node 20: a
 * 177 MB heap peaked 2.67 GB above its resting RSS taken this way (15x), in line with
 * 14x for a 205 MB heap through other tools. An OOM kill is the worst outcome this tool
 * could cause, so the estimate takes the high end.
 */
export const SNAPSHOT_MEMORY_FACTOR = 15;

/**
 * The .heapsnapshot file's size as a multiple of the used heap: 1.6x for a 76 MB heap and
 * 1.9x for a 100 MB one (bench/RESULTS.md). It costs memory too when the output folder is
 * on tmpfs.
 */
export const SNAPSHOT_FILE_FACTOR = 2;

const GLOBAL_KEY = 'ispy.heap';
const API = `globalThis[Symbol.for(${JSON.stringify(GLOBAL_KEY)})]`;
let snapshotSince: number | undefined;
let countSeq = 0;

const countSide = (): typeof import('./count') => require('./count');

/** How long a count may freeze the main thread (a full GC, then a walk of the heap). */
const COUNT_TIMEOUT_MS = 120_000;

type Resolution = import('./count').Resolution;
type Failure = { error: { code: ErrorCode; message: string } };

function failed(v: unknown): v is Failure {
  return typeof v === 'object' && v !== null && 'error' in v;
}

/** Evaluates on the main thread and waits for the promise it returns (needs its event loop). */
async function evaluateAwaited(ctx: CommandContext, expression: string, timeoutMs: number): Promise<unknown> {
  const res = await ctx.inspector.post<{ result: { value?: unknown }; exceptionDetails?: { text: string; exception?: { description?: string } } }>(
    'Runtime.evaluate',
    { expression, returnByValue: true, awaitPromise: true, silent: true },
    { timeoutMs },
  );
  if (res.exceptionDetails) throw new IspyError('ISPY_ERR_PLUGIN_FAILED', `evaluation in the main thread threw: ${res.exceptionDetails.exception?.description ?? res.exceptionDetails.text}`);
  return res.result.value;
}

/** Names a constructor on the main thread: globals at once, module targets through the module loader. */
async function resolveConstructor(ctx: CommandContext, spec: string): Promise<Exclude<Resolution, Failure>> {
  const arg = JSON.stringify(spec);
  let r = (await ctx.mainThread.evaluate(`${API} && ${API}.resolveConstructor(${arg})`)) as Resolution | { needsLoader: true } | null;
  if (!r) throw new IspyError('ISPY_ERR_UNAVAILABLE', 'the heap plugin is not loaded on the main thread');
  if ('needsLoader' in r) {
    try {
      // A thread already stuck will not turn its loop for us: do not wait long to say so.
      r = (await evaluateAwaited(ctx, `${API}.resolveConstructorFromModule(${arg})`, ctx.mainThread.stuck() ? 2000 : 10_000)) as Resolution;
    } catch (err) {
      if (ctx.mainThread.stuck()) {
        throw new IspyError('ISPY_ERR_UNAVAILABLE', `unavailable while the main thread is busy (${ctx.mainThread.heartbeatAgeMs()} ms): resolving a module target needs its event loop; a global name (globalThis.MyClass) resolves even now`);
      }
      throw err;
    }
  }
  if (failed(r)) throw new IspyError(r.error.code, r.error.message);
  return r;
}

interface RemoteValue {
  result: { objectId?: string; value?: unknown; type: string };
  exceptionDetails?: { text: string };
}

/**
 * The inspector's way (every line): Runtime.queryObjects returns an array of the instances,
 * held in an object group until released, and only its length comes back. The group is
 * released whatever happens (and with the session, should the release itself be lost).
 */
async function countWithInspector(ctx: CommandContext, id: number): Promise<number> {
  const group = `ispy-heap-count-${++countSeq}`;
  // Object ids live as long as the inspector session: hold it connected across the calls
  // (no domain needs enabling for them).
  return ctx.inspector.withDomains([], async () => {
    try {
      const proto = await ctx.inspector.post<RemoteValue>('Runtime.evaluate', { expression: `${API}.prototypeOf(${id})`, objectGroup: group, silent: true });
      if (proto.exceptionDetails || !proto.result.objectId) throw new IspyError('ISPY_ERR_NOT_FOUND', 'the constructor was released before it was counted: run the command again');
      const found = await ctx.inspector.post<{ objects: { objectId: string } }>('Runtime.queryObjects', { prototypeObjectId: proto.result.objectId, objectGroup: group }, { timeoutMs: COUNT_TIMEOUT_MS });
      const length = await ctx.inspector.post<RemoteValue>('Runtime.callFunctionOn', {
        objectId: found.objects.objectId,
        functionDeclaration: 'function () { return this.length; }',
        returnByValue: true,
        silent: true,
      });
      return length.result.value as number;
    } finally {
      await ctx.inspector.post('Runtime.releaseObjectGroup', { objectGroup: group }).catch(() => {});
    }
  });
}

interface HeapUsage {
  usedSize: number;
  totalSize: number;
}

async function heapUsage(ctx: CommandContext): Promise<HeapUsage> {
  return ctx.inspector.post<HeapUsage>('Runtime.getHeapUsage');
}

/** fsync of a file another writer (V8, on the main thread) filled. */
async function flush(file: string): Promise<void> {
  const handle = await fs.promises.open(file, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

export default definePlugin({
  name: 'heap',
  summary: 'Heap statistics, garbage collection, live instance counts, and heap snapshots',
  setup: {
    main(ctx) {
      // Read by the worker through Runtime.evaluate (answers even while the thread spins).
      const api = {
        // node:v8 is loaded by the first call, not at start-up in every app.
        stats: () => {
          const v8 = require('node:v8') as typeof import('node:v8');
          return { heap: v8.getHeapStatistics(), spaces: v8.getHeapSpaceStatistics() };
        },
        // `heap count`: loaded on the first count (see ./count).
        resolveConstructor: (spec: string) => countSide().resolveConstructor(spec),
        resolveConstructorFromModule: (spec: string) => countSide().resolveConstructorFromModule(spec),
        prototypeOf: (id: number) => countSide().prototypeOf(id),
        countWithV8: (id: number) => countSide().countWithV8(id),
        release: (id: number) => countSide().release(id),
        /** Runs on the main thread: the app is frozen until it returns. */
        writeSnapshot: (file: string) => {
          (require('node:v8') as typeof import('node:v8')).writeHeapSnapshot(file);
          return true;
        },
      };
      const key = Symbol.for(GLOBAL_KEY);
      Object.defineProperty(globalThis, key, { value: api, configurable: true, enumerable: false });
      ctx.onUnload(() => {
        delete (globalThis as Record<symbol, unknown>)[key];
      });
    },
  },
  commands: {
    stats: command({
      summary: 'Heap and heap-space statistics of the main thread, in MB',
      thread: 'worker',
      async run(_args, ctx) {
        const raw = (await ctx.mainThread.evaluate(`${API} && ${API}.stats()`)) as { heap: Record<string, number>; spaces: { space_name: string; space_size: number; space_used_size: number; space_available_size: number }[] } | null;
        if (!raw) throw new IspyError('ISPY_ERR_UNAVAILABLE', 'the heap plugin is not loaded on the main thread');
        const h = raw.heap;
        return {
          usedMB: mb(h.used_heap_size!),
          totalMB: mb(h.total_heap_size!),
          limitMB: mb(h.heap_size_limit!),
          usedOfLimitPercent: Math.round((h.used_heap_size! / h.heap_size_limit!) * 1000) / 10,
          externalMB: mb(h.external_memory!),
          mallocedMB: mb(h.malloced_memory!),
          nativeContexts: h.number_of_native_contexts,
          detachedContexts: h.number_of_detached_contexts,
          spaces: raw.spaces.map((s) => ({ space: s.space_name, sizeMB: mb(s.space_size), usedMB: mb(s.space_used_size), availableMB: mb(s.space_available_size) })),
        };
      },
    }),

    gc: command({
      summary: 'Run a full garbage collection on the main thread and show what it freed',
      thread: 'worker',
      changes: true,
      async run(_args, ctx) {
        return ctx.inspector.withDomains(['HeapProfiler'], async () => {
          const before = await heapUsage(ctx);
          const t0 = performance.now();
          await ctx.inspector.post('HeapProfiler.collectGarbage', {}, { timeoutMs: 60_000 });
          const tookMs = Math.round((performance.now() - t0) * 10) / 10;
          const after = await heapUsage(ctx);
          return { beforeMB: mb(before.usedSize), afterMB: mb(after.usedSize), freedMB: mb(before.usedSize - after.usedSize), tookMs };
        });
      },
    }),

    count: command({
      summary: 'Count live instances of a constructor on the main thread (subclasses included); runs a full GC first, pausing the app',
      thread: 'worker',
      // A forced full GC pauses the app: audited like heap gc.
      changes: true,
      args: {
        name: arg.string({ summary: 'the constructor: a global (Map, Buffer, globalThis.MyClass) or <module>:<export path> (./lib/models.js:User, pg:Client)', positional: true, required: true }),
        via: arg.choice(['auto', 'v8', 'inspector'] as const, { summary: 'how to count: v8.queryObjects (where the Node line has it), the inspector\'s Runtime.queryObjects, or auto: the first that exists', default: 'auto' }),
      },
      async run(args, ctx) {
        const r = await resolveConstructor(ctx, args.name);
        try {
          let useV8 = args.via === 'v8' || (args.via === 'auto' && r.v8QueryObjects);
          if (useV8 && !r.v8QueryObjects) throw new IspyError('ISPY_ERR_UNAVAILABLE', 'this Node line has no v8.queryObjects(): use --via inspector (or auto)');
          const started = performance.now();
          let count: number | undefined;
          if (useV8) {
            const n = await ctx.mainThread.evaluate(`${API}.countWithV8(${r.id})`, { timeoutMs: COUNT_TIMEOUT_MS });
            if (failed(n)) {
              // auto: a way that would write into the app's stderr gives way to the inspector's.
              if (args.via !== 'auto' || !(n as { inspectorInstead?: true }).inspectorInstead) throw new IspyError(n.error.code, n.error.message);
              useV8 = false;
            } else count = n as number;
          }
          count ??= await countWithInspector(ctx, r.id);
          return {
            constructor: r.name,
            module: r.module,
            count,
            source: useV8 ? 'v8.queryObjects' : 'Runtime.queryObjects',
            tookMs: Math.round(performance.now() - started),
            // What queryObjects matches: every live object with the prototype in its chain.
            includes: 'instances of subclasses, and the subclasses\' prototypes; counted after a full GC',
          };
        } finally {
          await ctx.mainThread.evaluate(`${API}.release(${r.id})`, { timeoutMs: 1000 }).catch(() => {});
        }
      },
    }),

    snapshot: command({
      summary: 'Write a .heapsnapshot (opens in Chrome DevTools); refuses when it would not fit in memory',
      thread: 'worker',
      changes: true,
      artefact: true,
      args: {
        force: arg.boolean({ summary: 'take it even when the estimate says memory is short' }),
      },
      async run(args, ctx) {
        if (snapshotSince !== undefined) {
          throw new IspyError('ISPY_ERR_UNAVAILABLE', `a heap snapshot is already being taken (started ${Math.round((Date.now() - snapshotSince) / 1000)}s ago)`);
        }
        // Claimed before the preflight awaits, so two calls cannot both pass it.
        snapshotSince = Date.now();
        try {
          const usage = await heapUsage(ctx);
          const estimate = await memoryPreflight({
            action: 'take a heap snapshot',
            heapUsedBytes: usage.usedSize,
            factor: SNAPSHOT_MEMORY_FACTOR,
            fileFactor: SNAPSHOT_FILE_FACTOR,
            outputDir: ctx.settings.outputDir,
            configuredBytes: ctx.settings.limits.snapshotMemoryBytes,
            force: args.force,
            note: 'The main thread also freezes while it runs.',
          });
          const out = await ctx.artefacts.create('heap.heapsnapshot');
          const started = performance.now();
          // The main thread is frozen while it writes; this thread watches the file grow.
          ctx.progress({ message: 'walking the heap (the app is paused)' });
          const watch = setInterval(() => {
            fs.promises.stat(out.partialPath).then(
              (s) => s.size > 0 && ctx.progress({ message: `writing: ${mb(s.size)} MB so far (the app is paused)` }),
              () => {},
            );
          }, 250);
          const cancelled = () => new IspyError('ISPY_ERR_CANCELLED', 'cancelled: the partial snapshot was deleted');
          try {
            // Gone before the heap walk began: do not freeze the app for a file nobody waits for.
            if (ctx.signal.aborted) throw cancelled();
            const wrote = await ctx.mainThread.evaluate(`${API} && ${API}.writeSnapshot(${JSON.stringify(out.partialPath)})`, { timeoutMs: 30 * 60_000 });
            if (wrote !== true) throw new IspyError('ISPY_ERR_UNAVAILABLE', 'the heap plugin is not loaded on the main thread');
            // Flushing hundreds of MB takes a while: flush before the last look at the signal, so
            // a cancel or disconnect during the write or the flush discards the file.
            await flush(out.partialPath);
            if (ctx.signal.aborted) throw cancelled();
            const file = await out.finish();
            return { file, tookMs: Math.round(performance.now() - started), ...estimate };
          } catch (err) {
            await out.abort();
            throw err;
          } finally {
            clearInterval(watch);
          }
        } finally {
          snapshotSince = undefined;
        }
      },
    }),
  },
});
