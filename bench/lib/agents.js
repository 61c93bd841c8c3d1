'use strict';
// Shared by the fan-out benchmarks (run-fanout.js, run-ssh.js): many agents at once, and
// the check that an `ispy run` over them reached every one. The processes and the folder
// are registered with common.js, which kills and removes them on every exit path.

const { spawn } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');
const { REGISTER, APPS, tempDir, track, sleep } = require('./common');

const HELLO = path.join(APPS, 'hello-server.js');

/**
 * Starts `count` copies of apps/hello-server.js with `-r register`, their sockets
 * (<pid>.sock) in one fresh private folder, `batch` at a time (each batch up before the
 * next is spawned, so two cores are not asked to start 200 Node processes at once);
 * resolves with the folder, the pids and how long they took. Fails past `timeoutMs`.
 */
async function startAgents(count, prefix, { batch = count, timeoutMs = 120_000 } = {}) {
  // 0700 by mkdtemp, short so socket paths stay far under the 107-byte limit.
  const dir = tempDir(prefix);
  const env = { ...process.env, ISPY_SOCKET: path.join(dir, '{pid}.sock') };
  delete env.ISPY_CONFIG;
  delete env.NODE_OPTIONS;
  const started = Date.now();
  const mine = [];
  const deadline = Date.now() + timeoutMs;
  while (mine.length < count) {
    const n = Math.min(batch, count - mine.length);
    for (let i = 0; i < n; i++) mine.push(track(spawn(process.execPath, ['-r', REGISTER, HELLO], { cwd: dir, env, stdio: 'ignore' })));
    for (;;) {
      const up = fs.readdirSync(dir).filter((f) => f.endsWith('.sock')).length;
      if (up === mine.length) break;
      const dead = mine.filter((c) => c.exitCode !== null || c.signalCode !== null);
      if (dead.length) throw new Error(`${dead.length} agents exited while starting`);
      if (Date.now() > deadline) throw new Error(`only ${up} of ${count} agents started within ${timeoutMs / 1000} s`);
      await sleep(100);
    }
  }
  return { dir, pids: mine.map((c) => c.pid), startMs: Date.now() - started };
}

/** Throws unless an `ispy run` result (from common.timed) reached all `count` agents and printed a block for each. */
function checkRun(r, count, what) {
  if (!r.err.includes(`${count} ok, 0 failed`)) throw new Error(`${what} did not reach every agent: ${r.err}`);
  if ((r.out.match(/^── /gm) ?? []).length !== count) throw new Error(`${what} printed the wrong number of blocks`);
}

module.exports = { HELLO, startAgents, checkRun };
