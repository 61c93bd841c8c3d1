// The agent's own module loader (src/agent/loader.ts): same files, same instances as Node's
// require, nothing half-loaded, and no import() where it could not work.

import { afterAll, describe, expect, it } from 'vitest';
import { createRequire } from 'node:module';
import { readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { cleanup, DIST, tempDir } from './helpers';
import { isOwnModule, loadOwn, resolveRelative, DIST_ROOT } from '../dist/src/agent/loader.js';

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
});
