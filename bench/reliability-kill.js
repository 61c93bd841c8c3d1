'use strict';
// kill -9 mid-command. The client is the real `ispy` binary (`ispy run <socket> -c …`),
// killed by its pid once its command is seen running in the app (and, in the long form, a
// random while later, so the kill lands anywhere in the command's life). Then, from another
// client: nothing it started is still on (no trace, no gate, no V8 profiler thread, the app's
// handles as before, its functions the originals), a new CPU profile can start, and the
// agent's artefact folder holds nothing of the killed call, complete or partial.
// And the app itself, killed mid heap snapshot: the `.partial` it leaves is swept by the
// next agent that starts with that folder.
//
//   node bench/reliability-kill.js [--rounds 25] [--seed N]

const { spawn } = require('node:child_process');
const crypto = require('node:crypto');
const fs = require('node:fs');
const path = require('node:path');
const lib = require('./reliability-lib');

const BIN = path.join(lib.ROOT, 'bin', 'ispy.js');
const TICK = './reliab-lib.cjs:tick';

/** The names of a process's threads: V8's CPU profiler runs one (`v8:ProfEvntProc`) only while it profiles. */
function threadNames(pid) {
  const names = [];
  for (const tid of fs.readdirSync(`/proc/${pid}/task`)) {
    try {
      names.push(fs.readFileSync(`/proc/${pid}/task/${tid}/comm`, 'utf8').trim());
    } catch {
      // the thread ended between the listing and the read
    }
  }
  return names;
}

const profilerRunning = (app) => threadNames(app.pid).includes('v8:ProfEvntProc');
/** What a call left in the folder: everything but the agent's audit log, which lives there. */
const filesIn = (dir) => (fs.existsSync(dir) ? fs.readdirSync(dir).filter((n) => !n.startsWith('audit.jsonl')).sort() : []);

/** What each command looks like in the app while it runs, seen from outside or from another client. */
const SCENARIOS = {
  'profile cpu': {
    lines: ['profile cpu --duration 10s'],
    running: async (app) => profilerRunning(app),
  },
  'heap snapshot': {
    lines: ['heap snapshot'],
    running: async (app) => {
      const f = filesIn(app.outputDir).find((n) => n.endsWith('.heapsnapshot.partial'));
      return f !== undefined && fs.statSync(path.join(app.outputDir, f)).size > 0;
    },
  },
  // The trace belongs to the CLI's connection, which `trace watch` keeps open.
  'trace add + watch': {
    lines: [`trace add ${TICK} --limit 1000000 --duration 5m`, 'trace watch'],
    running: async (_app, probe) => (await probe.call('trace', 'list')).traces.some((t) => t.state === 'active' && t.calls > 0),
  },
  'profile gate': {
    lines: [`profile gate ${TICK} --every 20ms --samples 1000`],
    running: async (_app, probe) => (await probe.call('profile', 'gates')).gates.some((g) => g.state === 'armed' && g.taken >= 2),
  },
};

/** The main thread's handles by type, as `process handles` lists them. */
async function handles(probe) {
  return JSON.stringify((await probe.call('process', 'handles')).byType);
}

/**
 * What must hold once a killed client's command is over: no trace or gate on, the functions
 * the originals, the app's handles as `handlesBefore`, no profiler thread, a new CPU profile
 * possible, and nothing in the artefact folder but that profile (which is then removed).
 */
async function nothingLeft(app, probe, handlesBefore) {
  const problems = [];
  // A heap snapshot cannot be stopped mid-walk, and the main thread answers nothing until the
  // walk is over (seconds on a busy machine): "main thread busy" means not yet, not a failure.
  const notWhileBusy = (check) => async () => {
    try {
      return await check();
    } catch (err) {
      if (err.code === 'ISPY_ERR_MAIN_BUSY') return false;
      throw err;
    }
  };
  const wait = async (check, what) => {
    try {
      await lib.waitFor(notWhileBusy(check), 60_000, what);
    } catch (err) {
      problems.push(err.message);
    }
  };
  await wait(async () => {
    const { traces, gates } = await lib.activeInstrumentation(probe);
    return traces.length === 0 && gates.length === 0;
  }, 'no trace and no gate on');
  await wait(() => !profilerRunning(app), "V8's profiler thread to end");
  // A heap snapshot cannot be stopped mid-walk: its file goes once the walk is over.
  await wait(() => !filesIn(app.outputDir).some((f) => f.endsWith('.partial')), 'no partial artefact');
  try {
    const next = await probe.call('profile', 'cpu', { duration: '100ms' });
    // By now the killed call is over: any file of its own would be here.
    const others = filesIn(app.outputDir).filter((f) => f !== path.basename(next.file));
    if (others.length) problems.push(`artefacts of the killed call left: ${others.join(', ')}`);
    fs.unlinkSync(next.file);
  } catch (err) {
    problems.push(`a new CPU profile could not run: ${err.code ?? ''} ${err.message}`);
  }
  if (!Object.values(await lib.getJson(app.port, '/identity')).every(Boolean)) problems.push('instrumented functions not restored');
  await wait(async () => (await handles(probe)) === handlesBefore, `the app's handles to be as before (${handlesBefore})`);
  return problems;
}

/**
 * Starts `ispy run <socket> -c <line>…`; resolves once the command is seen running (a heap
 * snapshot's walk starts after a preflight and a GC, over a minute on a loaded 2-core machine),
 * then `delayMs` later kills it (-9, by pid).
 */
async function killClientMid(app, probe, name, { delayMs = 0, handlesBefore } = {}) {
  const scenario = SCENARIOS[name];
  // The client is killed mid-command: its own line timeout must not end it first (a heap
  // snapshot on a busy machine outlasts the default 10 s).
  const child = spawn(process.execPath, [BIN, 'run', app.socket, '--timeout', '10m', ...scenario.lines.flatMap((l) => ['-c', l])], { cwd: lib.ROOT, env: { ...process.env, NO_COLOR: '1' }, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout.on('data', (d) => (out += d));
  child.stderr.on('data', (d) => (out += d));
  const exited = new Promise((resolve) => child.on('exit', resolve));
  const done = () => child.exitCode !== null || child.signalCode !== null;
  try {
    await lib.waitFor(async () => {
      if (done()) throw new Error(`ispy ended before its ${name} was seen running: ${out.trim()}`);
      return scenario.running(app, probe);
    }, 120_000, `${name} to run`);
    await lib.sleep(delayMs);
  } finally {
    if (!done()) process.kill(child.pid, 'SIGKILL');
    await exited;
  }
  if (child.signalCode !== 'SIGKILL') return [`ispy ended by itself (${child.exitCode}) during ${name}: ${out.trim()}`];
  return (await nothingLeft(app, probe, handlesBefore ?? (await handles(probe)))).map((p) => `${name}: ${p}`);
}

/**
 * Kills the app (-9) while it writes a heap snapshot, then starts `startAgain()` (an app with
 * the same output folder) and waits for its agent to sweep the `.partial`.
 */
async function killAppMidSnapshot(app, startAgain) {
  const { connect } = lib.client();
  const c = await connect(app.socket, { timeoutMs: 10_000 });
  void c.call('heap', 'snapshot').catch(() => {});
  const partial = await lib.waitFor(() => {
    const f = filesIn(app.outputDir).find((n) => n.endsWith('.heapsnapshot.partial'));
    return f !== undefined && fs.statSync(path.join(app.outputDir, f)).size > 0 ? f : undefined;
  }, 30_000, 'the snapshot to be written');
  process.kill(app.pid, 'SIGKILL');
  await lib.waitFor(() => !lib.processAlive(app.pid), 10_000, 'the app to die');
  await c.close();
  const problems = [];
  if (!filesIn(app.outputDir).includes(partial)) problems.push(`the killed app left no ${partial} to sweep`);
  const next = await startAgain();
  try {
    await lib.waitFor(() => !fs.existsSync(path.join(app.outputDir, partial)), 15_000, `${partial} to be swept`);
  } catch (err) {
    problems.push(err.message);
  }
  return { next, problems };
}

module.exports = { SCENARIOS, killClientMid, killAppMidSnapshot, nothingLeft, threadNames };

if (require.main === module) {
  const common = require('./lib/common');
  const opts = common.parseArgs();
  const rounds = common.num(opts.rounds, 25);
  const seed = opts.seed !== undefined ? Number(opts.seed) : crypto.randomBytes(4).readUInt32BE(0);
  const script = path.relative(path.join(__dirname, 'apps'), lib.RELIAB_APP);
  const start = async (dir) => {
    const app = await common.startApp({ script, agent: true, config: { outputDir: dir ?? 'out' } });
    app.outputDir = dir ?? path.join(app.dir, 'out');
    // A heap worth walking, so a snapshot lasts long enough to be killed in.
    await lib.getJson(app.port, '/grow?n=400000');
    return app;
  };
  common.finishEngine((async () => {
    const rng = lib.prng(seed);
    console.log(`kill -9 of the client, ${rounds} rounds of ${Object.keys(SCENARIOS).length} commands, seed ${seed}`);
    const app = await start();
    const { connect } = lib.client();
    const probe = await connect(app.socket);
    const handlesBefore = await handles(probe);
    const problems = [];
    const kills = {};
    for (let r = 0; r < rounds; r++) {
      for (const name of Object.keys(SCENARIOS)) {
        // Up to 2 s after it was seen running: a 10 s profile, a gate and a watch are still on then.
        const delayMs = name === 'heap snapshot' ? rng.int(0, 300) : rng.int(0, 2000);
        const found = await killClientMid(app, probe, name, { delayMs, handlesBefore });
        kills[name] = (kills[name] ?? 0) + 1;
        problems.push(...found.map((p) => `round ${r} (+${delayMs} ms): ${p}`));
      }
      console.log(`  round ${r + 1}/${rounds}: ${problems.length} problems so far`);
    }
    await probe.close();
    await app.kill();
    // The app killed mid-snapshot, `rounds` times, each next agent sweeping the last one's file.
    const shared = fs.mkdtempSync(path.join(require('node:os').tmpdir(), 'ispy-kill-'));
    let victim = await start(shared);
    let swept = 0;
    for (let r = 0; r < Math.max(1, Math.round(rounds / 5)); r++) {
      const { next, problems: found } = await killAppMidSnapshot(victim, () => start(shared));
      problems.push(...found.map((p) => `app kill ${r}: ${p}`));
      if (!found.length) swept++;
      victim = next;
    }
    await victim.kill();
    fs.rmSync(shared, { recursive: true, force: true });
    return { seed, rounds, kills, appKills: Math.max(1, Math.round(rounds / 5)), swept, problems };
  })());
}
