// The claim table between the agent worker and the main thread (src/agent/rpc.ts): whether
// a main-thread call picked up late runs or was given up is settled once, by whichever side
// comes first.

import { describe, expect, it } from 'vitest';
import { CLAIM_SLOTS, Claims } from '../dist/src/agent/rpc.js';

describe('Claims', () => {
  it('the main thread takes an offered call once; the worker can then no longer withdraw it', () => {
    const c = new Claims(Claims.buffer());
    expect(c.offer(7)).toBe(true);
    expect(c.take(7)).toBe(true);
    expect(c.take(7)).toBe(false);
    expect(c.withdraw(7)).toBe(false);
    c.release(7);
    expect(c.offer(7 + CLAIM_SLOTS)).toBe(true);
  });

  it('a withdrawn call cannot be taken: the command does not run with no one waiting', () => {
    const c = new Claims(Claims.buffer());
    expect(c.offer(3)).toBe(true);
    expect(c.withdraw(3)).toBe(true);
    expect(c.take(3)).toBe(false);
    // Its slot is free again.
    expect(c.offer(3 + CLAIM_SLOTS)).toBe(true);
    expect(c.take(3)).toBe(false);
  });

  it('refuses an offer while its slot holds an older call in flight', () => {
    const c = new Claims(Claims.buffer());
    expect(c.offer(1)).toBe(true);
    expect(c.take(1)).toBe(true);
    expect(c.offer(1 + CLAIM_SLOTS)).toBe(false);
    c.release(1);
    expect(c.offer(1 + CLAIM_SLOTS)).toBe(true);
  });

  it('both threads see one table', () => {
    const buffer = Claims.buffer();
    const worker = new Claims(buffer);
    const main = new Claims(buffer);
    expect(worker.offer(42)).toBe(true);
    expect(main.take(42)).toBe(true);
    expect(worker.withdraw(42)).toBe(false);
  });
});
