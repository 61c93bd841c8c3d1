'use strict';
// What the agent costs real HTTP frameworks (issue 12): a hello-world on node:http, Express
// and Fastify (bench/apps/framework-server.js), each at 10 and at 10,000 requests in
// flight, each started five ways and compared with the bare app in the same run:
//
//   bare     no agent
//   bare′    a second bare app: bare′ ÷ bare is what no difference looks like (an A/A check
//            of the method, and the bare app's own spread from one process to the next)
//   default  `-r ispy/register`, default config
//   armed    the same, with `requests track` armed for the whole round
//   otel     no agent; OpenTelemetry's HTTP instrumentation (bench/apps/otel-preload.js)
//
// Load (bench/lib/loadgen.js, closed loop, one request open per connection):
//   10 in flight      10 connections, every request answered at once
//   10,000 in flight  10,000 connections, every request answered after --delay ms (1 s),
//                     so about 10,000 requests are in the app's hands at any moment; the
//                     p99 is then the latency over that delay, the server's own share
//
// Measures per window (bench/lib/windows.js): server CPU per request (all threads), req/s,
// p99; each a ratio to the bare level interpolated around it, clustered by round. Goals:
// default CPU per request ≤ ×1.02, its throughput and p99 within the bare app's own
// spread (the largest distance from ×1 of bare′ ÷ bare's per-round medians); armed CPU per
// request ≤ ×1.15. Each is met only when its whole 95 % interval lies within the goal
// (bench/lib/verdict.js). Rounds go on until every goal of a group is settled, up to its
// time budget.
//
//   node bench/frameworks.js [--frameworks http,express,fastify] [--inflight 10,10000]
//       [--delay 1000] [--pairs N] [--min-rounds 3] [--max-rounds 12]
//       [--minutes-small 2] [--minutes-big 4]   (time budget per group, in minutes: it
//       wins over --min-rounds past 2 rounds, so a busy machine gets wider intervals, not a longer run)

const fs = require('node:fs');
const path = require('node:path');
const c = require('./lib/common');
const { interleavedRounds, pairKey } = require('./lib/windows');
const { ensurePeers, peerVersion } = require('./lib/peers');
const { judge, resolved } = require('./lib/verdict');

const OTEL_PRELOAD = path.join(__dirname, 'apps', 'otel-preload.js');
const FRAMEWORKS = ['http', 'express', 'fastify'];
const LABEL = { http: 'node:http', express: 'Express', fastify: 'Fastify' };

const GOALS = {
  defaultCpu: 1.02,
  armedCpu: 1.15,
};

function versions() {
  const v = (name) => {
    try {
      return require(`${name}/package.json`).version;
    } catch {
      return undefined;
    }
  };
  return { express: v('express'), fastify: v('fastify'), otelSdk: peerVersion('@opentelemetry/sdk-trace-node'), otelHttp: peerVersion('@opentelemetry/instrumentation-http') };
}


/** The bare app's own spread of one measure: the farthest per-round median of bare′ ÷ bare from ×1. */
function ownSpread(summary, measure) {
  const rounds = summary.ratios[pairKey('bare′', 'bare')][measure].groupMedians;
  if (rounds.length < 2) return undefined;
  return c.round(Math.max(...rounds.map((x) => Math.abs(1 - x))), 4);
}

/** Every verdict of one group, from its summary. */
function judgeGroup(summary) {
  const r = summary.ratios;
  const d = r[pairKey('default', 'bare')];
  const rpsSpread = ownSpread(summary, 'rps');
  const p99Spread = ownSpread(summary, 'p99');
  const unresolvedSpread = (what) => ({ verdict: 'cannot resolve', text: `cannot resolve: the bare app's own ${what} spread needs at least 2 rounds`, halfWidth: NaN });
  return {
    defaultCpu: judge(d.cpu, GOALS.defaultCpu),
    defaultRps: rpsSpread === undefined ? unresolvedSpread('throughput') : { ...judge(d.rps, c.round(1 - rpsSpread, 4), { better: 'higher' }), spread: rpsSpread },
    defaultP99: p99Spread === undefined ? unresolvedSpread('p99') : { ...judge(d.p99, c.round(1 + p99Spread, 4)), spread: p99Spread },
    armedCpu: judge(r[pairKey('armed', 'bare')].cpu, GOALS.armedCpu),
  };
}

/** The soft limit on open files of this process (inherited by the generator and the apps), from /proc. */
function openFilesLimit() {
  try {
    const m = /^Max open files\s+(\d+|unlimited)/m.exec(fs.readFileSync('/proc/self/limits', 'utf8'));
    return m ? (m[1] === 'unlimited' ? Infinity : Number(m[1])) : Infinity;
  } catch {
    return Infinity;
  }
}

async function runGroup({ framework, inflight, delayMs, pairs, minRounds, maxRounds, budgetMs }) {
  const big = inflight > 100;
  // The generator holds `inflight` sockets, and so does the app: say so before EMFILE does.
  const limit = openFilesLimit();
  if (limit < inflight + 1000) throw new Error(`${inflight} requests in flight need ${inflight + 1000} open files, and the soft limit is ${limit}: raise it (\`ulimit -n ${inflight + 5000}\`) before the run`);
  const env = { BENCH_FRAMEWORK: framework, BENCH_DELAY_MS: String(big ? delayMs : 0) };
  const load = big
    ? { connections: inflight, warmup: delayMs + 500, duration: Math.max(2000, 2 * delayMs), keep: false, delayMs, drainMs: delayMs + 10_000 }
    : { connections: inflight, warmup: 150, duration: 500, keep: true, delayMs: 0, drainMs: 5000 };
  const start = (label, extra) => c.startApp({ script: 'framework-server.js', label, env, timeoutMs: 30_000, ...extra });
  const spanFiles = new Map();
  const variants = [
    { name: 'bare', start: () => start('bare', { agent: false }) },
    { name: 'bare′', start: () => start('bare′', { agent: false }) },
    { name: 'default', start: () => start('default', { agent: true }) },
    {
      name: 'armed',
      start: () => start('armed', { agent: true, config: { limits: { trackMaxDuration: '30m' } } }),
      afterStart: (app) =>
        c.withClient(app, async (client) => {
          const r = await client.call('requests', 'track', { duration: '25m' }, { timeoutMs: 10000 });
          if (r.tracking !== 'armed') throw new Error(`requests track answered ${JSON.stringify(r)}`);
        }),
      beforeKill: (app) => c.withClient(app, async (client) => ({ trackingAtEnd: (await client.call('requests', 'list', {}, { timeoutMs: 20000 })).tracking })),
    },
    {
      name: 'otel',
      start: (round) => {
        const file = path.join(c.tempDir(), 'spans');
        spanFiles.set(round, file);
        return start('otel', { agent: false, preload: OTEL_PRELOAD, env: { ...env, OTEL_SPAN_COUNT_FILE: file } });
      },
      beforeKill: async (app, round) => {
        await c.sleep(1200);
        return { spansEnded: Number(fs.readFileSync(spanFiles.get(round), 'utf8')) };
      },
    },
  ];
  console.log(`${LABEL[framework]}, ${inflight} in flight: ${variants.map((v) => v.name).join(', ')}; ${pairs} windows per server per round, ${minRounds}–${maxRounds} rounds within ${Math.round(budgetMs / 60000)} min`);
  const res = await interleavedRounds({
    variants,
    baseline: 'bare',
    pairs,
    load,
    minRounds,
    maxRounds,
    budgetMs,
    settled: (s) => resolved(Object.values(judgeGroup(s))),
    // At 10,000 in flight every window opens its connections and runs a warm-up of its own
    // (the delay and half a second more, some 15,000 requests): no separate warm-up window.
    prewarm: !big,
  });
  const verdicts = judgeGroup(res.summary);
  const notes = res.summary.levels;
  const armedNotes = notes.armed.notes ?? [];
  const group = {
    framework,
    inflight,
    delayMs: big ? delayMs : 0,
    load,
    rounds: res.rounds,
    stoppedBecause: res.stoppedBecause,
    elapsedS: res.elapsedS,
    summary: res.summary,
    perRound: res.perRound,
    verdicts,
    checks: {
      armedThroughout: armedNotes.length === res.rounds && armedNotes.every((n) => /^armed/.test(n.trackingAtEnd)),
      otelSpans: (notes.otel.notes ?? []).map((n) => n.spansEnded),
    },
  };
  const d = res.summary.ratios[pairKey('default', 'bare')];
  console.log(
    `  → ${res.rounds} rounds (${res.stoppedBecause}): default CPU ×${d.cpu.estimate} [${d.cpu.ci95.join(', ')}] ${verdicts.defaultCpu.text}; ` +
      `req/s ×${d.rps.estimate} ${verdicts.defaultRps.text}; p99 ×${d.p99.estimate} ${verdicts.defaultP99.text}; armed CPU ${verdicts.armedCpu.text}`,
  );
  return group;
}

async function run(opts = {}) {
  c.requireBuilt();
  const install = ensurePeers();
  const frameworks = typeof opts.frameworks === 'string' ? opts.frameworks.split(',') : FRAMEWORKS;
  for (const f of frameworks) if (!FRAMEWORKS.includes(f)) throw c.usageError(`--frameworks: ${f} is not one of ${FRAMEWORKS.join(', ')}`);
  const sizes = typeof opts.inflight === 'string' ? opts.inflight.split(',').map(Number) : [10, 10000];
  const delayMs = c.num(opts.delay, 1000);
  const minRounds = c.num(opts['min-rounds'], 3);
  const maxRounds = c.num(opts['max-rounds'], 12);
  const groups = [];
  const started = Date.now();
  for (const inflight of sizes) {
    const big = inflight > 100;
    const pairs = c.num(opts.pairs, big ? 2 : 6);
    // Per group (framework × size): rounds go on while a goal is unsettled and one more
    // round fits in this budget.
    const budgetMs = c.num(big ? opts['minutes-big'] : opts['minutes-small'], big ? 4 : 2) * 60_000;
    for (const framework of frameworks) {
      try {
        groups.push(await runGroup({ framework, inflight, delayMs, pairs, minRounds, maxRounds, budgetMs }));
      } catch (err) {
        console.log(`  ${framework} at ${inflight} in flight FAILED: ${err.message}`);
        groups.push({ framework, inflight, error: String(err.message ?? err).slice(0, 500) });
      }
    }
  }
  return { benchmark: 'frameworks', goals: GOALS, versions: versions(), peersInstalledNow: install.installed, groups, elapsedS: Math.round((Date.now() - started) / 1000) };
}

module.exports = { run, GOALS, LABEL, judgeGroup, ownSpread };
c.mainIfDirect(module, run);
