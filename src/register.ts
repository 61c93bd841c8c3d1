// `node -r ispy/register app.js` (CommonJS) or `node --import ispy/register app.js` (ES
// modules): starts the agent beside the app. A problem is one line on stderr and the app
// runs on without the agent; nothing here can throw into the app.

import path from 'node:path';
import { writeSync } from 'node:fs';

/**
 * Under Node's permission model (`--permission`) Node loads this preload whatever the
 * grants, but none of the agent's other files unless the package's folder may be read:
 * loading them would throw ERR_ACCESS_DENIED into the app. Asked here, with nothing else
 * of ispy loaded, so the line can only name that grant and the process-wide ones; the
 * agent names any folder it lacks once it can run (src/agent/permission.ts).
 */
function ownFilesWithheld(): string | undefined {
  const p = (process as { permission?: { has(scope: string, reference?: string): boolean } }).permission;
  if (typeof p?.has !== 'function' || p.has('fs.read', __dirname)) return undefined;
  const knows = (flag: string) => process.allowedNodeEnvironmentFlags.has(flag);
  const flags: string[] = [];
  if (!p.has('worker')) flags.push('--allow-worker');
  if (knows('--allow-net') && !p.has('net')) flags.push('--allow-net');
  // dist/src/register.js: the package is two folders up (its package.json, the config schema).
  flags.push(`--allow-fs-read=${path.resolve(__dirname, '..', '..')}`);
  return `the permission model is on and withholds what the agent needs, starting with reading its own files; start node with ${flags.join(' ')} (then the agent names the folders it must write); agent not started (the app runs on without it)`;
}

// A worker the app starts inherits the preload; it must not say anything there either
// (its own check below uses node:worker_threads' answer, which this file cannot load yet).
const withheld = process.env.ISPY_DISABLE !== '1' ? ownFilesWithheld() : undefined;
if (withheld) {
  const { isMainThread } = require('node:worker_threads') as typeof import('node:worker_threads');
  if (isMainThread) {
    try {
      writeSync(2, `ispy: ${withheld}\n`);
    } catch {
      // nowhere to say it
    }
  }
} else {
  start();
}

function start(): void {
  // A worker the app starts inherits the preload: it loads nothing more there.
  const { likelyMainThread } = require('./agent/thread') as typeof import('./agent/thread');
  if (!likelyMainThread() || process.env.ISPY_DISABLE === '1') return;
  // The setup waits for the end of the app's synchronous start unless the config needs it
  // before the app's first line (src/agent/early.ts says why either way). Only as `node -r`'s
  // preload, whose module parent is Node's own 'internal/preload': nothing of the app has
  // run yet, so recording from here misses nothing. Under `--import` (an ES module app reads
  // its files before its first line, after a tick) or a require() from the app's code (a
  // Fastify instance may exist already), the setup runs now, as it always did.
  const early = require('./agent/early') as typeof import('./agent/early');
  if ((module as { parent?: { id?: string } | null }).parent?.id !== 'internal/preload' || early.setupMustPrecedeApp()) {
    launchAgent();
    return;
  }
  early.recordEarly();
  process.nextTick(() => {
    try {
      launchAgent();
    } catch (err) {
      // Nothing here may throw into the app: this runs in its process.nextTick queue.
      early.stopRecording();
      try {
        writeSync(2, `ispy: ${(err as Error)?.message ?? err}; agent not started (the app runs on without it)\n`);
      } catch {
        // nowhere to say it
      }
    }
  });
}

function launchAgent(): void {
  // The agent's modules come through its own loader (src/agent/loader.ts says why); only the
  // loader itself goes through Node's resolver, which costs more per module.
  const { loadOwn } = require('./agent/loader') as typeof import('./agent/loader');
  const own = <T>(file: string): T => loadOwn<T>(path.join(__dirname, 'agent', file));
  const { agentLog } = own<typeof import('./agent/log')>('log.js');
  const { launch } = own<typeof import('./agent/start')>('start.js');
  launch({}, false).then(
    (agent) => {
      // Failed plugins were already reported, one line each, as they failed.
      if (process.env.ISPY_VERBOSE === '1') agentLog(`agent listening on ${agent.socket}`);
    },
    (err: Error) => {
      agentLog(`${err.message}; agent not started (the app runs on without it)`);
    },
  );
}
