// The `profile` plugin: CPU profiles of the whole process or of one chosen function, and
// sampling heap (allocation) profiles, in the formats DevTools and VS Code open.
//
// `cpu` and `alloc` run in the agent worker and drive the main thread's profilers through
// the inspector, so they work while the main thread is busy. `gate` runs on the main
// thread, where the function it wraps is called.

import {
  arg,
  collapse,
  command,
  definePlugin,
  IspyError,
  mergeProfiles,
  resolveTarget,
  topFunctions,
  formatFrame,
  type CommandContext,
  type CpuProfile,
} from 'ispy/plugin';
import type { Gate } from './gate';
import type { SamplingHeapProfile } from './heapprofile';

/** Frames of ispy's wrapper (the plugin API's wrap.js and this plugin's gate.js). */
const OWN_FRAMES = /[\\/](?:plugin[\\/]wrap|profile[\\/]gate)\.(?:js|ts)$/;

// Gates live on the main thread; recent finished ones stay listed for `gates`.
const gates = new Map<number, Gate>();
const finished: Gate[] = [];
let nextGate = 1;
// One whole-process profile of each kind at a time (they share the worker's inspector session).
const running = { cpu: undefined as number | undefined, alloc: undefined as number | undefined };
/** A cancelled call leaves no artefact: its result says so. */
const CANCELLED_NOTE = 'cancelled: no file was written (what was sampled until then is summarised here)';

/** Waits `ms`, reporting a countdown; resolves early on abort. */
async function countdown(ctx: CommandContext, ms: number, what: string): Promise<void> {
  const end = performance.now() + ms;
  await new Promise<void>((resolve) => {
    const tick = () => {
      const left = end - performance.now();
      if (left <= 0 || ctx.signal.aborted) {
        clearInterval(timer);
        ctx.signal.removeEventListener('abort', onAbort);
        resolve();
        return;
      }
      ctx.progress({ done: Math.round(ms - left), total: ms, message: `${what}: ${Math.ceil(left / 1000)}s left` });
    };
    const onAbort = () => tick();
    const timer = setInterval(tick, 250);
    timer.unref();
    ctx.signal.addEventListener('abort', onAbort, { once: true });
    tick();
  });
}

/**
 * One whole-process sampling run (CPU or allocations) through the worker's inspector:
 * one of each kind at a time, the domain on only for the run, and the sampler always
 * stopped — on cancel and disconnect too, returning what was sampled so far.
 */
async function sample<T>(
  ctx: CommandContext,
  run: { kind: keyof typeof running; domain: string; start: [string, Record<string, unknown>][]; stop: string; durationMs: number; label: string },
): Promise<T> {
  const release = claim(run.kind, run.kind === 'cpu' ? 'a CPU profile' : 'an allocation profile');
  try {
    return await ctx.inspector.withDomains([run.domain], async () => {
      for (const [method, params] of run.start) await ctx.inspector.post(method, params);
      let stopped: { profile: T } | undefined;
      try {
        await countdown(ctx, run.durationMs, run.label);
      } finally {
        stopped = await ctx.inspector.post<{ profile: T }>(run.stop, {}, { timeoutMs: 10_000 });
      }
      return stopped.profile;
    });
  } finally {
    release();
  }
}

function claim(kind: keyof typeof running, what: string): () => void {
  const since = running[kind];
  if (since !== undefined) {
    throw new IspyError('ISPY_ERR_UNAVAILABLE', `${what} is already running (started ${Math.round((Date.now() - since) / 1000)}s ago by another call); wait for it or cancel it`);
  }
  running[kind] = Date.now();
  return () => {
    running[kind] = undefined;
  };
}

async function saveCpuProfile(ctx: CommandContext, profile: CpuProfile, name: string, format: 'cpuprofile' | 'collapsed'): Promise<string> {
  return format === 'collapsed'
    ? ctx.artefacts.writeFile(`${name}.collapsed.txt`, collapse(profile))
    : ctx.artefacts.writeFile(`${name}.cpuprofile`, JSON.stringify(profile));
}

function retire(gate: Gate): void {
  gates.delete(gate.id);
  finished.push(gate);
  if (finished.length > 10) finished.shift();
}

export default definePlugin({
  name: 'profile',
  summary: 'CPU profiles of the process or of one function, and allocation profiles',
  setup: {
    main(ctx) {
      ctx.onUnload(() => {
        for (const g of gates.values()) g.close('removed');
        gates.clear();
        finished.length = 0;
      });
    },
  },
  commands: {
    cpu: command({
      summary: 'Sample the main thread for a while; save a .cpuprofile and show the top functions',
      thread: 'worker',
      artefact: true,
      args: {
        duration: arg.duration({ summary: 'how long to sample', default: '10s', min: '50ms', max: '10m' }),
        interval: arg.duration({ summary: 'sampling interval (1ms default; 0.1ms for short calls)', default: '1ms', min: '0.1ms', max: '1s' }),
        format: arg.choice(['cpuprofile', 'collapsed'] as const, { summary: 'artefact format: DevTools .cpuprofile, or collapsed stacks for flame-graph tools', default: 'cpuprofile' }),
        top: arg.integer({ summary: 'how many top functions to show', default: 15, min: 1, max: 200 }),
      },
      async run(args, ctx) {
        // Code V8 optimized on the stack (a hot loop) before the profiler started is not in
        // the profiler's code map, so its samples land on the caller. When the thread is
        // already stuck, say where it is, so the operator sees the looping function anyway.
        let busyAtStart: Record<string, unknown> | undefined;
        if (ctx.mainThread.stuck()) {
          const busyForMs = ctx.mainThread.heartbeatAgeMs();
          const stack = await ctx.mainThread.captureStack();
          busyAtStart = {
            busyForMs,
            stack: stack.state === 'running' ? stack.frames.slice(0, 8).map(formatFrame) : [],
            note: 'the main thread was already busy when profiling began: samples in a loop optimized before the start are attributed to its caller; this stack shows the function that was running',
          };
        }
        const profile = await sample<CpuProfile>(ctx, {
          kind: 'cpu',
          domain: 'Profiler',
          start: [
            ['Profiler.setSamplingInterval', { interval: Math.max(100, Math.round(args.interval * 1000)) }],
            ['Profiler.start', {}],
          ],
          stop: 'Profiler.stop',
          durationMs: args.duration,
          label: 'profiling',
        });
        const summary = { ...(busyAtStart ? { busyAtStart } : {}), ...topFunctions(profile, args.top) };
        // Cancelled (or its client gone): say what was sampled, keep no file nobody waits for.
        if (ctx.signal.aborted) return { cancelled: true, note: CANCELLED_NOTE, ...summary };
        const file = await saveCpuProfile(ctx, profile, 'cpu', args.format);
        return { file, cancelled: false, ...summary };
      },
    }),

    gate: command({
      summary: 'Profile single calls of one function, at most one every --every, and merge --samples of them',
      thread: 'main',
      changes: true,
      artefact: true,
      args: {
        target: arg.string({ summary: 'the function: <module>:<export path>, e.g. ./lib/db.js:query or pg:Client.prototype.query', positional: true, required: true }),
        every: arg.duration({ summary: 'at most one profiled call per this long', default: '1s', min: '10ms' }),
        samples: arg.integer({ summary: 'how many calls to profile before merging and removing the gate', default: 10, min: 1, max: 1000 }),
        interval: arg.duration({ summary: 'sampling interval inside a profiled call', default: '0.1ms', min: '0.05ms', max: '100ms' }),
        duration: arg.duration({ summary: 'remove the gate after this long even if not all samples came', default: '10m', min: '100ms', max: '24h' }),
        detach: arg.boolean({ summary: 'return at once; the gate stays until done (see `profile gates`)' }),
        top: arg.integer({ summary: 'how many top functions to show', default: 15, min: 1, max: 200 }),
      },
      async run(args, ctx) {
        const target = await resolveTarget(args.target);
        if (target.problem) {
          throw new IspyError(
            'ISPY_ERR_UNAVAILABLE',
            `cannot gate ${args.target}: ${target.problem}. Gate the object or prototype it lives on (e.g. <module>:Class.prototype.method), or a function it calls`,
          );
        }
        // The gate and heap-profile code load on first use: an idle agent keeps only what it needs in the app.
        const { Gate } = require('./gate') as typeof import('./gate');
        const gate = new Gate(nextGate++, { spec: args.target, everyMs: args.every, want: args.samples, intervalUs: Math.round(args.interval * 1000) });
        gate.handle = ctx.wrap(target.owner, target.key, gate.intercept);
        gates.set(gate.id, gate);
        const expire = ctx.setTimeout(() => gate.close('removed'), args.duration);

        const complete = async () => {
          expire.clear();
          retire(gate);
          if (!gate.profiles.length) return { ...gate.status(), note: 'no call was profiled: the function was not called while the gate was on' };
          // Our own wrapper frames sit between the caller and the function: leave them out.
          const merged = mergeProfiles(gate.profiles, (f) => OWN_FRAMES.test(f.url));
          // A gate removed because its call was cancelled or its client went away keeps no file.
          if (!args.detach && ctx.signal.aborted) return { ...gate.status(), cancelled: true, note: CANCELLED_NOTE, ...topFunctions(merged, args.top) };
          const name = `gate-${target.key.replace(/[^A-Za-z0-9_-]/g, '_')}`;
          gate.file = await ctx.artefacts.writeFile(`${name}.cpuprofile`, JSON.stringify(merged));
          const gaps = gate.sampleTimes.slice(1).map((t, i) => Math.round(t - gate.sampleTimes[i]!));
          return {
            ...gate.status(),
            callMs: gate.callDurations.map((d) => Math.round(d * 100) / 100),
            gapsMs: gaps,
            ...topFunctions(merged, args.top),
          };
        };

        if (args.detach) {
          void gate.finished().then(complete).catch((err) => ctx.log(`gate ${gate.id}: ${(err as Error).message}`));
          return { ...gate.status(), note: 'detached: watch it with `profile gates`; the merged profile is written when done' };
        }
        gate.onSample = (taken) => ctx.progress({ done: taken, total: args.samples, message: `${taken}/${args.samples} calls profiled` });
        ctx.progress({ done: 0, total: args.samples, message: `waiting for calls to ${args.target}` });
        const onAbort = () => gate.close('removed');
        ctx.signal.addEventListener('abort', onAbort, { once: true });
        try {
          await gate.finished();
        } finally {
          ctx.signal.removeEventListener('abort', onAbort);
        }
        return complete();
      },
    }),

    gates: command({
      summary: 'Active gates with their progress, and recently finished ones',
      thread: 'main',
      run() {
        return { gates: [...gates.values(), ...finished].map((g) => g.status()) };
      },
    }),

    ungate: command({
      summary: 'Remove a gate (or all): the original function is put back',
      thread: 'main',
      changes: true,
      args: {
        id: arg.string({ summary: 'gate id, or "all"', positional: true, required: true }),
      },
      run(args) {
        const chosen = args.id === 'all' ? [...gates.values()] : [gates.get(Number(args.id))].filter((g): g is Gate => g !== undefined);
        if (!chosen.length && args.id !== 'all') {
          throw new IspyError('ISPY_ERR_NOT_FOUND', `no active gate ${JSON.stringify(args.id)} (active: ${[...gates.keys()].join(', ') || 'none'})`);
        }
        for (const g of chosen) g.close('removed');
        return { removed: chosen.map((g) => g.id) };
      },
    }),

    alloc: command({
      summary: 'Sample allocations for a while; save a .heapprofile and show the top allocation sites',
      thread: 'worker',
      artefact: true,
      args: {
        duration: arg.duration({ summary: 'how long to sample', default: '10s', min: '50ms', max: '10m' }),
        interval: arg.integer({ summary: 'average bytes between samples', default: 32768, min: 128, max: 16 * 1024 * 1024 }),
        top: arg.integer({ summary: 'how many top sites to show', default: 15, min: 1, max: 200 }),
      },
      async run(args, ctx) {
        const profile = await sample<SamplingHeapProfile>(ctx, {
          kind: 'alloc',
          domain: 'HeapProfiler',
          // Count what was allocated, not only what is still alive when sampling stops.
          start: [['HeapProfiler.startSampling', { samplingInterval: args.interval, includeObjectsCollectedByMajorGC: true, includeObjectsCollectedByMinorGC: true }]],
          stop: 'HeapProfiler.stopSampling',
          durationMs: args.duration,
          label: 'sampling allocations',
        });
        const { topAllocations } = require('./heapprofile') as typeof import('./heapprofile');
        if (ctx.signal.aborted) return { cancelled: true, note: CANCELLED_NOTE, ...topAllocations(profile, args.top) };
        const file = await ctx.artefacts.writeFile('alloc.heapprofile', JSON.stringify(profile));
        return { file, cancelled: false, ...topAllocations(profile, args.top) };
      },
    }),
  },
});
