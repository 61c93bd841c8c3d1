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
//
// V8's code cache: compiling our modules was the largest part of the preload's hold on the
// app's first line (issue 12). `npm run build` runs the preload once (scripts/code-cache.js)
// and keeps, for each module compiled before the first line, V8's cached data (bytecode of
// the functions that ran, too) in dist/code-cache/<V8 version>-<arch>.bin, beside a copy of
// the module's source. The loader hands V8 that data when the file on disk is byte for
// byte the one it was made from; V8 checks its own version and flags (an app started with
// V8 flags, --max-old-space-size among them, gets no use of it), and a cache it rejects
// once is dropped for the rest of the process. No cache (another Node, a build
// without it), a stale or corrupt one: the loader compiles as before. Nothing is written
// at run time: the app's file system may be read-only, and the agent leaves no file.

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
    const script = compile(file);
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

// ---- V8's code cache (see the header) ----

/** The layout of a code cache file; a file of another layout is ignored. */
const CACHE_FORMAT = 1;

interface CacheHeader {
  format: number;
  /** Module.wrap('') when it was made: a wrapper changed since (by another preload) voids it. */
  wrapper: string;
  /** Path under DIST_ROOT → [source offset, source length, data offset, data length], from the end of the header. */
  modules: Record<string, [number, number, number, number]>;
}

interface CodeCache {
  bytes: Buffer;
  /** Where the header ends and the blobs start. */
  base: number;
  modules: CacheHeader['modules'];
}

/** This process's code cache file: V8 reads only data made by its own version on the same arch. */
export function codeCacheFile(): string {
  return `${DIST_ROOT}/code-cache/${process.versions.v8}-${process.arch}.bin`;
}

/** undefined: not read yet; null: none, unreadable, or rejected by V8 once. */
let codeCache: CodeCache | null | undefined;
const cacheUse = { accepted: 0, rejected: 0, stale: 0 };
/** Set at build time only (recordCodeCache): the scripts compiled since, with their sources. */
let recording: Map<string, { script: vm.Script; source: string }> | undefined;

/** How this thread's loader used the code cache so far (for tests and `npm run build`). */
export function codeCacheUse(): { file: string; accepted: number; rejected: number; stale: number } {
  return { file: codeCacheFile(), ...cacheUse };
}

function readCodeCache(): CodeCache | null {
  try {
    const bytes = fs.readFileSync(codeCacheFile());
    const headerLength = bytes.readUInt32LE(0);
    const header = JSON.parse(bytes.toString('utf8', 4, 4 + headerLength)) as Partial<CacheHeader>;
    if (header.format !== CACHE_FORMAT || header.wrapper !== Module.wrap('') || typeof header.modules !== 'object' || header.modules === null) return null;
    return { bytes, base: 4 + headerLength, modules: header.modules };
  } catch {
    // Absent (the usual case on a Node other than the build's) or unreadable: compile as before.
    return null;
  }
}

/** The module's file compiled, with V8's cached data when the cache has it for these very bytes. */
function compile(file: string): vm.Script {
  const cached = cacheEntry(file);
  if (!cached) {
    // As a string: Node reads a file as UTF-8 in C++ alone, as bytes through several JavaScript calls.
    const source = fs.readFileSync(file, 'utf8');
    const script = new vm.Script(Module.wrap(source), { filename: file });
    recording?.set(file, { script, source });
    return script;
  }
  const bytes = fs.readFileSync(file);
  // V8 itself checks only the source's length: a file rebuilt to the same length would run the old code.
  if (!bytes.equals(cached.source)) {
    cacheUse.stale++;
    return new vm.Script(Module.wrap(bytes.toString('utf8')), { filename: file });
  }
  const script = new vm.Script(Module.wrap(bytes.toString('utf8')), { filename: file, cachedData: cached.data });
  noteCacheUse(script);
  return script;
}

/** The cache's copy of the module's source and V8's data for it, if it has them. */
function cacheEntry(file: string): { source: Buffer; data: Buffer } | undefined {
  if (codeCache === undefined) {
    codeCache = recording ? null : readCodeCache();
    // Held only while the modules a start loads at once are compiled (the preload's, the
    // worker's first ones), all synchronously: a microtask later, its bytes are let go.
    if (codeCache) void Promise.resolve().then(() => (codeCache = null));
  }
  if (!codeCache) return undefined;
  const { bytes: cached, base } = codeCache;
  const entry = codeCache.modules[file.slice(DIST_ROOT.length + 1)];
  if (!Array.isArray(entry) || entry.length !== 4 || !entry.every((n) => Number.isSafeInteger(n) && n >= 0)) return undefined;
  const [sourceAt, sourceLength, dataAt, dataLength] = entry;
  // A truncated file: ignored.
  if (base + Math.max(sourceAt + sourceLength, dataAt + dataLength) > cached.length) return undefined;
  return { source: cached.subarray(base + sourceAt, base + sourceAt + sourceLength), data: cached.subarray(base + dataAt, base + dataAt + dataLength) };
}

function noteCacheUse(script: vm.Script): void {
  if (!script.cachedDataRejected) {
    cacheUse.accepted++;
    return;
  }
  // Another V8 version or other V8 flags (--max-old-space-size among them): every module would be
  // rejected alike, so stop paying for the look-ups.
  cacheUse.rejected++;
  codeCache = null;
}

/**
 * Build time only (scripts/code-cache.js, through a preload before ispy/register's): records
 * every module this loader compiles from now on. The function returned makes the code cache
 * file's bytes for them, with the functions compiled by then (call it at the app's first line).
 */
export function recordCodeCache(): () => Buffer {
  recording = new Map();
  codeCache = null;
  const scripts = recording;
  return () => {
    const modules: CacheHeader['modules'] = {};
    const blobs: Buffer[] = [];
    let at = 0;
    for (const [file, { script, source }] of scripts) {
      if (!isOwnModule(file)) continue;
      const bytes = Buffer.from(source, 'utf8');
      const data = script.createCachedData();
      modules[file.slice(DIST_ROOT.length + 1)] = [at, bytes.length, at + bytes.length, data.length];
      blobs.push(bytes, data);
      at += bytes.length + data.length;
    }
    const header = Buffer.from(JSON.stringify({ format: CACHE_FORMAT, wrapper: Module.wrap(''), modules } satisfies CacheHeader));
    const length = Buffer.alloc(4);
    length.writeUInt32LE(header.length, 0);
    return Buffer.concat([length, header, ...blobs]);
  };
}
