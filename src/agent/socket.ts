// Choosing, checking and binding the agent's UNIX socket.
//
// Security note: the socket is the agent's only door, and anyone who can connect to it
// can read the process's memory (heap snapshots) and, with eval on, run code in it. So:
// it is created 0600, in a 0700 folder of our own, with no moment at which it is reachable
// with wider permissions; the final path is never a symbolic link we follow; and we only
// ever unlink a path that is a socket nobody is listening on (a stale one) or the very
// inode we created.

import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { IspyError } from '../protocol/errors';
import { MAX_SOCKET_PATH, currentUid, defaultSocketDir, processAlive, stagedBeside, stagingPid } from '../protocol/socket-path';

export { MAX_SOCKET_PATH, currentUid, defaultSocketDir };

export function socketPathFor(template: string | undefined, pid: number): string {
  return (template ?? path.join(defaultSocketDir(), '{pid}.sock')).split('{pid}').join(String(pid));
}

function socketError(file: string, message: string): IspyError {
  return new IspyError('ISPY_ERR_SOCKET', `socket ${file}: ${message}`);
}

function kind(st: fs.Stats): string {
  if (st.isFile()) return 'a regular file';
  if (st.isDirectory()) return 'a directory';
  if (st.isFIFO()) return 'a FIFO';
  if (st.isCharacterDevice() || st.isBlockDevice()) return 'a device';
  return 'not a socket';
}

/** Creates the default folder 0700, or checks an existing one is a private folder of ours. */
export function ensurePrivateDir(dir: string): void {
  try {
    fs.mkdirSync(dir, { mode: 0o700 });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw socketError(dir, `cannot create folder (${(err as Error).message})`);
  }
  const st = fs.lstatSync(dir);
  if (st.isSymbolicLink()) throw socketError(dir, 'the socket folder is a symbolic link; ispy never follows one');
  if (!st.isDirectory()) throw socketError(dir, `the socket folder is ${kind(st)}`);
  if (st.uid !== currentUid()) throw socketError(dir, `the socket folder belongs to uid ${st.uid}, not to this process (uid ${currentUid()})`);
  if ((st.mode & 0o077) !== 0) {
    throw socketError(dir, `the socket folder has mode ${(st.mode & 0o777).toString(8)}; it must be 700 (private). Fix it with: chmod 700 ${dir}`);
  }
}

function isPrivateDir(dir: string): boolean {
  try {
    const st = fs.lstatSync(dir);
    return st.isDirectory() && st.uid === currentUid() && (st.mode & 0o077) === 0;
  } catch {
    return false;
  }
}

/** Resolves with true when something accepts a connection on the socket. */
export function probeSocket(file: string, timeoutMs = 500): Promise<'live' | 'stale' | 'unknown'> {
  return new Promise((resolve) => {
    const sock = net.connect(file);
    const timer = setTimeout(() => {
      sock.destroy();
      resolve('unknown');
    }, timeoutMs);
    timer.unref();
    sock.once('connect', () => {
      clearTimeout(timer);
      sock.destroy();
      resolve('live');
    });
    sock.once('error', (err: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      resolve(err.code === 'ECONNREFUSED' || err.code === 'ENOENT' ? 'stale' : 'unknown');
    });
  });
}

/**
 * Makes the path free for us: nothing there, or a stale socket we then remove. Refuses a
 * symbolic link, anything that is not a socket, and a socket someone is listening on.
 */
export async function clearSocketPath(file: string): Promise<void> {
  let st: fs.Stats;
  try {
    st = fs.lstatSync(file);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw socketError(file, (err as Error).message);
  }
  if (st.isSymbolicLink()) throw socketError(file, 'is a symbolic link; ispy never follows one. Remove it or choose another path');
  if (!st.isSocket()) throw socketError(file, `is ${kind(st)}, not a socket; ispy never removes it. Choose another path`);
  const state = await probeSocket(file);
  if (state === 'live') {
    throw new IspyError('ISPY_ERR_SOCKET_IN_USE', `socket ${file}: held by a live agent (something is listening on it); use another path, e.g. one with {pid}`);
  }
  if (state !== 'stale') throw socketError(file, 'exists and could not be probed; not replacing it');
  // Stale: its owner is gone. Unlink only if it is still the same inode we looked at.
  const again = fs.lstatSync(file);
  if (again.ino !== st.ino || !again.isSocket()) throw socketError(file, 'changed while being checked; not replacing it');
  fs.unlinkSync(file);
}

export interface BoundSocket {
  path: string;
  ino: number;
  dev: number;
}

function listen(server: net.Server, file: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const onError = (err: Error) => reject(err);
    server.once('error', onError);
    server.listen(file, () => {
      server.off('error', onError);
      resolve();
    });
  });
}

function fits(file: string): boolean {
  return Buffer.byteLength(file) <= MAX_SOCKET_PATH;
}

const FRESH_FOLDER_PREFIX = '.ispy-';

/** Bytes of `<dir>/.ispy-??????/<name>`: mkdtemp appends six characters to the prefix. */
function stagedInFreshFolderBytes(dir: string, name: string): number {
  return Buffer.byteLength(path.join(dir, FRESH_FOLDER_PREFIX, name)) + 6;
}

/**
 * Binds the server at `file` with mode 0600, so that the final path exists only once it
 * accepts connections (a client or script that waits for the file and then connects never
 * meets "connection refused", and a sweep by another agent starting in the same folder
 * never takes a socket mid-bind for a stale one). The socket is bound and listening under a
 * staging name, chmodded, then hard-linked into place (link never replaces an existing
 * file). In a private folder the staging name sits beside the target; elsewhere it is inside
 * a fresh 0700 folder, so the socket is never reachable with wider permissions. Only when a
 * private folder's staging name would be too long for a UNIX socket is it bound in place
 * (still unreachable by anyone else, but connectable a moment after it appears).
 */
export async function bindSocket(server: net.Server, file: string): Promise<BoundSocket> {
  if (!fits(file)) throw socketError(file, `path is ${Buffer.byteLength(file)} bytes; UNIX sockets allow at most ${MAX_SOCKET_PATH}`);
  const dir = path.dirname(file);
  const base = path.basename(file);
  if (!fs.existsSync(dir)) throw socketError(file, `folder ${dir} does not exist`);
  await clearSocketPath(file);
  if (isPrivateDir(dir)) {
    const staged = stagedBeside(file, process.pid);
    if (!fits(staged)) {
      await listen(server, file);
      fs.chmodSync(file, 0o600);
    } else {
      await linkIntoPlace(server, staged, file);
    }
  } else {
    // The socket keeps its basename in the fresh folder when it fits (so `ispy attach` can
    // map it back), else it is `s`.
    const inside = stagedInFreshFolderBytes(dir, base) <= MAX_SOCKET_PATH ? base : 's';
    const needed = stagedInFreshFolderBytes(dir, inside) - MAX_SOCKET_PATH;
    if (needed > 0) throw socketError(file, `path is too long to bind safely outside a private folder (needs ${needed} fewer byte${needed === 1 ? '' : 's'}); use a shorter path or a 0700 folder`);
    const staging = fs.mkdtempSync(path.join(dir, FRESH_FOLDER_PREFIX));
    try {
      await linkIntoPlace(server, path.join(staging, inside), file);
    } finally {
      fs.rmdirSync(staging);
    }
  }
  const st = fs.lstatSync(file);
  return { path: file, ino: st.ino, dev: st.dev };
}

async function linkIntoPlace(server: net.Server, staged: string, file: string): Promise<void> {
  await listen(server, staged);
  try {
    fs.chmodSync(staged, 0o600);
    try {
      fs.linkSync(staged, file);
    } catch (err) {
      server.close();
      throw socketError(file, (err as NodeJS.ErrnoException).code === 'EEXIST' ? 'was created by someone else while binding' : (err as Error).message);
    }
  } finally {
    try {
      fs.unlinkSync(staged);
    } catch {
      // already gone
    }
  }
}

/** Removes the socket if it is still the inode we bound. Synchronous: runs in 'exit'. */
export function removeSocket(bound: BoundSocket): void {
  try {
    const st = fs.lstatSync(bound.path);
    if (st.isSocket() && st.ino === bound.ino && st.dev === bound.dev) fs.unlinkSync(bound.path);
  } catch {
    // already gone
  }
}

/**
 * Removes sockets in a folder whose agent is gone, and staging sockets left by an agent
 * killed while binding (judged by their pid, never by probing: a staging socket is not yet
 * listening while its agent binds it). Returns the paths removed.
 */
export async function sweepStaleSockets(dir: string): Promise<string[]> {
  let names: string[];
  try {
    names = fs.readdirSync(dir);
  } catch {
    return [];
  }
  const removed: string[] = [];
  for (const name of names) {
    const staging = stagingPid(name);
    if (!name.endsWith('.sock') && staging === undefined) continue;
    const file = path.join(dir, name);
    try {
      const st = fs.lstatSync(file);
      if (!st.isSocket() || st.uid !== currentUid()) continue;
      if (staging !== undefined ? processAlive(staging) : (await probeSocket(file, 300)) !== 'stale') continue;
      const again = fs.lstatSync(file);
      if (again.ino === st.ino) {
        fs.unlinkSync(file);
        removed.push(file);
      }
    } catch {
      // raced with another sweeper or the owner; leave it
    }
  }
  return removed;
}
