// IspyError is recognised across two copies of the library (a plugin resolving ispy/plugin
// from the app while the agent came from elsewhere, as with `ispy attach`).

import { describe, expect, it } from 'vitest';
import { createRequire } from 'node:module';
import * as path from 'node:path';
import { DIST } from './helpers';

const ERRORS = path.join(DIST, 'src', 'protocol', 'errors.js');

function freshCopy(): typeof import('../dist/src/protocol/errors.js') {
  const req = createRequire(__filename);
  delete req.cache[req.resolve(ERRORS)];
  return req(ERRORS);
}

describe('IspyError across copies', () => {
  it('instanceof and isIspyError hold for an error made by another copy, and plain errors stay out', () => {
    const a = freshCopy();
    const b = freshCopy();
    expect(a.IspyError).not.toBe(b.IspyError);
    const err = new b.IspyError('ISPY_ERR_NOT_FOUND', 'no such thing');
    expect(err instanceof a.IspyError).toBe(true);
    expect(a.isIspyError(err)).toBe(true);
    expect(new Error('x') instanceof a.IspyError).toBe(false);
    expect(null instanceof a.IspyError).toBe(false);
    expect(err instanceof Error).toBe(true);
  });

  it('a subclass keeps the ordinary check', () => {
    const { IspyError } = freshCopy();
    class Special extends IspyError {}
    expect(new Special('ISPY_ERR_USAGE', 'x') instanceof Special).toBe(true);
    expect(new IspyError('ISPY_ERR_USAGE', 'x') instanceof Special).toBe(false);
    expect(new Special('ISPY_ERR_USAGE', 'x') instanceof IspyError).toBe(true);
  });
});
