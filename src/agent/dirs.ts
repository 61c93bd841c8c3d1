// The folders the agent writes into (artefacts, the audit log): checked when it starts and
// created, when first needed, one level at a time. Never with mkdir's `recursive` option:
// under /proc it loops for ever (libuv keeps retrying a parent that can never be made),
// which hung every artefact call and burned a core.

import * as fs from 'node:fs';
import * as path from 'node:path';

/** Kernel filesystems where no file of ours can be made (statfs f_type). */
const PSEUDO_FILESYSTEMS: Record<number, string> = {
  0x9fa0: 'proc',
  0x62656572: 'sysfs',
  0x27e0eb: 'cgroup',
  0x63677270: 'cgroup2',
  0x1cd1: 'devpts',
  0x64626720: 'debugfs',
  0x73636673: 'securityfs',
  0x6e736673: 'nsfs',
  0xcafe4a11: 'bpf',
};

/** The folder itself if it exists, else its nearest ancestor that does. */
function nearestExisting(dir: string): { at: string; st: fs.Stats } | undefined {
  for (let at = path.resolve(dir); ; at = path.dirname(at)) {
    try {
      return { at, st: fs.statSync(at) };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT' && (err as NodeJS.ErrnoException).code !== 'ENOTDIR') return undefined;
    }
    if (at === path.dirname(at)) return undefined;
  }
}

/** Why the agent could never write into `dir`, or undefined when it may (the folder need not exist yet). */
export function folderProblem(dir: string): string | undefined {
  const found = nearestExisting(dir);
  if (!found) return `neither ${dir} nor any folder above it can be read`;
  if (!found.st.isDirectory()) return `${found.at} is not a folder`;
  if (typeof fs.statfsSync === 'function') {
    try {
      const kind = PSEUDO_FILESYSTEMS[fs.statfsSync(found.at).type];
      if (kind) return `${found.at} is on a ${kind} filesystem, where no file can be made; choose a folder on disk`;
    } catch {
      // statfs refused: the write will say what is wrong
    }
  }
  return undefined;
}

/** Creates `dir` (mode 0700 for each level made) unless it exists. Throws the first failure. */
export function makeFolder(dir: string): void {
  const missing: string[] = [];
  for (let at = path.resolve(dir); !fs.existsSync(at); at = path.dirname(at)) {
    missing.push(at);
    if (at === path.dirname(at)) break;
  }
  for (const at of missing.reverse()) {
    try {
      fs.mkdirSync(at, { mode: 0o700 });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
  }
}
