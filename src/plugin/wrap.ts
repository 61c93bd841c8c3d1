// Wrapping a function of the running app, and taking the wrapper off again (public API:
// `wrapFunction`, and `ctx.wrap` which also undoes it on unload). Runs on the main thread.
//
// The wrapper is a Proxy around the original function, so it keeps everything an app
// might look at: `this`, arguments, the return value, a thrown error, `new` (construct
// trap with new.target), name, length, prototype and static properties. Several wraps
// of one function share one Proxy and a list of interceptors: they compose, come off in
// any order, and when the last comes off the original property descriptor (and with it
// the exact original function object) is put back.

import { IspyError } from '../protocol/errors';

export interface Invocation {
  thisArg: unknown;
  args: unknown[];
  /** Set when called with `new`. */
  newTarget?: Function;
}

/** Must call `proceed` exactly once and return (or throw) what it gives. */
export type Interceptor = (call: Invocation, proceed: () => unknown) => unknown;

export interface WrapHandle {
  /** Removes this interceptor; the last one out restores the original. Idempotent. */
  unwrap(): void;
  readonly original: Function;
}

interface Chain {
  owner: object;
  key: PropertyKey;
  original: Function;
  proxy: Function;
  /** The property as it was: own descriptor, or undefined when inherited. */
  descriptor: PropertyDescriptor | undefined;
  /** Replaced, never mutated: a call in progress keeps the list it started with, at no per-call copy. */
  interceptors: readonly Interceptor[];
}

const chains = new WeakMap<Function, Chain>();

function run(chain: Chain, list: readonly Interceptor[], i: number, call: Invocation): unknown {
  if (i >= list.length) {
    return call.newTarget ? Reflect.construct(chain.original, call.args, call.newTarget) : Reflect.apply(chain.original, call.thisArg, call.args);
  }
  return list[i]!(call, () => run(chain, list, i + 1, call));
}

function describeKey(key: PropertyKey): string {
  return typeof key === 'symbol' ? key.toString() : String(key);
}

/** Why a property cannot be replaced, or undefined when it can. */
export function replaceProblem(owner: object, key: PropertyKey): string | undefined {
  if ((owner as Record<symbol, unknown>)[Symbol.toStringTag] === 'Module') {
    return `"${describeKey(key)}" is an ES module export, and an ES module's exported bindings are immutable`;
  }
  const desc = Object.getOwnPropertyDescriptor(owner, key);
  if (!desc) return Object.isExtensible(owner) ? undefined : `the object holding "${describeKey(key)}" is not extensible`;
  if (desc.configurable) return undefined;
  if ('value' in desc) return desc.writable ? undefined : `"${describeKey(key)}" is a read-only, non-configurable property`;
  return `"${describeKey(key)}" is exposed through a getter (a re-export, or a compiled ES module)`;
}

/**
 * Wraps owner[key] with an interceptor. Throws ISPY_ERR_UNAVAILABLE (naming why) when the
 * property cannot be replaced, and ISPY_ERR_BAD_ARGS when it is not a function.
 */
export function wrapFunction(owner: object, key: PropertyKey, interceptor: Interceptor): WrapHandle {
  const current = (owner as Record<PropertyKey, unknown>)[key];
  if (typeof current !== 'function') {
    throw new IspyError('ISPY_ERR_BAD_ARGS', `"${describeKey(key)}" is ${current === undefined ? 'undefined' : `a ${typeof current}`}, not a function`);
  }
  let chain = chains.get(current);
  if (!chain || chain.owner !== owner || chain.key !== key) {
    const problem = replaceProblem(owner, key);
    if (problem) throw new IspyError('ISPY_ERR_UNAVAILABLE', `cannot wrap: ${problem}`);
    const original = current;
    const newChain: Chain = {
      owner,
      key,
      original,
      proxy: original,
      descriptor: Object.getOwnPropertyDescriptor(owner, key),
      interceptors: [],
    };
    newChain.proxy = new Proxy(original, {
      apply(_target, thisArg, args) {
        const list = newChain.interceptors;
        return list.length ? run(newChain, list, 0, { thisArg, args }) : Reflect.apply(original, thisArg, args);
      },
      construct(_target, args, newTarget) {
        const list = newChain.interceptors;
        return (list.length ? run(newChain, list, 0, { thisArg: undefined, args, newTarget }) : Reflect.construct(original, args, newTarget)) as object;
      },
    });
    const d = newChain.descriptor;
    Object.defineProperty(owner, key, d ? ('value' in d ? { ...d, value: newChain.proxy } : { configurable: true, enumerable: d.enumerable ?? true, writable: true, value: newChain.proxy }) : { configurable: true, enumerable: false, writable: true, value: newChain.proxy });
    if ((owner as Record<PropertyKey, unknown>)[key] !== newChain.proxy) {
      throw new IspyError('ISPY_ERR_UNAVAILABLE', `cannot wrap: "${describeKey(key)}" did not take the wrapper`);
    }
    chains.set(newChain.proxy, newChain);
    chain = newChain;
  }
  const c = chain;
  c.interceptors = [...c.interceptors, interceptor];
  let done = false;
  return {
    original: c.original,
    unwrap() {
      if (done) return;
      done = true;
      c.interceptors = c.interceptors.filter((x) => x !== interceptor);
      if (c.interceptors.length) return;
      // Last one out: put the property back exactly as it was, if nobody wrapped over us.
      if ((c.owner as Record<PropertyKey, unknown>)[c.key] === c.proxy) {
        if (c.descriptor) Object.defineProperty(c.owner, c.key, c.descriptor);
        else delete (c.owner as Record<PropertyKey, unknown>)[c.key];
        chains.delete(c.proxy);
      }
      // Otherwise the proxy stays in someone else's chain as a pass-through (no interceptors).
    },
  };
}

/** The function a wrapper stands for, or the value itself. */
export function unwrapped<T>(fn: T): T {
  return (typeof fn === 'function' ? (chains.get(fn)?.original as T | undefined) : undefined) ?? fn;
}

/** True when `fn` is one of our wrappers. */
export function isWrapped(fn: unknown): boolean {
  return typeof fn === 'function' && chains.has(fn);
}
