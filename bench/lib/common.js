'use strict';
// Shared by the benchmarks: start app processes (with or without the agent) in private
// temp folders, wait for them with a deadline, time a command from spawn to exit, read
// memory and CPU from /proc, summarise samples, and kill only the processes we started
// (`track`), whatever way we exit.

const { spawn } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { sleep, waitFor, sorted, percentile, round, getJson } = require('./util');

const ROOT = path.resolve(__dirname, '..', '..');
const DIST = path.join(ROOT, 'dist');
const REGISTER = path.join(DIST, 'src', 'register.js');
const CLIENT = path.join(DIST, 'src', 'client', 'index.js');
const BIN = path.join(ROOT, 'bin', 'ispy.js');
const APPS = path.join(__dirname, '..', 'apps');

/** Marks the line carrying a benchmark's JSON result on stdout (bench/run.js looks for it). */
const RESULT_MARKER = 'BENCH_RESULT ';

const children = new Set();
const dirs = [];

function killAll() {
  for (const c of children) {
    try {
      c.kill('SIGKILL');
    } catch {
      // already gone
    }
  }
  children.clear();
  for (const d of dirs.splice(0)) {
    try {
      fs.rmSync(d, { recursive: true, force: true });
    } catch {
      // best effort
    }
  }
}

/** Registers a child process to be killed by killAll (and so on every exit path); returns it. */
function track(child) {
  children.add(child);
  child.on('exit', () => children.delete(child));
  return child;
}

// Whatever ends this process (normal exit, an exception, Ctrl-C), our children die with it.
process.on('exit', killAll);
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.on(sig, () => {
    killAll();
    process.exit(130);
  });
}

function requireBuilt() {
  if (!fs.existsSync(REGISTER) || !fs.existsSync(CLIENT)) {
    throw new Error(`no build at ${DIST}: run \`npm run build\` first (or \`npm run bench\`, which builds)`);
  }
  return require(CLIENT);
}

/** A fresh private folder (0700, short path so socket paths stay short), removed at exit. */
function tempDir(prefix = 'ispy-b-') {
  const dir = fs.realpathSync(fs.mkdtempSync(path.join(os.tmpdir(), prefix)));
  dirs.push(dir);
  return dir;
}

function removeDir(dir) {
  const i = dirs.indexOf(dir);
  if (i >= 0) dirs.splice(i, 1);
  fs.rmSync(dir, { recursive: true, force: true });
}


/**
 * Starts `node [-r register] <script>` in a temp folder. With the agent, ISPY_SOCKET is
 * <dir>/a.sock and the promise resolves once the socket exists; the app must print
 * `PORT <n>` or `READY` when it is up, and we wait for that too. `config` is written to
 * <dir>/ispy.config.json; `preload` (without `agent`) preloads another file instead;
 * `nodeArgs` go to node before those (e.g. `--cpu-prof`).
 */
async function startApp({ script, agent, preload, nodeArgs: extraNodeArgs = [], args = [], env = {}, config, timeoutMs = 15000, label }) {
  const dir = tempDir();
  const socket = path.join(dir, 'a.sock');
  // The agent reads ispy.config.json from the app's cwd, which is this folder. Its artefacts
  // and audit log go there too (removed with it), not into the user's own folder.
  if (agent || config) fs.writeFileSync(path.join(dir, 'ispy.config.json'), JSON.stringify({ outputDir: dir, ...config }));
  const childEnv = { ...process.env, ...env };
  delete childEnv.ISPY_CONFIG;
  delete childEnv.ISPY_DISABLE;
  delete childEnv.NODE_OPTIONS;
  childEnv.ISPY_SOCKET = socket;
  const nodeArgs = [...extraNodeArgs, ...(agent ? ['-r', REGISTER] : preload ? ['-r', preload] : [])];
  const child = spawn(process.execPath, [...nodeArgs, path.join(APPS, script), ...args], {
    cwd: dir,
    env: childEnv,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  track(child);
  let out = '';
  let err = '';
  child.stdout.on('data', (d) => (out += d));
  child.stderr.on('data', (d) => (err += d));
  const exited = new Promise((resolve) => {
    child.on('exit', (code, signal) => {
      resolve({ code, signal });
    });
  });
  const app = {
    label: label ?? (agent ? 'with agent' : 'without agent'),
    child,
    pid: child.pid,
    dir,
    socket,
    agent,
    exited,
    stdout: () => out,
    stderr: () => err,
    port: undefined,
    alive: () => child.exitCode === null && child.signalCode === null,
    /** SIGTERM, then SIGKILL after graceMs; resolves when the process is gone. Removes the temp folder. */
    async kill(graceMs = 2000) {
      if (app.alive()) child.kill('SIGTERM');
      const t = setTimeout(() => app.alive() && child.kill('SIGKILL'), graceMs);
      const r = await exited;
      clearTimeout(t);
      try {
        removeDir(dir);
      } catch {
        // best effort
      }
      return r;
    },
  };
  try {
    await waitFor(
      () => {
        if (!app.alive()) throw new Error(`${script} (${app.label}) exited early: ${err.trim()}`);
        const m = /PORT (\d+)|READY/.exec(out);
        if (!m) return false;
        if (m[1]) app.port = Number(m[1]);
        return !agent || fs.existsSync(socket);
      },
      timeoutMs,
      `${script} (${app.label}) to start (stderr: ${err.trim()})`,
    );
  } catch (e) {
    await app.kill(0);
    throw e;
  }
  return app;
}

/**
 * Runs `command args` (node by default) from the repo root with NO_COLOR and resolves with
 * its wall time from spawn to exit and its output; rejects when it exits non-zero, naming
 * the `error:` lines it printed (`ispy run` puts a failed target's error in its block).
 * Killed after timeoutMs.
 */
function timed(args, { env = {}, command = process.execPath, timeoutMs = 120_000 } = {}) {
  return new Promise((resolve, reject) => {
    const t0 = process.hrtime.bigint();
    const child = track(spawn(command, args, { cwd: ROOT, env: { ...process.env, NO_COLOR: '1', ...env }, stdio: ['ignore', 'pipe', 'pipe'] }));
    let out = '';
    let err = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (err += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('exit', (code) => {
      clearTimeout(timer);
      const ms = Number(process.hrtime.bigint() - t0) / 1e6;
      if (code === 0) return resolve({ ms, out, err });
      const errors = [...new Set(out.split('\n').filter((l) => l.startsWith('error:')))];
      reject(new Error(`${args.join(' ')} exited ${code}: ${err.trim()}${errors.length ? `\n${errors.join('\n')}` : ''}`));
    });
  });
}

/** Resident set size of a process in kB, from /proc/<pid>/status. */
function readRss(pid) {
  const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  const get = (key) => {
    const m = new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(status);
    return m ? Number(m[1]) : NaN;
  };
  return { rssKB: get('VmRSS'), hwmKB: get('VmHWM'), anonKB: get('RssAnon'), fileKB: get('RssFile'), threads: Number(/^Threads:\s+(\d+)/m.exec(status)?.[1] ?? NaN) };
}

/**
 * CPU time consumed so far by every thread of a process, in ms. Summed from each thread's
 * /proc/<pid>/task/<tid>/schedstat (nanoseconds), which is far finer than the 10 ms ticks
 * of /proc/<pid>/stat; falls back to the ticks when schedstat is missing.
 */
function readCpuMs(pid) {
  try {
    let ns = 0;
    for (const tid of fs.readdirSync(`/proc/${pid}/task`)) {
      try {
        ns += Number(fs.readFileSync(`/proc/${pid}/task/${tid}/schedstat`, 'utf8').split(' ')[0]);
      } catch {
        // thread ended between readdir and read
      }
    }
    if (ns > 0) return ns / 1e6;
  } catch {
    // fall through
  }
  const fields = fs.readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
  // utime and stime are fields 14 and 15 (1-based); after "pid (comm) " they are at 11 and 12.
  return ((Number(fields[11]) + Number(fields[12])) * 1000) / 100;
}


function median(xs) {
  if (xs.length === 0) return NaN;
  const s = sorted(xs);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/** Milliseconds as the fan-out and attach benchmarks print them: `1234 ms`. */
const fmtMs = (ms) => `${Math.round(ms)} ms`;


function latencySummary(ms) {
  return {
    n: ms.length,
    p50: round(percentile(ms, 50), 3),
    p90: round(percentile(ms, 90), 3),
    p99: round(percentile(ms, 99), 3),
    max: round(Math.max(...ms), 3),
    mean: round(ms.reduce((a, b) => a + b, 0) / ms.length, 3),
  };
}

/**
 * A bootstrap 95% confidence interval of the median of xs (deterministic: seeded PRNG).
 * Samples that share neighbours are not independent, so read it as a rough resolution.
 */
function medianCI(xs, iterations = 2000, seed = 12345) {
  if (xs.length < 3) return [NaN, NaN];
  let state = seed >>> 0;
  const rand = () => {
    // mulberry32
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const medians = [];
  const sample = new Array(xs.length);
  for (let i = 0; i < iterations; i++) {
    for (let j = 0; j < xs.length; j++) sample[j] = xs[Math.floor(rand() * xs.length)];
    medians.push(median(sample));
  }
  return [percentile(medians, 2.5), percentile(medians, 97.5)];
}

/** Runs fn with a deadline; rejects with a message naming what took too long. */
function withTimeout(promise, ms, what) {
  let t;
  return Promise.race([
    promise,
    new Promise((_, reject) => {
      t = setTimeout(() => reject(new Error(`${what} did not finish within ${ms} ms`)), ms);
    }),
  ]).finally(() => clearTimeout(t));
}

/** Parses `--key value` / `--flag` options into an object of strings/booleans. */
function parseArgs(argv = process.argv.slice(2)) {
  const out = {};
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (!a.startsWith('--')) continue;
    const key = a.slice(2);
    const next = argv[i + 1];
    if (next === undefined || next.startsWith('--')) out[key] = true;
    else {
      out[key] = next;
      i++;
    }
  }
  return out;
}

function num(v, fallback) {
  const n = Number(v);
  return v === undefined || v === true || !Number.isFinite(n) ? fallback : n;
}

/** An error in what the benchmark was asked to do: said in one line, exit code 2. */
function usageError(message) {
  return Object.assign(new Error(message), { usage: true });
}

/**
 * The tail of every benchmark file: when run directly, runs the benchmark, prints its
 * summary and then its JSON on one line after RESULT_MARKER; exit code 1 on failure.
 */
function mainIfDirect(mod, run) {
  if (require.main !== mod) return;
  const opts = parseArgs();
  run(opts).then(
    (result) => {
      process.stdout.write(`${RESULT_MARKER}${JSON.stringify(result)}\n`);
      killAll();
      process.exit(0);
    },
    (err) => {
      // Bad input is one line (and exit 2); anything else is a failure with its stack.
      console.error(err && err.usage ? `${path.basename(mod.filename)}: ${err.message}` : err && err.stack ? err.stack : String(err));
      killAll();
      process.exit(err && err.usage ? 2 : 1);
    },
  );
}

/**
 * Runs a benchmark script in a process of its own. Resolves with the JSON of its result line
 * (RESULT_MARKER; undefined if it printed none), how it exited, and its wall seconds; every
 * other stdout line goes to `onLine`. Past `timeoutMs` it is stopped: SIGTERM, so its own exit
 * handler kills the apps it started, then SIGKILL if it does not go.
 */
function runScript(file, args, { timeoutMs, label = path.basename(file, '.js'), onLine = (line) => process.stdout.write(`${line}\n`) }) {
  return new Promise((resolve) => {
    const started = Date.now();
    const child = spawn(process.execPath, [file, ...args], { stdio: ['ignore', 'pipe', 'inherit'] });
    let buf = '';
    let result;
    const timer = setTimeout(() => {
      console.error(`${label}: no result within ${timeoutMs / 1000} s; stopping it`);
      child.kill('SIGTERM');
      setTimeout(() => child.kill('SIGKILL'), 5000).unref();
    }, timeoutMs);
    child.stdout.on('data', (d) => {
      buf += d;
      let nl;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        if (!line.startsWith(RESULT_MARKER)) onLine(line);
        else {
          try {
            result = JSON.parse(line.slice(RESULT_MARKER.length));
          } catch (err) {
            console.error(`${label}: unreadable result line (${err.message})`);
          }
        }
      }
    });
    child.on('exit', (code, signal) => {
      clearTimeout(timer);
      resolve({ result, exited: signal ?? code, seconds: Math.round((Date.now() - started) / 1000) });
    });
  });
}

/**
 * The end of a reliability engine run on its own (bench/reliability-*.js): prints the
 * figures and the problems, then the marker line bench/reliability.js reads, and exits 1
 * when there were problems. `problemsOf` finds them in a result made of several parts.
 */
function finishEngine(run, problemsOf = (result) => result.problems) {
  run.then(
    (result) => {
      const problems = problemsOf(result);
      console.log(JSON.stringify(result, (k, v) => (k === 'problems' ? undefined : v), 2));
      console.log(problems.length ? `PROBLEMS (${problems.length}):\n${problems.join('\n')}` : 'no problems');
      process.stdout.write(`${RESULT_MARKER}${JSON.stringify(result)}\n`);
      killAll();
      process.exit(problems.length ? 1 : 0);
    },
    (err) => {
      // Bad input is one line (and exit 2); anything else is a failure with its stack.
      console.error(err && err.usage ? `${path.basename(mod.filename)}: ${err.message}` : err && err.stack ? err.stack : String(err));
      killAll();
      process.exit(err && err.usage ? 2 : 1);
    },
  );
}

/** Names of the built-in plugins (from the build), so a "core" server can disable them all. */
function builtinPlugins() {
  try {
    return [...require(path.join(ROOT, 'dist', 'src', 'agent', 'main-host.js')).BUILTIN_PLUGINS];
  } catch {
    return ['process'];
  }
}

/** The short commit of the working tree, for the figures' provenance. */
function gitCommit() {
  try {
    return require('node:child_process').execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: ROOT, encoding: 'utf8' }).trim();
  } catch {
    return 'unknown';
  }
}

/** Where figures come from, for a RESULTS.md section: date, Node, CPUs, memory, commit. */
function provenance() {
  const cpu = os.cpus()[0]?.model?.trim() ?? 'unknown cpu';
  return `${new Date().toISOString().slice(0, 10)}, Node ${process.version}, ${os.cpus().length} × ${cpu}, ${Math.round(os.totalmem() / 2 ** 30)} GiB, commit ${gitCommit()}`;
}

/**
 * Replaces one `## ` section of bench/RESULTS-other.md (its heading up to the next `## ` heading
 * or the end) with `body`, keeping every other section; appends it when missing.
 */
function writeResultsSection(heading, body) {
  // RESULTS.md is the full run's alone (bench/run.js); a script run on its own writes here.
  const results = path.join(__dirname, '..', 'RESULTS-other.md');
  const text = fs.existsSync(results) ? fs.readFileSync(results, 'utf8') : '# Benchmark results: benchmarks run on their own\n';
  const section = `${heading}\n\n${body.trim()}\n`;
  const start = text.indexOf(`${heading}\n`);
  let next;
  if (start < 0) next = `${text.trimEnd()}\n\n${section}`;
  else {
    const after = text.indexOf('\n## ', start + heading.length);
    next = `${text.slice(0, start)}${section}${after < 0 ? '' : `\n${text.slice(after + 1)}`}`;
  }
  fs.writeFileSync(results, next.endsWith('\n') ? next : `${next}\n`);
}

/** Runs fn with a client connected to a bench app's agent, and closes the client after. */
async function withClient(app, fn) {
  const { connect } = requireBuilt();
  const client = await withTimeout(connect(app.socket, { clientName: 'bench' }), 10000, `connecting to ${app.label}`);
  try {
    return await fn(client);
  } finally {
    await client.close();
  }
}

module.exports = {
  usageError,
  withClient,
  ROOT,
  getJson,
  REGISTER,
  CLIENT,
  BIN,
  APPS,
  RESULT_MARKER,
  requireBuilt,
  tempDir,
  sleep,
  waitFor,
  track,
  startApp,
  timed,
  readRss,
  readCpuMs,
  percentile,
  median,
  round,
  fmtMs,
  latencySummary,
  medianCI,
  withTimeout,
  parseArgs,
  num,
  mainIfDirect,
  finishEngine,
  runScript,
  gitCommit,
  provenance,
  writeResultsSection,
  builtinPlugins,
  killAll,
};
