// V8's code cache for the agent's early modules (src/agent/loader.ts, made by `npm run build`
// through scripts/code-cache.js): the preload compiles from it, and a cache that does not fit
// (rejected by V8, stale, truncated, garbage) is ignored without harm. Counted through the
// loader's codeCacheUse() right after the agent's setup; nothing is timed.

import { afterAll, describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { cleanup, DIST, ROOT, startApp, tempDir } from './helpers';
import { connect } from '../dist/src/client/index.js';

afterAll(cleanup);

interface Use {
  file: string;
  accepted: number;
  rejected: number;
  stale: number;
}

/**
 * Queued by the app's first line, so run right after the agent's setup (queued by the
 * preload before it, src/agent/early.ts): how the loader used the cache, and whether
 * `requests` is listening.
 */
const FIRST_LINE =
  'process.nextTick(() => {' +
  "const use = require(process.env.LOADER).codeCacheUse();" +
  "const requests = require('node:diagnostics_channel').hasSubscribers('http.server.request.start');" +
  'const marker = process.env.MARKER ? globalThis[Symbol.for(process.env.MARKER)] !== undefined : undefined;' +
  'console.log(JSON.stringify({ use, requests, marker }));' +
  '});';

function firstLine(dist: string, opts: { nodeOptions?: string; marker?: string } = {}): { use: Use; requests: boolean; marker?: boolean } {
  const dir = tempDir();
  const script = path.join(dir, 'first-line.cjs');
  writeFileSync(script, `${FIRST_LINE}\n`);
  const env: NodeJS.ProcessEnv = { ...process.env, LOADER: path.join(dist, 'src', 'agent', 'loader.js'), ISPY_SOCKET: path.join(dir, '{pid}.sock'), MARKER: opts.marker ?? '' };
  delete env.ISPY_CONFIG;
  delete env.NODE_OPTIONS;
  if (opts.nodeOptions) env.NODE_OPTIONS = opts.nodeOptions;
  const out = execFileSync(process.execPath, ['-r', path.join(dist, 'src', 'register.js'), script], { cwd: dir, env, timeout: 30_000 }).toString();
  return JSON.parse(out.trim().split('\n')[0]!) as { use: Use; requests: boolean; marker?: boolean };
}

/** A copy of the built package (its dist/, its package.json, the real node_modules), to spoil. */
function packageCopy(): string {
  const root = path.join(tempDir(), 'ispy');
  mkdirSync(root);
  cpSync(DIST, path.join(root, 'dist'), { recursive: true });
  cpSync(path.join(ROOT, 'package.json'), path.join(root, 'package.json'));
  symlinkSync(path.join(ROOT, 'node_modules'), path.join(root, 'node_modules'));
  return root;
}

function cacheFileOf(dist: string): string {
  return path.join(dist, 'code-cache', path.basename(firstLine(DIST).use.file));
}

/** Every file under dir with its size and modification time. */
function listing(dir: string): string[] {
  return readdirSync(dir, { recursive: true, withFileTypes: false })
    .map(String)
    .sort()
    .map((f) => {
      const s = statSync(path.join(dir, f));
      return `${f} ${s.isDirectory() ? 'dir' : s.size} ${s.mtimeMs}`;
    });
}

describe('the code cache of the early modules', () => {
  it('the build made one for this Node, and the preload compiles every early module from it', () => {
    const { use, requests } = firstLine(DIST);
    // .ci/test-lines makes each line's cache before its run, as an image build would.
    expect(existsSync(use.file), `no code cache for this Node: run \`node scripts/code-cache.js\` with it (${process.execPath})`).toBe(true);
    expect(statSync(use.file).size).toBeGreaterThan(0);
    // register.js and loader.js come through Node's require; the rest through the loader.
    expect(use).toMatchObject({ rejected: 0, stale: 0 });
    expect(use.accepted).toBeGreaterThanOrEqual(15);
    expect(requests).toBe(true);
  });

  it('a cache V8 rejects (the app runs with other V8 flags) is dropped at the first module, and the agent starts', async () => {
    // --jitless changes V8's flag hash on every line (--max-old-space-size only on 20 and 22).
    const { use, requests } = firstLine(DIST, { nodeOptions: '--jitless' });
    expect(use).toMatchObject({ accepted: 0, rejected: 1, stale: 0 });
    expect(requests).toBe(true);
    const app = await startApp({ script: 'http-app.cjs', env: { NODE_OPTIONS: '--jitless' } });
    const c = await connect(app.socket);
    expect(c.welcome.plugins.map((p) => p.name)).toContain('requests');
    await c.close();
    await app.kill();
  });

  it('a module rebuilt since the cache was made (same length, other bytes) is compiled from its file', () => {
    const root = packageCopy();
    const dist = path.join(root, 'dist');
    const file = path.join(dist, 'plugins', 'requests', 'index.js');
    const source = readFileSync(file, 'utf8');
    expect(source).toContain("'ispy.requests'");
    // V8 alone would accept the cached data (it checks the length) and run the old code.
    writeFileSync(file, source.replace("'ispy.requests'", "'ispy.requestZ'"));
    const { use, requests, marker } = firstLine(dist, { marker: 'ispy.requestZ' });
    expect(marker).toBe(true);
    expect(use.stale).toBe(1);
    expect(use.accepted).toBeGreaterThanOrEqual(14);
    expect(requests).toBe(true);
  });

  it('a truncated or garbage cache file is ignored: every module compiles from its file', () => {
    const root = packageCopy();
    const dist = path.join(root, 'dist');
    const cacheFile = cacheFileOf(dist);
    const whole = readFileSync(cacheFile);
    for (const garbage of [Buffer.from('not a code cache at all'), Buffer.alloc(0), Buffer.from([0xff, 0xff, 0xff, 0x7f, 1, 2, 3])]) {
      writeFileSync(cacheFile, garbage);
      const { use, requests } = firstLine(dist);
      expect(use).toMatchObject({ accepted: 0, rejected: 0, stale: 0 });
      expect(requests).toBe(true);
    }
    // Truncated to half: the modules whose data lay past the end compile from their files.
    writeFileSync(cacheFile, whole.subarray(0, whole.length >> 1));
    const { use, requests } = firstLine(dist);
    expect(use).toMatchObject({ rejected: 0, stale: 0 });
    expect(use.accepted).toBeLessThan(firstLine(DIST).use.accepted);
    expect(requests).toBe(true);
  });

  it('writes nothing into the package at run time, with or without a cache', async () => {
    const root = packageCopy();
    const dist = path.join(root, 'dist');
    for (const withCache of [true, false]) {
      if (!withCache) rmSync(path.join(dist, 'code-cache'), { recursive: true });
      const before = listing(dist);
      const app = await startApp({ script: 'http-app.cjs', preloadPath: path.join(dist, 'src', 'register.js') });
      const c = await connect(app.socket);
      await c.call('process', 'info');
      await c.close();
      await app.kill();
      expect(listing(dist)).toEqual(before);
    }
  });

  it('the socket folder\'s temp dir, read without node:os (kept off the first line), is os.tmpdir()', () => {
    const code = `const { tmpdir } = require(${JSON.stringify(path.join(DIST, 'src', 'protocol', 'socket-path.js'))}); console.log(JSON.stringify([tmpdir(), require('node:os').tmpdir()]));`;
    const cases: Record<string, string>[] = [{}, { TMPDIR: '/var/tmp/' }, { TMPDIR: '/' }, { TMPDIR: '', TMP: '/t//' }, { TEMP: '/temp' }, { TMPDIR: 'relative/' }];
    for (const vars of cases) {
      const env: NodeJS.ProcessEnv = { PATH: process.env.PATH, ...vars };
      const [ours, node] = JSON.parse(execFileSync(process.execPath, ['-e', code], { env, timeout: 30_000 }).toString()) as [string, string];
      expect({ vars, dir: ours }).toEqual({ vars, dir: node });
    }
  });
});
