// wrapFunction and resolveTarget: transparent wrappers, composition in any order, the
// exact original back, and clear refusals.

import { afterAll, describe, expect, it } from 'vitest';
import * as path from 'node:path';
import { wrapFunction, isWrapped, type Interceptor } from '../src/plugin/wrap';
import { parseTarget, resolveTarget } from '../src/plugin/target';

const lib = require('./fixtures/targets/lib.cjs');
const LIB = path.join(__dirname, 'fixtures/targets/lib.cjs');
const ESM = path.join(__dirname, 'fixtures/targets/esm.mjs');

const counting = (log: string[], tag: string): Interceptor => (call, proceed) => {
  log.push(`${tag}>`);
  try {
    return proceed();
  } finally {
    log.push(`<${tag}`);
  }
};

describe('wrapFunction', () => {
  it('keeps this, arguments, return value, name, length and statics; restores the exact original', () => {
    const original = lib.add;
    const seen: unknown[][] = [];
    const h = wrapFunction(lib, 'add', (call, proceed) => {
      seen.push(call.args);
      return proceed();
    });
    expect(lib.add).not.toBe(original);
    expect(isWrapped(lib.add)).toBe(true);
    expect(lib.add(2, 3)).toBe(5);
    expect(lib.add.name).toBe('add');
    expect(lib.add.length).toBe(2);
    expect(seen).toEqual([[2, 3]]);
    h.unwrap();
    h.unwrap();
    expect(lib.add).toBe(original);
    expect(Object.getOwnPropertyDescriptor(lib, 'add')).toEqual({ value: original, writable: true, enumerable: true, configurable: true });
  });

  it('passes thrown errors through unchanged', () => {
    const h = wrapFunction(lib, 'fail', (_c, proceed) => proceed());
    let thrown: unknown;
    try {
      lib.fail('bad input');
    } catch (e) {
      thrown = e;
    }
    expect(thrown).toBeInstanceOf(TypeError);
    expect((thrown as Error).message).toBe('bad input');
    h.unwrap();
  });

  it('keeps `new`, instanceof and static methods of a class', () => {
    const Original = lib.Store;
    const calls: (Function | undefined)[] = [];
    const h = wrapFunction(lib, 'Store', (call, proceed) => {
      calls.push(call.newTarget);
      return proceed();
    });
    const s = new lib.Store('a');
    expect(s).toBeInstanceOf(Original);
    expect(s).toBeInstanceOf(lib.Store);
    expect(s.get('k')).toBe('a:k');
    expect(lib.Store.create('b').name).toBe('b');
    // create() calls the class by its own lexical name, which no wrapper can reach.
    expect(calls).toEqual([lib.Store]);
    h.unwrap();
    expect(lib.Store).toBe(Original);
  });

  it('wraps an inherited method on the prototype and deletes the own property on removal', () => {
    const proto = lib.Store.prototype;
    const original = proto.get;
    const h = wrapFunction(proto, 'get', (c, p) => `[${p()}]`);
    expect(new lib.Store('x').get('y')).toBe('[x:y]');
    h.unwrap();
    expect(proto.get).toBe(original);
    const obj = Object.create(proto);
    const h2 = wrapFunction(obj, 'get', (c, p) => p());
    expect(Object.prototype.hasOwnProperty.call(obj, 'get')).toBe(true);
    h2.unwrap();
    expect(Object.prototype.hasOwnProperty.call(obj, 'get')).toBe(false);
  });

  it('composes several wraps, removable in any order', () => {
    const original = lib.add;
    const log: string[] = [];
    const a = wrapFunction(lib, 'add', counting(log, 'a'));
    const b = wrapFunction(lib, 'add', counting(log, 'b'));
    const c = wrapFunction(lib, 'add', counting(log, 'c'));
    expect(lib.add(1, 1)).toBe(2);
    expect(log).toEqual(['a>', 'b>', 'c>', '<c', '<b', '<a']);
    b.unwrap();
    log.length = 0;
    lib.add(1, 1);
    expect(log).toEqual(['a>', 'c>', '<c', '<a']);
    a.unwrap();
    expect(lib.add).not.toBe(original);
    c.unwrap();
    expect(lib.add).toBe(original);
  });

  it('refuses read-only properties and ES module bindings, and non-functions', () => {
    expect(() => wrapFunction(lib, 'frozen', (_c, p) => p())).toThrow(/read-only, non-configurable/);
    expect(() => wrapFunction(lib, 'version', (_c, p) => p())).toThrow(/"version" is a number, not a function/);
  });
});

describe('resolveTarget', () => {
  afterAll(() => {});

  it('parses <module>:<export path>, splitting at the last colon', () => {
    expect(parseTarget('node:fs:readFile')).toEqual({ module: 'node:fs', exportPath: ['readFile'] });
    expect(parseTarget('pg:Client.prototype.query')).toEqual({ module: 'pg', exportPath: ['Client', 'prototype', 'query'] });
    expect(() => parseTarget('justaname')).toThrow(/must be <module>:<export path>/);
  });

  it('reaches the instance the app loaded, and class methods through the prototype', async () => {
    const t = await resolveTarget(`${LIB}:Store.prototype.get`);
    expect(t.owner).toBe(lib.Store.prototype);
    expect(t.key).toBe('get');
    expect(t.module).toBe(LIB);
    expect(t.problem).toBeUndefined();
    const g = await resolveTarget('global:setTimeout');
    expect(g.owner).toBe(globalThis);
    const fsTarget = await resolveTarget('node:fs:readFile');
    expect(fsTarget.owner).toBe(require('node:fs'));
  });

  it('says what is wrong with a missing export, module or non-function', async () => {
    await expect(resolveTarget(`${LIB}:Stor.prototype.get`)).rejects.toThrow(/has no Stor \(available: Store, add, fail, later, version, originalAdd, frozen\)/);
    await expect(resolveTarget(`${LIB}:ad`)).rejects.toThrow(/has no "ad"/);
    await expect(resolveTarget(`${LIB}:version`)).rejects.toThrow(/is a number, not a function/);
    await expect(resolveTarget('./nope.js:x')).rejects.toThrow(/cannot find module/);
    await expect(resolveTarget('no-such-pkg-xyz:x')).rejects.toThrow(/cannot find module "no-such-pkg-xyz"/);
  });

  it('flags an ES module export binding as not replaceable, but not its class methods', async () => {
    const fnTarget = await resolveTarget(`${ESM}:double`);
    expect(fnTarget.problem).toMatch(/ES module export, and an ES module's exported bindings are immutable/);
    const method = await resolveTarget(`${ESM}:Greeter.prototype.hello`);
    expect(method.problem).toBeUndefined();
    const h = wrapFunction(method.owner, method.key, (_c, p) => `${p()}!`);
    const ns = await import(ESM);
    expect(new ns.Greeter().hello('ada')).toBe('hello ada!');
    h.unwrap();
    expect(new ns.Greeter().hello('ada')).toBe('hello ada');
  });
});
