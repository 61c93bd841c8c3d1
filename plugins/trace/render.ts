// Showing an app's values in a trace event without running the app's code or holding on
// to its objects: util.inspect with custom inspectors and getters off, bounded in depth,
// breadth and length; values under secret-looking keys redacted.

import { inspect, types } from 'node:util';
import { redactedValue } from 'ispy/plugin';

const MAX_CHARS = 400;
/** As deep as inspect looks (its `depth: 2` shows three levels of properties). */
const REDACT_DEPTH = 3;
/** Properties looked at per object, and elements per array (inspect shows 10). */
const REDACT_KEYS = 100;
const REDACT_ELEMENTS = 10;

/**
 * The value with what sits under a secret-looking key (`password`, `token`, `authorization`,
 * the config's `redact` patterns) replaced, as deep as inspect shows. Nothing is copied
 * unless something is redacted: then only the objects on the way to it are shadowed, each
 * with the original's prototype (so inspect still names its class) and its other
 * properties as they were. Reads own data properties only: no getter, no proxy trap, no
 * code of the app runs. A secret passed positionally (`login(user, password)`) cannot be
 * told from its value: only keys are judged.
 */
export function redactSecrets(value: unknown, isSecret: (key: string) => boolean, depth = REDACT_DEPTH): unknown {
  if (depth <= 0 || value === null || typeof value !== 'object') return value;
  // inspect shows a proxy's target without its traps, and so would show a secret in it;
  // nothing public reaches the target to redact it.
  if (types.isProxy(value)) return '[Proxy, not shown: its contents cannot be redacted]';
  if (Array.isArray(value)) {
    let copy: unknown[] | undefined;
    const n = Math.min(value.length, REDACT_ELEMENTS);
    for (let i = 0; i < n; i++) {
      const d = Object.getOwnPropertyDescriptor(value, i);
      if (!d || !('value' in d)) continue;
      const shown = redactSecrets(d.value, isSecret, depth - 1);
      if (shown !== d.value) (copy ??= value.slice())[i] = shown;
    }
    return copy ?? value;
  }
  if (types.isMap(value)) {
    let copy: Map<unknown, unknown> | undefined;
    let seen = 0;
    for (const [k, v] of value as Map<unknown, unknown>) {
      if (seen++ >= REDACT_KEYS) break;
      const shown = typeof k === 'string' ? shownUnder(k, v, isSecret, depth) : redactSecrets(v, isSecret, depth - 1);
      if (shown !== v) (copy ??= new Map(value as Map<unknown, unknown>)).set(k, shown);
    }
    return copy ?? value;
  }
  // Sets, dates, buffers, errors…: shown as inspect shows them; their insides are not keyed data.
  const proto = Object.getPrototypeOf(value) as object | null;
  if (proto !== null && proto !== Object.prototype && !isPlainInstance(value)) return value;
  let changed: Map<string, unknown> | undefined;
  const keys = Object.keys(value).slice(0, REDACT_KEYS);
  for (const key of keys) {
    const d = Object.getOwnPropertyDescriptor(value, key);
    if (!d || !('value' in d)) continue;
    const v = d.value as unknown;
    const shown = shownUnder(key, v, isSecret, depth);
    if (shown !== v) (changed ??= new Map()).set(key, shown);
  }
  if (!changed) return value;
  const copy = Object.create(proto) as Record<string, unknown>;
  for (const [key, d] of Object.entries(Object.getOwnPropertyDescriptors(value))) {
    Object.defineProperty(copy, key, changed.has(key) ? { ...d, value: changed.get(key) } : d);
  }
  return copy;
}

/** What to show for `value` found under `key`: redacted when the key looks secret, else its own redaction. */
function shownUnder(key: string, value: unknown, isSecret: (key: string) => boolean, depth: number): unknown {
  if (!isSecret(key) || value === undefined || value === null) return redactSecrets(value, isSecret, depth - 1);
  return typeof value === 'string' ? redactedValue(value) : '[redacted]';
}

/** An instance of an app's class (not a built-in with internal slots such as Set or Date). */
function isPlainInstance(value: object): boolean {
  return !(
    types.isSet(value) ||
    types.isWeakMap(value) ||
    types.isWeakSet(value) ||
    types.isDate(value) ||
    types.isRegExp(value) ||
    types.isPromise(value) ||
    types.isNativeError(value) ||
    types.isAnyArrayBuffer(value) ||
    ArrayBuffer.isView(value) ||
    types.isBoxedPrimitive(value) ||
    types.isExternal(value)
  );
}

export function render(value: unknown, isSecret?: (key: string) => boolean): string {
  let text: string;
  try {
    if (isSecret) value = redactSecrets(value, isSecret);
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
