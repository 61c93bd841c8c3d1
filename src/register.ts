// `node -r ispy/register app.js` (CommonJS) or `node --import ispy/register app.js` (ES
// modules): starts the agent beside the app. A problem is one line on stderr and the app
// runs on without the agent; nothing here can throw into the app.

import { isMainThread } from 'node:worker_threads';
import * as path from 'node:path';
import { loadOwn } from './agent/loader';
import { agentLog } from './agent/log';

// The agent's modules come through its own loader (src/agent/loader.ts says why).
const { launch } = loadOwn<typeof import('./agent/start')>(path.join(__dirname, 'agent', 'start.js'));

if (isMainThread && process.env.ISPY_DISABLE !== '1') {
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
