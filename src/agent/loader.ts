// Loads ispy's own compiled modules (this package's dist/) for the agent, on both threads,
// without going through Node's module resolver.
//
// Why: resolving a `require('./x')` normalizes paths several times (path.resolve, realpath,
// the node_modules lookup list), and the agent loads a few dozen modules at start. In a
// quiet app that is the first JavaScript hot enough for V8's optimizing compiler, which
// then maps megabytes of node's own code into the process. Measured on Node 20 with
// bench/rss.js's hello-world server: the agent added 15.5 MiB to a fresh app through
// Node's loader and 11.1 MiB through this one (10.8 against 11.3 once the app has served
// requests). Nothing else changes: the same files, compiled the way Node's CommonJS loader
// compiles them (Module.wrap, the file's own path as the script's name, so stacks and
// `process modules` show the real file), run once, and registered in Node's module cache
// under their real paths, so a plugin that later requires one of them through Node (a
// third-party plugin's `ispy/plugin`) gets the very same instance.
//
// Our compiled files name each other explicitly (`require("../protocol/errors")`: a .js
// file, never a folder), so relative specifiers resolve by string operations;
// `ispy/plugin` is our own plugin API; anything else (`node:*`, `ws`) goes to Node's
// require. Code compiled here has no loader behind import() (Node's is an experimental
// option that warns in the app's stderr), so our one import() lives in esm.ts, which
// Node loads itself; test/loader.test.ts checks no other module of ours calls import().

import fs from 'node:fs';
import type NodeModuleClass from 'node:module';
import path from 'node:path';
import vm from 'node:vm';

/**
 * Node's CommonJS Module class, taken from this module's own object: `node:module` itself
 * would load Node's ES module loader and source-map support into the app before its first
 * line (test/preload-footprint.test.ts). A test runner that runs this file in a module
 * system of its own gives it another `module`: then node:module it is.
 */
export const NodeModule: typeof NodeModuleClass =
  typeof (module.constructor as Partial<typeof NodeModuleClass>).createRequire === 'function'
    ? (module.constructor as typeof NodeModuleClass)
    : (require('node:module') as typeof NodeModuleClass);
const Module = NodeModule;
type Module = NodeModuleClass;

/** This package's dist/ folder (this file is dist/src/agent/loader.js). */
export const DIST_ROOT = path.dirname(path.dirname(__dirname));

const nodeRequire = Module.createRequire(__filename);
const cache = (Module as unknown as { _cache: Record<string, Module> })._cache;
const PLUGIN_API = `${DIST_ROOT}/src/plugin/index.js`;
/** Modules Node must load itself (they call import()). */
const NODE_LOADED = new Set([`${DIST_ROOT}/src/agent/esm.js`]);

/** `dir` + a relative specifier, by string operations: `../protocol/errors` → `<dir's parent>/protocol/errors.js`. */
export function resolveRelative(dir: string, spec: string): string {
  const parts = dir.split('/');
  for (const segment of spec.split('/')) {
    if (segment === '..') parts.pop();
    else if (segment !== '.' && segment !== '') parts.push(segment);
  }
  const file = parts.join('/');
  return file.endsWith('.js') ? file : `${file}.js`;
}

/** Where one of our modules' require(spec) leads, or undefined for Node to resolve. */
function ownFile(dir: string, spec: string): string | undefined {
  if (spec === 'ispy/plugin') return PLUGIN_API;
  if (spec.startsWith('./') || spec.startsWith('../')) return resolveRelative(dir, spec);
  return undefined;
}

/**
 * Loads one of ispy's own modules (an absolute path under DIST_ROOT) and returns its
 * exports; a module already loaded, by this or by Node's require, is returned as it is.
 */
export function loadOwn<T = unknown>(file: string): T {
  const cached = cache[file];
  if (cached) return cached.exports as T;
  if (NODE_LOADED.has(file) || path.sep !== '/') return nodeRequire(file) as T;
  const dir = file.slice(0, file.lastIndexOf('/'));
  const mod = new Module(file);
  mod.filename = file;
  cache[file] = mod;
  const require = ((spec: string) => {
    const own = ownFile(dir, spec);
    return own === undefined ? nodeRequire(spec) : loadOwn(own);
  }) as NodeJS.Require;
  try {
    const source = fs.readFileSync(file, 'utf8');
    const script = new vm.Script(Module.wrap(source), { filename: file });
    const wrapper = script.runInThisContext() as (...args: unknown[]) => void;
    wrapper.call(mod.exports, mod.exports, require, mod, file, dir);
  } catch (err) {
    // As Node does: a module that failed to load is not left half-made in the cache.
    delete cache[file];
    throw err;
  }
  mod.loaded = true;
  return mod.exports as T;
}

/** True for a file this loader handles (one of ispy's own compiled modules). */
export function isOwnModule(file: string): boolean {
  return file.startsWith(`${DIST_ROOT}/`);
}
