// The library entry point (`ispy`): start and stop the agent from code.

export { startAgent, stopAgent, runningAgent } from './agent/start';
export type { AgentHandle } from './agent/start';
export type { AgentOptions } from './agent/config';
export { PROTOCOL_VERSION } from './protocol/index';
export { IspyError, isIspyError, ERROR_CODES } from './protocol/errors';
export type { ErrorCode } from './protocol/errors';
