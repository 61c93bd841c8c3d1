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

const { spawn } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { median, gitCommit, writeResultsSection } = require('./lib/common');

const ROOT = path.resolve(__dirname, '..');
const REGISTER = path.join(ROOT, 'dist', 'src', 'register.js');
const BIN = path.join(ROOT, 'bin', 'ispy.js');
const APP = path.join(__dirname, 'apps', 'hello-server.js');
const SECTION = '## ispy run over 50 local agents';
const TARGET_MS = 1500;

function option(name, fallback) {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? Number(process.argv[i + 1]) : fallback;
}
const AGENTS = option('agents', 50);
const RUNS = option('runs', 5);
const CONCURRENCY = option('concurrency', undefined);
const WRITE = !process.argv.includes('--no-write');

const children = new Set();
let dir;

// Whatever ends the benchmark, the agents it started end with it.
function killAll() {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
}
process.on('exit', killAll);
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.on(sig, () => {
    killAll();
    process.exit(130);
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function startAgents() {
  // 0700 by mkdtemp, short so socket paths stay far under the 107-byte limit.
  dir = fs.realpathSync(fs.mkdtempSync(path.join(os.tmpdir(), 'ispy-fan-')));
  const env = { ...process.env, ISPY_SOCKET: path.join(dir, '{pid}.sock') };
  delete env.ISPY_CONFIG;
  delete env.NODE_OPTIONS;
  const started = Date.now();
  for (let i = 0; i < AGENTS; i++) {
    const child = spawn(process.execPath, ['-r', REGISTER, APP], { cwd: dir, env, stdio: 'ignore' });
    children.add(child);
  }
  const deadline = Date.now() + 120_000;
  for (;;) {
    const up = fs.readdirSync(dir).filter((n) => n.endsWith('.sock')).length;
    if (up === AGENTS) break;
    const dead = [...children].filter((c) => c.exitCode !== null || c.signalCode !== null);
    if (dead.length) throw new Error(`${dead.length} agents exited while starting`);
    if (Date.now() > deadline) throw new Error(`only ${up} of ${AGENTS} agents started within 120 s`);
    await sleep(100);
  }
  return Date.now() - started;
}

function timed(args) {
  return new Promise((resolve, reject) => {
    const t0 = process.hrtime.bigint();
    const child = spawn(process.execPath, args, { cwd: ROOT, env: { ...process.env, NO_COLOR: '1' }, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (err += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
    child.on('exit', (code) => {
      clearTimeout(timer);
      const ms = Number(process.hrtime.bigint() - t0) / 1e6;
      if (code !== 0) reject(new Error(`${args.join(' ')} exited ${code}: ${err.trim()}`));
      else resolve({ ms, out, err });
    });
  });
}

const fmt = (ms) => `${Math.round(ms)} ms`;



async function main() {
  if (!fs.existsSync(REGISTER)) throw new Error('no build: run `npm run build` first');
  console.log(`starting ${AGENTS} agents (${path.basename(APP)})…`);
  const startMs = await startAgents();
  console.log(`  all up in ${fmt(startMs)}; socket folder ${dir}`);
  // Fifty fresh processes keep two cores busy for a while after their sockets appear
  // (JIT, GC); measuring the client against that would measure start-up noise instead.
  await sleep(3000);
  const runArgs = [BIN, 'run', `${dir}/*.sock`, '-c', 'process info', ...(CONCURRENCY ? ['--concurrency', String(CONCURRENCY)] : [])];
  // One unmeasured run warms the file cache and every agent's first-call paths.
  const warm = await timed(runArgs);
  if (!warm.err.includes(`${AGENTS} ok, 0 failed`)) throw new Error(`warm-up run did not reach every agent: ${warm.err}`);
  const fanout = [];
  const bare = [];
  for (let i = 0; i < RUNS; i++) {
    // Interleaved, order alternating, so drift in the machine's speed hits both alike.
    const pair = i % 2 === 0 ? ['run', 'node'] : ['node', 'run'];
    for (const which of pair) {
      if (which === 'node') bare.push((await timed(['-e', '0'])).ms);
      else {
        const r = await timed(runArgs);
        if (!r.err.includes(`${AGENTS} ok, 0 failed`)) throw new Error(`run ${i + 1} did not reach every agent: ${r.err}`);
        if ((r.out.match(/^── /gm) ?? []).length !== AGENTS) throw new Error(`run ${i + 1} printed the wrong number of blocks`);
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
  const cpu = os.cpus()[0]?.model?.trim() ?? 'unknown cpu';
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
      `${new Date().toISOString().slice(0, 10)}, Node ${process.version}, ${os.cpus().length} × ${cpu}, ${Math.round(os.totalmem() / 2 ** 30)} GiB, commit ${gitCommit()}. The machine is a shared VM; expect tens of percent of drift between runs.`,
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
