// Showing an app's values in a trace event without running the app's code or holding on
// to its objects: util.inspect with custom inspectors and getters off, bounded in depth,
// breadth and length.

import { inspect } from 'node:util';

const MAX_CHARS = 400;

export function render(value: unknown): string {
  let text: string;
  try {
    text = inspect(value, { depth: 2, maxArrayLength: 10, maxStringLength: 200, breakLength: Infinity, customInspect: false, getters: false, showProxy: false, compact: true });
  } catch (err) {
    text = `[uninspectable: ${(err as Error)?.message ?? err}]`;
  }
  return text.length > MAX_CHARS ? `${text.slice(0, MAX_CHARS)}… (${text.length} chars)` : text;
}

const OWN = /[\\/](?:plugin[\\/]wrap|trace[\\/](?:index|tracer|registry|config-traces))\.(?:js|ts)$/;

/** Stack lines `fn (file:line:col)` from an Error's stack, without ispy's own frames. */
export function frames(stack: string | undefined, max: number, appOnly: boolean): string[] {
  const out: string[] = [];
  for (const line of (stack ?? '').split('\n').slice(1)) {
    const text = line.trim().replace(/^at /, '');
    const file = /\(?([^()\s]+):\d+:\d+\)?$/.exec(text)?.[1] ?? '';
    if (OWN.test(file)) continue;
    if (appOnly && (file.startsWith('node:') || file.includes('/node_modules/') || !file)) continue;
    out.push(text);
    if (out.length >= max) break;
  }
  return out;
}

export function describeError(err: unknown): { name: string; message: string; frames: string[] } {
  if (err instanceof Error) return { name: err.name, message: err.message, frames: frames(err.stack, 5, false) };
  return { name: typeof err, message: render(err), frames: [] };
}
