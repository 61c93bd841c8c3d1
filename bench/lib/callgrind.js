'use strict';
// An app process under valgrind's callgrind, counting the instructions it executes (all its
// threads together, user space only), for bench/instructions.js. Counts do not depend on
// what else the machine runs, so small costs that CPU-time windows cannot resolve on a
// shared VM show up repeatably.
//
//   --smc-check=all-non-file  V8 writes and rewrites machine code in anonymous memory:
//                             valgrind must notice, or it runs stale translations
//   --instr-atstart=no        start-up and warm-up run uninstrumented (several times faster);
//                             `callgrind_control -i on` switches counting on once warm
//   dumps                     `callgrind_control -d` writes the counts since the last dump
//                             to <file>.<n> and zeroes them, so each segment of requests is
//                             counted alone
//
// callgrind_control reaches the process through vgdb (ptrace when it is blocked in a system
// call), by its pid: we spawn valgrind itself, so the child's pid is that process.

const { execFile, spawn } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');
const c = require('./common');

/** The "totals:" (else "summary:") line of a callgrind dump: instructions executed. */
function parseTotals(text) {
  const m = /^totals:\s+(\d+)/m.exec(text) ?? /^summary:\s+(\d+)/m.exec(text);
  if (!m) throw new Error('not a callgrind dump: it has no totals: or summary: line');
  return Number(m[1]);
}

/**
 * Instructions per request from two counted segments of one process, of n1 and n2 requests
 * (n2 > n1): the difference divided by the difference, so whatever each segment costs
 * whatever its length (the generator's first bytes, a dump, a timer that fires once per
 * segment) cancels.
 */
function perRequest({ n1, i1, n2, i2 }) {
  if (!(n2 > n1)) throw new Error(`the second segment must have more requests than the first (${n1}, ${n2})`);
  return (i2 - i1) / (n2 - n1);
}

/** True when valgrind with callgrind and callgrind_control can run here. */
function available() {
  return new Promise((resolve) => {
    execFile('valgrind', ['--version'], (err, out) => {
      if (err) return resolve({ ok: false, why: 'valgrind is not installed (apt-get install valgrind)' });
      execFile('callgrind_control', ['-h'], (err2) => resolve(err2 && err2.code === 'ENOENT' ? { ok: false, why: 'callgrind_control is missing' } : { ok: true, version: out.trim() }));
    });
  });
}

/**
 * Starts `valgrind --tool=callgrind … node [-r register] bench/apps/<script>` in a fresh temp
 * folder, like common.startApp (ISPY_SOCKET, ispy.config.json, `PORT <n>`, the socket with
 * the agent), with counting off. Returns the app with `control(...args)` (callgrind_control
 * on it) and `dump()` (the instructions since the last dump or zeroing).
 */
async function startUnderCallgrind({ script, agent, preload, nodeFlags = [], env = {}, config, timeoutMs = 180_000, label }) {
  const dir = c.tempDir('ispy-cg-');
  const socket = path.join(dir, 'a.sock');
  const outFile = path.join(dir, 'cg.out');
  if (agent || config) fs.writeFileSync(path.join(dir, 'ispy.config.json'), JSON.stringify({ outputDir: dir, ...config }));
  const childEnv = { ...process.env, ...env, ISPY_SOCKET: socket };
  delete childEnv.ISPY_CONFIG;
  delete childEnv.ISPY_DISABLE;
  delete childEnv.NODE_OPTIONS;
  const vgArgs = ['--tool=callgrind', '--smc-check=all-non-file', '--instr-atstart=no', '--dump-instr=no', '--dump-line=no', `--callgrind-out-file=${outFile}`];
  const nodeArgs = [...nodeFlags, ...(agent ? ['-r', c.REGISTER] : []), ...(preload ? ['-r', preload] : []), path.join(c.APPS, script)];
  const child = c.track(spawn('valgrind', [...vgArgs, process.execPath, ...nodeArgs], { cwd: dir, env: childEnv, stdio: ['ignore', 'pipe', 'pipe'] }));
  let out = '';
  let err = '';
  child.stdout.on('data', (d) => (out += d));
  child.stderr.on('data', (d) => (err = (err + d).slice(-20000)));
  const exited = new Promise((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
  let dumps = 0;
  const app = {
    label,
    child,
    pid: child.pid,
    dir,
    socket,
    agent,
    port: undefined,
    alive: () => child.exitCode === null && child.signalCode === null,
    stderr: () => err,
    control: (...args) =>
      new Promise((resolve, reject) => {
        execFile('callgrind_control', [...args, String(child.pid)], { timeout: 120_000 }, (e, stdout, stderr) =>
          e ? reject(new Error(`callgrind_control ${args.join(' ')} ${child.pid}: ${(stderr || stdout || e.message).trim()}`)) : resolve(stdout),
        );
      }),
    /** Dumps the counts since the last dump (then zeroed) and returns its instructions. */
    async dump() {
      await app.control('-d');
      dumps++;
      const file = `${outFile}.${dumps}`;
      await c.waitFor(() => fs.existsSync(file) && /^totals:/m.test(fs.readFileSync(file, 'utf8').slice(-4096)), 60_000, `callgrind dump ${file}`);
      const n = parseTotals(fs.readFileSync(file, 'utf8'));
      fs.rmSync(file, { force: true });
      return n;
    },
    async kill() {
      if (app.alive()) child.kill('SIGKILL');
      await exited;
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
  try {
    await c.waitFor(
      () => {
        if (!app.alive()) throw new Error(`${script} (${label}) under callgrind exited early: ${err.trim().split('\n').slice(-5).join(' / ')}`);
        const m = /PORT (\d+)/.exec(out);
        if (!m) return false;
        app.port = Number(m[1]);
        return !agent || fs.existsSync(socket);
      },
      timeoutMs,
      `${script} (${label}) to start under callgrind`,
      100,
    );
  } catch (e) {
    await app.kill();
    throw e;
  }
  return app;
}

module.exports = { parseTotals, perRequest, available, startUnderCallgrind };
