// Choosing, checking and binding the agent's UNIX socket.
//
// Security note: the socket is the agent's only door, and anyone who can connect to it
// can read the process's memory (heap snapshots) and, with eval on, run code in it. So:
// it is created 0600, in a 0700 folder of our own, with no moment at which it is reachable
// with wider permissions; the final path is never a symbolic link we follow; and we only
// ever unlink a path that is a socket nobody is listening on (a stale one) or the very
// inode we created. Node itself unlinks the path a socket was bound at when the server
// closes (libuv's uv__pipe_close), following any folder symlink on the way, so that path
// always lies in a folder nobody else can write, for the socket's whole life.

import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { IspyError } from '../protocol/errors';
import { MAX_SOCKET_PATH, currentUid, defaultSocketDir, keptLinkIn, processAlive, stagedBeside, stagingPid } from '../protocol/socket-path';

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

/**
 * Who can change the socket's folder decides how the socket is bound there:
 * - private: ours, mode 700 (the default folder): bound beside its final name;
 * - own: only we (and root) can write it, e.g. ours with mode 755: bound in a fresh 0700
 *   folder inside it, removed once the socket is linked into place;
 * - shared: others can write it but it is sticky (such as /tmp), so they cannot remove or
 *   replace our files: bound in our private default folder, where the bound name stays.
 * A folder others can write without the sticky bit, or one another user owns (its owner
 * may remove anything in it), is refused: anyone there could replace or remove the socket.
 */
type FolderKind = 'private' | 'own' | 'shared';

const STICKY = 0o1000;

function folderKind(file: string, dir: string): FolderKind {
  let st: fs.Stats;
  try {
    st = fs.statSync(dir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') throw socketError(file, `folder ${dir} does not exist`);
    throw socketError(file, `cannot read folder ${dir} (${(err as Error).message})`);
  }
  if (!st.isDirectory()) throw socketError(file, `${dir} is ${kind(st)}, not a folder`);
  const me = currentUid();
  const mode = (st.mode & 0o7777).toString(8);
  if (st.uid !== me && st.uid !== 0) {
    throw socketError(file, `folder ${dir} belongs to uid ${st.uid}, who could replace or remove the socket; use a folder of your own (mode 700), or a sticky one owned by root such as /tmp`);
  }
  if ((st.mode & 0o022) !== 0) {
    if ((st.mode & STICKY) === 0) {
      const who = (st.mode & 0o002) !== 0 ? 'everyone' : `its group (gid ${st.gid})`;
      throw socketError(file, `folder ${dir} (mode ${mode}) can be written by ${who} and is not sticky, so anyone there could replace or remove the socket; use a folder only you can write (chmod 700 ${dir}) or a sticky one such as /tmp (chmod +t ${dir})`);
    }
    return 'shared';
  }
  return st.uid === me && (st.mode & 0o077) === 0 ? 'private' : 'own';
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
  try {
    fs.unlinkSync(file);
  } catch (err) {
    // e.g. another user's stale socket in a sticky folder such as /tmp
    throw socketError(file, `is a stale socket ispy cannot remove (${(err as Error).message}); remove it or choose another path`);
  }
}

export interface BoundSocket {
  path: string;
  ino: number;
  dev: number;
  /**
   * For a socket in a folder others can write: the name it was bound at, a second link to
   * it kept in the agent's private folder while it lives (Node unlinks it at close).
   */
  staged?: string;
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
 * file). Where the staging name goes depends on who can write the folder (folderKind):
 * beside the target in a private folder; in a fresh 0700 folder inside a folder only we can
 * write; in `privateDir` (our default folder) for a sticky folder others can write, where
 * it stays until the socket is gone, so that Node's unlink of it at close never happens
 * where someone could have planted a link. Only when a private folder's staging name would
 * be too long for a UNIX socket is it bound in place (still unreachable by anyone else, but
 * connectable a moment after it appears).
 */
export async function bindSocket(server: net.Server, file: string, privateDir = defaultSocketDir()): Promise<BoundSocket> {
  if (!fits(file)) throw socketError(file, `path is ${Buffer.byteLength(file)} bytes; UNIX sockets allow at most ${MAX_SOCKET_PATH}`);
  const dir = path.dirname(file);
  const base = path.basename(file);
  const where = folderKind(file, dir);
  await clearSocketPath(file);
  if (where === 'private') {
    const staged = stagedBeside(file, process.pid);
    if (!fits(staged)) {
      await listen(server, file);
      fs.chmodSync(file, 0o600);
    } else {
      await linkIntoPlace(server, staged, file);
    }
  } else if (where === 'own') {
    // The socket keeps its basename in the fresh folder when it fits (so `ispy attach` can
    // map it back), else it is `s`.
    const inside = stagedInFreshFolderBytes(dir, base) <= MAX_SOCKET_PATH ? base : 's';
    const needed = stagedInFreshFolderBytes(dir, inside) - MAX_SOCKET_PATH;
    if (needed > 0) throw socketError(file, `path is too long to bind safely outside a private folder (needs ${needed} fewer byte${needed === 1 ? '' : 's'}); use a shorter path or a 0700 folder`);
    let staging: string;
    try {
      staging = fs.mkdtempSync(path.join(dir, FRESH_FOLDER_PREFIX));
    } catch (err) {
      throw socketError(file, `cannot create a staging folder in ${dir} (${(err as Error).message})`);
    }
    try {
      await linkIntoPlace(server, path.join(staging, inside), file);
    } finally {
      fs.rmdirSync(staging);
    }
  } else {
    return bindFromPrivateDir(server, file, privateDir);
  }
  const st = fs.lstatSync(file);
  return { path: file, ino: st.ino, dev: st.dev };
}

function crossDeviceError(file: string, privateDir: string): IspyError {
  const dir = path.dirname(file);
  return socketError(
    file,
    `folder ${dir} can be written by others, so the socket is bound in ${privateDir} and hard-linked into it, but they are on different filesystems; put the socket in a folder only you can write (e.g. mkdir -m 700 ${path.join(dir, `ispy-${currentUid()}`)}) or set TMPDIR to a folder on the filesystem of ${dir}`,
  );
}

/** The 'shared' route of bindSocket: bound in our private folder, that name kept. */
async function bindFromPrivateDir(server: net.Server, file: string, privateDir: string): Promise<BoundSocket> {
  ensurePrivateDir(privateDir);
  // A hard link cannot cross filesystems: say so before binding anything.
  if (fs.statSync(privateDir).dev !== fs.statSync(path.dirname(file)).dev) throw crossDeviceError(file, privateDir);
  let staged = keptLinkIn(privateDir, path.basename(file), process.pid);
  if (!fits(staged)) staged = keptLinkIn(privateDir, 's', process.pid);
  if (!fits(staged)) {
    throw socketError(file, `its folder can be written by others, so the socket is bound in ${privateDir}, whose path is too long for a UNIX socket; use a folder only you can write, or a shorter TMPDIR`);
  }
  await listen(server, staged);
  try {
    fs.chmodSync(staged, 0o600);
    fs.linkSync(staged, file);
  } catch (err) {
    server.close();
    try {
      fs.unlinkSync(staged); // our own name, in our private folder
    } catch {
      // already gone: closing unlinks it
    }
    const code = (err as NodeJS.ErrnoException).code;
    // Bind mounts of one filesystem share st_dev, yet link across them fails with EXDEV.
    if (code === 'EXDEV') throw crossDeviceError(file, privateDir);
    throw socketError(file, code === 'EEXIST' ? 'was created by someone else while binding' : (err as Error).message);
  }
  const st = fs.lstatSync(file);
  return { path: file, ino: st.ino, dev: st.dev, staged };
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

/**
 * Removes the socket's names (its path, and the kept staging link if any) while they are
 * still the inode we bound. Synchronous: runs in 'exit'.
 */
export function removeSocket(bound: BoundSocket): void {
  for (const name of bound.staged === undefined ? [bound.path] : [bound.path, bound.staged]) {
    try {
      const st = fs.lstatSync(name);
      if (st.isSocket() && st.ino === bound.ino && st.dev === bound.dev) fs.unlinkSync(name);
    } catch {
      // already gone
    }
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
