// The agent worker gives its garbage back (src/agent/compact.ts) and leaves no inspector
// session behind: a worker holding a session to itself keeps the whole process from
// exiting, so each case also checks the process ends on its own.

import { afterAll, describe, expect, it } from 'vitest';
import { spawn } from 'node:child_process';
import * as path from 'node:path';
import { cleanup, DIST, startApp, tempDir, waitFor, writeFile } from './helpers';
import { connect } from '../dist/src/client/index.js';

afterAll(cleanup);

/** Runs `code` in a worker thread of a fresh node process; resolves with what the worker posted and how the process ended. */
function inWorker(code: string, timeoutMs = 15_000): Promise<{ posted: any; code: number | null; stderr: string }> {
  const main = `
    const { Worker } = require('node:worker_threads');
    const w = new Worker(${JSON.stringify(code)}, { eval: true });
    w.on('message', (m) => process.stdout.write(JSON.stringify(m)));
    w.unref();
    setTimeout(() => {}, 3000); // the app's own work; the worker must not outlive it
  `;
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['-e', main], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (err += d));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`the process did not exit within ${timeoutMs} ms (stdout ${out}, stderr ${err})`));
    }, timeoutMs);
    child.on('exit', (exitCode) => {
      clearTimeout(timer);
      resolve({ posted: out ? JSON.parse(out) : undefined, code: exitCode, stderr: err });
    });
  });
}

describe('worker heap compaction', () => {
  it('returns the pages of garbage the worker left, and the process still exits on its own', async () => {
    const r = await inWorker(`
      const v8 = require('node:v8');
      const { parentPort } = require('node:worker_threads');
      const { WorkerHeapCompactor } = require(${JSON.stringify(path.join(DIST, 'src', 'agent', 'compact.js'))});
      const MB = 1024 * 1024;
      let junk = [];
      for (let i = 0; i < 300_000; i++) junk.push({ i, s: 'x'.repeat(40) + i });
      junk = undefined; // garbage now, but nothing collects it while the worker idles
      const before = v8.getHeapStatistics().total_physical_size;
      const compactor = new WorkerHeapCompactor();
      compactor.compactNow();
      const poll = setInterval(() => {
        if (compactor.runs !== 1) return;
        clearInterval(poll);
        parentPort.postMessage({ beforeMB: before / MB, afterMB: v8.getHeapStatistics().total_physical_size / MB });
      }, 10);
      setInterval(() => {}, 1 << 30); // an idle worker, like the agent's
    `);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.posted.beforeMB).toBeGreaterThan(30);
    expect(r.posted.afterMB).toBeLessThan(r.posted.beforeMB / 2);
  });

  it('a pending compaction is cancelled by close(), and schedule() after close() does nothing', async () => {
    const r = await inWorker(`
      const { parentPort } = require('node:worker_threads');
      const { WorkerHeapCompactor } = require(${JSON.stringify(path.join(DIST, 'src', 'agent', 'compact.js'))});
      const compactor = new WorkerHeapCompactor();
      compactor.schedule(50);
      compactor.close();
      compactor.schedule(50);
      setTimeout(() => parentPort.postMessage({ runs: compactor.runs }), 300);
      setInterval(() => {}, 1 << 30);
    `);
    expect(r.code).toBe(0);
    expect(r.posted).toEqual({ runs: 0 });
  });

  it('an idle wait compacts only when the heap grew by the threshold since the last compaction', async () => {
    const r = await inWorker(`
      const { parentPort } = require('node:worker_threads');
      const { WorkerHeapCompactor } = require(${JSON.stringify(path.join(DIST, 'src', 'agent', 'compact.js'))});
      const compactor = new WorkerHeapCompactor(4 * 1024 * 1024);
      const seen = [];
      const after = (pred, next) => { const t = setInterval(() => { if (pred()) { clearInterval(t); next(); } }, 10); };
      const state = () => ({ runs: compactor.runs, skipped: compactor.skipped });
      compactor.schedule(0); // the first always runs: nothing to compare with yet
      after(() => compactor.runs === 1, () => {
        seen.push(state());
        compactor.schedule(0); // nothing allocated since: skipped
        after(() => compactor.skipped === 1, () => {
          seen.push(state());
          let junk = [];
          for (let i = 0; i < 300_000; i++) junk.push({ i, s: 'x'.repeat(40) + i });
          junk = undefined;
          compactor.schedule(0); // tens of MiB more: compacted
          after(() => compactor.runs === 2, () => {
            seen.push(state());
            parentPort.postMessage(seen);
          });
        });
      });
      setInterval(() => {}, 1 << 30);
    `);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.posted).toEqual([{ runs: 1, skipped: 0 }, { runs: 1, skipped: 1 }, { runs: 2, skipped: 1 }]);
  });

  it('the agent compacts once idle, not after a visit that left little, again after one that left megabytes; the app still exits on its own', async () => {
    const dir = tempDir();
    // Lives until the test says it may end (a file appears), however slowly the steps go.
    const script = writeFile(
      dir,
      'idle.cjs',
      "const fs = require('node:fs');\nconst t = setInterval(() => { if (fs.existsSync(__dirname + '/stop')) { clearInterval(t); console.log('done'); } }, 50);\n",
    );
    const app = await startApp({ script, dir, waitForSocket: true, env: { ISPY_VERBOSE: '1' }, config: { plugins: [require.resolve('./fixtures/plugins/misc.cjs')] } });
    const compactions = () => app.stderr().match(/agent worker heap compacted: [\d.]+ → [\d.]+ MiB/g)?.length ?? 0;
    const skipped = () => app.stderr().match(/agent worker heap not compacted: it grew/g)?.length ?? 0;
    await waitFor(() => compactions() === 1, 30_000, 'the compaction once the agent is idle');
    // A first visit, like a routine one, leaves too little behind to be worth a full collection.
    const c = await connect(app.socket);
    await c.call('process', 'stack');
    await c.close();
    await waitFor(() => skipped() === 1, 30_000, 'the idle wait after the first visit');
    expect(compactions()).toBe(1);
    // A visit that leaves megabytes of strings in the worker's heap gets them compacted away.
    const big = await connect(app.socket);
    await big.call('misc', 'echo', { text: 'x'.repeat(400_000), times: 10 });
    await big.close();
    await waitFor(() => compactions() === 2, 30_000, 'the compaction after the last client left');
    writeFile(dir, 'stop', '');
    const exit = await Promise.race([app.exited, new Promise((r) => setTimeout(() => r('still running'), 30_000))]);
    expect(exit).toEqual({ code: 0, signal: null });
    expect(app.stdout()).toBe('done\n');
  });
});
