// Command arguments as both sides see them. A plugin declares its arguments once (see
// src/plugin); the declaration travels in the catalogue as ArgInfo, and this file turns
// user input (a shell line, or the JSON args of a call) into validated values. The agent
// validates every call with coerceArgs; the client uses the same code to parse lines, so
// a bad flag is caught before it leaves the operator's machine and the message is identical.

import { IspyError } from './errors';

export type ArgType = 'string' | 'integer' | 'number' | 'boolean' | 'duration' | 'enum';

export interface ArgInfo {
  name: string;
  type: ArgType;
  summary: string;
  /** Taken from the line by position instead of by --flag. */
  positional?: boolean;
  required?: boolean;
  default?: string | number | boolean;
  choices?: readonly string[];
  min?: number;
  max?: number;
  /** A one-letter alias, e.g. 'n' for -n. */
  short?: string;
}

export type ArgValue = string | number | boolean;
export type ArgValues = Record<string, ArgValue | undefined>;

const DURATION_RE = /^(\d+(?:\.\d+)?)(us|ms|s|m|h)?$/;
const UNIT_MS: Record<string, number> = { us: 0.001, ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

/**
 * Parses `100us`, `500ms`, `2s`, `1.5m`, `1h`; a bare number is milliseconds. Returns
 * milliseconds (fractions kept to the microsecond: sampling intervals go below 1 ms) or undefined.
 */
export function parseDuration(text: string): number | undefined {
  const m = DURATION_RE.exec(text.trim());
  if (!m) return undefined;
  return Math.round(Number(m[1]) * UNIT_MS[m[2] ?? 'ms']! * 1000) / 1000;
}

export function formatDuration(ms: number): string {
  if (!Number.isFinite(ms)) return String(ms);
  if (ms < 1) return `${Math.round(ms * 1000)}us`;
  if (ms < 1000) return `${Math.round(ms)}ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(ms < 10_000 ? 2 : 1)}s`;
  const parts = (big: number, small: number, bigUnit: string, smallUnit: string) => (small ? `${big}${bigUnit}${small}${smallUnit}` : `${big}${bigUnit}`);
  if (ms < 3_600_000) return parts(Math.floor(ms / 60_000), Math.round((ms % 60_000) / 1000), 'm', 's');
  return parts(Math.floor(ms / 3_600_000), Math.floor((ms % 3_600_000) / 60_000), 'h', 'm');
}

/** camelCase argument name → the --kebab-case flag users type. */
export function flagName(name: string): string {
  return name.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);
}

function describeType(info: ArgInfo): string {
  switch (info.type) {
    case 'duration':
      return 'a duration such as 500ms, 2s or 1m';
    case 'enum':
      return `one of ${(info.choices ?? []).join(', ')}`;
    case 'integer':
      return 'an integer';
    case 'number':
      return 'a number';
    case 'boolean':
      return 'true or false';
    default:
      return 'text';
  }
}

function rangeText(info: ArgInfo): string {
  const unit = info.type === 'duration' ? formatDuration : String;
  if (info.min !== undefined && info.max !== undefined) return ` between ${unit(info.min)} and ${unit(info.max)}`;
  if (info.min !== undefined) return ` of at least ${unit(info.min)}`;
  if (info.max !== undefined) return ` of at most ${unit(info.max)}`;
  return '';
}

function badArg(where: string, info: ArgInfo, got: unknown): IspyError {
  const shown = typeof got === 'string' ? JSON.stringify(got) : String(got);
  return new IspyError(
    'ISPY_ERR_BAD_ARGS',
    `${where} expects ${describeType(info)}${rangeText(info)}, got ${shown}`,
    { details: { arg: info.name } },
  );
}

/** Validates and converts one value. Strings from a command line are converted; JSON values are checked. */
export function coerceValue(info: ArgInfo, raw: unknown, where = `--${flagName(info.name)}`): ArgValue {
  let value: ArgValue | undefined;
  switch (info.type) {
    case 'string':
      if (typeof raw === 'string') value = raw;
      break;
    case 'enum':
      if (typeof raw === 'string' && (info.choices ?? []).includes(raw)) value = raw;
      break;
    case 'boolean':
      if (typeof raw === 'boolean') value = raw;
      else if (raw === 'true' || raw === 'yes' || raw === '1') value = true;
      else if (raw === 'false' || raw === 'no' || raw === '0') value = false;
      break;
    case 'integer': {
      const n = typeof raw === 'string' && /^-?\d+$/.test(raw.trim()) ? Number(raw) : raw;
      if (typeof n === 'number' && Number.isSafeInteger(n)) value = n;
      break;
    }
    case 'number': {
      const n = typeof raw === 'string' && raw.trim() !== '' ? Number(raw) : raw;
      if (typeof n === 'number' && Number.isFinite(n)) value = n;
      break;
    }
    case 'duration': {
      const n = typeof raw === 'number' ? raw : typeof raw === 'string' ? parseDuration(raw) : undefined;
      if (typeof n === 'number' && Number.isFinite(n) && n >= 0) value = n;
      break;
    }
  }
  if (value === undefined) throw badArg(where, info, raw);
  if (typeof value === 'number') {
    if ((info.min !== undefined && value < info.min) || (info.max !== undefined && value > info.max)) {
      throw badArg(where, info, raw);
    }
  }
  return value;
}

function defaultValue(info: ArgInfo): ArgValue | undefined {
  if (info.default === undefined) return info.type === 'boolean' ? false : undefined;
  return coerceValue(info, info.default, `the default of --${flagName(info.name)}`);
}

/**
 * Checks a call's JSON args against the declaration: unknown names are refused, missing
 * required ones named, defaults filled in. `usage` is appended to messages so a person
 * sees what would have been right.
 */
export function coerceArgs(specs: readonly ArgInfo[], input: unknown, usage?: string): ArgValues {
  const tail = usage ? ` (usage: ${usage})` : '';
  if (input === undefined || input === null) input = {};
  if (typeof input !== 'object' || Array.isArray(input)) {
    throw new IspyError('ISPY_ERR_BAD_ARGS', `arguments must be an object of name → value${tail}`);
  }
  const given = input as Record<string, unknown>;
  const byName = new Map(specs.map((s) => [s.name, s]));
  for (const key of Object.keys(given)) {
    if (!byName.has(key)) {
      const known = specs.map((s) => (s.positional ? `<${s.name}>` : `--${flagName(s.name)}`));
      throw new IspyError(
        'ISPY_ERR_BAD_ARGS',
        `unknown argument "${key}"; ${known.length ? `this command takes ${known.join(', ')}` : 'this command takes no arguments'}${tail}`,
      );
    }
  }
  const out: ArgValues = {};
  for (const spec of specs) {
    const raw = given[spec.name];
    const where = spec.positional ? `<${spec.name}>` : `--${flagName(spec.name)}`;
    if (raw === undefined || raw === null) {
      if (spec.required) throw new IspyError('ISPY_ERR_BAD_ARGS', `missing ${where}: ${spec.summary}${tail}`);
      out[spec.name] = defaultValue(spec);
    } else {
      try {
        out[spec.name] = coerceValue(spec, raw, where);
      } catch (err) {
        if (err instanceof IspyError && tail) throw new IspyError(err.code, err.message + tail, { details: err.details });
        throw err;
      }
    }
  }
  return out;
}

/** One line of usage, e.g. `requests list [--min-age <duration>] [--limit <integer>]`. */
export function usageLine(prefix: string, specs: readonly ArgInfo[]): string {
  const parts = [prefix];
  for (const s of specs) {
    if (s.positional) parts.push(s.required ? `<${s.name}>` : `[${s.name}]`);
  }
  for (const s of specs) {
    if (s.positional) continue;
    const flag = `--${flagName(s.name)}`;
    parts.push(s.type === 'boolean' ? `[${flag}]` : `[${flag} <${s.type === 'enum' ? (s.choices ?? []).join('|') : s.type}>]`);
  }
  return parts.join(' ');
}

/**
 * Splits a command line into words. Single and double quotes group words; a backslash
 * escapes the next character outside single quotes. Throws on an unclosed quote.
 */
export function tokenize(line: string): string[] {
  const words: string[] = [];
  let cur = '';
  let inWord = false;
  let quote: '"' | "'" | null = null;
  for (let i = 0; i < line.length; i++) {
    const c = line[i]!;
    if (quote) {
      if (c === quote) quote = null;
      else if (c === '\\' && quote === '"' && i + 1 < line.length) cur += line[++i];
      else cur += c;
    } else if (c === '"' || c === "'") {
      quote = c;
      inWord = true;
    } else if (c === '\\' && i + 1 < line.length) {
      cur += line[++i];
      inWord = true;
    } else if (/\s/.test(c)) {
      if (inWord) words.push(cur);
      cur = '';
      inWord = false;
    } else {
      cur += c;
      inWord = true;
    }
  }
  if (quote) throw new IspyError('ISPY_ERR_USAGE', `unclosed ${quote} quote in: ${line}`);
  if (inWord) words.push(cur);
  return words;
}

/**
 * Parses the words after `<plugin> <command>` against the declaration into JSON args.
 * Flags may be `--name value`, `--name=value`, `-x value`; a boolean flag takes no value
 * (`--no-name` sets it false). Values stay strings here; coerceArgs converts them.
 */
export function parseWords(specs: readonly ArgInfo[], words: readonly string[], usage: string): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  const positionals = specs.filter((s) => s.positional);
  let pos = 0;
  const fail = (msg: string) => new IspyError('ISPY_ERR_BAD_ARGS', `${msg} (usage: ${usage})`);
  const findFlag = (name: string) => specs.find((s) => !s.positional && flagName(s.name) === name);
  for (let i = 0; i < words.length; i++) {
    const w = words[i]!;
    if (w === '--') {
      for (const rest of words.slice(i + 1)) {
        const spec = positionals[pos++];
        if (!spec) throw fail(`unexpected argument ${JSON.stringify(rest)}`);
        out[spec.name] = rest;
      }
      break;
    }
    if (w.startsWith('-') && w.length > 1 && !/^-\d/.test(w)) {
      let name: string;
      let inline: string | undefined;
      let spec: ArgInfo | undefined;
      if (w.startsWith('--')) {
        const eq = w.indexOf('=');
        name = eq === -1 ? w.slice(2) : w.slice(2, eq);
        inline = eq === -1 ? undefined : w.slice(eq + 1);
        spec = findFlag(name);
        if (!spec && name.startsWith('no-')) {
          const neg = findFlag(name.slice(3));
          if (neg?.type === 'boolean' && inline === undefined) {
            out[neg.name] = false;
            continue;
          }
        }
      } else {
        name = w.slice(1);
        spec = specs.find((s) => s.short === name && !s.positional);
      }
      if (!spec) {
        const flags = specs.filter((s) => !s.positional).map((s) => `--${flagName(s.name)}`);
        throw fail(`unknown flag ${w}${flags.length ? `; known flags: ${flags.join(', ')}` : '; this command takes no flags'}`);
      }
      if (spec.type === 'boolean' && inline === undefined) {
        out[spec.name] = true;
        continue;
      }
      const value = inline ?? words[++i];
      if (value === undefined) throw fail(`${w} needs a value (${describeType(spec)})`);
      out[spec.name] = value;
      continue;
    }
    const spec = positionals[pos++];
    if (!spec) throw fail(`unexpected argument ${JSON.stringify(w)}`);
    out[spec.name] = w;
  }
  return out;
}
