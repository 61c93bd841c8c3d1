'use strict';
// What the agent costs per request, in instructions (issue 12): CPU-time windows on a shared
// 2-vCPU VM move by 10–30 % from one to the next, so they cannot resolve ×1.02; instruction
// counts under valgrind's callgrind do not depend on what else runs (bench/lib/callgrind.js).
//
// The app: the hello-world of frameworks.js (bench/apps/framework-server.js) on node:http,
// Express and Fastify, each started three ways, in a fresh process per repeat:
//   bare     no agent
//   default  `-r ispy/register`, default config
//   armed    the same, with `requests track` armed through the real client before any load
// Per process: start-up and a warm-up of --warmup requests (plus 0–999 more, seeded, a
// different number per process) run uninstrumented (valgrind starts with counting off): V8
// compiles the hot paths during the first thousands of requests, which would otherwise be
// counted as per-request cost; then, for a large in-flight size, S − 10 requests the app holds
// (GET /held, answered after an hour) are opened and confirmed held; counting goes on; two
// counted segments of --n1 and --n2 requests at 10 in flight (bench/lib/loadgen.js's counted
// mode, outside valgrind), each dumped and zeroed; instructions per request =
// (I(n2) − I(n1)) ÷ (n2 − n1), so start-up, warm-up and whatever a segment costs whatever its
// length are subtracted. Every thread of the process is counted (the agent's worker too).
//
// Repeats (--repeats, ≥ 3) are separate processes, the variants interleaved (each repeat
// runs every variant, in a shuffled order, before the next repeat starts). Ratios: default ÷
// bare and armed ÷ bare, the ratio of geometric means with a Welch t-interval of the log
// counts over the repeats (bench/lib/stats.js logRatioInterval); verdicts by
// bench/lib/verdict.js (met only when the whole interval is within): default ≤ ×1.02,
// armed ≤ ×1.15. Counts are of user-space instructions: the kernel's share (system calls)
// and what an instruction costs (cache misses) are not in them.
//
//   node bench/instructions.js [--frameworks http,express,fastify] [--inflight 10,1000]
//       [--repeats 3] [--n1 500] [--n2 2500] [--warmup 5000] [--parallel 2]
//       [--seed-pairs]   (every process of repeat r runs with V8's --random-seed=1000+r; ratios
//                         within each repeat's pair, a paired t-interval of their logs)
//       [--variants bare,default,armed,channels,default-noprocess] [--big-frameworks http]   (the frameworks at sizes
//       above 10; all of --frameworks unless given)

const { spawn } = require('node:child_process');
const path = require('node:path');
const readline = require('node:readline');
const c = require('./lib/common');
const { startUnderCallgrind, perRequest, available } = require('./lib/callgrind');
const { logRatioInterval, pairedLogRatioInterval, median, rng } = require('./lib/stats');
const { judge } = require('./lib/verdict');

const FRAMEWORKS = ['http', 'express', 'fastify'];
const VARIANTS = ['bare', 'default', 'armed', 'channels', 'default-noprocess'];
// Where the default's instructions go (no goal of their own): `channels` is the bare app with
// a no-op subscriber on each of the two channels the requests plugin reads per request (the
// floor of any design built on them); `default-noprocess` the default agent without the
// process plugin (its GC observer).
const VARIANT_SPECS = {
  bare: {},
  default: { agent: true },
  armed: { agent: true, config: { limits: { trackMaxDuration: '30m', inspectorTimeout: '30s' } } },
  channels: { preload: path.join(__dirname, 'apps', 'gc-variant-preload.js'), env: { GC_VARIANT: 'http-channels' } },
  'default-noprocess': { agent: true, config: { disable: ['process'] } },
};
const GOALS = { default: 1.02, armed: 1.15 };
const MEASURED_CONNECTIONS = 10;
const HOLD_MS = 3_600_000;
const LOADGEN = path.join(__dirname, 'lib', 'loadgen.js');

/** One load generator process, driven line by line (its stdin protocol). */
function startLoadgen() {
  const child = c.track(spawn(process.execPath, [LOADGEN], { stdio: ['pipe', 'pipe', 'inherit'] }));
  const waiting = [];
  readline.createInterface({ input: child.stdout }).on('line', (line) => {
    if (!line.startsWith('{')) return;
    waiting.shift()?.(JSON.parse(line));
  });
  return {
    ask: (cmd, timeoutMs = 600_000) =>
      c.withTimeout(
        new Promise((resolve, reject) => {
          waiting.push((r) => (r.error ? reject(new Error(`load generator: ${r.error}`)) : resolve(r)));
          child.stdin.write(`${JSON.stringify(cmd)}\n`);
        }),
        timeoutMs,
        `load generator ${JSON.stringify(cmd)}`,
      ),
    close: () => {
      child.stdin.end();
      setTimeout(() => child.kill('SIGKILL'), 2000).unref();
    },
  };
}

/**
 * common.withClient with a connect timeout fit for valgrind: the agent's worker answers the
 * hello tens of times slower than at full speed.
 */
async function withSlowClient(app, fn) {
  const { connect } = c.requireBuilt();
  // The agent gives a connection 5 s to finish its handshake, and its worker's first
  // visit loads the WebSocket code, which valgrind translates slowly: a first attempt may
  // be cut; the next ones find the code loaded.
  let client;
  for (let attempt = 1; !client; attempt++) {
    try {
      client = await connect(app.socket, { clientName: 'bench', timeoutMs: 120_000 });
    } catch (err) {
      if (attempt >= 6 || !app.alive()) throw err;
      await c.sleep(2000);
    }
  }
  try {
    return await fn(client);
  } finally {
    await client.close();
  }
}

/** Exactly n requests at 10 in flight, every one answered with 200, or a clear error. */
async function counted(gen, port, n) {
  const r = await gen.ask({ port, connections: MEASURED_CONNECTIONS, requests: n, path: '/', keep: true });
  if (r.answered !== n || r.errors || r.non200) throw new Error(`a counted segment of ${n} requests got ${r.answered} answers, ${r.errors} errors, ${r.non200} not 200`);
  return r;
}

/** One process: start, (arm,) warm up, (hold,) count two segments. */
async function measureOne({ framework, inflight, variant, n1, n2, warmup, jitter, v8Seed }) {
  const t0 = Date.now();
  const held = inflight > MEASURED_CONNECTIONS ? inflight - MEASURED_CONNECTIONS : 0;
  const spec = VARIANT_SPECS[variant];
  const app = await startUnderCallgrind({
    script: 'framework-server.js',
    agent: spec.agent === true,
    preload: spec.preload,
    // --seed-pairs: V8's hash seeds and heap layout alike for every variant of a repeat.
    nodeFlags: v8Seed === undefined ? [] : [`--random-seed=${v8Seed}`],
    label: `${framework} ${variant}`,
    env: { BENCH_FRAMEWORK: framework, BENCH_DELAY_MS: '0', ...(held ? { BENCH_HOLD_MS: String(HOLD_MS) } : {}), ...spec.env },
    // armed: the end check reads the table on the main thread, through the inspector: give
    // it the time valgrind needs (a limit the counted requests never touch).
    config: spec.config,
  });
  const gen = startLoadgen();
  try {
    const startS = (Date.now() - t0) / 1000;
    if (variant === 'armed') {
      await withSlowClient(app, async (client) => {
        const r = await client.call('requests', 'track', { duration: '25m' }, { timeoutMs: 120_000 });
        if (r.tracking !== 'armed') throw new Error(`requests track answered ${JSON.stringify(r)}`);
      });
    }
    // V8 collects garbage every so many bytes allocated, so processes that ran the same
    // requests collect at the same points; a warm-up of a different length per process
    // (`jitter`, seeded) puts the counted segments at a different phase of that cycle, so
    // the spread of the repeats includes where the collections fell.
    await counted(gen, app.port, warmup + jitter);
    if (held) {
      await gen.ask({ hold: true, port: app.port, connections: held, path: '/held' });
      await c.waitFor(async () => (await c.getJson(app.port, '/held-count', 60_000)).held >= held, 600_000, `${held} requests held by ${app.label}`, 500);
    }
    const warmS = (Date.now() - t0) / 1000 - startS;
    await app.control('-i', 'on');
    await app.dump(); // whatever ran between switching on and now
    const s1 = await counted(gen, app.port, n1);
    const i1 = await app.dump();
    const s2 = await counted(gen, app.port, n2);
    const i2 = await app.dump();
    let trackingAtEnd;
    if (variant === 'armed') {
      await app.control('-i', 'off');
      // The table is read on the main thread, which valgrind runs slowly: the agent may
      // report it busy; asked again once it has caught up.
      for (let attempt = 1; trackingAtEnd === undefined; attempt++) {
        try {
          trackingAtEnd = await withSlowClient(app, async (client) => (await client.call('requests', 'list', { limit: 1 }, { timeoutMs: 120_000 })).tracking);
        } catch (err) {
          if (attempt >= 5) throw err;
          await c.sleep(3000);
        }
      }
      if (!/^armed/.test(trackingAtEnd)) throw new Error(`requests track was no longer armed at the end: ${trackingAtEnd}`);
    }
    const heldAtEnd = held ? (await c.getJson(app.port, '/held-count', 60_000)).held : 0;
    return {
      framework,
      inflight,
      variant,
      n1,
      n2,
      warmup: warmup + jitter,
      i1,
      i2,
      perRequest: perRequest({ n1, i1, n2, i2 }),
      held,
      heldAtEnd,
      trackingAtEnd,
      startS: c.round(startS, 1),
      warmS: c.round(warmS, 1),
      countedS: c.round((s1.ms + s2.ms) / 1000, 1),
      wallS: c.round((Date.now() - t0) / 1000, 1),
    };
  } finally {
    gen.close();
    await app.kill();
  }
}

/** The jobs in the order they run: repeat by repeat, each repeat every group and variant, variants shuffled. */
function schedule({ frameworks, sizes, variants, repeats, bigFrameworks = frameworks, seed = 20261207 }) {
  const rand = rng(seed);
  const jobs = [];
  for (let rep = 0; rep < repeats; rep++) {
    for (const inflight of sizes) {
      for (const framework of inflight > MEASURED_CONNECTIONS ? bigFrameworks : frameworks) {
        const order = [...variants];
        for (let i = order.length - 1; i > 0; i--) {
          const j = Math.floor(rand() * (i + 1));
          [order[i], order[j]] = [order[j], order[i]];
        }
        for (const variant of order) jobs.push({ framework, inflight, variant, rep, jitter: Math.floor(rand() * 1000) });
      }
    }
  }
  return jobs;
}

/** Ratios and verdicts of one group (framework × size) from its measurements. */
function judgeGroup(ms, variants, paired = false) {
  const of = (v) => ms.filter((m) => m.variant === v).map((m) => m.perRequest);
  const bare = of('bare');
  const levels = Object.fromEntries(variants.map((v) => [v, { median: Math.round(median(of(v))), repeats: of(v).map(Math.round) }]));
  const out = { levels, ratios: {}, verdicts: {} };
  // Paired by repeat (each repeat's processes share one V8 seed): the ratio within each pair.
  const pairsOf = (v) => {
    const bareByRep = new Map(ms.filter((m) => m.variant === 'bare').map((m) => [m.rep, m.perRequest]));
    return ms.filter((m) => m.variant === v && bareByRep.has(m.rep)).map((m) => [m.perRequest, bareByRep.get(m.rep)]);
  };
  for (const v of variants.filter((x) => x !== 'bare')) {
    out.ratios[v] = paired ? pairedLogRatioInterval(pairsOf(v)) : logRatioInterval(of(v), bare);
    if (GOALS[v] !== undefined) out.verdicts[v] = judge(out.ratios[v], GOALS[v]);
  }
  return out;
}

async function run(opts = {}) {
  c.requireBuilt();
  const vg = await available();
  if (!vg.ok) throw c.usageError(`${vg.why}: instruction counts need valgrind's callgrind`);
  const list = (v, all) => (typeof v === 'string' ? v.split(',') : all);
  const frameworks = list(opts.frameworks, FRAMEWORKS);
  for (const f of frameworks) if (!FRAMEWORKS.includes(f)) throw c.usageError(`--frameworks: ${f} is not one of ${FRAMEWORKS.join(', ')}`);
  // The large sizes cost the most (every held request opened at valgrind's speed): the full
  // run takes them on fewer frameworks.
  const bigFrameworks = list(opts['big-frameworks'], frameworks);
  for (const f of bigFrameworks) if (!FRAMEWORKS.includes(f)) throw c.usageError(`--big-frameworks: ${f} is not one of ${FRAMEWORKS.join(', ')}`);
  // The decomposition variants only when asked for.
  const variants = list(opts.variants, ['bare', 'default', 'armed']);
  for (const v of variants) if (!VARIANTS.includes(v)) throw c.usageError(`--variants: ${v} is not one of ${VARIANTS.join(', ')}`);
  if (!variants.includes('bare')) throw c.usageError('--variants must include bare: every ratio is to it');
  const sizes = list(opts.inflight, ['10', '1000']).map(Number);
  for (const s of sizes) if (!(Number.isInteger(s) && s >= MEASURED_CONNECTIONS)) throw c.usageError(`--inflight: ${s} is not a whole number ≥ ${MEASURED_CONNECTIONS} (the measured requests run at ${MEASURED_CONNECTIONS} in flight; a larger size adds the rest as held requests)`);
  const repeats = c.num(opts.repeats, 3);
  if (!(repeats >= 2)) throw c.usageError(`--repeats ${opts.repeats}: at least 2 (3 or more for an interval worth reading)`);
  const n1 = c.num(opts.n1, 500);
  const n2 = c.num(opts.n2, 2500);
  if (!(n2 > n1 && n1 > 0)) throw c.usageError(`--n1 ${n1} --n2 ${n2}: need 0 < n1 < n2 (the two counted segments)`);
  const warmup = c.num(opts.warmup, 5000);
  const parallel = Math.max(1, c.num(opts.parallel, 2));
  const seedPairs = opts['seed-pairs'] === true;
  const jobs = schedule({ frameworks, sizes, variants, repeats, bigFrameworks });
  const started = Date.now();
  console.log(`instructions per request under callgrind (${vg.version}): ${frameworks.join(', ')} at ${sizes.join(', ')} in flight; ${variants.join(', ')}; ${repeats} repeats; segments ${n1} and ${n2} requests after ${warmup} uninstrumented; ${jobs.length} processes, ${parallel} at a time`);
  const measured = [];
  let next = 0;
  const worker = async () => {
    while (next < jobs.length) {
      const job = jobs[next++];
      let m;
      try {
        // Paired: one seed and one warm-up length for every variant of a repeat.
        m = await measureOne({ ...job, n1, n2, warmup, ...(seedPairs ? { v8Seed: 1000 + job.rep, jitter: (job.rep * 337) % 1000 } : {}) });
        console.log(`  ${job.framework} ${job.inflight} ${job.variant} #${job.rep + 1}: ${Math.round(m.perRequest)} instructions/request (start ${m.startS} s, warm-up ${m.warmS} s, counted ${m.countedS} s, ${m.wallS} s in all)`);
      } catch (err) {
        m = { ...job, error: String(err.message ?? err).slice(0, 500) };
        console.log(`  ${job.framework} ${job.inflight} ${job.variant} #${job.rep + 1} FAILED: ${m.error}`);
      }
      measured.push({ ...m, rep: job.rep });
    }
  };
  await Promise.all(Array.from({ length: parallel }, worker));
  const groups = [];
  for (const inflight of sizes) {
    for (const framework of inflight > MEASURED_CONNECTIONS ? bigFrameworks : frameworks) {
      const ms = measured.filter((m) => m.framework === framework && m.inflight === inflight);
      const failed = ms.filter((m) => m.error);
      const ok = ms.filter((m) => !m.error);
      const short = variants.filter((v) => ok.filter((m) => m.variant === v).length < 2);
      if (short.length) {
        groups.push({ framework, inflight, error: `fewer than 2 good repeats of ${short.join(', ')}${failed.length ? `: ${failed[0].error}` : ''}` });
        continue;
      }
      const g = { framework, inflight, held: inflight - MEASURED_CONNECTIONS, ...judgeGroup(ok, variants, seedPairs), failed: failed.map((m) => ({ variant: m.variant, rep: m.rep, error: m.error })), wallS: Math.round(ok.reduce((a, m) => a + m.wallS, 0)) };
      groups.push(g);
      const line = Object.entries(g.ratios).map(([v, r]) => `${v} ×${r.estimate} [${r.ci95.join(', ')}]${g.verdicts[v] ? ` ${g.verdicts[v].text}` : ' (no goal)'}`);
      console.log(`  → ${framework} at ${inflight} in flight: bare ${g.levels.bare.median} instructions/request (repeats ${g.levels.bare.repeats.join(', ')}); ${line.join('; ')}`);
    }
  }
  return {
    benchmark: 'instructions',
    goals: GOALS,
    valgrind: vg.version,
    method: { n1, n2, warmup, repeats, parallel, seedPairs, measuredConnections: MEASURED_CONNECTIONS, variants, sizes, frameworks, bigFrameworks },
    groups,
    processes: measured,
    elapsedS: Math.round((Date.now() - started) / 1000),
  };
}

module.exports = { run, GOALS, judgeGroup, schedule };
c.mainIfDirect(module, run);
