// The `trace` plugin: wrap a function of the running app, see every call to it live, and
// have the wrapper take itself off after a number of calls or a time, leaving the
// function exactly as it was. Written against the public plugin API only.
//
// Everything runs on the main thread, where the traced functions are called. A trace
// belongs to the client that added it: when that client disconnects, its traces come off,
// unless added with --detach.

import { arg, command, definePlugin, EventQueue, IspyError, resolveTarget, secretMatcher, type ConfigTrace, type Lifetime } from 'ispy/plugin';
import type { TraceRegistry } from './registry';
import type { TraceEvent, TraceOptions } from './tracer';

const DEFAULT_LIMIT = 100;
const DEFAULT_DURATION_MS = 60_000;
const WATCH_QUEUE = 1000;

// One per thread that loads this module; only the main thread's is used. The registry and
// the tracer's code are loaded by the first trace (from the config, or a client): an app
// that never traces keeps none of it in memory.
let lifetime: Lifetime | undefined;
let registry: TraceRegistry | undefined;

function need(): TraceRegistry {
  if (registry) return registry;
  if (!lifetime) throw new IspyError('ISPY_ERR_UNAVAILABLE', 'the trace plugin is not loaded on the main thread');
  const { TraceRegistry: Registry } = require('./registry') as typeof import('./registry');
  registry = new Registry(lifetime);
  return registry;
}

export default definePlugin({
  name: 'trace',
  summary: 'Wrap a function at runtime and watch its calls; the wrapper takes itself off',
  setup: {
    main(ctx) {
      lifetime = ctx;
      const isSecret = secretMatcher(ctx.settings.redact);
      const maxMs = ctx.settings.limits.traceMaxDurationMs ?? 10 * 60_000;
      const perSecond = ctx.settings.limits.traceEventsPerSecond ?? 100;
      const optionsFor = (t: ConfigTrace): TraceOptions => ({
        args: t.args === true,
        result: t.result === true,
        stack: t.stack === true,
        limit: t.limit ?? DEFAULT_LIMIT,
        durationMs: Math.min(t.duration ?? DEFAULT_DURATION_MS, maxMs),
        perSecond,
        detached: true,
        isSecret,
      });
      if (ctx.settings.traces.length > 0) {
        const { installConfigTraces } = require('./config-traces') as typeof import('./config-traces');
        installConfigTraces(ctx, need(), optionsFor);
      }
      ctx.onUnload(() => {
        registry?.removeAll('the agent stopped');
        registry = undefined;
        lifetime = undefined;
      });
    },
  },
  commands: {
    add: command({
      summary: 'Trace calls to a function: <module>:<export path>, e.g. ./lib/db.js:query, pg:Client.prototype.query, global:fetch',
      thread: 'main',
      changes: true,
      args: {
        target: arg.string({ summary: 'the function to trace', positional: true, required: true }),
        args: arg.boolean({ summary: 'record the arguments' }),
        result: arg.boolean({ summary: 'record the return value' }),
        stack: arg.boolean({ summary: "record the caller's stack (app frames)" }),
        limit: arg.integer({ summary: 'calls to record before the trace removes itself', default: DEFAULT_LIMIT, min: 1, max: 1_000_000, short: 'n' }),
        duration: arg.duration({ summary: 'how long the trace stays on', default: `${DEFAULT_DURATION_MS / 1000}s`, min: '100ms' }),
        detach: arg.boolean({ summary: 'keep the trace when this client disconnects' }),
      },
      async run(args, ctx) {
        const reg = need();
        const maxMs = ctx.settings.limits.traceMaxDurationMs ?? 10 * 60_000;
        if (args.duration > maxMs) {
          throw new IspyError('ISPY_ERR_BAD_ARGS', `--duration ${args.duration} ms is over the configured cap of ${maxMs} ms (limits.traceMaxDuration)`);
        }
        const target = await resolveTarget(args.target);
        if (target.problem) {
          throw new IspyError(
            'ISPY_ERR_UNAVAILABLE',
            `cannot trace ${args.target}: ${target.problem}. Trace it on the object or prototype it lives on ` +
              `(e.g. <module>:Class.prototype.method), trace a function it calls, or list it under "traces" in ` +
              `${ctx.settings.configFile ?? 'ispy.config.json'} so it is wrapped when its module loads`,
          );
        }
        const trace = reg.create(
          args.target,
          { args: args.args, result: args.result, stack: args.stack, limit: args.limit, durationMs: args.duration, perSecond: ctx.settings.limits.traceEventsPerSecond ?? 100, detached: args.detach, isSecret: secretMatcher(ctx.settings.redact) },
          args.detach ? `${ctx.client.name} (detached)` : ctx.client.name,
        );
        try {
          reg.attach(trace, target.owner, target.key);
        } catch (err) {
          trace.remove('could not be installed');
          throw err;
        }
        if (!args.detach) {
          const cancel = ctx.client.onDisconnect(() => trace.remove('its client disconnected'));
          const remove = trace.remove;
          trace.remove = (reason) => {
            cancel();
            remove(reason);
          };
        }
        return { ...trace.status(), note: 'see its calls with `trace watch`; it comes off by itself after --limit calls or --duration' };
      },
    }),

    list: command({
      summary: 'Active traces with their counts, and recently ended ones',
      thread: 'main',
      run() {
        return { traces: need().list() };
      },
    }),

    remove: command({
      summary: 'Remove a trace (or all): the original function is put back',
      thread: 'main',
      changes: true,
      args: {
        id: arg.string({ summary: 'trace id, or "all"', positional: true, required: true }),
      },
      run(args) {
        return { removed: need().remove(args.id) };
      },
    }),

    watch: command({
      summary: 'Stream call events of all traces (or one) until cancelled',
      thread: 'main',
      args: {
        id: arg.integer({ summary: 'only this trace', min: 1 }),
        limit: arg.integer({ summary: 'stop after this many events', min: 1, short: 'n' }),
        replay: arg.boolean({ summary: 'first send the latest events already recorded (up to 500)' }),
      },
      async *stream(args, ctx) {
        const reg = need();
        const mine = (e: { trace: number }) => args.id === undefined || e.trace === args.id;
        const events = new EventQueue<TraceEvent>(
          {
            capacity: WATCH_QUEUE,
            signal: ctx.signal,
            ...(args.limit !== undefined ? { limit: args.limit } : {}),
            // A watch of one trace ends with it.
            ...(args.id !== undefined ? { ended: () => !reg.traces.has(args.id!) } : {}),
            dropped: (n) => ({ note: `the client fell behind: ${n} events not shown` }),
          },
          args.replay ? reg.recent.filter(mine) : [],
        );
        const stop = reg.watch((e) => {
          if (mine(e)) events.push(e as TraceEvent);
        });
        try {
          for await (const item of events.drain()) {
            const e = item as TraceEvent;
            yield typeof e.at === 'number' ? { ...e, at: new Date(e.at).toISOString() } : item;
          }
        } finally {
          stop();
        }
      },
    }),
  },
});
