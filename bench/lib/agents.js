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
 * (<pid>.sock) in one fresh private folder; resolves when every socket exists, within
 * 120 s, with the folder and how long they took.
 */
async function startAgents(count, prefix) {
  // 0700 by mkdtemp, short so socket paths stay far under the 107-byte limit.
  const dir = tempDir(prefix);
  const env = { ...process.env, ISPY_SOCKET: path.join(dir, '{pid}.sock') };
  delete env.ISPY_CONFIG;
  delete env.NODE_OPTIONS;
  const started = Date.now();
  const mine = [];
  for (let i = 0; i < count; i++) mine.push(track(spawn(process.execPath, ['-r', REGISTER, HELLO], { cwd: dir, env, stdio: 'ignore' })));
  const deadline = Date.now() + 120_000;
  for (;;) {
    const up = fs.readdirSync(dir).filter((n) => n.endsWith('.sock')).length;
    if (up === count) break;
    const dead = mine.filter((c) => c.exitCode !== null || c.signalCode !== null);
    if (dead.length) throw new Error(`${dead.length} agents exited while starting`);
    if (Date.now() > deadline) throw new Error(`only ${up} of ${count} agents started within 120 s`);
    await sleep(100);
  }
  return { dir, startMs: Date.now() - started };
}

/** Throws unless an `ispy run` result (from common.timed) reached all `count` agents and printed a block for each. */
function checkRun(r, count, what) {
  if (!r.err.includes(`${count} ok, 0 failed`)) throw new Error(`${what} did not reach every agent: ${r.err}`);
  if ((r.out.match(/^── /gm) ?? []).length !== count) throw new Error(`${what} printed the wrong number of blocks`);
}

module.exports = { HELLO, startAgents, checkRun };
