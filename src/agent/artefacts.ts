// Artefacts (reports, profiles, snapshots) hold secrets, so they are written 0600, and a
// partial file never masquerades as complete: bytes go to `<name>.partial` and are renamed
// to the final name only once all of them are on disk.

import * as fs from 'node:fs';
import * as path from 'node:path';
import type { ArtefactSink } from '../plugin/define';
import { makeFolder } from './dirs';

function stamp(d = new Date()): string {
  return d.toISOString().replace(/[-:]/g, '').replace(/\.\d+Z$/, 'Z');
}

/** `report.json` → `report-<pid>-20261122T200102Z.json`. */
export function artefactName(requested: string, pid = process.pid): string {
  const base = path.basename(requested);
  const dot = base.indexOf('.');
  const stem = dot > 0 ? base.slice(0, dot) : base;
  const ext = dot > 0 ? base.slice(dot) : '';
  return `${stem}-${pid}-${stamp()}${ext}`;
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

export async function createArtefact(dir: string, requested: string): Promise<ArtefactStream> {
  makeFolder(dir);
  let name = artefactName(requested);
  let file = path.join(dir, name);
  for (let n = 2; fs.existsSync(file) || fs.existsSync(`${file}.partial`); n++) {
    name = artefactName(requested).replace(/(\.[^.]*)?$/, (ext) => `-${n}${ext}`);
    file = path.join(dir, name);
  }
  const partial = `${file}.partial`;
  const handle = await fs.promises.open(partial, 'wx', 0o600);
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
