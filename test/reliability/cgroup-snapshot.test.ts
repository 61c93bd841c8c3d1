// `heap snapshot` in an app whose own memory cgroup is tight, for real: the test makes a
// memory cgroup below its own, moves an app with the agent into it, and sets a limit. The
// guard used to read only the top-level cgroup files and MemAvailable, let the snapshot run,
// and the kernel killed the app, leaving a 0-byte .partial. Needs root and a memory cgroup
// this process may create children in; skips with the reason otherwise.

import { appendFileSync, closeSync, existsSync, mkdirSync, openSync, readFileSync, readSync, rmdirSync, statSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { artefactsIn, cleanup, runCli, startApp, tempDir, waitFor, type App } from '../helpers';

const MB = 1048576;

interface MemoryCgroup {
  version: 1 | 2;
  /** The folder of this process's own cgroup in the memory hierarchy. */
  parent: string;
  /** That cgroup's path in the hierarchy, as /proc/self/cgroup names it. */
  name: string;
  /** Set when this test enabled the memory controller for the parent's children (v2), to undo. */
  enabledMemory?: boolean;
}

function read(file: string): string | undefined {
  try {
    return readFileSync(file, 'utf8');
  } catch {
    return undefined;
  }
}

/** This process's memory cgroup and where it is mounted, or why there is none to use. */
function findMemoryCgroup(): MemoryCgroup | string {
  if (process.platform !== 'linux') return 'memory cgroups are Linux only';
  if (process.getuid?.() !== 0) return 'creating a memory cgroup needs root';
  const own = read('/proc/self/cgroup') ?? '';
  const mounts = (read('/proc/self/mountinfo') ?? '').split('\n').map((l) => l.split(' '));
  const mountOf = (type: string, needsMemoryOption: boolean) =>
    mounts.find((f) => {
      const dash = f.indexOf('-', 6);
      return dash > 0 && f[dash + 1] === type && (!needsMemoryOption || f[dash + 3]!.split(',').includes('memory'));
    });
  const under = (mount: string[] | undefined, where: string | undefined): string | undefined => {
    if (!mount || where === undefined) return undefined;
    const root = mount[3]!;
    if (root !== '/' && where !== root && !where.startsWith(`${root}/`)) return undefined;
    return path.join(mount[4]!, root === '/' ? where : where.slice(root.length));
  };
  // v1 (or a hybrid host, whose memory controller is on v1) first, then the unified hierarchy.
  const v1Path = /^\d+:(?:[^:]*,)?memory(?:,[^:]*)?:(\/.*)$/m.exec(own)?.[1];
  const v1 = under(mountOf('cgroup', true), v1Path);
  if (v1 && existsSync(path.join(v1, 'memory.limit_in_bytes'))) return { version: 1, parent: v1, name: v1Path! };
  const v2Path = /^0::(\/.*)$/m.exec(own)?.[1];
  const v2 = under(mountOf('cgroup2', false), v2Path);
  if (!v2 || !(read(path.join(v2, 'cgroup.controllers')) ?? '').split(/\s+/).includes('memory')) return 'no memory cgroup controller is mounted for this process';
  if ((read(path.join(v2, 'cgroup.subtree_control')) ?? '').split(/\s+/).includes('memory')) return { version: 2, parent: v2, name: v2Path! };
  try {
    writeFileSync(path.join(v2, 'cgroup.subtree_control'), '+memory');
    return { version: 2, parent: v2, name: v2Path!, enabledMemory: true };
  } catch (err) {
    return `cannot enable the memory controller below ${v2Path} (cgroup v2 allows it only in a cgroup without processes of its own): ${(err as Error).message}`;
  }
}

const found = findMemoryCgroup();
const cgroup = typeof found === 'string' ? undefined : found;
if (typeof found === 'string') console.warn(`test/reliability/cgroup-snapshot.test.ts skipped: ${found}`);

const files = cgroup?.version === 1 ? { limit: 'memory.limit_in_bytes', usage: 'memory.usage_in_bytes' } : { limit: 'memory.max', usage: 'memory.current' };

describe.skipIf(!cgroup)(`heap snapshot in an app whose own memory cgroup is tight${cgroup ? '' : ` (skipped: ${found})`}`, () => {
  const name = `ispy-t-${process.pid}`;
  let dir: string;
  let app: App | undefined;
  let out: string;
  let heapMB: number;

  const usage = () => Number(readFileSync(path.join(dir, files.usage), 'utf8'));
  const setLimit = (bytes: number) => writeFileSync(path.join(dir, files.limit), String(Math.round(bytes / 4096) * 4096));

  beforeAll(async () => {
    dir = path.join(cgroup!.parent, name);
    mkdirSync(dir);
    out = tempDir();
    app = await startApp({ script: 'heap-size-app.cjs', config: { outputDir: out } });
    await app.port();
    appendFileSync(path.join(dir, 'cgroup.procs'), String(app.pid));
    const cgroupName = path.posix.join(cgroup!.name, name);
    await waitFor(() => (read(`/proc/${app!.pid}/cgroup`) ?? '').includes(`:${cgroupName}\n`), 5000, `pid ${app.pid} to be in ${cgroupName}`);
    // Allocated after the move, so the cgroup is charged for it (v1 does not move charges).
    heapMB = JSON.parse((await app.get('/alloc?mb=50', 30_000)).body).heapUsedMB;
    expect(heapMB).toBeGreaterThanOrEqual(50);
  }, 60_000);

  afterAll(async () => {
    // The app first: a cgroup with a process in it cannot be removed.
    await app?.kill('SIGKILL');
    if (dir && existsSync(dir)) {
      await waitFor(
        () => {
          try {
            rmdirSync(dir);
            return true;
          } catch {
            return false;
          }
        },
        10_000,
        `cgroup ${dir} to be removable`,
      );
    }
    if (cgroup?.enabledMemory) writeFileSync(path.join(cgroup.parent, 'cgroup.subtree_control'), '-memory');
    await cleanup();
  }, 30_000);

  it('refuses, naming the cgroup limit, when the snapshot cannot fit; the app keeps serving and no file is left', async () => {
    setLimit(usage() + 200 * MB);
    const r = await runCli(['connect', app!.socket], { input: 'heap snapshot\n', timeoutMs: 60_000 });
    const text = r.stdout + r.stderr;
    expect(text).toMatch(/refusing to take a heap snapshot: with [\d.]+ MB of heap it may need about [\d.]+ MB more memory \(15x the heap\), and only [\d.]+ MB is available/);
    expect(text).toContain(`(the cgroup ${path.posix.join(cgroup!.name, name)} (${files.limit} `);
    expect(text).toMatch(/ MB, [\d.]+ MB in use\)\)/);
    expect(app!.child.exitCode).toBeNull();
    expect(app!.child.signalCode).toBeNull();
    expect((await app!.get('/alloc?mb=0')).status).toBe(200);
    expect(artefactsIn(out)).toEqual([]);
  }, 90_000);

  it('takes the snapshot when it fits within the cgroup limit', async () => {
    // 15x the heap is the guard's estimate; half as much again so the estimate fits.
    const limit = usage() + heapMB * 15 * 1.5 * MB;
    setLimit(limit);
    const r = await runCli(['run', app!.socket, '-c', 'heap snapshot', '--json', '--timeout', '5m'], { timeoutMs: 300_000 });
    expect(r.code, r.stdout + r.stderr).toBe(0);
    const result = JSON.parse(r.stdout.trim().split('\n').pop()!).result;
    // The guard saw the limit (the old one saw MemAvailable, gigabytes); usage may have
    // dropped since it was read, so only the limit bounds what it found.
    expect(result.availableMB, result.limitedBy).toBeLessThanOrEqual(limit / MB);
    expect(artefactsIn(out)).toEqual([path.basename(result.file)]);
    expect(statSync(result.file).size).toBeGreaterThan(heapMB * MB);
    const head = Buffer.alloc(20);
    const fd = openSync(result.file, 'r');
    readSync(fd, head, 0, head.length, 0);
    closeSync(fd);
    expect(head.toString()).toBe('{"snapshot":{"meta":');
    expect((await app!.get('/alloc?mb=0')).status).toBe(200);
  }, 320_000);
});
