// The public plugin API, exported as `ispy/plugin`. Built-in plugins use nothing else of
// ispy, so any of them can be copied into its own package as a template. docs/plugins.md
// walks through writing one.

//
// Every app with the agent loads this module at start-up, and each module loaded there
// stays in the app's memory for its lifetime. So what a plugin needs to declare itself
// (definePlugin, errors, durations, redaction, EventQueue) is loaded here; the helpers
// that only a running command or a test uses are loaded on their first call.

import type * as Testing from './testing';
import type * as Wrap from './wrap';
import type * as Target from './target';
import type * as Profiles from '../protocol/cpuprofile';

export * from './define';
export { IspyError, isIspyError, ERROR_CODES } from '../protocol/errors';
export type { ErrorCode } from '../protocol/errors';
export { parseDuration, formatDuration } from '../protocol/args';
export { DEFAULT_SECRET_KEY, secretMatcher, redactedValue, redactUrlPassword, redactUrl } from './redact';
export type { TestHarness, TestHarnessOptions } from './testing';
export type { Interceptor, Invocation, WrapHandle } from './wrap';
export type { ResolvedTarget, ParsedTarget } from './target';
export type { CpuProfile, ProfileNode, CallFrame, FunctionTime } from '../protocol/cpuprofile';
export { EventQueue } from './stream';
export type { EventQueueOptions } from './stream';

const testing = (): typeof Testing => require('./testing');
const wrap = (): typeof Wrap => require('./wrap');
const target = (): typeof Target => require('./target');
const profiles = (): typeof Profiles => require('../protocol/cpuprofile');

/** Loads a plugin in this process for a unit test: no socket, no worker. See docs/plugins.md. */
export const loadForTest: typeof Testing.loadForTest = (...a) => testing().loadForTest(...a);
/** Loads a plugin, runs one command and unloads it (a one-shot loadForTest). */
export const runCommand: typeof Testing.runCommand = (...a) => testing().runCommand(...a);

/** Wraps owner[key] in place; the handle's unwrap() restores the original. Prefer ctx.wrap, which also unwraps on unload. */
export const wrapFunction: typeof Wrap.wrapFunction = (...a) => wrap().wrapFunction(...a);
/** The original function behind any number of wrappers (the function itself when not wrapped). */
export const unwrapped: typeof Wrap.unwrapped = (fn) => wrap().unwrapped(fn);
/** True for a function wrapped by wrapFunction. */
export const isWrapped: typeof Wrap.isWrapped = (fn) => wrap().isWrapped(fn);
/** Why owner[key] cannot be wrapped in place, or undefined when it can. */
export const replaceProblem: typeof Wrap.replaceProblem = (...a) => wrap().replaceProblem(...a);

/** Resolves `file.js:exportName`, `module#path.to.fn` and the like to an owner object and key. */
export const resolveTarget: typeof Target.resolveTarget = (...a) => target().resolveTarget(...a);
/** Splits a target spec into its module and property path, without loading anything. */
export const parseTarget: typeof Target.parseTarget = (...a) => target().parseTarget(...a);

/** The functions with the most self and total time in a CPU profile. */
export const topFunctions: typeof Profiles.topFunctions = (...a) => profiles().topFunctions(...a);
/** A CPU profile as collapsed stacks (flame graph input). */
export const collapse: typeof Profiles.collapse = (...a) => profiles().collapse(...a);
/** Several CPU profiles as one (stacks merged by frame). */
export const mergeProfiles: typeof Profiles.mergeProfiles = (...a) => profiles().mergeProfiles(...a);
/** The part of a CPU profile between two timestamps (µs). */
export const trimProfile: typeof Profiles.trimProfile = (...a) => profiles().trimProfile(...a);
/** `name file:line` for a profile frame. */
export const frameLabel: typeof Profiles.frameLabel = (f) => profiles().frameLabel(f);
