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
// Compiling is about a quarter of the time the preload holds the app's first line back
// (~220 KB of our JavaScript before it). So each module's V8 code cache is kept beside the
// sockets, in <tmpdir>/ispy-<uid>/code-cache (the folder is created 0700 after the first
// line, like the socket folder; see codeCacheDir()), and used on the next start: measured on
// Node 20, the preload's own time fell from ~32 to ~25 ms. A cache file is code, so it is
// read only from a folder that is ours and private, and only for the exact source file it
// was made from (path, size, mtime, inode and Node version in its header). V8 rejects a
// cache made under other flags, and making one again maps V8's serializer (+3.5 MiB RSS,
// measured): so each set of node flags (execArgv, NODE_OPTIONS; not -e code or -r paths)
// has its own files, or two apps started with different flags would remake each other's at
// every start; the folder is bounded (MAX_CACHE_FILES). Only the
// main thread uses it: the worker starts after the app's first line, and its execArgv is
// not the process's flags.

import * as fs from 'node:fs';
import Module from 'node:module';
import * as os from 'node:os';
import * as path from 'node:path';
import * as vm from 'node:vm';
import { likelyMainThread } from './thread';

/** This package's dist/ folder (this file is dist/src/agent/loader.js). */
export const DIST_ROOT = path.dirname(path.dirname(__dirname));

const nodeRequire = Module.createRequire(__filename);
const cache = (Module as unknown as { _cache: Record<string, Module> })._cache;
const PLUGIN_API = `${DIST_ROOT}/src/plugin/index.js`;
/** Modules Node must load itself (they call import()). */
const NODE_LOADED = new Set([`${DIST_ROOT}/src/agent/esm.js`]);

/** What the code cache did in this thread (tests and diagnostics). */
export const codeCacheStats = { used: 0, missing: 0, rejected: 0, written: 0 };

/** undefined: not looked at yet; null: not usable (not ours, not private, not there). */
let cacheDirState: string | null | undefined;
/** Caches made in this thread, written once the current work is done (after the app's first line). */
const pendingWrites: { file: string; header: string; data: Buffer }[] = [];

/** The per-user cache folder, as the socket folder: <tmpdir>/ispy-<uid>/code-cache. */
export function codeCacheDir(): string {
  const uid = typeof process.getuid === 'function' ? process.getuid() : 0;
  return path.join(os.tmpdir(), `ispy-${uid}`, 'code-cache');
}

/** True when `dir` is a real folder of ours that nobody else can write. */
function privateFolder(dir: string): boolean {
  try {
    const st = fs.lstatSync(dir);
    const uid = typeof process.getuid === 'function' ? process.getuid() : st.uid;
    return st.isDirectory() && st.uid === uid && (st.mode & 0o077) === 0;
  } catch {
    return false;
  }
}

function usableCacheDir(): string | null {
  if (cacheDirState !== undefined) return cacheDirState;
  const dir = codeCacheDir();
  return (cacheDirState = privateFolder(path.dirname(dir)) && privateFolder(dir) ? dir : null);
}

/** Long options of node's own, not V8's: they (and -e/-p/-r scripts and paths) do not change a cache. */
const NOT_V8 = new Set(['--eval', '--print', '--require', '--import', '--loader', '--experimental-loader', '--env-file', '--input-type', '--title', '--conditions', '--inspect', '--inspect-brk', '--inspect-port', '--cpu-prof-dir', '--heap-prof-dir', '--diagnostic-dir', '--report-dir']);

/** The node flags V8's cache check may depend on: long options, less node's own that take paths or code. */
function flagsKey(args: readonly string[]): string {
  return args.filter((a) => a.startsWith('--') && !NOT_V8.has(a.split('=')[0]!)).join(' ');
}

/** Computed once: a main-thread preload runs before any other code can change them. */
const FLAGS = `${flagsKey(process.execArgv)}|${flagsKey((process.env.NODE_OPTIONS ?? '').split(/\s+/))}`;

/** Caches beyond this many files (each set of flags adds ~30) are cleared before new ones are written. */
export const MAX_CACHE_FILES = 500;

/** FNV-1a of the path and the flags: a short, stable file name. */
function nameFor(file: string): string {
  const key = `${file}\0${FLAGS}`;
  let h = 0x811c9dc5;
  for (let i = 0; i < key.length; i++) h = Math.imul(h ^ key.charCodeAt(i), 0x01000193) >>> 0;
  return `${h.toString(16).padStart(8, '0')}.${process.version}-${process.arch}.cache`;
}

/** The header a cache for `file` as it is now must carry. */
function cacheHeader(file: string): string | undefined {
  try {
    const st = fs.statSync(file);
    return JSON.stringify({ file, size: st.size, mtimeMs: st.mtimeMs, ino: st.ino, node: process.version, flags: FLAGS });
  } catch {
    return undefined;
  }
}

function readCache(file: string, header: string): Buffer | undefined {
  const dir = usableCacheDir();
  if (dir === null) return undefined;
  let buf: Buffer;
  try {
    buf = fs.readFileSync(path.join(dir, nameFor(file)));
  } catch {
    return undefined;
  }
  const nl = buf.indexOf(10);
  if (nl < 0 || buf.toString('utf8', 0, nl) !== header) return undefined;
  return buf.subarray(nl + 1);
}

/** Writes the caches made so far: folder created 0700 if missing, each file 0600, whole or not at all. */
function writePending(): void {
  const writes = pendingWrites.splice(0);
  try {
    const dir = codeCacheDir();
    // The parent is the socket folder: made and checked by the agent (socket.ts) before
    // this runs; never create it here with looser rights.
    if (!privateFolder(path.dirname(dir))) return;
    try {
      fs.mkdirSync(dir, { mode: 0o700 });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') return;
    }
    if (!privateFolder(dir)) return;
    // Bounded: many flag sets (or Node versions) over time would otherwise only add files.
    const present = fs.readdirSync(dir);
    if (present.length + writes.length > MAX_CACHE_FILES) {
      for (const name of present) {
        try {
          fs.unlinkSync(path.join(dir, name));
        } catch {
          // another process's write in flight, or gone already
        }
      }
    }
    for (const w of writes) {
      const final = path.join(dir, nameFor(w.file));
      const tmp = `${final}.${process.pid}.${Math.random().toString(36).slice(2, 8)}.tmp`;
      try {
        fs.writeFileSync(tmp, Buffer.concat([Buffer.from(`${w.header}\n`), w.data]), { mode: 0o600, flag: 'wx' });
        fs.renameSync(tmp, final);
        codeCacheStats.written++;
      } catch {
        try {
          fs.unlinkSync(tmp);
        } catch {
          // never made
        }
      }
    }
  } catch {
    // A cache is an optimisation: nothing about it may reach the app.
  }
}

/** Counts what the cache did for one module and queues a fresh cache when it had none (or a rejected one). */
function noteCache(file: string, header: string, script: vm.Script, offered: boolean): void {
  if (offered && !script.cachedDataRejected) {
    codeCacheStats.used++;
    return;
  }
  if (offered) codeCacheStats.rejected++;
  else codeCacheStats.missing++;
  try {
    // Made after the module ran: it also holds the functions its loading compiled.
    pendingWrites.push({ file, header, data: script.createCachedData() });
  } catch {
    return;
  }
  // One write for all the modules loaded in this turn, after it (the app's first line first).
  if (pendingWrites.length === 1) setImmediate(writePending);
}

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
    const header = likelyMainThread() && isOwnModule(file) ? cacheHeader(file) : undefined;
    const cachedData = header === undefined ? undefined : readCache(file, header);
    const script = new vm.Script(Module.wrap(source), { filename: file, ...(cachedData ? { cachedData } : {}) });
    const wrapper = script.runInThisContext() as (...args: unknown[]) => void;
    wrapper.call(mod.exports, mod.exports, require, mod, file, dir);
    if (header !== undefined) noteCache(file, header, script, cachedData !== undefined);
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
