// The preload's start, deferred: as `node -r ispy/register`, the agent sets itself up at the
// end of the app's synchronous start (a process.nextTick queued by the preload) rather than
// before the app's first line, so the app's own start-up is not held back by the agent's (issue
// 12). Nothing is missed by that: no request, connection or timer of the app can run
// before the event loop's first turn, and the setup still runs before it. Two things
// cannot wait, and keep the setup before the first line:
//   - traces in the config: the app may take a reference to the function at its first line,
//     and a wrap put on after that is never called;
//   - plugins of the config: their main-thread setup may expect to see the app start.
// What the app publishes while it starts, on the channels a plugin needs from the start
// (RECORDED), is held here and handed to the plugins' subscriptions (src/agent/runtime.ts)
// when they come; then the recording stops and lets the messages go.
//
// Loaded by the preload before the app's first line, through Node's require: it loads
// node:path, node:fs and node:diagnostics_channel only (test/preload-footprint.test.ts).

import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import dc from 'node:diagnostics_channel';

/**
 * Channels published once, while the app starts, that a plugin must see: Fastify publishes
 * each instance on `fastify.initialization` as the app calls fastify() (the requests plugin
 * names routes with it).
 */
const RECORDED = ['fastify.initialization'] as const;

/**
 * The config file the agent reads when no startAgent() option names one: $ISPY_CONFIG, else
 * ./ispy.config.json (config.ts's configCandidate asks here; kept in this small module so the
 * preload can ask before the app's first line without loading the config's modules).
 */
export function defaultConfigFile(env: NodeJS.ProcessEnv, cwd: string): string {
  return env.ISPY_CONFIG ? path.resolve(cwd, env.ISPY_CONFIG) : path.join(cwd, 'ispy.config.json');
}

/** Whether a config file the preload would read asks for the setup before the first line. */
export function setupMustPrecedeApp(env: NodeJS.ProcessEnv = process.env, cwd: string = process.cwd()): boolean {
  const file = defaultConfigFile(env, cwd);
  // A named file that is missing is the config's error to report: the start as before says it.
  if (!env.ISPY_CONFIG && !existsSync(file)) return false;
  try {
    const raw = JSON.parse(readFileSync(file, 'utf8')) as { traces?: unknown; plugins?: unknown };
    const some = (v: unknown) => Array.isArray(v) && v.length > 0;
    return some(raw?.traces) || some(raw?.plugins);
  } catch {
    // Unreadable or not JSON: the start as before reads it and says what is wrong.
    return true;
  }
}

let held: Map<string, unknown[]> | undefined;
const listeners = new Map<string, (message: unknown) => void>();

/** Starts holding what RECORDED channels publish (the preload, before the app's first line). */
export function recordEarly(): void {
  if (held) return;
  held = new Map();
  for (const channel of RECORDED) {
    const listener = (message: unknown) => {
      const list = held?.get(channel);
      if (list) list.push(message);
      else held?.set(channel, [message]);
    };
    listeners.set(channel, listener);
    dc.subscribe(channel, listener);
  }
}

/** What `channel` published since recordEarly(), until stopRecording(). */
export function earlyMessages(channel: string): readonly unknown[] {
  return held?.get(channel) ?? [];
}

/** Ends the recording and lets the messages go (once the plugins' main-thread setup is done). */
export function stopRecording(): void {
  for (const [channel, listener] of listeners) dc.unsubscribe(channel, listener);
  listeners.clear();
  held = undefined;
}

/**
 * True while the recording that began in the preload runs: a plugin subscribing now to a
 * RECORDED channel gets everything it published since the app started.
 */
export function recordedFromStart(): boolean {
  return held !== undefined;
}
