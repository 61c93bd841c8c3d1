// The `eval` plugin: evaluate an expression in the app's main context and see the result.
// It runs arbitrary code inside the process, so it is off unless the config sets
// "eval": true, and every evaluation is written to the agent's log and, before it runs, to
// the audit log (declared `changes`: the agent refuses it when that line cannot be
// written). With the audit log turned off ("audit": false) it does not run at all.

import { createRequire } from 'node:module';
import * as path from 'node:path';
import { inspect } from 'node:util';
import type * as Vm from 'node:vm';
import { arg, command, definePlugin, IspyError } from 'ispy/plugin';

/** node:vm is loaded by the first eval, not at start-up in every app. */
const vm = (): typeof Vm => require('node:vm');

const REQUIRE_KEY = Symbol.for('ispy.eval.require');

/** Compiles as an expression if it is one (so `1 + 1` returns 2), else as statements. */
function compile(expression: string): string {
  const asExpression = `(async (require) => (\n${expression}\n))(globalThis[Symbol.for('ispy.eval.require')])`;
  const { Script } = vm();
  try {
    new Script(asExpression);
    return asExpression;
  } catch {
    return `(async (require) => {\n${expression}\n})(globalThis[Symbol.for('ispy.eval.require')])`;
  }
}

export default definePlugin({
  name: 'eval',
  summary: 'Evaluate an expression in the app (off unless the config enables it)',
  commands: {
    eval: command({
      summary: 'Evaluate an expression (await allowed) in the main context and show the result',
      thread: 'main',
      changes: true,
      args: {
        expression: arg.string({ summary: "JavaScript; `require` resolves from the app's working directory", positional: true, required: true }),
        timeout: arg.duration({ summary: 'how long the synchronous part may run before it is stopped; also how long to wait for a promise', default: '5s', min: '10ms', max: '5m' }),
        depth: arg.integer({ summary: 'how deep to show nested objects', default: 3, min: 0, max: 10 }),
      },
      async run(args, ctx) {
        if (!ctx.settings.eval) {
          throw new IspyError(
            'ISPY_ERR_UNAVAILABLE',
            `eval is disabled in this process: set "eval": true in ${ctx.settings.configFile ?? 'ispy.config.json (in the app\'s working directory, or the file ISPY_CONFIG names)'} and restart the app`,
          );
        }
        if (ctx.settings.audit === false) {
          throw new IspyError(
            'ISPY_ERR_UNAVAILABLE',
            `eval runs only with the audit log on, and ${ctx.settings.configFile ?? 'the config'} turns it off ("audit": false); remove that key (or name a file) and restart the app`,
          );
        }
        // Recorded in the audit log before it runs (eval refuses without one); nothing of it goes
        // into the app's own output.
        const code = compile(args.expression);
        const g = globalThis as Record<symbol, unknown>;
        g[REQUIRE_KEY] = createRequire(path.join(process.cwd(), 'noop.js'));
        let pending: Promise<unknown>;
        const started = performance.now();
        try {
          // The synchronous part runs under vm's timeout: a runaway loop is stopped.
          pending = vm().runInThisContext(code, { filename: 'ispy-eval', timeout: args.timeout, displayErrors: false }) as Promise<unknown>;
        } catch (err) {
          const e = err as Error & { code?: string };
          if (e?.code === 'ERR_SCRIPT_EXECUTION_TIMEOUT') {
            throw new IspyError('ISPY_ERR_TIMEOUT', `the expression ran for more than ${args.timeout} ms and was stopped (--timeout)`);
          }
          throw new IspyError('ISPY_ERR_BAD_ARGS', `the expression did not run: ${e?.message ?? err}`);
        } finally {
          delete g[REQUIRE_KEY];
        }
        let timer: NodeJS.Timeout | undefined;
        const timeout = new Promise<never>((_, reject) => {
          timer = setTimeout(() => reject(new IspyError('ISPY_ERR_TIMEOUT', `the expression's promise did not settle within ${args.timeout} ms (it may still be running)`)), args.timeout);
          timer.unref();
        });
        let value: unknown;
        try {
          value = await Promise.race([pending, timeout]);
        } catch (err) {
          if (err instanceof IspyError) throw err;
          const e = err as Error;
          return { threw: true, error: inspect(err, { depth: 1, breakLength: 100 }).slice(0, 4000), name: e?.name, ms: Math.round(performance.now() - started) };
        } finally {
          clearTimeout(timer);
        }
        return {
          type: value === null ? 'null' : Array.isArray(value) ? 'array' : typeof value,
          value: inspect(value, { depth: args.depth, maxArrayLength: 50, maxStringLength: 2000, breakLength: 100 }).slice(0, 20_000),
          ms: Math.round(performance.now() - started),
        };
      },
    }),
  },
});
