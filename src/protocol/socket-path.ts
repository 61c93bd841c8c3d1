// Where agents' sockets live and how they are named: what the agent (which creates them) and
// the client (`ispy ps`, globs, `ispy attach`) must agree on.

import path from 'node:path';

/** sun_path holds 108 bytes on Linux, 104 on macOS and the BSDs, the terminating NUL included. */
export const MAX_SOCKET_PATH = process.platform === 'linux' ? 107 : 103;

export function currentUid(): number {
  return typeof process.getuid === 'function' ? process.getuid() : 0;
}

/** Whether `pid` names a live process (one of another user's, which `kill` may not signal, counts). */
export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** The per-user folder sockets go in by default: <tmpdir>/ispy-<uid>. */
export function defaultSocketDir(): string {
  return path.join(tmpdir(), `ispy-${currentUid()}`);
}

/**
 * os.tmpdir() as Node computes it on POSIX systems, without loading node:os: the agent asks
 * before the app's first line, where that module costs ~1 M instructions
 * (bench/startup-instructions.js). test/code-cache.test.ts holds the two equal.
 */
export function tmpdir(): string {
  if (process.platform === 'win32') return (require('node:os') as typeof import('node:os')).tmpdir();
  const dir = process.env.TMPDIR || process.env.TMP || process.env.TEMP || '/tmp';
  return dir.length > 1 && dir.endsWith('/') ? dir.slice(0, -1) : dir;
}

// Staging names. An agent binds its socket under a staging name and links it into place
// once it listens. The kernel keeps the path a socket was bound at (it is what
// /proc/<pid>/net/unix shows, even after that name is unlinked), so a staging name keeps the
// final basename and `finalSocketPath()` maps it back:
//   private folder:            <dir>/.ispy-<pid>-<random>.<basename>
//   folder only we can write:  <dir>/.ispy-<6 random>/<basename>   (a fresh 0700 folder, from mkdtemp)
// A socket in a folder others can write is bound in the agent's private default folder
// under a name kept there for the socket's whole life (Node unlinks the bound path when the
// server closes, so it must stay where nobody else can plant a link):
//   <defaultSocketDir>/.ispy-link-<pid>-<random>.<basename>
// That name is a live link to the same socket, so it is its own "final" path.
const STAGED_BESIDE = /^\.ispy-(\d+)-[a-z0-9]+\.(.+)$/;
const STAGING_FOLDER = /^\.ispy-[A-Za-z0-9]{6}$/;
const KEPT_LINK = /^\.ispy-link-(\d+)-[a-z0-9]+\.(.+)$/;

function randomTag(): string {
  return Math.random().toString(36).slice(2, 8).padEnd(6, '0');
}

/** The staging name beside `file` for process `pid`. */
export function stagedBeside(file: string, pid: number): string {
  return path.join(path.dirname(file), `.ispy-${pid}-${randomTag()}.${path.basename(file)}`);
}

/** The name, in private folder `dir`, a socket whose folder others can write is bound at. */
export function keptLinkIn(dir: string, basename: string, pid: number): string {
  return path.join(dir, `.ispy-link-${pid}-${randomTag()}.${basename}`);
}

/**
 * For a staging name in a private folder (a socket being bound beside its final name, or the
 * kept link of a socket in a folder others can write): the pid of the agent it belongs to.
 */
export function stagingPid(name: string): number | undefined {
  const m = STAGED_BESIDE.exec(name) ?? KEPT_LINK.exec(name);
  return m ? Number(m[1]) : undefined;
}

/** The path an agent's socket was linked to, given the path it was bound at. */
export function finalSocketPath(boundAt: string): string {
  const dir = path.dirname(boundAt);
  const base = path.basename(boundAt);
  // A kept link is itself a name of the live socket; its final name is elsewhere (the
  // agent's welcome names it).
  if (KEPT_LINK.test(base)) return boundAt;
  const beside = STAGED_BESIDE.exec(base);
  if (beside) return path.join(dir, beside[2]!);
  if (STAGING_FOLDER.test(path.basename(dir))) return path.join(path.dirname(dir), base);
  return boundAt;
}
