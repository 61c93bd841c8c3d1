// Unit tests for the argument vocabulary both sides share.

import { describe, expect, it } from 'vitest';
import { coerceArgs, parseDuration, formatDuration, parseWords, tokenize, usageLine, type ArgInfo } from '../src/protocol/args';
import { parseClientMessage, toJsonSafe } from '../src/protocol/index';
import { redactUrl, secretMatcher } from '../src/plugin/redact';

const specs: ArgInfo[] = [
  { name: 'id', type: 'string', summary: 'request id', positional: true, required: true },
  { name: 'minAge', type: 'duration', summary: 'minimum age', default: '0ms' },
  { name: 'limit', type: 'integer', summary: 'how many', default: 20, min: 1, max: 100, short: 'n' },
  { name: 'format', type: 'enum', summary: 'output', choices: ['json', 'collapsed'] },
  { name: 'force', type: 'boolean', summary: 'do it' },
];
const usage = usageLine('requests show', specs);

describe('durations', () => {
  it('parses and formats', () => {
    expect(parseDuration('500ms')).toBe(500);
    expect(parseDuration('2s')).toBe(2000);
    expect(parseDuration('1.5m')).toBe(90_000);
    expect(parseDuration('1h')).toBe(3_600_000);
    expect(parseDuration('250')).toBe(250);
    expect(parseDuration('100us')).toBe(0.1);
    expect(parseDuration('0.1ms')).toBe(0.1);
    expect(parseDuration('2 s')).toBeUndefined();
    expect(parseDuration('-1s')).toBeUndefined();
    expect(parseDuration('soon')).toBeUndefined();
    expect(formatDuration(12)).toBe('12ms');
    expect(formatDuration(2500)).toBe('2.50s');
    expect(formatDuration(90_000)).toBe('1m30s');
    expect(formatDuration(60_000)).toBe('1m');
    expect(formatDuration(0.25)).toBe('250us');
  });
});

describe('tokenize', () => {
  it('splits words, honours quotes and escapes', () => {
    expect(tokenize(`trace add 'pg:Client.prototype.query' --limit 5`)).toEqual(['trace', 'add', 'pg:Client.prototype.query', '--limit', '5']);
    expect(tokenize(`eval "a \\"b\\" c"  x\\ y ''`)).toEqual(['eval', 'a "b" c', 'x y', '']);
    expect(() => tokenize(`eval "open`)).toThrow(/unclosed " quote/);
  });
});

describe('parseWords + coerceArgs', () => {
  const parse = (line: string) => coerceArgs(specs, parseWords(specs, tokenize(line), usage), usage);

  it('maps positionals, long and short flags, = values and booleans', () => {
    expect(parse('abc --min-age 2s -n 5 --format=json --force')).toEqual({ id: 'abc', minAge: 2000, limit: 5, format: 'json', force: true });
    expect(parse('abc')).toEqual({ id: 'abc', minAge: 0, limit: 20, format: undefined, force: false });
    expect(parse('abc --no-force')).toMatchObject({ force: false });
  });

  it('names what was wrong and shows the usage', () => {
    expect(() => parse('')).toThrow(/missing <id>: request id \(usage: requests show <id> \[--min-age <duration>\]/);
    expect(() => parse('abc --limt 5')).toThrow(/unknown flag --limt; known flags: --min-age, --limit, --format, --force/);
    expect(() => parse('abc --limit')).toThrow(/--limit needs a value \(an integer\)/);
    expect(() => parse('abc --limit 0')).toThrow(/--limit expects an integer between 1 and 100, got "0"/);
    expect(() => parse('abc --format xml')).toThrow(/--format expects one of json, collapsed, got "xml"/);
    expect(() => parse('abc def')).toThrow(/unexpected argument "def"/);
  });

  it('checks JSON args from the wire the same way', () => {
    expect(coerceArgs(specs, { id: 'x', limit: 3 })).toMatchObject({ id: 'x', limit: 3 });
    expect(() => coerceArgs(specs, { id: 'x', limit: 3.5 })).toThrow(/--limit expects an integer/);
    expect(() => coerceArgs(specs, { id: 'x', extra: 1 })).toThrow(/unknown argument "extra"/);
    expect(() => coerceArgs(specs, [1])).toThrow(/arguments must be an object/);
  });
});

describe('frames', () => {
  it('accepts well-formed client frames and rejects the rest with a reason', () => {
    expect(parseClientMessage('{"type":"call","id":3,"plugin":"process","command":"info"}')).toEqual({ type: 'call', id: 3, plugin: 'process', command: 'info', args: {}, fetch: false });
    expect(() => parseClientMessage('{"type":"call","id":3,"plugin":"","command":"info"}')).toThrow(/"plugin" name/);
    expect(() => parseClientMessage('{"type":"call","id":3,"plugin":"p","command":"c","args":[]}')).toThrow(/"args" must be an object/);
    expect(() => parseClientMessage('{"type":"hello","protocol":"1","client":"x"}')).toThrow(/numeric "protocol"/);
    expect(() => parseClientMessage('{"id":1}')).toThrow(/needs a "type"/);
  });

  it('makes any plugin value JSON-safe', () => {
    const cyclic: Record<string, unknown> = { a: 1n, m: new Map([['k', new Set([1])]]), f() {}, d: new Date(0), e: new Error('x') };
    cyclic.self = cyclic;
    expect(toJsonSafe(cyclic)).toEqual({ a: '1', m: { k: [1] }, f: '[Function f]', d: '1970-01-01T00:00:00.000Z', e: { name: 'Error', message: 'x' }, self: '[Circular]' });
    const shared = { x: 1 };
    expect(toJsonSafe([shared, shared])).toEqual([{ x: 1 }, { x: 1 }]);
    expect(toJsonSafe(NaN)).toBe('NaN');
  });
});

describe('redactUrl', () => {
  it('hides passwords and secret-looking query values, and nothing else', () => {
    const secret = secretMatcher([]);
    expect(redactUrl('/export?token=abc&page=2#top', secret)).toBe('/export?token=***&page=2#top');
    expect(redactUrl('https://u:pw@h/x?api_key=k&q=1', secret)).toBe('https://u:***@h/x?api_key=***&q=1');
    expect(redactUrl('/plain', secret)).toBe('/plain');
    expect(redactUrl('/a?flag&x=1', secret)).toBe('/a?flag&x=1');
  });
});
