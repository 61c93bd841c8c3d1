// The agent worker's entry point: loads the worker (worker.ts) and everything it needs
// through the agent's own loader (loader.ts says why).

import * as path from 'node:path';
import { loadOwn } from './loader';

loadOwn(path.join(__dirname, 'worker.js'));
