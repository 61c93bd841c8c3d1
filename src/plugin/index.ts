// The public plugin API, exported as `ispy/plugin`. Built-in plugins use nothing else of
// ispy, so any of them can be copied into its own package as a template. docs/plugins.md
// walks through writing one.

export * from './define';
export { IspyError, isIspyError, ERROR_CODES } from '../protocol/errors';
export type { ErrorCode } from '../protocol/errors';
export { parseDuration, formatDuration } from '../protocol/args';
export { loadForTest, runCommand } from './testing';
export { DEFAULT_SECRET_KEY, secretMatcher, redactedValue, redactUrlPassword, redactUrl } from './redact';
export type { TestHarness, TestHarnessOptions } from './testing';
export { wrapFunction, unwrapped, isWrapped, replaceProblem } from './wrap';
export type { Interceptor, Invocation, WrapHandle } from './wrap';
export { resolveTarget, parseTarget } from './target';
export type { ResolvedTarget, ParsedTarget } from './target';
export { topFunctions, collapse, mergeProfiles, trimProfile, frameLabel } from '../protocol/cpuprofile';
export type { CpuProfile, ProfileNode, CallFrame, FunctionTime } from '../protocol/cpuprofile';
export { EventQueue } from './stream';
export type { EventQueueOptions } from './stream';
