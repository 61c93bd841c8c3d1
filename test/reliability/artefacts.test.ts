// Artefact names under pressure: two calls asking for the same name in the same second (the
// fuzzer met two gates on one function finishing together: one failed with EEXIST), and the
// names the sweep of partial artefacts recognises (see kill.test.ts for the sweep itself).

import { afterAll, describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { cleanup, tempDir } from '../helpers';
import { artefactName, createArtefact, partialArtefactPid } from '../../dist/src/agent/artefacts.js';
import { filesIn } from './harness';

afterAll(cleanup);

describe('artefact names', () => {
  it('several artefacts of one name started at once are all written, each under its own name', async () => {
    const dir = tempDir('ispy-r-');
    const outs = await Promise.all([1, 2, 3, 4].map(() => createArtefact(dir, 'gate-tick.cpuprofile')));
    await Promise.all(outs.map((o, i) => o.write(`profile ${i}`)));
    const written = await Promise.all(outs.map((o) => o.finish()));
    expect(new Set(written.map((w) => w.name)).size).toBe(4);
    written.forEach((w, i) => expect(readFileSync(w.path, 'utf8')).toBe(`profile ${i}`));
    expect(filesIn(dir)).toEqual(written.map((w) => w.name).sort());
  });

  it('the sweep knows every shape of partial name an agent writes, and no other', () => {
    for (const requested of ['heap.heapsnapshot', 'cpu.collapsed.txt', 'report', 'gate-lib_tick.cpuprofile']) {
      for (const n of [1, 2, 12]) expect(partialArtefactPid(`${artefactName(requested, 4321, n)}.partial`)).toBe(4321);
    }
    for (const name of ['notes.partial', 'heap-4321-garbage.heapsnapshot.partial', `${artefactName('heap.heapsnapshot', 4321)}`, 'heap-x-20260101T000000Z.partial', '.partial', 'heap-4321-20260101T000000Z.heapsnapshot.partial.old']) {
      expect(partialArtefactPid(name)).toBeUndefined();
    }
  });
});
