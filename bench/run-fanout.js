'use strict';
// `ispy run` over many local agents (issue 12): the wall time of
//
//   node bin/ispy.js run '<dir>/*.sock' … -c "process info"
//
// from spawn to exit over 10, 50 and 200 agents, against the CLI's own start-up
// (`node bin/ispy.js --version`: the floor of any `ispy` command), and the CPU the agents
// spend after the run has exited (work a visit leaves behind: a burst across the host when
// hundreds of agents do it at once).
//
// The agents are copies of bench/apps/hello-server.js with the agent preloaded, started in
// batches into three folders (10, then 40 more, then 150 more), so the runs over 10, 50 and
// 200 name the first one, two or three folders while all 200 are alive. Each round runs the
// four commands in a rotated order; before each run the agents' idle CPU rate is read over
// --quiet ms, and after it their CPU over --after ms: the burst is that minus the idle rate
// over the same time. The host's CPU (/proc/stat) over the same windows is recorded beside.
//
// Goals: the run over 200 takes ≤ 2.5 × the run over 50 (linear: 4× the agents) and leaves
// no burst: the agents' CPU after the run, above idle, ≤ 1 ms per agent (in all, 1 % of
// two cores over the 10 s). Both judged on the 95 % interval over rounds.
//
//   node bench/run-fanout.js [--sizes 10,50,200] [--rounds 5] [--quiet 3000] [--after 10000]

const fs = require('node:fs');
const c = require('./lib/common');
const { startAgents, checkRun } = require('./lib/agents');
const { summarize, mean, median } = require('./lib/stats');
const { judge } = require('./lib/verdict');

const GOALS = { linearRatio: 2.5, burstMsPerAgent: 1 };
const TIMEOUT_MS = 120_000;

/** CPU ms of every thread of every pid, summed (schedstat; pids that are gone count 0). */
function agentsCpuMs(pids) {
  let ms = 0;
  for (const pid of pids) {
    try {
      ms += c.readCpuMs(pid);
    } catch {
      // gone
    }
  }
  return ms;
}

/** Busy and total jiffies of the whole host, from /proc/stat's first line. */
function hostJiffies() {
  const f = fs.readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
  const total = f.reduce((a, b) => a + b, 0);
  const idle = f[3] + (f[4] ?? 0);
  return { busy: total - idle, total };
}

async function cpuOver(pids, ms) {
  const a = agentsCpuMs(pids);
  const h = hostJiffies();
  const t = Date.now();
  await c.sleep(ms);
  const elapsed = Date.now() - t;
  const h1 = hostJiffies();
  return { agentsMs: agentsCpuMs(pids) - a, hostMs: (h1.busy - h.busy) * 10, elapsed };
}

async function run(opts = {}) {
  const sizes = typeof opts.sizes === 'string' ? opts.sizes.split(',').map(Number) : [10, 50, 200];
  const rounds = c.num(opts.rounds, 5);
  const quietMs = c.num(opts.quiet, 3000);
  const afterMs = c.num(opts.after, 10_000);
  if (sizes.length !== 3 || !(sizes[0] < sizes[1] && sizes[1] < sizes[2])) throw new Error(`--sizes wants three growing counts, e.g. 10,50,200 (got ${sizes.join(',')})`);
  c.requireBuilt();
  console.log(`run-fanout: starting ${sizes[2]} agents…`);
  const slices = [];
  let startMs = 0;
  let prev = 0;
  for (const n of sizes) {
    const s = await startAgents(n - prev, 'ispy-fan-', { batch: 25, timeoutMs: 300_000 });
    slices.push(s);
    startMs += s.startMs;
    prev = n;
  }
  const pidsUpTo = (k) => slices.slice(0, k + 1).flatMap((s) => s.pids);
  const allPids = pidsUpTo(2);
  console.log(`  up in ${Math.round(startMs / 1000)} s; waiting for them to settle`);
  // Freshly started processes keep the cores busy for a while (JIT, GC, the agents'
  // first idle work): wait until the agents together use under 5 % of a core, or 60 s.
  const settleDeadline = Date.now() + 60_000;
  let idleRate;
  for (;;) {
    const q = await cpuOver(allPids, 2000);
    idleRate = q.agentsMs / q.elapsed;
    if (idleRate < 0.05 || Date.now() > settleDeadline) break;
  }
  const commands = [
    { name: 'version', args: [c.BIN, '--version'] },
    ...sizes.map((n, k) => ({ name: String(n), agents: n, pids: pidsUpTo(k), args: [c.BIN, 'run', ...slices.slice(0, k + 1).map((s) => `${s.dir}/*.sock`), '-c', 'process info'] })),
  ];
  // One of each unmeasured: the page cache, and every agent's first-visit paths.
  for (const cmd of commands) {
    const r = await c.timed(cmd.args, { timeoutMs: TIMEOUT_MS });
    if (cmd.agents) checkRun(r, cmd.agents, `warm-up over ${cmd.agents}`);
  }
  await c.sleep(afterMs);
  const times = Object.fromEntries(commands.map((x) => [x.name, []]));
  const bursts = Object.fromEntries(sizes.map((n) => [String(n), []]));
  const hostBursts = Object.fromEntries(sizes.map((n) => [String(n), []]));
  const linear = [];
  for (let r = 0; r < rounds; r++) {
    const order = commands.map((_, i) => commands[(i + r) % commands.length]);
    const t = {};
    for (const cmd of order) {
      const quiet = cmd.agents ? await cpuOver(allPids, quietMs) : undefined;
      const res = await c.timed(cmd.args, { timeoutMs: TIMEOUT_MS });
      if (cmd.agents) checkRun(res, cmd.agents, `run over ${cmd.agents}, round ${r + 1}`);
      t[cmd.name] = res.ms;
      times[cmd.name].push(res.ms);
      if (!cmd.agents) continue;
      const after = await cpuOver(allPids, afterMs);
      const burst = after.agentsMs - (quiet.agentsMs / quiet.elapsed) * after.elapsed;
      const hostBurst = after.hostMs - (quiet.hostMs / quiet.elapsed) * after.elapsed;
      bursts[cmd.name].push(burst / cmd.agents);
      hostBursts[cmd.name].push(hostBurst);
    }
    linear.push(t[String(sizes[2])] / t[String(sizes[1])]);
    console.log(
      `  round ${r + 1}: ${commands.map((x) => `${x.name} ${Math.round(t[x.name])} ms`).join(', ')}; ${sizes[2]} ÷ ${sizes[1]} ×${c.round(linear[r], 2)}; ` +
        `after the run, agents' CPU per agent ${sizes.map((n) => `${n}: ${c.round(bursts[String(n)][r], 2)} ms`).join(', ')}`,
    );
  }
  const linearM = summarize(linear.map((x) => [x]));
  const big = String(sizes[2]);
  const burstM = summarize(bursts[big].map((x) => [x]), { stat: mean, digits: 3 });
  const result = {
    benchmark: 'run-fanout',
    sizes,
    rounds,
    quietMs,
    afterMs,
    startS: Math.round(startMs / 1000),
    idleAgentsCpuShare: c.round(idleRate, 4),
    wallMs: Object.fromEntries(Object.entries(times).map(([k, xs]) => [k, { median: Math.round(median(xs)), runs: xs.map(Math.round) }])),
    overVersion: Object.fromEntries(sizes.map((n) => [String(n), c.round(median(times[String(n)]) / median(times.version), 2)])),
    perAgentBeyondVersionMs: Object.fromEntries(sizes.map((n) => [String(n), c.round((median(times[String(n)]) - median(times.version)) / n, 2)])),
    linear: linearM,
    burstMsPerAgent: Object.fromEntries(sizes.map((n) => [String(n), { mean: c.round(mean(bursts[String(n)]), 3), runs: bursts[String(n)].map((x) => c.round(x, 3)) }])),
    burstBig: burstM,
    hostBurstMs: Object.fromEntries(sizes.map((n) => [String(n), { median: Math.round(median(hostBursts[String(n)])), runs: hostBursts[String(n)].map(Math.round) }])),
    goals: GOALS,
    verdicts: {
      linear: judge(linearM, GOALS.linearRatio),
      burst: judge(burstM, GOALS.burstMsPerAgent, { unit: 'ms' }),
    },
  };
  console.log(
    `run-fanout: ${sizes.map((n) => `${n} agents ${result.wallMs[String(n)].median} ms`).join(', ')}; --version ${result.wallMs.version.median} ms; ` +
      `${sizes[2]} ÷ ${sizes[1]} ×${linearM.estimate} (95% CI ${linearM.ci95.join('–')}): ${result.verdicts.linear.text}; ` +
      `after the run over ${big}: ${burstM.estimate} ms per agent (95% CI ${burstM.ci95.join('–')}): ${result.verdicts.burst.text}`,
  );
  return result;
}

module.exports = { run, GOALS };
c.mainIfDirect(module, run);
