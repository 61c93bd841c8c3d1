// The `requests` plugin: which HTTP requests are in flight, for how long, and what each
// one is waiting on. Written against the public plugin API only.
//
// Always on (cheap): diagnostics_channel subscriptions feed a table of in-flight requests
// and outbound calls on the main thread. Armed on demand (bounded in time): a tracker that
// attributes pending async operations to requests (tracker.ts: an AsyncLocalStorage store
// where it runs on AsyncContextFrame, else an async_hooks hook).
//
// list/show/slow run in the agent worker and read the table with Runtime.evaluate, which
// V8 runs even inside a busy JavaScript loop: when a handler spins, the operator still
// sees the requests, which one is executing, and the main thread's stack.

import { arg, command, definePlugin, EventQueue, formatFrame, IspyError, secretMatcher, type CommandContext, type MainThreadStack } from 'ispy/plugin';
import { RequestTable, type FinishedRequest } from './table';

/** Where the main thread publishes the table for the worker's Runtime.evaluate. */
const GLOBAL_KEY = 'ispy.requests';
const API = `globalThis[Symbol.for(${JSON.stringify(GLOBAL_KEY)})]`;

const DEFAULT_TRACK_MS = 30_000;
const DEFAULT_TRACK_MAX_MS = 5 * 60_000;
const HISTORY = 500;
const WATCH_MAX_PER_SECOND = 50;

// One per thread that loads this module; only the main thread's is fed.
let table: RequestTable | undefined;

interface PluginOptions {
  history?: number;
  /** Stack captures a second for the waits `requests track` records (default 100). */
  trackStacksPerSecond?: number;
}

/** Whether Fastify was loaded before this plugin (CommonJS: ESM apps load it through require too). */
function fastifyLoaded(): boolean {
  // The agent loads its own files with a require of its own, which has no `cache`: then
  // Module's (node:module itself would load Node's ESM loader before the app's first line).
  const cache = require.cache ?? (module.constructor as { _cache?: NodeJS.Dict<unknown> })._cache ?? {};
  return Object.keys(cache).some((k) => /[\\/]fastify[\\/]fastify\.js$/.test(k));
}

async function readTable(ctx: CommandContext, call: string): Promise<{ value: unknown; mainThread?: Record<string, unknown> }> {
  let value: unknown;
  try {
    value = await ctx.mainThread.evaluate(`${API} ? ${API}.${call} : { unavailable: true }`, { timeoutMs: ctx.settings.limits.inspectorTimeoutMs ?? 1000 });
  } catch (err) {
    if (err instanceof IspyError && err.code === 'ISPY_ERR_MAIN_BLOCKED') {
      throw new IspyError('ISPY_ERR_MAIN_BLOCKED', `${err.message}; the request table lives on the main thread and cannot be read until it returns (try \`process stack\` again later)`);
    }
    throw err;
  }
  if (value && typeof value === 'object' && (value as { unavailable?: boolean }).unavailable) {
    throw new IspyError('ISPY_ERR_UNAVAILABLE', 'the requests table is not loaded on the main thread');
  }
  if (!ctx.mainThread.stuck()) return { value };
  // The loop is stuck: say so (for how long, read now, as stuck() just did), and show where.
  const age = ctx.mainThread.heartbeatAgeMs();
  const stack: MainThreadStack = await ctx.mainThread.captureStack();
  const mainThread: Record<string, unknown> = { busyForMs: age };
  if (stack.state === 'running') mainThread.stack = stack.frames.slice(0, 8).map(formatFrame);
  else mainThread.state = stack.state;
  return { value, mainThread };
}

export default definePlugin({
  name: 'requests',
  summary: 'In-flight HTTP requests, what each waits on, and recently finished slow ones',
  setup: {
    main(ctx) {
      const opts = (ctx.options ?? {}) as PluginOptions;
      const t = new RequestTable(opts.history ?? HISTORY, secretMatcher(ctx.settings.redact));
      table = t;
      // Arrows, not bound methods: V8 inlines the method into its own arrow; a bound function
      // is called through a trampoline it does not inline.
      ctx.subscribe('http.server.request.start', (m) => t.onServerStart(m as never));
      ctx.subscribe('http.server.response.finish', (m) => t.onServerFinish(m as never));
      ctx.setInterval(() => t.sweep(), 1000);
      ctx.subscribe('http.client.request.start', (m) => t.onClientStart(m as never));
      ctx.subscribe('undici:request:create', (m) => t.onUndiciCreate(m as never));
      ctx.subscribe('undici:request:trailers', (m) => t.onUndiciDone(m as never));
      ctx.subscribe('undici:request:error', (m) => t.onUndiciDone(m as never));
      // Fastify's routes are named when the table is read, by the instance's own router
      // (fastify.ts): its handler channel makes Fastify build objects for every request.
      ctx.subscribe('fastify.initialization', (m) => t.onFastifyInit(m as never));
      // Instances created before the agent came (`ispy attach`, startAgent() mid-run) were not
      // seen: for them, the handler channel, as the only way left to name their routes.
      if (!ctx.app.sinceStart && fastifyLoaded()) ctx.subscribe('tracing:fastify.request.handler:start', (m) => t.onFastifyRoute(m as never));
      const key = Symbol.for(GLOBAL_KEY);
      Object.defineProperty(globalThis, key, { value: t, configurable: true, enumerable: false, writable: false });
      ctx.onUnload(() => {
        t.tracker?.disarm();
        t.tracker = undefined;
        t.clear();
        delete (globalThis as Record<symbol, unknown>)[key];
        table = undefined;
      });
    },
  },
  commands: {
    list: command({
      summary: 'In-flight requests, oldest first (answers while the main thread is busy)',
      thread: 'worker',
      args: {
        minAge: arg.duration({ summary: 'only requests older than this', default: '0ms' }),
        limit: arg.integer({ summary: 'show at most this many', default: 50, min: 1, max: 1000, short: 'n' }),
      },
      async run(args, ctx) {
        const { value, mainThread } = await readTable(ctx, `list(${JSON.stringify({ minAge: args.minAge, limit: args.limit })})`);
        return mainThread ? { mainThread, ...(value as object) } : value;
      },
    }),

    show: command({
      summary: 'One request: headers (redacted), outbound calls, and what it waits on',
      thread: 'worker',
      args: {
        id: arg.integer({ summary: 'the request id from `requests list`', positional: true, required: true, min: 1 }),
      },
      async run(args, ctx) {
        const { value, mainThread } = await readTable(ctx, `show(${args.id})`);
        if (value === undefined || value === null) {
          throw new IspyError('ISPY_ERR_NOT_FOUND', `no request ${args.id} in flight (it may have finished: see \`requests slow\`)`);
        }
        return mainThread ? { mainThread, ...(value as object) } : value;
      },
    }),

    slow: command({
      summary: 'The slowest recently finished requests (status, duration, route)',
      thread: 'worker',
      args: {
        limit: arg.integer({ summary: 'show at most this many', default: 20, min: 1, max: 500, short: 'n' }),
      },
      async run(args, ctx) {
        const { value, mainThread } = await readTable(ctx, `slow(${args.limit})`);
        return mainThread ? { mainThread, ...(value as object) } : value;
      },
    }),

    watch: command({
      summary: 'Stream finished requests until cancelled (rate-limited)',
      thread: 'main',
      args: {
        minDuration: arg.duration({ summary: 'only requests that took at least this long', default: '0ms' }),
        limit: arg.integer({ summary: 'stop after this many', min: 1, short: 'n' }),
      },
      async *stream(args, ctx) {
        const t = table;
        if (!t) throw new IspyError('ISPY_ERR_UNAVAILABLE', 'the requests table is not loaded');
        // A busy server must not flood the client: at most N per second, the rest counted.
        const events = new EventQueue<FinishedRequest>({
          capacity: WATCH_MAX_PER_SECOND * 2,
          perSecond: WATCH_MAX_PER_SECOND,
          signal: ctx.signal,
          ...(args.limit !== undefined ? { limit: args.limit } : {}),
          dropped: (n) => ({ dropped: n, note: `more than ${WATCH_MAX_PER_SECOND} requests/s: ${n} not shown` }),
        });
        const stop = t.watch((done) => {
          if (done.durationMs >= args.minDuration) events.push(done);
        });
        try {
          yield* events.drain();
        } finally {
          stop();
        }
      },
    }),

    track: command({
      summary: 'Arm async tracking for a bounded time: `show` then lists what each request waits on',
      thread: 'main',
      changes: true,
      args: {
        duration: arg.duration({ summary: 'how long to stay armed', default: `${DEFAULT_TRACK_MS / 1000}s`, min: '100ms' }),
        off: arg.boolean({ summary: 'disarm now' }),
        hooks: arg.boolean({ summary: 'also record timers, file system calls and DNS lookups, through async_hooks (costlier; always so where AsyncLocalStorage needs async_hooks, Node 20-22)' }),
      },
      run(args, ctx) {
        const t = table;
        if (!t) throw new IspyError('ISPY_ERR_UNAVAILABLE', 'the requests table is not loaded');
        if (args.off) {
          const was = t.tracker !== undefined;
          t.tracker?.disarm();
          t.tracker = undefined;
          return { tracking: 'off', wasArmed: was };
        }
        const cap = ctx.settings.limits.trackMaxDurationMs ?? DEFAULT_TRACK_MAX_MS;
        if (args.duration > cap) {
          throw new IspyError('ISPY_ERR_BAD_ARGS', `--duration ${args.duration} ms is over the configured cap of ${cap} ms (limits.trackMaxDuration)`);
        }
        t.tracker?.disarm();
        // Loaded on first use (with async_hooks): most apps are never tracked.
        const { Tracker, contextFramesCarryStores, CAPTURES_PER_SECOND } = require('./tracker') as typeof import('./tracker');
        const mode = !args.hooks && contextFramesCarryStores() ? 'context' : 'hooks';
        const perSecond = (ctx.options as PluginOptions | undefined)?.trackStacksPerSecond;
        const stacks = typeof perSecond === 'number' && perSecond >= 0 ? Math.floor(perSecond) : CAPTURES_PER_SECOND;
        const tracker = new Tracker(args.duration, () => t.inFlight(), mode, stacks);
        tracker.arm();
        t.tracker = tracker;
        const timer = ctx.setTimeout(() => {
          tracker.disarm();
          if (t.tracker === tracker) t.tracker = undefined;
        }, args.duration);
        void timer; // cleared by the plugin's lifetime on unload; setup's undo disarms the tracker
        return {
          tracking: 'armed',
          durationMs: args.duration,
          until: new Date(Date.now() + args.duration).toISOString(),
          mode,
          records:
            mode === 'context'
              ? 'sockets each request opens (http, fetch, net); not timers, file system calls or DNS lookups: add --hooks for those (costlier)'
              : 'timers, sockets, connects, file system calls and DNS lookups of each request',
          note: `requests that start from now on are attributed in full; those already in flight are listed with no waits; frames are captured for at most ${stacks} waits a second`,
        };
      },
    }),
  },
});
