'use strict';
// How long the preload holds the app back: the time from process start to the app's first
// line (`performance.now()` printed by that line, since performance.timeOrigin is the
// process's start), with `-r ispy/register` and without, interleaved, fresh processes,
// medians. The preload sets up the plugins' main-thread side synchronously (so `requests`
// sees the first request and config traces wrap the first call); the worker, the socket and
// the rest start after the app's first line.
//
//   node bench/startup.js [--runs 21]

const { execFileSync } = require('node:child_process');
const c = require('./lib/common');

function firstLineMs(args, env) {
  const out = execFileSync(process.execPath, [...args, '-e', 'console.log(performance.now())'], { env, timeout: 30_000 });
  return Number(out.toString().trim());
}

async function run(opts = {}) {
  const runs = c.num(opts.runs, 21);
  const dir = c.tempDir('ispy-bstart-');
  const env = { ...process.env, ISPY_SOCKET: `${dir}/{pid}.sock` };
  delete env.ISPY_CONFIG;
  delete env.NODE_OPTIONS;
  const withAgent = [];
  const without = [];
  // One of each unmeasured: the file cache.
  firstLineMs([], env);
  firstLineMs(['-r', c.REGISTER], env);
  for (let i = 0; i < runs; i++) {
    const order = i % 2 === 0 ? ['without', 'with'] : ['with', 'without'];
    for (const which of order) {
      if (which === 'with') withAgent.push(firstLineMs(['-r', c.REGISTER], env));
      else without.push(firstLineMs([], env));
    }
  }
  const result = {
    benchmark: 'startup',
    runs,
    withoutMs: c.round(c.median(without), 1),
    withMs: c.round(c.median(withAgent), 1),
  };
  result.delayMs = c.round(result.withMs - result.withoutMs, 1);
  result.withRangeMs = [c.round(Math.min(...withAgent), 1), c.round(Math.max(...withAgent), 1)];
  result.withoutRangeMs = [c.round(Math.min(...without), 1), c.round(Math.max(...without), 1)];
  console.log(`startup: the app's first line at ${result.withoutMs} ms without the agent, ${result.withMs} ms with it (medians of ${runs}): the preload delays it ${result.delayMs} ms`);
  return result;
}

module.exports = { run };
c.mainIfDirect(module, run);
