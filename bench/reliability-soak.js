'use strict';
// The soak. While the app serves HTTP, `clients` loops connect, run a few commands (on both
// threads, a trace that comes off when they leave, a cancelled profile, a cancelled stream)
// and leave, some politely, some by dropping the socket. The app's RSS and fd count are
// sampled all along. After the warm-up, memory must stay flat by the run's own measure
// (lib.memoryVerdict: no drift past twice the swing the settled warm-up showed), the
// fd count must stay within what the clients and the load hold at once, and once everyone
// has gone it must be back to its baseline exactly, with nothing left on.
//
//   node bench/reliability-soak.js [--seconds 600] [--warmup-visits 3000] [--max-warmup 120] [--settle 20] [--clients 4]
//   node bench/reliability-soak.js --seconds 30 --load-path '/grow?n=20'   (a leaking app: the verdict must fail)

const net = require('node:net');
const path = require('node:path');
const { performance } = require('node:perf_hooks');
const lib = require('./reliability-lib');

/**
 * One visit's commands, picked in turn: each is [plugin, command, args, cancelAfterMs?].
 * One CPU profile runs at a time: a visit that meets another's is told so (and that is fine).
 */
const VISITS = [
  [['process', 'info', {}], ['process', 'stack', {}], ['requests', 'list', {}]],
  [['process', 'handles', {}], ['heap', 'stats', {}], ['requests', 'slow', {}]],
  [['trace', 'add', { target: lib.TARGETS[0], limit: 20 }], ['trace', 'list', {}], ['process', 'loop', { duration: '50ms' }]],
  [['profile', 'cpu', { duration: '10s' }, 100], ['process', 'env', {}], ['process', 'gc', {}]],
  [['requests', 'watch', {}, 100], ['trace', 'add', { target: lib.TARGETS[1], limit: 50 }], ['process', 'info', {}]],
];

async function visit(app, i, commands, { timeoutMs }) {
  const { connect } = lib.client();
  let sock;
  const c = await connect(app.socket, {
    timeoutMs,
    clientName: `soak-${i}`,
    createConnection: () => (sock = net.connect(app.socket)),
  });
  try {
    for (const [plugin, command, args, cancelAfterMs] of commands) {
      const controller = new AbortController();
      const t = cancelAfterMs === undefined ? undefined : setTimeout(() => controller.abort(), cancelAfterMs);
      try {
        await c.call(plugin, command, args, { timeoutMs, signal: controller.signal, onData: () => {} });
      } catch (err) {
        // Honest answers, not failures: another client's profile is running, or the main
        // thread did not answer in time (on a busy machine it may not be scheduled for a second).
        const honest = (err.code === 'ISPY_ERR_UNAVAILABLE' && command === 'cpu') || err.code === 'ISPY_ERR_MAIN_BLOCKED' || err.code === 'ISPY_ERR_MAIN_BUSY';
        if (err.code !== 'ISPY_ERR_CANCELLED' && !honest) throw new Error(`${plugin} ${command}: ${err.code ?? ''} ${err.message}`);
      } finally {
        clearTimeout(t);
      }
    }
  } finally {
    // One visit in five leaves without a goodbye; a failed one leaves too (its connection
    // left open would read as a descriptor the agent leaked).
    if (i % 5 === 4) sock.destroy();
    else await c.close();
  }
}

/**
 * Soaks the agent of `app` ({pid, socket, port}). The warm-up lasts until RSS has made no
 * new high for `settleSeconds`, and at least `minWarmupVisits` visits (V8 grows the app's
 * young generation in one step, about 17 MB, some thousand visits into this churn: counted
 * in visits, a slower machine gets there later, not less warm), at most `maxWarmupSeconds`;
 * then `seconds` more are measured against it. Resolves with the figures and `problems`
 * (empty when every check held).
 */
async function runSoak(app, { seconds = 12, minWarmupVisits = 1000, maxWarmupSeconds = 45, settleSeconds = 5, clients = 4, loadConnections = 4, loadGapMs = 0, loadPath = '/', sampleMs = 250, timeoutMs = 30_000, log = () => {} } = {}) {
  const problems = [];
  const fdBaseline = await lib.settledFdCount(app.pid);
  const load = lib.httpLoad(app.port, { connections: loadConnections, gapMs: loadGapMs, path: loadPath });
  const t0 = performance.now();
  const samples = [];
  let visits = 0;
  let warmEnd;
  let warmupVisits;
  let end = t0 + (maxWarmupSeconds + seconds) * 1000;
  const sample = () => {
    const t = performance.now() - t0;
    samples.push({ t, rss: lib.rssKB(app.pid), fd: lib.fdCount(app.pid) });
    if (warmEnd !== undefined || (visits < minWarmupVisits && t < maxWarmupSeconds * 1000)) return;
    const since = t - settleSeconds * 1000;
    const peak = (xs) => xs.reduce((m, x) => Math.max(m, x.rss), 0);
    const settled = peak(samples.filter((x) => x.t > since)) <= peak(samples.filter((x) => x.t <= since));
    if (settled || t >= maxWarmupSeconds * 1000) {
      warmEnd = t;
      warmupVisits = visits;
      end = t0 + t + seconds * 1000;
      log(`  warm-up over at ${Math.round(t / 1000)} s, ${visits} visits (${settled ? 'settled' : 'not settled: its limit'}), measuring ${seconds} s`);
    }
  };
  sample();
  const sampler = setInterval(sample, sampleMs);
  const failures = [];
  // What a full GC leaves, once the warm-up is over and again at the end (see below).
  let warmCollected;
  const whileRunning = async () => {
    while (performance.now() < end) {
      if (warmEnd !== undefined && warmCollected === undefined) warmCollected = await collected(app, timeoutMs).catch((err) => ({ error: err.message }));
      await lib.sleep(100);
    }
  };
  await Promise.all([
    whileRunning(),
    ...Array.from({ length: clients }, async (_, k) => {
      for (let i = k; performance.now() < end; i += clients) {
        try {
          await visit(app, i, VISITS[i % VISITS.length], { timeoutMs });
          visits++;
        } catch (err) {
          failures.push(err.message);
        }
        if (i % 100 === 0) log(`  ${visits} visits, ${Math.round((performance.now() - t0) / 1000)} s, RSS ${samples[samples.length - 1].rss} kB, fds ${samples[samples.length - 1].fd}`);
      }
    }),
  ]);
  clearInterval(sampler);
  // Whose memory it is, at the end of the busy part: the app's heap, and the agent worker's.
  const { connect } = lib.client();
  const c = await connect(app.socket, { timeoutMs, clientName: 'soak-last' });
  const heapsMB = (await c.call('process', 'info')).memory;
  await c.close();
  const endCollected = await collected(app, timeoutMs).catch((err) => ({ error: err.message }));
  const http = await load.stop();
  for (const f of [...new Set(failures)].slice(0, 5)) problems.push(`a visit failed: ${f}`);
  if (http.failed) problems.push(`${http.failed} of ${http.ok + http.failed} HTTP requests failed: ${http.errors.join('; ')}`);

  // Memory: the settled end of the warm-up sets the level and the tolerance for what follows.
  const warm = samples.filter((x) => x.t > warmEnd - settleSeconds * 1000 && x.t <= warmEnd).map((x) => ({ t: x.t, v: x.rss }));
  const measured = samples.filter((x) => x.t > warmEnd).map((x) => ({ t: x.t, v: x.rss }));
  const memory = warm.length >= 4 && measured.length >= 8 ? lib.memoryVerdict(warm, measured) : undefined;
  if (!memory) problems.push(`too few samples to judge memory (${warm.length} at the end of the warm-up, ${measured.length} after it): run longer`);
  else if (!memory.flat) {
    // RSS under churn also follows V8's heap-growth steps, garbage it has not collected yet (on
    // Node 26 a 10 s window after the warm-up saw +20 MB that one full GC gave back). A leak is
    // what a full GC does not give back: the retained heap, or RSS after the GC, grew.
    const retained = retainedGrowth(warmCollected, endCollected, memory.toleranceKB);
    if (retained.grew) {
      problems.push(`RSS is not flat after the warm-up: it drifted ${memory.driftKB} kB (slope ${memory.slopeKBPerMin} kB/min) and its median rose ${memory.medianRiseKB} kB, against the ${memory.toleranceKB} kB the warm-up's own swing allows; after a full GC ${retained.why}`);
    }
    memory.afterFullGc = retained;
  }

  // Descriptors: while visits run, at most one per client and per load connection above the
  // baseline (and a spare for a file a command reads, and the warm-up's GC client); afterwards,
  // the baseline exactly.
  const fdCeiling = fdBaseline + clients + loadConnections + 3;
  const fdMax = samples.filter((x) => x.t > warmEnd).reduce((m, x) => Math.max(m, x.fd), 0);
  if (fdMax > fdCeiling) problems.push(`the app held ${fdMax} file descriptors during the soak, above ${fdCeiling} (baseline ${fdBaseline} + ${clients} clients + ${loadConnections} load connections + 3)`);
  const fdAfter = await lib.settledFdCount(app.pid, fdBaseline);
  if (fdAfter !== fdBaseline) problems.push(`the app holds ${fdAfter} file descriptors after the soak, ${fdBaseline} before: ${lib.fdList(app.pid).join(', ')}`);
  const left = await lib.leftovers(app.socket, app.port, { graceMs: 5000 });
  // With nobody connected the agent compacts its heap: what RSS comes back to when idle.
  await lib.sleep(3000);
  const rssIdleMB = lib.round(lib.rssKB(app.pid) / 1024);
  if (left.traces.length || left.gates.length) problems.push(`left on: ${JSON.stringify({ traces: left.traces, gates: left.gates })}`);
  if (!left.originals) problems.push(`functions not restored: ${JSON.stringify(left.identity)}`);

  const rss = samples.map((s) => s.rss);
  // RSS at ten points of the run, for the record.
  const rssSeries = Array.from({ length: 11 }, (_, k) => samples[Math.min(samples.length - 1, Math.round((k * (samples.length - 1)) / 10))]).map((s) => `${Math.round(s.t / 1000)}s ${lib.round(s.rss / 1024)}MB`);
  return {
    seconds: lib.round((performance.now() - t0) / 1000, 1),
    warmupSeconds: lib.round(warmEnd / 1000, 1),
    warmupVisits,
    measuredSeconds: seconds,
    clients,
    visits,
    visitsPerSecond: lib.round(visits / ((performance.now() - t0) / 1000), 1),
    http,
    samples: samples.length,
    rssMB: { start: lib.round(rss[0] / 1024), min: lib.round(rss.reduce((m, v) => Math.min(m, v)) / 1024), max: lib.round(rss.reduce((m, v) => Math.max(m, v)) / 1024), end: lib.round(rss[rss.length - 1] / 1024) },
    rssSeries,
    rssIdleMB,
    heapsMB: { mainThread: heapsMB.mainThread, agentWorker: heapsMB.agentWorker },
    memory,
    fdBaseline,
    fdMax,
    fdCeiling,
    fdAfter,
    problems,
  };
}

/** A full GC of the app's main thread (`heap gc`), then its heap in use and RSS. */
async function collected(app, timeoutMs) {
  const { connect } = lib.client();
  const c = await connect(app.socket, { timeoutMs, clientName: 'soak-gc' });
  try {
    const gc = await c.call('heap', 'gc');
    return { heapUsedMB: gc.afterMB, rssKB: lib.rssKB(app.pid) };
  } finally {
    await c.close();
  }
}

/** Whether what a full GC leaves grew from the warm-up's end to the end: > 2 MB of heap, or RSS past the tolerance (at least 10 %). */
function retainedGrowth(warm, last, toleranceKB) {
  if (!warm || !last || warm.error || last.error) return { grew: true, why: `could not be measured (${warm?.error ?? last?.error ?? 'the warm-up ended too late'})`, warm, last };
  const heapMB = lib.round(last.heapUsedMB - warm.heapUsedMB);
  const rssKB = last.rssKB - warm.rssKB;
  const rssAllowKB = Math.max(toleranceKB, Math.round(warm.rssKB * 0.1));
  const grew = heapMB > 2 || rssKB > rssAllowKB;
  return { grew, why: `the heap in use went ${warm.heapUsedMB} → ${last.heapUsedMB} MB and RSS ${Math.round(warm.rssKB / 1024)} → ${Math.round(last.rssKB / 1024)} MB (allowed: +2 MB of heap, +${Math.round(rssAllowKB / 1024)} MB of RSS)`, heapMB, rssKB, warm, last };
}

module.exports = { runSoak, retainedGrowth };

if (require.main === module) {
  const common = require('./lib/common');
  const opts = common.parseArgs();
  const seconds = common.num(opts.seconds, 600);
  common.finishEngine((async () => {
    const app = await common.startApp({ script: path.relative(path.join(__dirname, 'apps'), lib.RELIAB_APP), agent: true, config: { outputDir: 'out' } });
    console.log(`soak of pid ${app.pid}: a warm-up, then ${seconds} s measured`);
    const result = await runSoak(app, {
      seconds,
      minWarmupVisits: common.num(opts['warmup-visits'], 3000),
      maxWarmupSeconds: common.num(opts['max-warmup'], 120),
      settleSeconds: common.num(opts.settle, 20),
      clients: common.num(opts.clients, 4),
      loadConnections: common.num(opts['load-connections'], 4),
      loadGapMs: common.num(opts['load-gap'], 0),
      loadPath: typeof opts['load-path'] === 'string' ? opts['load-path'] : '/',
      log: console.log,
    });
    await app.kill();
    return result;
  })());
}
