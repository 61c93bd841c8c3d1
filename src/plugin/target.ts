// Resolving a *target* — a function of the running app named as `<module>:<export path>`
// (`pg:Client.prototype.query`, `./lib/db.js:query`, `global:fetch`, `node:fs:readFile`)
// — to the object that holds it and the property name, reaching the same module instance
// the app uses. Runs on the main thread (public API: `resolveTarget`).

import { createRequire } from 'node:module';
import { existsSync } from 'node:fs';
import * as path from 'node:path';
import { pathToFileURL } from 'node:url';
import { IspyError } from '../protocol/errors';
import { replaceProblem } from './wrap';
import { importModule } from '../agent/esm';

export interface ResolvedTarget {
  /** The target as given. */
  spec: string;
  /** The object holding the function, and its property name. */
  owner: object;
  key: string;
  fn: Function;
  /** The module file (or `global` / a built-in's name). */
  module: string;
  /** Why it cannot be wrapped in place, if it cannot (e.g. an ES module export binding). */
  problem?: string;
}

export interface ParsedTarget {
  module: string;
  exportPath: string[];
}

/** Splits at the last colon: a module specifier may itself hold one (`node:fs`). */
export function parseTarget(spec: string): ParsedTarget {
  const i = spec.lastIndexOf(':');
  const module = i === -1 ? '' : spec.slice(0, i);
  const exportPath = i === -1 ? [] : spec.slice(i + 1).split('.').filter(Boolean);
  if (!module || exportPath.length === 0) {
    throw new IspyError(
      'ISPY_ERR_BAD_ARGS',
      `target ${JSON.stringify(spec)} must be <module>:<export path>, e.g. pg:Client.prototype.query, ./lib/db.js:query or global:fetch`,
    );
  }
  return { module, exportPath };
}

/** Folders a relative or bare module is looked up from: the cwd, then the main script's folder. */
export function appRoots(): string[] {
  const roots = [process.cwd()];
  const main = process.argv[1];
  if (main && path.isAbsolute(main)) {
    const dir = path.dirname(main);
    if (!roots.includes(dir)) roots.push(dir);
  }
  return roots;
}

function resolveModule(module: string): { file: string; builtin: boolean } {
  const req = createRequire(path.join(process.cwd(), 'noop.js'));
  if (module.startsWith('node:') || (req('node:module') as { isBuiltin(s: string): boolean }).isBuiltin(module)) return { file: module, builtin: true };
  const errors: string[] = [];
  for (const root of appRoots()) {
    try {
      if (module.startsWith('.') || path.isAbsolute(module)) {
        const file = path.resolve(root, module);
        if (existsSync(file)) return { file, builtin: false };
        errors.push(`${file} does not exist`);
        continue;
      }
      return { file: createRequire(path.join(root, 'noop.js')).resolve(module), builtin: false };
    } catch (err) {
      errors.push((err as Error).message.split('\n')[0]!);
    }
  }
  throw new IspyError('ISPY_ERR_NOT_FOUND', `cannot find module "${module}" from ${appRoots().join(' or ')} (${errors[0]})`);
}

async function loadModule(module: string): Promise<{ exports: unknown; file: string }> {
  if (module === 'global') return { exports: globalThis, file: 'global' };
  const { file, builtin } = resolveModule(module);
  const req = createRequire(path.join(process.cwd(), 'noop.js'));
  if (builtin) return { exports: req(file), file };
  // CommonJS already loaded (by require or by import): the instance the app holds.
  const cached = req.cache[file];
  if (cached) return { exports: cached.exports, file };
  try {
    // import() returns the instance the app already loaded, if it did; otherwise loads it
    // the way the app would (CommonJS through the CommonJS loader, so require() shares it).
    const ns = (await importModule(pathToFileURL(file).href)) as Record<string, unknown>;
    const loadedCjs = req.cache[file];
    return { exports: loadedCjs ? loadedCjs.exports : ns, file };
  } catch (err) {
    throw new IspyError('ISPY_ERR_NOT_FOUND', `cannot load module ${file}: ${(err as Error).message.split('\n')[0]}`);
  }
}

function keysOf(v: unknown): string {
  if (v === null || (typeof v !== 'object' && typeof v !== 'function')) return 'none';
  const keys = Object.getOwnPropertyNames(v).filter((k) => !['length', 'name', 'prototype', 'caller', 'arguments'].includes(k));
  return keys.slice(0, 20).join(', ') + (keys.length > 20 ? ', ...' : '') || 'none';
}

/** Resolves a target to owner + key. Throws ISPY_ERR_NOT_FOUND naming the missing piece. */
export async function resolveTarget(spec: string): Promise<ResolvedTarget> {
  const { module, exportPath } = parseTarget(spec);
  const { exports, file } = await loadModule(module);
  let owner: unknown = exports;
  for (let i = 0; i < exportPath.length - 1; i++) {
    const next = (owner as Record<string, unknown> | null | undefined)?.[exportPath[i]!];
    if (next === undefined || next === null) {
      throw new IspyError('ISPY_ERR_NOT_FOUND', `${module} has no ${exportPath.slice(0, i + 1).join('.')} (available: ${keysOf(owner)})`);
    }
    owner = next;
  }
  const key = exportPath[exportPath.length - 1]!;
  const fn = (owner as Record<string, unknown>)[key];
  if (typeof fn !== 'function') {
    const where = exportPath.length > 1 ? exportPath.slice(0, -1).join('.') : module;
    throw new IspyError(
      'ISPY_ERR_NOT_FOUND',
      fn === undefined ? `${where} has no "${key}" (available: ${keysOf(owner)})` : `${exportPath.join('.')} in ${module} is a ${typeof fn}, not a function`,
    );
  }
  const target: ResolvedTarget = { spec, owner: owner as object, key, fn, module: file };
  const problem = replaceProblem(owner as object, key);
  if (problem) target.problem = problem;
  return target;
}
