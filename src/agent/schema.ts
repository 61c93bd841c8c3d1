// A small JSON Schema checker for the subset ispy.config.schema.json uses: type (one or
// several), properties, additionalProperties: false, items, enum, minimum, maximum,
// minLength, required, and the formats "regex" and "duration". The schema file stays the
// one source of truth for editors and for the agent; a general validator would be a
// dependency that has not earned its place for one small file.

import { parseDuration } from '../protocol/args';

const BYTE_UNITS: Record<string, number> = { b: 1, kb: 1024, mb: 1024 ** 2, gb: 1024 ** 3 };

/** Parses `512MB`, `2GB`, `100kb`, `1048576`. */
export function parseBytes(text: string): number | undefined {
  const m = /^(\d+(?:\.\d+)?)\s*(b|kb|mb|gb)?$/i.exec(text.trim());
  return m ? Math.round(Number(m[1]) * BYTE_UNITS[(m[2] ?? 'b').toLowerCase()]!) : undefined;
}

export interface Schema {
  type?: string | string[];
  properties?: Record<string, Schema>;
  additionalProperties?: boolean;
  items?: Schema;
  enum?: unknown[];
  minimum?: number;
  maximum?: number;
  minLength?: number;
  required?: string[];
  format?: string;
  description?: string;
}

export interface SchemaProblem {
  /** Dotted key path, e.g. `limits.maxFrameBytes`; empty for the root. */
  key: string;
  /** What was expected, e.g. `an integer of at least 1024`. */
  expected: string;
  got: unknown;
}

function typeOf(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'array';
  if (typeof v === 'number') return Number.isInteger(v) ? 'integer' : 'number';
  return typeof v;
}

const NOUN: Record<string, string> = {
  string: 'a string',
  integer: 'an integer',
  number: 'a number',
  boolean: 'true or false',
  object: 'an object',
  array: 'an array',
  null: 'null',
};

function describe(s: Schema): string {
  if (s.enum) return `one of ${s.enum.map((e) => JSON.stringify(e)).join(', ')}`;
  if (s.format === 'duration') return 'a duration such as "500ms", "2s" or "1m" (or a number of milliseconds)';
  if (s.format === 'bytes') return 'a size such as "512MB", "2GB" (or a number of bytes)';
  const types = s.type === undefined ? [] : Array.isArray(s.type) ? s.type : [s.type];
  let text = types.map((t) => NOUN[t] ?? t).join(' or ') || 'a value';
  if (s.minimum !== undefined && s.maximum !== undefined) text += ` between ${s.minimum} and ${s.maximum}`;
  else if (s.minimum !== undefined) text += ` of at least ${s.minimum}`;
  else if (s.maximum !== undefined) text += ` of at most ${s.maximum}`;
  if (s.minLength) text = `a non-empty ${text.replace(/^an? /, '')}`;
  if (s.format === 'regex') text += ' holding a valid regular expression';
  return text;
}

/** Returns the first problem found, or undefined when the value conforms. */
export function checkSchema(schema: Schema, value: unknown, key = ''): SchemaProblem | undefined {
  const fail = (expected = describe(schema)): SchemaProblem => ({ key, expected, got: value });
  const actual = typeOf(value);
  if (schema.type !== undefined) {
    const types = Array.isArray(schema.type) ? schema.type : [schema.type];
    const ok = types.some((t) => t === actual || (t === 'number' && actual === 'integer'));
    if (!ok) return fail();
  }
  if (schema.enum && !schema.enum.some((e) => e === value)) return fail();
  if (typeof value === 'number') {
    if (schema.minimum !== undefined && value < schema.minimum) return fail();
    if (schema.maximum !== undefined && value > schema.maximum) return fail();
  }
  if (typeof value === 'string') {
    if (schema.minLength !== undefined && value.length < schema.minLength) return fail();
    if (schema.format === 'duration' && parseDuration(value) === undefined) return fail();
    if (schema.format === 'bytes' && parseBytes(value) === undefined) return fail();
    if (schema.format === 'regex') {
      try {
        new RegExp(value, 'i');
      } catch {
        return fail();
      }
    }
  }
  if (Array.isArray(value) && schema.items) {
    for (let i = 0; i < value.length; i++) {
      const p = checkSchema(schema.items, value[i], `${key}[${i}]`);
      if (p) return p;
    }
  }
  if (actual === 'object') {
    const obj = value as Record<string, unknown>;
    for (const req of schema.required ?? []) {
      if (!(req in obj)) return { key: key ? `${key}.${req}` : req, expected: 'to be present', got: undefined };
    }
    for (const [k, v] of Object.entries(obj)) {
      const sub = schema.properties?.[k];
      const path = key ? `${key}.${k}` : k;
      if (!sub) {
        if (schema.additionalProperties === false) {
          const known = Object.keys(schema.properties ?? {}).filter((n) => n !== '$schema');
          return { key: path, expected: `not to be there (unknown key; known keys: ${known.join(', ')})`, got: v };
        }
        continue;
      }
      const p = checkSchema(sub, v, path);
      if (p) return p;
    }
  }
  return undefined;
}
