// The heap snapshot's memory guard reads the process's own cgroup, not only the top-level
// files: fake /proc and /sys trees for cgroup v1, v2, nested and container-style mounts,
// and files it cannot read. test/reliability/cgroup-snapshot.test.ts runs it for real.

import { mkdirSync, statfsSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { availableMemory, memoryPreflight, parseCgroupMounts, parseProcCgroup } from '../dist/plugins/heap/memory.js';
import { cleanup, ROOT, tempDir } from './helpers';

afterAll(cleanup);

const MB = 1048576;
const GB = 1024 * MB;
const V1_UNLIMITED = '9223372036854771712';
const V2_MOUNT = '30 23 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate';
const v1Mount = (root: string, point = '/sys/fs/cgroup/memory') => `35 31 0:32 ${root} ${point} rw,relatime shared:9 - cgroup cgroup rw,memory`;
const OTHER_MOUNTS = ['22 1 8:1 / / rw,relatime - ext4 /dev/vda rw', '32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu'];

/** A fake filesystem root: `files` maps paths under it to contents (a trailing / makes a folder). */
function fakeRoot(files: Record<string, string>): string {
  const root = tempDir('ispy-mem-');
  for (const [name, content] of Object.entries(files)) {
    const file = path.join(root, name);
    if (name.endsWith('/')) {
      mkdirSync(file, { recursive: true });
      continue;
    }
    mkdirSync(path.dirname(file), { recursive: true });
    writeFileSync(file, content);
  }
  return root;
}

function host(opts: { cgroup: string; mounts: string[]; memAvailable?: number }): Record<string, string> {
  return {
    'proc/self/cgroup': opts.cgroup,
    'proc/self/mountinfo': [...OTHER_MOUNTS, ...opts.mounts].join('\n') + '\n',
    'proc/meminfo': `MemTotal:       32000000 kB\nMemFree:        1000 kB\nMemAvailable:   ${Math.round((opts.memAvailable ?? 24 * GB) / 1024)} kB\n`,
  };
}

/** A cgroup v2 folder's memory files. */
function v2(dir: string, o: { max?: number | 'max'; high?: number | 'max'; current: number; inactiveFile?: number }): Record<string, string> {
  const at = (f: string) => path.posix.join('sys/fs/cgroup', dir, f);
  return {
    [at('memory.max')]: `${o.max ?? 'max'}\n`,
    [at('memory.high')]: `${o.high ?? 'max'}\n`,
    [at('memory.current')]: `${o.current}\n`,
    [at('memory.stat')]: `anon ${o.current}\nfile 0\ninactive_file ${o.inactiveFile ?? 0}\nactive_file 0\n`,
  };
}

/** A cgroup v1 memory folder's files, under the mount at sys/fs/cgroup/memory. */
function v1(dir: string, o: { limit?: number; usage: number; hierarchical?: number; inactiveFile?: number; useHierarchy?: 0 | 1 }): Record<string, string> {
  const at = (f: string) => path.posix.join('sys/fs/cgroup/memory', dir, f);
  return {
    [at('memory.limit_in_bytes')]: `${o.limit ?? V1_UNLIMITED}\n`,
    [at('memory.usage_in_bytes')]: `${o.usage}\n`,
    [at('memory.use_hierarchy')]: `${o.useHierarchy ?? 1}\n`,
    [at('memory.stat')]: `cache 0\nrss ${o.usage}\ninactive_file 0\nhierarchical_memory_limit ${o.hierarchical ?? o.limit ?? V1_UNLIMITED}\ntotal_inactive_file ${o.inactiveFile ?? 0}\n`,
  };
}

describe('parsing /proc/self', () => {
  it('finds the v2 path and the v1 memory path, whatever the order of controllers', () => {
    expect(parseProcCgroup('12:pids:/a\n4:cpu,memory:/docker/x\n0::/system.slice/app.service\n')).toEqual({ v1: '/docker/x', v2: '/system.slice/app.service' });
    expect(parseProcCgroup('1:name=systemd:/x\n')).toEqual({});
    expect(parseProcCgroup('garbage\n\n')).toEqual({});
  });

  it('reads cgroup mounts from mountinfo: cgroup2, and cgroup v1 only with the memory option; unescapes paths', () => {
    const text = [...OTHER_MOUNTS, V2_MOUNT, v1Mount('/docker/a\\040b', '/sys/fs/cgroup/my\\040memory')].join('\n');
    expect(parseCgroupMounts(text, 2)).toEqual([{ root: '/', point: '/sys/fs/cgroup' }]);
    expect(parseCgroupMounts(text, 1)).toEqual([{ root: '/docker/a b', point: '/sys/fs/cgroup/my memory' }]);
  });
});

describe('availableMemory', () => {
  it('v2: a systemd service with MemoryMax=1G is limited by its own cgroup, not the top-level files', () => {
    const root = fakeRoot({
      ...host({ cgroup: '0::/system.slice/app.service\n', mounts: [V2_MOUNT] }),
      ...v2('system.slice/app.service', { max: GB, current: 700 * MB }),
      ...v2('system.slice', { current: 3 * GB }),
      // The root cgroup has no memory.max; the guard used to read only these.
      'sys/fs/cgroup/memory.stat': 'anon 0\n',
    });
    const room = availableMemory({ root });
    expect(room.source).toBe('the cgroup /system.slice/app.service (memory.max 1024 MB, 700 MB in use)');
    expect(room.bytes).toBe(324 * MB);
    expect(room.considered.map((c) => c.source)).toEqual(['MemAvailable in /proc/meminfo', room.source]);
  });

  it('v2: a parent tighter than the process own cgroup wins', () => {
    const root = fakeRoot({
      ...host({ cgroup: '0::/system.slice/app.service\n', mounts: [V2_MOUNT] }),
      ...v2('system.slice/app.service', { max: 2 * GB, current: 500 * MB }),
      ...v2('system.slice', { max: 1536 * MB, current: 1400 * MB }),
    });
    const room = availableMemory({ root });
    expect(room.source).toBe('the cgroup /system.slice (memory.max 1536 MB, 1400 MB in use)');
    expect(room.bytes).toBe(136 * MB);
    expect(room.considered).toHaveLength(3);
  });

  it('v2: memory.high tighter than memory.max is the limit', () => {
    const root = fakeRoot({
      ...host({ cgroup: '0::/app\n', mounts: [V2_MOUNT] }),
      ...v2('app', { max: 2 * GB, high: GB, current: 600 * MB }),
    });
    expect(availableMemory({ root })).toMatchObject({ bytes: 424 * MB, source: 'the cgroup /app (memory.high 1024 MB, 600 MB in use)' });
  });

  it('does not count inactive page cache as in use (the kernel reclaims it before it kills)', () => {
    const root = fakeRoot({
      ...host({ cgroup: '0::/app\n', mounts: [V2_MOUNT] }),
      ...v2('app', { max: GB, current: 1000 * MB, inactiveFile: 600 * MB }),
    });
    expect(availableMemory({ root })).toMatchObject({ bytes: 624 * MB, source: 'the cgroup /app (memory.max 1024 MB, 400 MB in use)' });
  });

  it('no limit anywhere (v2 "max", v1 about 2^63): MemAvailable', () => {
    const root = fakeRoot({
      ...host({ cgroup: '4:memory:/user\n0::/app\n', mounts: [V2_MOUNT, v1Mount('/')], memAvailable: 5 * GB }),
      ...v2('app', { current: 600 * MB }),
      ...v1('user', { usage: 100 * MB }),
      ...v1('', { usage: 900 * MB }),
    });
    const room = availableMemory({ root });
    expect(room).toMatchObject({ bytes: 5 * GB, source: 'MemAvailable in /proc/meminfo' });
    expect(room.considered).toHaveLength(1);
  });

  it('MemAvailable wins when it is smaller than what the cgroup leaves', () => {
    const root = fakeRoot({
      ...host({ cgroup: '0::/app\n', mounts: [V2_MOUNT], memAvailable: 200 * MB }),
      ...v2('app', { max: 4 * GB, current: 100 * MB }),
    });
    expect(availableMemory({ root })).toMatchObject({ bytes: 200 * MB, source: 'MemAvailable in /proc/meminfo' });
  });

  it('v1: the memory hierarchy walked up from the process own cgroup; a hybrid host with an empty v2 tree', () => {
    const root = fakeRoot({
      ...host({ cgroup: '9:name=systemd:/\n4:memory:/process_api/abc\n0::/\n', mounts: [V2_MOUNT, v1Mount('/')] }),
      ...v1('process_api/abc', { limit: GB, usage: 200 * MB }),
      ...v1('process_api', { limit: 8 * GB, usage: 6 * GB }),
      ...v1('', { usage: 9 * GB }),
      'sys/fs/cgroup/cgroup.controllers': 'hugetlb\n',
    });
    const room = availableMemory({ root });
    expect(room).toMatchObject({ bytes: 824 * MB, source: 'the cgroup /process_api/abc (memory.limit_in_bytes 1024 MB, 200 MB in use)' });
    expect(room.considered.map((c) => c.bytes)).toEqual([24 * GB, 824 * MB, 2 * GB]);
  });

  it('v1: a parent with use_hierarchy 0 does not limit its children', () => {
    const root = fakeRoot({
      ...host({ cgroup: '4:memory:/a/b\n', mounts: [v1Mount('/')] }),
      ...v1('a/b', { limit: 2 * GB, usage: 100 * MB }),
      ...v1('a', { limit: 300 * MB, usage: 200 * MB, useHierarchy: 0 }),
    });
    expect(availableMemory({ root })).toMatchObject({ bytes: 2 * GB - 100 * MB, source: 'the cgroup /a/b (memory.limit_in_bytes 2048 MB, 100 MB in use)' });
  });

  it('container without a cgroup namespace: the mount root is the container cgroup, named by its path', () => {
    // /proc/self/cgroup names /docker/abc; the mount shows only that sub-tree.
    const root = fakeRoot({
      ...host({ cgroup: '4:memory:/docker/abc\n', mounts: [v1Mount('/docker/abc')] }),
      ...v1('', { limit: 512 * MB, usage: 100 * MB }),
    });
    expect(availableMemory({ root })).toMatchObject({ bytes: 412 * MB, source: 'the cgroup /docker/abc (memory.limit_in_bytes 512 MB, 100 MB in use)' });
  });

  it('container: the process in a sub-cgroup below the mount root', () => {
    const root = fakeRoot({
      ...host({ cgroup: '0::/kubepods/pod1/ctr/app\n', mounts: [V2_MOUNT.replace(' / /sys/fs/cgroup ', ' /kubepods/pod1/ctr /sys/fs/cgroup ')] }),
      ...v2('app', { max: 256 * MB, current: 56 * MB }),
      ...v2('', { max: GB, current: 900 * MB }),
    });
    const room = availableMemory({ root });
    expect(room).toMatchObject({ bytes: 124 * MB, source: 'the cgroup /kubepods/pod1/ctr (memory.max 1024 MB, 900 MB in use)' });
    expect(room.considered.map((c) => c.source)).toContain('the cgroup /kubepods/pod1/ctr/app (memory.max 256 MB, 56 MB in use)');
  });

  it('v1 container: hierarchical_memory_limit names a tighter limit above what is mounted', () => {
    const root = fakeRoot({
      ...host({ cgroup: '4:memory:/docker/abc\n', mounts: [v1Mount('/docker/abc')] }),
      ...v1('', { usage: 300 * MB, hierarchical: 768 * MB }),
    });
    expect(availableMemory({ root })).toMatchObject({ bytes: 468 * MB, source: 'a cgroup above the cgroup /docker/abc, not mounted here (hierarchical_memory_limit 768 MB, at least 300 MB in use)' });
  });

  it('in a cgroup namespace: a path relative to the mount root, not to the hierarchy root', () => {
    // The mount shows /kubepods/pod1 of the host's tree; the namespace calls that "/".
    const root = fakeRoot({
      ...host({ cgroup: '0::/worker\n', mounts: [V2_MOUNT.replace(' / /sys/fs/cgroup ', ' /kubepods/pod1 /sys/fs/cgroup ')] }),
      ...v2('worker', { max: 300 * MB, current: 100 * MB }),
      ...v2('', { max: GB, current: 200 * MB }),
    });
    expect(availableMemory({ root })).toMatchObject({ bytes: 200 * MB, source: 'the cgroup /worker (memory.max 300 MB, 100 MB in use)' });
  });

  it('paths that match nothing: the top of the mount is read (a container own cgroup), or it is named by where it is mounted', () => {
    const files = { ...v2('', { max: GB, current: 100 * MB }) };
    const stale = fakeRoot({ ...host({ cgroup: '0::/gone\n', mounts: [V2_MOUNT.replace(' / /sys/fs/cgroup ', ' /docker/abc /sys/fs/cgroup ')] }), ...files });
    expect(availableMemory({ root: stale }).source).toBe('the cgroup /docker/abc (memory.max 1024 MB, 100 MB in use)');
    const outside = fakeRoot({ ...host({ cgroup: '0::/../x\n', mounts: [V2_MOUNT.replace(' / /sys/fs/cgroup ', ' /.. /sys/fs/cgroup ')] }), ...files });
    expect(availableMemory({ root: outside }).source).toBe('the cgroup mounted at /sys/fs/cgroup (memory.max 1024 MB, 100 MB in use)');
  });

  it('unreadable files never throw: what can be read still counts', () => {
    // memory.current a folder (EISDIR), memory.max garbage, the parent usage missing.
    const root = fakeRoot({
      ...host({ cgroup: '0::/a/b\n', mounts: [V2_MOUNT] }),
      'sys/fs/cgroup/a/b/memory.max': 'lots\n',
      'sys/fs/cgroup/a/b/memory.current/': '',
      'sys/fs/cgroup/a/memory.max': `${GB}\n`,
    });
    expect(availableMemory({ root })).toMatchObject({ bytes: GB, source: 'the cgroup /a (memory.max 1024 MB, its usage could not be read)' });
    // A parent uses at least what its child does: the child's usage is the bound.
    const withChild = fakeRoot({ ...host({ cgroup: '0::/a/b\n', mounts: [V2_MOUNT] }), ...v2('a/b', { current: 300 * MB }), 'sys/fs/cgroup/a/memory.max': `${GB}\n` });
    expect(availableMemory({ root: withChild })).toMatchObject({ bytes: 724 * MB, source: 'the cgroup /a (memory.max 1024 MB, its usage could not be read)' });
    // Nothing under /proc at all: free memory, and no throw.
    expect(availableMemory({ root: fakeRoot({ 'proc/': '' }), fallbackFree: () => 123 * MB })).toMatchObject({ bytes: 123 * MB, source: 'free memory (os.freemem)' });
    // /proc/self/cgroup names a cgroup but mountinfo is missing.
    expect(availableMemory({ root: fakeRoot({ 'proc/self/cgroup': '0::/app\n', 'proc/meminfo': 'MemAvailable: 2048 kB\n' }) })).toMatchObject({ bytes: 2 * MB, source: 'MemAvailable in /proc/meminfo' });
  });
});

function isTmpfs(dir: string): boolean {
  try {
    return statfsSync(dir).type === 0x01021994;
  } catch {
    return false;
  }
}

describe('memoryPreflight', () => {
  const limited = () =>
    fakeRoot({
      ...host({ cgroup: '0::/system.slice/app.service\n', mounts: [V2_MOUNT] }),
      ...v2('system.slice/app.service', { max: GB, current: 700 * MB }),
    });
  const request = (over: object = {}) => ({ action: 'take a heap snapshot', heapUsedBytes: 50 * MB, factor: 15, fileFactor: 2, outputDir: ROOT, note: 'The main thread also freezes while it runs.', room: { root: limited() }, ...over });

  it('refuses when the estimate exceeds what the cgroup leaves, naming the cgroup limit', async () => {
    const err = (await memoryPreflight(request()).catch((e) => e)) as any;
    expect(err.code).toBe('ISPY_ERR_UNAVAILABLE');
    expect(err.message).toBe(
      'refusing to take a heap snapshot: with 50 MB of heap it may need about 750 MB more memory (15x the heap), and only 324 MB is available ' +
        '(the cgroup /system.slice/app.service (memory.max 1024 MB, 700 MB in use)); running out would get the process killed. ' +
        'The main thread also freezes while it runs. Use --force to take it anyway.',
    );
    expect(err.details).toEqual({ heapUsedMB: 50, estimatedNeedMB: 750, availableMB: 324, limitedBy: 'the cgroup /system.slice/app.service (memory.max 1024 MB, 700 MB in use)' });
  });

  it('passes when it fits, and with force when it does not', async () => {
    await expect(memoryPreflight(request({ heapUsedBytes: 20 * MB }))).resolves.toMatchObject({ estimatedNeedMB: 300, availableMB: 324 });
    await expect(memoryPreflight(request({ force: true }))).resolves.toMatchObject({ estimatedNeedMB: 750, availableMB: 324 });
  });

  it('limits.snapshotMemory replaces what is read', async () => {
    await expect(memoryPreflight(request({ configuredBytes: 2 * GB }))).resolves.toMatchObject({ availableMB: 2048, limitedBy: 'limits.snapshotMemory in the config' });
  });

  it.skipIf(isTmpfs(ROOT))('an output folder on disk adds nothing for the file', async () => {
    const estimate = await memoryPreflight(request({ heapUsedBytes: 20 * MB }));
    expect(estimate).not.toHaveProperty('fileInMemoryMB');
  });

  // /dev/shm is tmpfs on Linux hosts; the folder need not exist yet.
  it.skipIf(!isTmpfs('/dev/shm'))('an output folder on tmpfs adds the file to the need, and says so', async () => {
    const outputDir = '/dev/shm/ispy-not-made-yet/artefacts';
    await expect(memoryPreflight(request({ heapUsedBytes: 20 * MB, outputDir, configuredBytes: 400 * MB }))).resolves.toMatchObject({ estimatedNeedMB: 340, fileInMemoryMB: 40 });
    const err = (await memoryPreflight(request({ heapUsedBytes: 20 * MB, outputDir, configuredBytes: 320 * MB })).catch((e) => e)) as any;
    expect(err.message).toContain(`need about 340 MB more memory (15x the heap, plus about 40 MB for the file: ${outputDir} is on tmpfs, which holds files in memory)`);
    expect(err.message).toContain('Use --force to take it anyway, or set outputDir to a folder on disk.');
  });
});
