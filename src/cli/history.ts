// The shell's persistent history: ~/.ispy_history (or $ISPY_HISTORY), one line per entry,
// oldest first like a shell's, at most 1000 entries. Written 0600 because lines can hold
// what an operator would rather not share (eval expressions, request ids, file paths).
// History is a convenience: failing to read or write it never stops the shell.

import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

export const HISTORY_LIMIT = 1000;

export function historyFile(env: NodeJS.ProcessEnv = process.env): string {
  return env.ISPY_HISTORY || path.join(os.homedir(), '.ispy_history');
}

/** Entries newest first, as readline's `history` option wants them. */
export function loadHistory(file: string): string[] {
  try {
    const lines = fs.readFileSync(file, 'utf8').split('\n').filter((l) => l.trim() !== '');
    return lines.slice(-HISTORY_LIMIT).reverse();
  } catch {
    return [];
  }
}

/** Saves readline's history (newest first) oldest first, bounded. */
export function saveHistory(file: string, newestFirst: readonly string[]): void {
  const lines = newestFirst.slice(0, HISTORY_LIMIT).reverse();
  try {
    fs.writeFileSync(file, lines.length ? `${lines.join('\n')}\n` : '', { mode: 0o600 });
  } catch {
    // read-only home, full disk: the session goes on without saving
  }
}
