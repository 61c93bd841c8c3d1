// Saving an artefact the agent sends (`-o FILE`). Artefacts hold secrets (heap contents,
// environment, request headers), so the file is created 0600. Bytes go to FILE.partial,
// created exclusively (so a planted symlink is never followed), and are renamed to FILE
// only once all of them are on disk: a half-received snapshot never looks complete.

import * as fs from 'node:fs';
import * as path from 'node:path';
import type { ArtefactWriter } from '../client/index';

/** `report.json` + 1234 → `report-1234.json`; `out` → `out-1234`. Used so fan-out runs do not collide. */
export function insertBeforeExtension(file: string, tag: string | number): string {
  const dir = path.dirname(file);
  const base = path.basename(file);
  const dot = base.lastIndexOf('.');
  const named = dot > 0 ? `${base.slice(0, dot)}-${tag}${base.slice(dot)}` : `${base}-${tag}`;
  return dir === '.' ? named : path.join(dir, named);
}

/** The local file could not be written (full disk, permissions changed mid-transfer). */
export class SaveError extends Error {
  override readonly name = 'SaveError';
}

export interface SavingWriter extends ArtefactWriter {
  readonly file: string;
  readonly bytes: number;
}

/** A writer that lands the bytes in `file` (0600) via `file.partial`. */
export function fileWriter(file: string): SavingWriter {
  const partial = `${file}.partial`;
  // A partial left by an earlier, interrupted run is ours to replace; 'wx' below then
  // refuses anything that appears in between (including a symbolic link).
  try {
    if (fs.lstatSync(partial).isFile()) fs.unlinkSync(partial);
  } catch {
    // nothing there
  }
  const out = fs.createWriteStream(partial, { flags: 'wx', mode: 0o600 });
  let failure: Error | undefined;
  out.on('error', (err) => (failure ??= err));
  let bytes = 0;
  const removePartial = () => fs.promises.unlink(partial).catch(() => {});
  return {
    file,
    get bytes() {
      return bytes;
    },
    write(chunk) {
      bytes += chunk.length;
      if (!failure && !out.destroyed) out.write(chunk);
    },
    async end() {
      await new Promise<void>((resolve) => {
        if (out.destroyed) return resolve();
        out.end(() => resolve());
        out.once('error', () => resolve());
      });
      if (failure) {
        await removePartial();
        throw new SaveError(`cannot save ${file}: ${failure.message}`);
      }
      try {
        await fs.promises.rename(partial, file);
      } catch (err) {
        await removePartial();
        throw new SaveError(`cannot save ${file}: ${(err as Error).message}`);
      }
    },
    async abort() {
      out.destroy();
      await new Promise<void>((resolve) => (out.closed ? resolve() : out.once('close', () => resolve())));
      await removePartial();
    },
  };
}

/**
 * Names files for the artefacts of one call: the first goes to `file`, any further ones
 * (a command may produce several) to `file` with -2, -3… before the extension.
 */
export function artefactFiles(file: string): () => string {
  let n = 0;
  return () => (++n === 1 ? file : insertBeforeExtension(file, n));
}
