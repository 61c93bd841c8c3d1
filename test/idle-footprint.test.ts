// What the agent keeps in an idle app's main thread: the code of commands nobody ran is not
// loaded (bench/rss.js measures what that saves). Read through `process modules --files`,
// which lists the scripts V8 compiled on the main thread.

import { afterAll, describe, expect, it } from 'vitest';
import * as path from 'node:path';
import { cleanup, DIST, FIXTURES, startApp } from './helpers';
import { connect } from '../dist/src/client/index.js';

afterAll(cleanup);

/** Loaded only when a command needs them. */
const ON_DEMAND = [
  'src/plugin/testing.js',
  'src/plugin/wrap.js',
  'src/plugin/target.js',
  'src/agent/artefacts.js',
  'src/protocol/cpuprofile.js',
  'plugins/process/modules.js',
  'plugins/profile/gate.js',
  'plugins/profile/heapprofile.js',
  'plugins/requests/tracker.js',
  'plugins/trace/registry.js',
  'plugins/trace/tracer.js',
  'plugins/trace/config-traces.js',
].map((f) => path.join(DIST, f));

async function mainThreadFiles(client: Awaited<ReturnType<typeof connect>>): Promise<Set<string>> {
  const r = (await client.call('process', 'modules', { files: true })) as { list: { file: string }[] };
  return new Set(r.list.map((f) => f.file));
}

describe('idle footprint', () => {
  it('loads no command code on the main thread until a command needs it', async () => {
    const app = await startApp({ script: 'http-app.cjs' });
    const client = await connect(app.socket);
    try {
      const idle = await mainThreadFiles(client);
      expect(idle.has(path.join(DIST, 'plugins', 'requests', 'table.js'))).toBe(true); // set up at start: it sees every request
      expect(ON_DEMAND.filter((f) => idle.has(f))).toEqual([]);
      // Using one loads it (so the check above can fail).
      const added = (await client.call('trace', 'add', { target: `${path.join(FIXTURES, 'targets', 'lib.cjs')}:add`, limit: 1 })) as { id: number };
      await client.call('trace', 'remove', { id: String(added.id) });
      const after = await mainThreadFiles(client);
      expect(['plugins/trace/registry.js', 'plugins/trace/tracer.js', 'src/plugin/wrap.js', 'src/plugin/target.js'].map((f) => after.has(path.join(DIST, f)))).toEqual([true, true, true, true]);
    } finally {
      await client.close();
      await app.kill();
    }
  });
});
