// `node -r ispy/register app.js` (CommonJS) or `node --import ispy/register app.js` (ES
// modules): starts the agent beside the app. A problem is one line on stderr and the app
// runs on without the agent; nothing here can throw into the app.

import path from 'node:path';
import { loadOwn } from './agent/loader';

// The agent's modules come through its own loader (src/agent/loader.ts says why); only the
// loader itself goes through Node's resolver, which costs more per module.
const own = <T>(file: string): T => loadOwn<T>(path.join(__dirname, 'agent', file));
const { likelyMainThread } = own<typeof import('./agent/thread')>('thread.js');

// A worker the app starts inherits the preload: it loads nothing more there.
if (likelyMainThread() && process.env.ISPY_DISABLE !== '1') {
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
