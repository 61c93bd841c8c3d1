// Turning V8 stack text into the app's own frames: what an operator wants to see is
// where in *their* code a wait began, not the Node internals and libraries underneath.

import * as path from 'node:path';

export interface Frame {
  function: string;
  file: string;
  line: number;
  column: number;
}

const FRAME = /^\s*at (?:(.+?) \()?(.+?):(\d+):(\d+)\)?$/;

export function parseStack(stack: string | undefined): Frame[] {
  if (!stack) return [];
  const frames: Frame[] = [];
  for (const line of stack.split('\n')) {
    const m = FRAME.exec(line);
    if (!m) continue;
    let file = m[2]!;
    if (file.startsWith('file://')) {
      try {
        file = decodeURIComponent(new URL(file).pathname);
      } catch {
        // keep the URL
      }
    }
    frames.push({ function: m[1] ?? '(anonymous)', file, line: Number(m[3]), column: Number(m[4]) });
  }
  return frames;
}

/** ispy's own build (dist/), wherever it is installed: a clone, npm link, a workspace. */
const OWN_DIR = `${path.resolve(__dirname, '..', '..')}${path.sep}`;

/** Not Node's own code, not a dependency's, not ispy's: the frames an app developer wrote. */
export function isAppFile(file: string): boolean {
  if (file.startsWith(OWN_DIR)) return false;
  return !file.startsWith('node:') && !file.startsWith('internal/') && !file.includes('/node_modules/') && file !== 'native';
}

export function appFrames(stack: string | undefined, max = 5): Frame[] {
  return parseStack(stack).filter((f) => isAppFile(f.file)).slice(0, max);
}
