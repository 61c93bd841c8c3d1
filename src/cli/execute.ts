// Runs one parsed command line on one connected agent: streams, progress and artefacts
// are handed to the caller as they arrive, and the outcome (value or error) is returned,
// never thrown, so the shell and the fan-out decide alone how to show it.

import * as fs from 'node:fs';
import * as path from 'node:path';
import type { ArtefactMessage, Client } from '../client/index';
import { IspyError, isIspyError } from '../protocol/index';
import { SaveError, artefactFiles, fileWriter } from './artefact';
import type { CallLine } from './line';

export interface ArtefactNote {
  name: string;
  /** Where the agent wrote it, on the agent's host. */
  path?: string;
  size?: number;
  /** Where the client saved it (with -o). */
  savedTo?: string;
}

export interface ExecuteOptions {
  signal?: AbortSignal;
  timeoutMs?: number;
  /** The file -o named, already made unique for this target when several run at once. */
  outputFile?: string;
  onData?(item: unknown): void;
  onProgress?(update: { done?: number; total?: number; message?: string }): void;
}

export type Outcome =
  | { ok: true; value: unknown; artefacts: ArtefactNote[] }
  | { ok: false; error: IspyError; artefacts: ArtefactNote[] };

export function toIspyError(err: unknown): IspyError {
  if (isIspyError(err)) return err;
  return new IspyError('ISPY_ERR_PLUGIN_FAILED', err instanceof Error ? err.message : String(err), { cause: err });
}

/**
 * Checks up front that -o can be written, so a typo in the folder is reported before
 * the agent spends seconds producing a snapshot nobody can keep.
 */
export function checkOutputFile(file: string): void {
  const dir = path.dirname(path.resolve(file));
  let st: fs.Stats;
  try {
    st = fs.statSync(dir);
  } catch {
    throw new IspyError('ISPY_ERR_USAGE', `cannot save to ${file}: folder ${dir} does not exist`);
  }
  if (!st.isDirectory()) throw new IspyError('ISPY_ERR_USAGE', `cannot save to ${file}: ${dir} is not a folder`);
  try {
    fs.accessSync(dir, fs.constants.W_OK);
  } catch {
    throw new IspyError('ISPY_ERR_USAGE', `cannot save to ${file}: folder ${dir} is not writable`);
  }
  try {
    if (fs.statSync(file).isDirectory()) throw new IspyError('ISPY_ERR_USAGE', `cannot save to ${file}: it is a folder; name a file`);
  } catch (err) {
    if (isIspyError(err)) throw err;
  }
}

export async function execute(client: Client, line: CallLine, opts: ExecuteOptions = {}): Promise<Outcome> {
  const artefacts: ArtefactNote[] = [];
  const nextFile = opts.outputFile === undefined ? undefined : artefactFiles(opts.outputFile);
  try {
    if (opts.outputFile !== undefined) checkOutputFile(opts.outputFile);
    const value = await client.call(line.plugin.name, line.command.name, line.args, {
      ...(opts.signal ? { signal: opts.signal } : {}),
      ...(opts.timeoutMs !== undefined ? { timeoutMs: opts.timeoutMs } : {}),
      onData: (item) => opts.onData?.(item),
      onProgress: (u) => opts.onProgress?.(u),
      // Bytes cross the connection only when they are to be saved here.
      fetch: nextFile !== undefined,
      onArtefact: (info: ArtefactMessage) => {
        const note: ArtefactNote = { name: info.name };
        if (info.path !== undefined) note.path = info.path;
        if (info.size !== undefined) note.size = info.size;
        artefacts.push(note);
        if (!nextFile || !info.inline) return undefined;
        note.savedTo = nextFile();
        return fileWriter(note.savedTo);
      },
    });
    return { ok: true, value, artefacts };
  } catch (err) {
    // There is no wire code for a local file: it is reported as a problem with the -o given.
    if (err instanceof SaveError) {
      for (const a of artefacts) delete a.savedTo;
      return { ok: false, error: new IspyError('ISPY_ERR_USAGE', err.message), artefacts };
    }
    return { ok: false, error: toIspyError(err), artefacts };
  }
}

/** `1.2 MB`, `512 B`: sizes in artefact notes. */
export function formatBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KB`;
  if (n < 1024 ** 3) return `${(n / 1024 / 1024).toFixed(1)} MB`;
  return `${(n / 1024 ** 3).toFixed(2)} GB`;
}

/** One line per artefact: where it was saved, or where the agent wrote it. */
export function artefactLines(notes: readonly ArtefactNote[]): string[] {
  return notes.map((a) => {
    const size = a.size !== undefined ? ` (${formatBytes(a.size)})` : '';
    if (a.savedTo) return `saved ${a.savedTo}${size}`;
    return a.path ? `${a.name}${size} written by the agent at ${a.path} (add -o FILE to save it here)` : `${a.name}${size} produced (not saved: add -o FILE)`;
  });
}
