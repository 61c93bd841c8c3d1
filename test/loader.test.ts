// The agent's own module loader (src/agent/loader.ts): same files, same instances as Node's
// require, nothing half-loaded, and no import() where it could not work.

import { afterAll, describe, expect, it } from 'vitest';
import { createRequire } from 'node:module';
import { chmodSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import * as path from 'node:path';
import { cleanup, DIST, REGISTER, tempDir } from './helpers';
import { isOwnModule, loadOwn, resolveRelative, DIST_ROOT, MAX_CACHE_FILES } from '../dist/src/agent/loader.js';

afterAll(cleanup);

const nodeRequire = createRequire(__filename);

function jsFiles(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const file = path.join(dir, name);
    if (statSync(file).isDirectory()) return jsFiles(file);
    return file.endsWith('.js') ? [file] : [];
  });
}

describe('the agent loader', () => {
  it('resolves relative specifiers the way Node does for our explicit .js files', () => {
    expect(resolveRelative('/a/dist/src/agent', '../protocol/errors')).toBe('/a/dist/src/protocol/errors.js');
    expect(resolveRelative('/a/dist/src/agent', './log')).toBe('/a/dist/src/agent/log.js');
    expect(resolveRelative('/a/dist/plugins/trace', '../../src/plugin/index.js')).toBe('/a/dist/src/plugin/index.js');
    expect(DIST_ROOT).toBe(DIST);
    expect(isOwnModule(path.join(DIST, 'plugins', 'heap', 'index.js'))).toBe(true);
    expect(isOwnModule('/elsewhere/plugin.js')).toBe(false);
  });

  it('gives the same instance as Node\'s require, either way round', () => {
    const viaLoader = loadOwn(path.join(DIST, 'plugins', 'eval', 'index.js'));
    expect(nodeRequire(path.join(DIST, 'plugins', 'eval', 'index.js'))).toBe(viaLoader);
    const viaNode = nodeRequire(path.join(DIST, 'src', 'protocol', 'cpuprofile.js'));
    expect(loadOwn(path.join(DIST, 'src', 'protocol', 'cpuprofile.js'))).toBe(viaNode);
    // ispy/plugin, as a built-in plugin names it, is the package's plugin API module.
    expect(loadOwn(path.join(DIST, 'src', 'plugin', 'index.js'))).toBe(nodeRequire('ispy/plugin'));
  });

  it('leaves nothing in the cache when a module throws while loading, and rethrows', () => {
    const dir = tempDir();
    const file = path.join(dir, 'broken.js');
    writeFileSync(file, "exports.partial = true;\nthrow new Error('broken at load');\n");
    expect(() => loadOwn(file)).toThrow('broken at load');
    expect(nodeRequire.cache[file]).toBeUndefined();
  });

  it('no module it loads calls import() (code it compiles has no loader for it): only esm.js does', () => {
    const callers = jsFiles(DIST)
      .filter((f) => !f.includes(`${path.sep}cli${path.sep}`) && !f.includes(`${path.sep}client${path.sep}`))
      .filter((f) =>
        readFileSync(f, 'utf8')
          .split('\n')
          .filter((line) => !/^\s*(\/\/|\*|\/\*)/.test(line)) // comments may mention it
          .some((line) => /\bimport\(/.test(line)),
      )
      .map((f) => path.relative(DIST, f));
    expect(callers).toEqual([path.join('src', 'agent', 'esm.js')]);
  });

  describe('code cache', () => {
    /** Starts `node [flags] -r register` with its own tmpdir; prints the main thread's cache counts once the writes are done. */
    function start(tmp: string, flags: string[] = [], delay = 300): { used: number; missing: number; rejected: number; written: number } {
      const code = `setTimeout(() => console.log(JSON.stringify(require(${JSON.stringify(path.join(DIST, 'src', 'agent', 'loader.js'))}).codeCacheStats)), ${delay})`;
      const env = { ...process.env, TMPDIR: tmp, ISPY_SOCKET: path.join(tmp, 'app-{pid}.sock') };
      delete env.ISPY_CONFIG;
      delete env.NODE_OPTIONS;
      return JSON.parse(execFileSync(process.execPath, [...flags, '-r', REGISTER, '-e', code], { env, cwd: tmp, timeout: 20_000 }).toString());
    }
    const uid = process.getuid?.() ?? 0;

    it('is written 0600 in a private folder on the first start and used on the next, for every module', () => {
      const tmp = tempDir();
      const first = start(tmp);
      expect(first.used).toBe(0);
      expect(first.missing).toBeGreaterThan(10);
      expect(first.written).toBe(first.missing);
      const dir = path.join(tmp, `ispy-${uid}`, 'code-cache');
      expect(statSync(dir).mode & 0o777).toBe(0o700);
      const files = readdirSync(dir);
      expect(files).toHaveLength(first.written);
      for (const f of files) expect(statSync(path.join(dir, f)).mode & 0o777).toBe(0o600);
      expect(start(tmp)).toEqual({ used: first.missing, missing: 0, rejected: 0, written: 0 });
      // Other -e code and other preload paths are not other flags: the same caches serve.
      expect(start(tmp, [], 350)).toEqual({ used: first.missing, missing: 0, rejected: 0, written: 0 });
    });

    it('a cache V8 refuses is not used, the module still loads, and the cache is made again', () => {
      const tmp = tempDir();
      const first = start(tmp);
      const dir = path.join(tmp, `ispy-${uid}`, 'code-cache');
      const victim = path.join(dir, readdirSync(dir)[0]!);
      const buf = readFileSync(victim);
      const nl = buf.indexOf(10);
      // The header still matches; the code is garbage.
      writeFileSync(victim, Buffer.concat([buf.subarray(0, nl + 1), Buffer.alloc(buf.length - nl - 1, 0x5a)]));
      expect(start(tmp)).toEqual({ used: first.missing - 1, missing: 0, rejected: 1, written: 1 });
      expect(start(tmp)).toEqual({ used: first.missing, missing: 0, rejected: 0, written: 0 });
    });

    it('keeps one set of files per set of node flags, so apps started differently do not remake each other\'s', () => {
      const tmp = tempDir();
      const plain = start(tmp);
      const other = start(tmp, ['--stack-size=2000']);
      expect(other).toEqual({ used: 0, missing: plain.missing, rejected: 0, written: plain.missing });
      expect(start(tmp)).toEqual({ used: plain.missing, missing: 0, rejected: 0, written: 0 });
      expect(start(tmp, ['--stack-size=2000'])).toEqual({ used: plain.missing, missing: 0, rejected: 0, written: 0 });
    });

    it('is bounded: a folder at the limit is cleared before new caches are written', () => {
      const tmp = tempDir();
      start(tmp);
      const dir = path.join(tmp, `ispy-${uid}`, 'code-cache');
      for (let i = 0; i < MAX_CACHE_FILES; i++) writeFileSync(path.join(dir, `old-${i}.cache`), 'x', { mode: 0o600 });
      const again = start(tmp, ['--stack-size=2000']);
      expect(again.written).toBeGreaterThan(10);
      expect(readdirSync(dir)).toHaveLength(again.written);
    });

    it('is neither read nor written in a folder others can write', () => {
      const tmp = tempDir();
      const first = start(tmp);
      chmodSync(path.join(tmp, `ispy-${uid}`, 'code-cache'), 0o757);
      expect(start(tmp)).toEqual({ used: 0, missing: first.missing, rejected: 0, written: 0 });
    });
  });
});
