'use strict';
// The preload's hold on the app's first line (issue 12), in instructions: bench/startup.js
// times it, which moves with whatever else the machine runs; this counts what `node -r
// ispy/register` executes before a first line that exits at once, minus what a bare `node`
// executes, under valgrind's callgrind (user-space instructions, every thread); and the same
// to the end of the agent's setup, which runs after the app's synchronous start
// (src/agent/early.ts): a first line that exits in a tick it queues.
//
// Repeatable to a few thousand instructions: V8's --random-seed is fixed (hash seeds,
// address space layout of V8's heap) and NODE_EXTRA_CA_CERTS is unset (reading a CA file
// costs hundreds of millions of instructions and is no part of either side). Both are
// outside V8's code cache check (a fixed --random-seed does not make V8 reject it).
//
//   node bench/startup-instructions.js [--node /path/to/node] [--repeats 2]
//       [--v8-flags max-old-space-size=4096,…]   (given to both sides: V8 rejects a code
//                                                 cache made without them)

const { execFile } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');
const c = require('./lib/common');
const { available, parseTotals } = require('./lib/callgrind');

/** What the app's first line runs: exit at once, or once the agent's setup has run (a tick it queues runs right after it). */
const FIRST_LINES = { line: 'process.exit(0);\n', setup: 'process.nextTick(() => process.exit(0));\n' };

function count(node, args, dir, at = 'line') {
  const out = path.join(dir, `cg.${process.hrtime.bigint()}`);
  const env = { ...process.env, ISPY_SOCKET: path.join(dir, '{pid}.sock') };
  for (const name of ['NODE_OPTIONS', 'NODE_EXTRA_CA_CERTS', 'ISPY_CONFIG', 'ISPY_DISABLE']) delete env[name];
  const script = path.join(dir, `first-line-${at}.js`);
  fs.writeFileSync(script, FIRST_LINES[at]);
  return new Promise((resolve, reject) => {
    execFile(
      'valgrind',
      ['--tool=callgrind', '--smc-check=all-non-file', '--dump-instr=no', '--dump-line=no', `--callgrind-out-file=${out}`, node, '--random-seed=1', ...args, script],
      { cwd: dir, env, timeout: 300_000 },
      (err) => {
        if (err) return reject(err);
        const n = parseTotals(fs.readFileSync(out, 'utf8'));
        fs.rmSync(out, { force: true });
        resolve(n);
      },
    );
  });
}

async function run(opts = {}) {
  const ok = await available();
  if (!ok.ok) throw new Error(`startup-instructions: ${ok.why}`);
  const node = typeof opts.node === 'string' ? opts.node : process.execPath;
  const repeats = c.num(opts.repeats, 2);
  const flags = typeof opts['v8-flags'] === 'string' ? opts['v8-flags'].split(',').filter(Boolean).map((f) => `--${f}`) : [];
  const dir = c.tempDir('ispy-bsi-');
  const bare = [];
  const withAgent = [];
  const bareSetup = [];
  const withSetup = [];
  for (let i = 0; i < repeats; i++) {
    bare.push(await count(node, flags, dir));
    withAgent.push(await count(node, [...flags, '-r', c.REGISTER], dir));
    bareSetup.push(await count(node, flags, dir, 'setup'));
    withSetup.push(await count(node, [...flags, '-r', c.REGISTER], dir, 'setup'));
  }
  fs.rmSync(dir, { recursive: true, force: true });
  const m = (xs) => c.median(xs);
  const result = { benchmark: 'startup-instructions', node, flags, bare, withAgent, addedMillions: c.round((m(withAgent) - m(bare)) / 1e6, 2), bareSetup, withSetup, setupAddedMillions: c.round((m(withSetup) - m(bareSetup)) / 1e6, 2) };
  console.log(
    `startup-instructions (${node}${flags.length ? ` ${flags.join(' ')}` : ''}): to the first line ${c.round(m(bare) / 1e6, 2)} M instructions bare, ` +
      `${c.round(m(withAgent) / 1e6, 2)} M with -r ispy/register: +${result.addedMillions} M; to the end of the agent's setup (a tick after the first line), +${result.setupAddedMillions} M (medians of ${repeats})`,
  );
  return result;
}

module.exports = { run };
c.mainIfDirect(module, run);
