// ispy-plugin-hello: an example third-party plugin, in plain CommonJS, using only the
// public plugin API. Copy this folder to start your own. docs/plugins.md explains each part.
//
//   hello greet <name> [--shout]            main thread: touches app state (the counters)
//   hello count [name]                      main thread: reads the same counters
//   hello ticks [--every 200ms] [--count N] agent worker: a stream that keeps answering
//                                           while the app's event loop is blocked
//
// Load it by listing it in ispy.config.json: { "plugins": ["./examples/hello-plugin/index.js"] }
'use strict';

// In a plugin package of your own, ispy is a peer dependency; inside this repository the
// root package.json links ispy into node_modules ("ispy": "file:."), so the same line works.
const { arg, command, definePlugin, IspyError } = require('ispy/plugin');

// Module state is per thread: the agent loads this file on the app's main thread and again
// in its worker. The counters live on the main thread, so every command that reads or
// writes them is declared `thread: 'main'`.
const MAX_NAMES = 1000; // bound every buffer: a client cannot grow this without limit
const greeted = new Map(); // name -> times greeted
let served = 0;
let httpRequests = 0;

module.exports = definePlugin({
  name: 'hello',
  summary: 'An example plugin: greetings, a counter and a ticking stream',
  version: '0.1.0',
  setup: {
    // Runs on the app's main thread when the agent starts, under limits.setupTimeout.
    main(ctx) {
      // Subscribed through ctx, so the subscription is removed when the plugin unloads.
      ctx.subscribe('http.server.request.start', () => {
        httpRequests++;
      });
      ctx.onUnload(() => {
        greeted.clear();
        served = 0;
        httpRequests = 0;
      });
    },
  },
  commands: {
    greet: command({
      summary: 'Greets someone and counts it',
      thread: 'main',
      args: {
        name: arg.string({ summary: 'who to greet', positional: true, required: true }),
        shout: arg.boolean({ summary: 'greet in capitals', short: 's' }),
      },
      run(args, ctx) {
        const word = greetingWord(ctx.options);
        const greeting = `${word}, ${args.name}`;
        served++;
        if (greeted.has(args.name) || greeted.size < MAX_NAMES) greeted.set(args.name, (greeted.get(args.name) || 0) + 1);
        return { greeting: args.shout ? `${greeting.toUpperCase()}!` : greeting, served };
      },
    }),

    count: command({
      summary: 'How many greetings were served, in total or to one name',
      thread: 'main',
      args: {
        name: arg.string({ summary: 'only greetings to this name', positional: true }),
      },
      run(args) {
        if (args.name === undefined) return { served, names: greeted.size, httpRequests };
        const times = greeted.get(args.name);
        if (times === undefined) throw new IspyError('ISPY_ERR_NOT_FOUND', `nobody called ${JSON.stringify(args.name)} was greeted yet`);
        return { name: args.name, times };
      },
    }),

    ticks: command({
      summary: "Streams a tick every --every, with the age of the main thread's heartbeat (large = event loop blocked)",
      thread: 'worker',
      args: {
        every: arg.duration({ summary: 'time between ticks', default: '200ms', min: '10ms', max: '1m' }),
        count: arg.integer({ summary: 'stop after this many ticks (default: until cancelled)', short: 'n', min: 1, max: 100000 }),
      },
      async *stream(args, ctx) {
        for (let n = 1; args.count === undefined || n <= args.count; n++) {
          await sleep(args.every, ctx);
          // Cancel (Ctrl-C), a disconnect or agent stop: end quietly, nothing left behind.
          if (ctx.signal.aborted) return;
          if (args.count !== undefined) ctx.progress({ done: n, total: args.count });
          yield { tick: n, at: new Date().toISOString(), heartbeatAgeMs: ctx.mainThread.heartbeatAgeMs() };
        }
      },
    }),
  },
});

function greetingWord(options) {
  // pluginOptions.hello in the config arrives as ctx.options; check it, it is user input.
  const word = options && options.greeting;
  return typeof word === 'string' && word.length > 0 ? word : 'hello';
}

/** Waits `ms`, or less if the call is cancelled. The timer is the plugin's own (ctx), so unload clears it too. */
function sleep(ms, ctx) {
  return new Promise((resolve) => {
    if (ctx.signal.aborted) return resolve();
    const onAbort = () => {
      timer.clear();
      resolve();
    };
    const timer = ctx.setTimeout(() => {
      ctx.signal.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    ctx.signal.addEventListener('abort', onAbort, { once: true });
  });
}
