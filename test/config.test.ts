// Unit tests for config loading and the schema checker (the integration side is in agent-startup).

import { afterAll, describe, expect, it } from 'vitest';
import { writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { cleanup, tempDir } from './helpers';
import { loadConfig, DEFAULT_LIMITS } from '../src/agent/config';
import { checkSchema } from '../src/agent/schema';

afterAll(cleanup);

function withConfig(content: unknown): string {
  const dir = tempDir('ispy-cfg-');
  writeFileSync(path.join(dir, 'ispy.config.json'), typeof content === 'string' ? content : JSON.stringify(content));
  return dir;
}

describe('loadConfig', () => {
  it('gives defaults without a config file', () => {
    const dir = tempDir('ispy-cfg-');
    const c = loadConfig({ cwd: dir }, {});
    expect(c.file).toBeUndefined();
    expect(c.socket).toBeUndefined();
    expect(c.limits).toEqual(DEFAULT_LIMITS);
    expect(c.eval).toBe(false);
  });

  it('reads the cwd config, resolves paths against it, converts durations', () => {
    const dir = withConfig({ socket: 'run/{pid}.sock', outputDir: 'out', eval: true, limits: { mainThreadTimeout: '500ms', inspectorTimeout: 300 } });
    const c = loadConfig({ cwd: dir }, {});
    expect(c.socket).toBe(path.join(dir, 'run/{pid}.sock'));
    expect(c.outputDir).toBe(path.join(dir, 'out'));
    expect(c.eval).toBe(true);
    expect(c.limits.mainThreadTimeoutMs).toBe(500);
    expect(c.limits.inspectorTimeoutMs).toBe(300);
  });

  it('lets ISPY_SOCKET override the file, and startAgent options override both', () => {
    const dir = withConfig({ socket: '/tmp/from-file.sock' });
    expect(loadConfig({ cwd: dir }, { ISPY_SOCKET: '/tmp/env.sock' }).socket).toBe('/tmp/env.sock');
    expect(loadConfig({ cwd: dir, socket: '/tmp/code.sock' }, { ISPY_SOCKET: '/tmp/env.sock' }).socket).toBe('/tmp/code.sock');
  });

  it('checks startAgent options against the schema too', () => {
    expect(() => loadConfig({ config: false, plugins: 'x' as never }, {})).toThrow(/startAgent option "plugins" must be an array/);
  });
});

describe('checkSchema', () => {
  it('reports the first problem with its key path', () => {
    const schema = { type: 'object', additionalProperties: false, properties: { a: { type: 'array', items: { type: 'integer', minimum: 1 } } } };
    expect(checkSchema(schema, { a: [1, 2] })).toBeUndefined();
    expect(checkSchema(schema, { a: [1, 0] })).toEqual({ key: 'a[1]', expected: 'an integer of at least 1', got: 0 });
    expect(checkSchema(schema, { b: 1 })?.expected).toMatch(/unknown key; known keys: a/);
    expect(checkSchema(schema, [])).toEqual({ key: '', expected: 'an object', got: [] });
  });
});
