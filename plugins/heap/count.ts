// The main-thread side of `heap count <Constructor>`: naming a constructor of the app
// without evaluating code, holding it while the worker counts, and counting with
// v8.queryObjects where the line has it. Loaded on the first count, not at start-up.
//
// A name is either a global, reached by property reads from globalThis (`Map`, `Buffer`,
// `globalThis.MyClass`, `Intl.Locale`), or a target in the vocabulary trace and profile
// already use, `<module>:<export path>` (`./lib/models.js:User`, `pg:Client`,
// `node:events:EventEmitter`), resolved by the public resolveTarget to the very module
// instance the app holds. Nothing typed by the operator is ever compiled or run.

import { isIspyError, parseTarget, resolveTarget, type ErrorCode } from 'ispy/plugin';

/** What the worker reads back (by value) about a name. */
export type Resolution =
  | { id: number; name: string; module: string; v8QueryObjects: boolean }
  | { error: { code: ErrorCode; message: string } };

/** Resolved constructors waiting for the worker's count; a lost worker call cannot grow it past a few. */
const held = new Map<number, Function>();
const HELD_MAX = 8;
let nextId = 0;

const IDENTIFIER = /^[A-Za-z_$][\w$]*$/;

function failure(code: ErrorCode, message: string): Resolution {
  return { error: { code, message } };
}

function hasQueryObjects(): boolean {
  return typeof (require('node:v8') as { queryObjects?: unknown }).queryObjects === 'function';
}

/** What makes a constructor countable: a prototype object its instances inherit from. */
function hold(spec: string, value: unknown, module: string): Resolution {
  if (typeof value !== 'function') {
    return failure('ISPY_ERR_BAD_ARGS', `${spec} is ${value === null ? 'null' : typeof value === 'object' || typeof value === 'undefined' ? `an ${typeof value}` : `a ${typeof value}`}, not a constructor: name a class or a constructor function`);
  }
  const proto = (value as { prototype?: unknown }).prototype;
  if (proto === null || (typeof proto !== 'object' && typeof proto !== 'function')) {
    return failure('ISPY_ERR_BAD_ARGS', `${spec} is a function without a prototype object (an arrow function, a method or a bound function), not a constructor: name a class or a constructor function`);
  }
  if (held.size >= HELD_MAX) held.delete(held.keys().next().value!);
  const id = ++nextId;
  held.set(id, value);
  return { id, name: value.name || spec, module, v8QueryObjects: hasQueryObjects() };
}

/** A global name's property path, or undefined when `spec` names a module target. */
function globalPath(spec: string): string[] | undefined {
  if (spec.includes(':')) {
    const { module, exportPath } = parseTarget(spec);
    return module === 'global' ? exportPath : undefined;
  }
  const parts = spec.split('.');
  if (parts[0] === 'globalThis' && parts.length > 1) parts.shift();
  return parts;
}

/**
 * Resolves synchronously what can be (globals, so a count answers while the main thread
 * spins), or says the name needs the module loader (`import()`, which needs the event loop).
 */
export function resolveConstructor(spec: string): Resolution | { needsLoader: true } {
  let path: string[] | undefined;
  try {
    path = globalPath(spec);
  } catch (err) {
    return failure('ISPY_ERR_BAD_ARGS', `${(err as Error).message}; or a global name such as Map, Buffer or globalThis.MyClass`);
  }
  if (!path) return { needsLoader: true };
  const bad = path.find((p) => !IDENTIFIER.test(p));
  if (bad !== undefined || path.length === 0) {
    return failure('ISPY_ERR_BAD_ARGS', `${JSON.stringify(spec)} is not a constructor name: give a global (Map, Buffer, globalThis.MyClass) or <module>:<export path> (./lib/models.js:User, pg:Client)`);
  }
  let value: unknown = globalThis;
  for (let i = 0; i < path.length; i++) {
    const owner = value as Record<string, unknown> | null | undefined;
    try {
      value = owner === null || owner === undefined ? undefined : owner[path[i]!];
    } catch (err) {
      return failure('ISPY_ERR_NOT_FOUND', `reading ${path.slice(0, i + 1).join('.')} threw: ${(err as Error).message}`);
    }
    if (value === undefined) {
      const what = i === 0 ? `no global named ${path[0]}` : `${path.slice(0, i).join('.')} has no ${path[i]}`;
      return failure('ISPY_ERR_NOT_FOUND', `${what}: give a global (Map, Buffer, globalThis.MyClass) or <module>:<export path> for a class a module exports (./lib/models.js:User)`);
    }
  }
  return hold(spec, value, 'global');
}

/** A module target, through resolveTarget (which loads a module the app has not loaded yet, as trace does). */
export async function resolveConstructorFromModule(spec: string): Promise<Resolution> {
  try {
    const target = await resolveTarget(spec);
    return hold(spec, target.fn, target.module);
  } catch (err) {
    if (isIspyError(err)) return failure(err.code, err.message);
    return failure('ISPY_ERR_NOT_FOUND', (err as Error).message);
  }
}

export function prototypeOf(id: number): object | undefined {
  return held.get(id)?.prototype as object | undefined;
}

export function release(id: number): void {
  held.delete(id);
}

/** The ExperimentalWarning v8.queryObjects emits once per process (Node 20-26). */
function isQueryObjectsWarning(warning: unknown, rest: unknown[]): boolean {
  const type = typeof rest[0] === 'string' ? rest[0] : (rest[0] as { type?: string } | undefined)?.type;
  const text = typeof warning === 'string' ? warning : (warning as Error | undefined)?.message ?? '';
  return (type === 'ExperimentalWarning' || (warning as Error | undefined)?.name === 'ExperimentalWarning') && text.includes('queryObjects');
}

/**
 * v8.queryObjects(ctor, {format: 'count'}): live objects with ctor.prototype in their
 * prototype chain, after a full GC. The warning Node prints on its first use would land
 * in the app's stderr for a call the app never made, so process.emitWarning is swapped
 * for the length of this synchronous call and put back exactly as it was; where it cannot
 * be swapped, the caller is told to count through the inspector instead.
 */
export function countWithV8(id: number): number | { error: { code: ErrorCode; message: string }; inspectorInstead?: true } {
  const ctor = held.get(id);
  if (!ctor) return { error: { code: 'ISPY_ERR_NOT_FOUND', message: 'the constructor was released before it was counted: run the command again' } };
  const v8 = require('node:v8') as { queryObjects?: (c: Function, o: { format: 'count' }) => number };
  if (typeof v8.queryObjects !== 'function') return { error: { code: 'ISPY_ERR_UNAVAILABLE', message: 'this Node line has no v8.queryObjects(): use --via inspector' } };
  const original = process.emitWarning;
  let swapped = false;
  try {
    process.emitWarning = function (this: unknown, warning: unknown, ...rest: unknown[]) {
      if (isQueryObjectsWarning(warning, rest)) return;
      return (original as (...a: unknown[]) => void).apply(this, [warning, ...rest]);
    } as typeof process.emitWarning;
    swapped = process.emitWarning !== original;
  } catch {
    // The app made emitWarning read-only: its choice (below).
  }
  // The warning could not be kept out of the app's stderr: the inspector's way prints none.
  if (!swapped) return { error: { code: 'ISPY_ERR_UNAVAILABLE', message: 'process.emitWarning is read-only here, so v8.queryObjects would print a warning into the app\'s stderr: use --via inspector' }, inspectorInstead: true };
  try {
    return v8.queryObjects(ctor, { format: 'count' });
  } finally {
    process.emitWarning = original;
  }
}
