'use strict';
// `ispy run` over 50 local agents, end to end: the wall time of
//
//   node bin/ispy.js run '<dir>/*.sock' -c "process info"
//
// from spawn to exit, including the client's own start-up, glob expansion, 50 connections
// (hello/welcome), 50 calls and the printed blocks. The agents are 50 copies of the
// minimal hello-world server (bench/apps/hello-server.js) with the agent preloaded, their
// sockets in one private temp folder. Baseline, measured interleaved in the same run:
// `node -e 0`, the floor any Node CLI pays before doing anything. Target: median < 1.5 s.
//
//   npm run build && node bench/run-fanout.js [--agents 50] [--runs 5] [--concurrency N] [--no-write]
//
// Rewrites the section "## ispy run over 50 local agents" of bench/RESULTS.md (creating
// the file if needed); every other section is kept as it is.

const path = require('node:path');
const { BIN, requireBuilt, parseArgs, num, sleep, timed, median, fmtMs: fmt, provenance, writeResultsSection, killAll } = require('./lib/common');
const { HELLO, startAgents, checkRun } = require('./lib/agents');

const SECTION = '## ispy run over 50 local agents';
const TARGET_MS = 1500;
// One `ispy run` (or `node -e 0`) is killed after this.
const timeoutMs = 60_000;

const opts = parseArgs();
const AGENTS = num(opts.agents, 50);
const RUNS = num(opts.runs, 5);
const CONCURRENCY = num(opts.concurrency, undefined);
const WRITE = !opts['no-write'];

async function main() {
  requireBuilt();
  console.log(`starting ${AGENTS} agents (${path.basename(HELLO)})…`);
  const { dir, startMs } = await startAgents(AGENTS, 'ispy-fan-');
  console.log(`  all up in ${fmt(startMs)}; socket folder ${dir}`);
  // Fifty fresh processes keep two cores busy for a while after their sockets appear
  // (JIT, GC); measuring the client against that would measure start-up noise instead.
  await sleep(3000);
  const runArgs = [BIN, 'run', `${dir}/*.sock`, '-c', 'process info', ...(CONCURRENCY ? ['--concurrency', String(CONCURRENCY)] : [])];
  // One unmeasured run warms the file cache and every agent's first-call paths.
  checkRun(await timed(runArgs, { timeoutMs }), AGENTS, 'warm-up run');
  const fanout = [];
  const bare = [];
  for (let i = 0; i < RUNS; i++) {
    // Interleaved, order alternating, so drift in the machine's speed hits both alike.
    const pair = i % 2 === 0 ? ['run', 'node'] : ['node', 'run'];
    for (const which of pair) {
      if (which === 'node') bare.push((await timed(['-e', '0'], { timeoutMs })).ms);
      else {
        const r = await timed(runArgs, { timeoutMs });
        checkRun(r, AGENTS, `run ${i + 1}`);
        fanout.push(r.ms);
      }
    }
  }
  const med = median(fanout);
  const base = median(bare);
  const pass = med < TARGET_MS;
  console.log(`ispy run over ${AGENTS} agents: median ${fmt(med)} (runs: ${fanout.map(fmt).join(', ')})`);
  console.log(`baseline node -e 0: median ${fmt(base)}; ratio ${(med / base).toFixed(1)}x; per agent beyond the baseline ${((med - base) / AGENTS).toFixed(1)} ms`);
  console.log(`target < ${fmt(TARGET_MS)}: ${pass ? 'met' : 'MISSED'}`);
  if (!WRITE) return;
  writeResultsSection(SECTION, 
    [
      `\`node bin/ispy.js run '<dir>/*.sock' -c "process info"\` over ${AGENTS} local agents (copies of \`bench/apps/hello-server.js\` with \`-r dist/src/register.js\`), wall time from spawn to exit: client start-up, glob, ${AGENTS} connections and calls, output. ${RUNS} runs after one warm-up, interleaved with the baseline \`node -e 0\`. Written by \`node bench/run-fanout.js\`.`,
      '',
      '| metric | value | target | result |',
      '|---|---|---|---|',
      `| median wall time, ${AGENTS} agents | ${fmt(med)} | < ${fmt(TARGET_MS)} | ${pass ? 'met' : 'missed'} |`,
      `| runs | ${fanout.map(fmt).join(', ')} | | |`,
      `| baseline \`node -e 0\` (median) | ${fmt(base)} | | |`,
      `| ratio to baseline | ${(med / base).toFixed(1)}x | | |`,
      `| per agent beyond the baseline | ${((med - base) / AGENTS).toFixed(1)} ms | | |`,
      `| concurrency | ${CONCURRENCY ?? 'default (32)'} | | |`,
      '',
      `${provenance()}. The machine is a shared VM; expect tens of percent of drift between runs.`,
    ].join('\n'),
  );
  console.log(`wrote "${SECTION}" in bench/RESULTS.md`);
}

main().then(
  () => killAll(),
  (err) => {
    console.error(`run-fanout: ${err.message}`);
    process.exitCode = 1;
    killAll();
  },
);
