// How trace events show the app's values: secrets under secret-looking keys redacted,
// without running the app's code and without copying what needs no redaction.

import { describe, expect, it } from 'vitest';
import { redactSecrets, render } from '../dist/plugins/trace/render.js';
import { secretMatcher } from '../dist/src/plugin/index.js';

const isSecret = secretMatcher(['^pin$']);

describe('trace values', () => {
  it('returns the very same object when nothing is secret', () => {
    const value = { a: 1, b: { c: [1, 2, { d: 'x' }] } };
    expect(redactSecrets(value, isSecret)).toBe(value);
  });

  it('redacts by key at any depth inspect shows, keeps the class name, leaves the original alone', () => {
    class Creds {
      user = 'ada';
      password = 'hunter2';
      pin = 1234;
    }
    const creds = new Creds();
    const text = render({ list: [creds], headers: new Map<string, unknown>([['authorization', 'Bearer x'], ['accept', '*/*']]) }, isSecret);
    expect(text).toContain("Creds { user: 'ada', password: '[redacted, 7 chars]', pin: '[redacted]' }");
    expect(text).toContain("'authorization' => '[redacted, 8 chars]'");
    expect(text).toContain("'accept' => '*/*'");
    expect(creds.password).toBe('hunter2');
  });

  it('runs no getter and no proxy trap, and hides what it cannot look into', () => {
    let ran = 0;
    const withGetter = {
      get password() {
        ran++;
        return 'x';
      },
      ok: 1,
    };
    const proxy = new Proxy({ password: 'x' }, { ownKeys: () => (ran++, []), get: () => (ran++, 'y') });
    expect(render(withGetter, isSecret)).toBe('{ password: [Getter], ok: 1 }');
    expect(render({ p: proxy }, isSecret)).toBe("{ p: '[Proxy, not shown: its contents cannot be redacted]' }");
    expect(ran).toBe(0);
  });

  it('does not redact without a matcher, nor a positional value it cannot judge', () => {
    expect(render({ password: 'x' })).toBe("{ password: 'x' }");
    expect(render('hunter2', isSecret)).toBe("'hunter2'");
  });
});
