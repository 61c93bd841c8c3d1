// Artefacts (reports, profiles, snapshots) hold secrets, so they are written 0600, and a
// partial file never masquerades as complete: bytes go to `<name>.partial` and are renamed
// to the final name only once all of them are on disk.

import * as fs from 'node:fs';
import * as path from 'node:path';
import type { ArtefactSink } from '../plugin/define';
import { makeFolder } from './dirs';
import { currentUid, processAlive } from '../protocol/socket-path';

function stamp(d = new Date()): string {
  return d.toISOString().replace(/[-:]/g, '').replace(/\.\d+Z$/, 'Z');
}

/** `report.json` → `report-<pid>-20261122T200102Z.json`; the n-th of that name in the same second gets `-n` before its last extension. */
export function artefactName(requested: string, pid = process.pid, n = 1): string {
  const base = path.basename(requested);
  const dot = base.indexOf('.');
  const stem = dot > 0 ? base.slice(0, dot) : base;
  const ext = dot > 0 ? base.slice(dot) : '';
  const name = `${stem}-${pid}-${stamp()}${ext}`;
  return n === 1 ? name : name.replace(/(\.[^.]*)?$/, (last) => `-${n}${last}`);
}

/** An artefact name being written (see artefactName): `<stem>-<pid>-<stamp>[-n][.ext…][-n.ext].partial`. */
const PARTIAL_NAME = /^.+?-(\d+)-\d{8}T\d{6}Z(?:-\d+)?(?:\.[^/]*)?\.partial$/;

/** For the name of a partial artefact, the pid of the agent that was writing it. */
export function partialArtefactPid(name: string): number | undefined {
  const m = PARTIAL_NAME.exec(name);
  return m ? Number(m[1]) : undefined;
}

export interface WrittenArtefact {
  path: string;
  name: string;
  size: number;
}

/** An artefact being written in pieces (a heap snapshot arrives in chunks). */
export interface ArtefactStream {
  /** Where the bytes go until finish(); another writer may write there instead (see ArtefactWriter). */
  readonly partialPath: string;
  /** Appends bytes; resolves when they are on their way to disk (backpressure). */
  write(chunk: string | Uint8Array): Promise<void>;
  /** Flushes, closes and renames into place; only then does the final name exist. */
  finish(): Promise<WrittenArtefact>;
  /** Closes and deletes the partial file. Idempotent. */
  abort(): Promise<void>;
}

/**
 * A fresh `<name>.partial`, opened exclusively. Two calls asking for the same name in the
 * same second (two gates on one function) both see it free; the exclusive open decides,
 * and the one that loses takes the next number.
 */
async function openFresh(dir: string, requested: string): Promise<{ name: string; file: string; handle: fs.promises.FileHandle }> {
  for (let n = 1; ; n++) {
    const name = artefactName(requested, process.pid, n);
    const file = path.join(dir, name);
    if (fs.existsSync(file)) continue;
    try {
      return { name, file, handle: await fs.promises.open(`${file}.partial`, 'wx', 0o600) };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST' || n >= 1000) throw err;
    }
  }
}

export async function createArtefact(dir: string, requested: string): Promise<ArtefactStream> {
  makeFolder(dir);
  const { name, file, handle } = await openFresh(dir, requested);
  const partial = `${file}.partial`;
  let state: 'open' | 'done' | 'aborted' = 'open';
  let tail: Promise<unknown> = Promise.resolve();
  return {
    partialPath: partial,
    write(chunk) {
      if (state !== 'open') return Promise.reject(new Error(`artefact ${name} is already ${state}`));
      const buf = typeof chunk === 'string' ? Buffer.from(chunk) : chunk;
      const p = tail.then(() => handle.write(buf));
      tail = p.catch(() => {});
      return p.then(() => undefined);
    },
    async finish() {
      if (state !== 'open') throw new Error(`artefact ${name} is already ${state}`);
      state = 'done';
      let size: number;
      try {
        await tail;
        await handle.sync();
        // From the file, not from our writes: another writer may have filled it.
        size = (await fs.promises.stat(partial)).size;
      } finally {
        await handle.close();
      }
      await fs.promises.rename(partial, file);
      return { path: file, name, size };
    },
    async abort() {
      if (state !== 'open') return;
      state = 'aborted';
      await tail;
      await handle.close().catch(() => {});
      await fs.promises.unlink(partial).catch(() => {});
    },
  };
}

export async function writeArtefact(dir: string, requested: string, data: string | Uint8Array): Promise<WrittenArtefact> {
  const out = await createArtefact(dir, requested);
  try {
    await out.write(data);
    return await out.finish();
  } catch (err) {
    await out.abort();
    throw err;
  }
}

/** The ctx.artefacts of one call: files land in `dir`; `announce` tells the client (and sends the bytes if asked). */
export function artefactSink(dir: string, announce: (written: WrittenArtefact) => void | Promise<void>): ArtefactSink {
  return {
    async writeFile(name, data) {
      const written = await writeArtefact(dir, name, data);
      await announce(written);
      return written.path;
    },
    async create(name) {
      const out = await createArtefact(dir, name);
      return {
        partialPath: out.partialPath,
        write: (chunk) => out.write(chunk),
        async finish() {
          const written = await out.finish();
          await announce(written);
          return written.path;
        },
        abort: () => out.abort(),
      };
    },
  };
}

/**
 * Removes the partial artefacts that agents killed mid-write left in `dir` (a `kill -9`
 * during a heap snapshot leaves `heap-<pid>-<stamp>.heapsnapshot.partial`, never finished
 * and never removed). Only names of that pattern whose pid is dead, only regular files of
 * this user (a symbolic link is never followed, nor removed); `names` is the folder's
 * listing. Synchronous: it runs in the agent worker, and async calls would start libuv's
 * thread pool in an app that may never use it. Returns the paths removed.
 */
export function sweepPartialArtefacts(dir: string, names: string[]): string[] {
  const removed: string[] = [];
  for (const name of names) {
    const pid = partialArtefactPid(name);
    if (pid === undefined || processAlive(pid)) continue;
    const file = path.join(dir, name);
    try {
      const st = fs.lstatSync(file);
      if (!st.isFile() || st.uid !== currentUid()) continue;
      fs.unlinkSync(file);
      removed.push(file);
    } catch {
      // gone already (another agent swept it), or not ours to remove
    }
  }
  return removed;
}
