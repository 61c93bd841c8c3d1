// Turns command results into text a person reads in a terminal. Plugins return plain
// JSON-safe values; their shape decides the layout, so a new plugin gets readable
// output without writing any formatting of its own:
//
//   array of flat objects   → an aligned table (numbers right-aligned)
//   object                  → aligned `key  value` lines, nested objects indented under
//                             their key, arrays of scalars joined with ", "
//   scalar                  → itself
//
// `--json` bypasses all of this; nothing here is meant to be parsed by a program.

import { style as makeStyle, visibleLength, type Style } from './style';

export interface FormatOptions {
  color?: boolean;
}

type Scalar = string | number | boolean | null;

const INDENT = '  ';

function isScalar(v: unknown): v is Scalar {
  return v === null || typeof v === 'string' || typeof v === 'number' || typeof v === 'boolean';
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function isScalarArray(v: unknown): v is Scalar[] {
  return Array.isArray(v) && v.every(isScalar);
}

/** A value that fits in one table cell or on one `key value` line. */
function isCellValue(v: unknown): boolean {
  return v === undefined || isScalar(v) || isScalarArray(v);
}

function isFlatObject(v: unknown): v is Record<string, unknown> {
  return isPlainObject(v) && Object.values(v).every(isCellValue);
}

function isTable(v: unknown): v is Record<string, unknown>[] {
  return Array.isArray(v) && v.length > 0 && v.every(isFlatObject);
}

function cell(v: unknown): string {
  if (v === undefined || v === null) return '';
  if (Array.isArray(v)) return v.map((x) => (x === null ? '' : String(x))).join(', ');
  return String(v);
}

function padEnd(text: string, width: number): string {
  return text + ' '.repeat(Math.max(0, width - visibleLength(text)));
}

function padStart(text: string, width: number): string {
  return ' '.repeat(Math.max(0, width - visibleLength(text))) + text;
}

/** Rows of flat objects as an aligned table; columns are every key, in order of first appearance. */
export function formatTable(rows: readonly Record<string, unknown>[], opts: FormatOptions = {}): string {
  return tableLines(rows, makeStyle(opts.color === true)).join('\n');
}

function tableLines(rows: readonly Record<string, unknown>[], s: Style): string[] {
  const columns: string[] = [];
  for (const row of rows) for (const key of Object.keys(row)) if (!columns.includes(key)) columns.push(key);
  const texts = rows.map((row) => columns.map((c) => cell(row[c])));
  const numeric = columns.map((c) => rows.every((row) => row[c] === undefined || row[c] === null || typeof row[c] === 'number'));
  const widths = columns.map((c, i) => Math.max(c.length, ...texts.map((t) => t[i]!.length)));
  const line = (cells: string[], paint: (t: string) => string) =>
    cells
      .map((t, i) => {
        const last = i === cells.length - 1;
        const padded = numeric[i] ? padStart(t, widths[i]!) : last ? t : padEnd(t, widths[i]!);
        return paint(padded);
      })
      .join('  ')
      .trimEnd();
  return [line(columns.map((c, i) => (numeric[i] ? padStart(c, widths[i]!) : c)), s.head), ...texts.map((t) => line(t, (x) => x))];
}

function scalarText(v: unknown): string {
  if (v === undefined) return '';
  if (typeof v === 'string') return v;
  if (isScalarArray(v)) return v.length === 0 ? '(none)' : cell(v);
  return String(v);
}

/** Key/value lines for an object, nested values indented beneath their key. */
function objectLines(obj: Record<string, unknown>, s: Style, depth: number): string[] {
  const pad = INDENT.repeat(depth);
  const entries = Object.entries(obj).filter(([, v]) => v !== undefined);
  if (entries.length === 0) return [`${pad}${s.dim('(empty)')}`];
  // Align values of the one-line entries; nested blocks do not widen the key column.
  const width = Math.max(0, ...entries.filter(([, v]) => isCellValue(v)).map(([k]) => k.length));
  const out: string[] = [];
  for (const [key, value] of entries) {
    if (isCellValue(value)) {
      const text = scalarText(value);
      if (text.includes('\n')) {
        out.push(`${pad}${s.key(key)}`);
        for (const l of text.split('\n')) out.push(`${pad}${INDENT}${l}`);
      } else out.push(`${pad}${s.key(padEnd(key, width))}  ${text}`.trimEnd());
      continue;
    }
    if (isPlainObject(value) && Object.keys(value).length === 0) {
      out.push(`${pad}${s.key(padEnd(key, width))}  ${s.dim('(empty)')}`);
      continue;
    }
    out.push(`${pad}${s.key(key)}`);
    out.push(...valueLines(value, s, depth + 1));
  }
  return out;
}

function valueLines(value: unknown, s: Style, depth: number): string[] {
  const pad = INDENT.repeat(depth);
  if (isTable(value)) return tableLines(value, s).map((l) => pad + l);
  if (Array.isArray(value)) {
    if (value.length === 0) return [`${pad}${s.dim('(none)')}`];
    if (isScalarArray(value)) return value.map((v) => pad + cell(v));
    // Mixed or nested elements: each under its index, so nothing is flattened away.
    const out: string[] = [];
    value.forEach((item, i) => {
      if (isCellValue(item)) out.push(`${pad}${s.dim(`[${i}]`)} ${scalarText(item)}`);
      else {
        out.push(`${pad}${s.dim(`[${i}]`)}`);
        out.push(...valueLines(item, s, depth + 1));
      }
    });
    return out;
  }
  if (isPlainObject(value)) return objectLines(value, s, depth);
  const text = scalarText(value);
  return text.split('\n').map((l) => pad + l);
}

/** A whole result as readable lines (no trailing newline). Empty for undefined and null. */
export function formatValue(value: unknown, opts: FormatOptions = {}): string {
  if (value === undefined || value === null) return '';
  return valueLines(value, makeStyle(opts.color === true), 0).join('\n');
}

/** One streamed item on one line: flat objects as `key=value` pairs, anything else as JSON. */
export function formatItem(value: unknown, opts: FormatOptions = {}): string {
  if (typeof value === 'string') return value;
  if (isScalar(value)) return String(value);
  if (isFlatObject(value)) {
    const s = makeStyle(opts.color === true);
    return Object.entries(value)
      .filter(([, v]) => v !== undefined)
      .map(([k, v]) => {
        const text = cell(v);
        return `${s.key(k)}=${/[\s"]/.test(text) || text === '' ? JSON.stringify(text) : text}`;
      })
      .join(' ');
  }
  return JSON.stringify(value);
}

/** `2h3m`, `4m12s`, `37s`: an uptime a person reads at a glance. */
export function formatUptime(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) return '?';
  const s = Math.floor(seconds);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${s % 60}s`;
  if (s < 86400) return `${Math.floor(s / 3600)}h${Math.floor((s % 3600) / 60)}m`;
  return `${Math.floor(s / 86400)}d${Math.floor((s % 86400) / 3600)}h`;
}
