// The library entry point (`ispy`): start and stop the agent from code.
//
// The agent's modules come through its own loader, as with the preload (src/agent/loader.ts
// says why); the rest of this entry point is the protocol's vocabulary.

import * as path from 'node:path';
import { loadOwn } from './agent/loader';
import type * as Start from './agent/start';

export type { AgentHandle } from './agent/start';
export type { AgentOptions } from './agent/config';
export { PROTOCOL_VERSION } from './protocol/index';
export { IspyError, isIspyError, ERROR_CODES } from './protocol/errors';
export type { ErrorCode } from './protocol/errors';

const start = (): typeof Start => loadOwn(path.join(__dirname, 'agent', 'start.js'));

/** Starts the agent in this process; resolves once the socket accepts connections. A second call returns the running agent. */
export const startAgent: typeof Start.startAgent = (options) => start().startAgent(options);
/** Stops the running agent, if any, undoing everything it did. Idempotent. */
export const stopAgent: typeof Start.stopAgent = () => start().stopAgent();
/** The running agent, if any. */
export const runningAgent: typeof Start.runningAgent = () => start().runningAgent();
