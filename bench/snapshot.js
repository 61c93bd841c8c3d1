'use strict';
// Heap snapshots (issue 5): wall time, peak memory and the main thread's pause of three ways
// to snapshot the same heap, each in a fresh process (bench/apps/heap-app.js, which builds
// a deterministic heap of --heap-mb MB of small linked objects):
//
//   ispy      `heap snapshot` through the client (the agent worker drives the inspector;
//             chunks stream to the worker, which writes the file); --force only if refused
//   v8        v8.writeHeapSnapshot(file) on the app's main thread (Node's built-in)
//   heapdump  heapdump.writeSnapshot(file) on the main thread (native addon, bench/peers)
//
// Per method and round: one process; once it is built and settled, its VmHWM is reset
// (`5` into /proc/<pid>/clear_refs), VmRSS is sampled every 20 ms while the snapshot runs,
// and VmHWM read after: the peak. The app's 5 ms interval timer records the longest gap
// between its ticks during the snapshot: how long the main thread was frozen. Wall time:
// from the request (client call or HTTP GET) to its answer, the file complete. Rounds
// rotate the order of the methods; one process at a time, so they never compete for memory.
//
// Ratios to v8.writeHeapSnapshot() are paired by round (see run()).
//
//   node bench/snapshot.js [--heap-mb 100] [--rounds 3] [--methods ispy,v8,heapdump]

const fs = require('node:fs');
const path = require('node:path');
const c = require('./lib/common');
const { ensurePeers, peerVersion } = require('./lib/peers');
const { bootstrapCI, median } = require('./lib/stats');

const METHODS = ['ispy', 'v8', 'heapdump'];

/** Samples VmRSS every `everyMs` until stopped; returns the peak seen and the sample count. */
function sampleRss(pid, everyMs = 20) {
  let peak = 0;
  let n = 0;
  const t = setInterval(() => {
    try {
      const r = c.readRss(pid).rssKB;
      if (r > peak) peak = r;
      n++;
    } catch {
      // the process is gone
    }
  }, everyMs);
  return () => {
    clearInterval(t);
    return { peakKB: peak, samples: n };
  };
}

const MiB = (kb) => c.round(kb / 1024, 1);

async function oneSnapshot(method, heapMb, timeoutMs) {
  const outDir = c.tempDir();
  const app = await c.startApp({
    script: 'heap-app.js',
    agent: method === 'ispy',
    label: method,
    env: { HEAP_MB: String(heapMb) },
    config: method === 'ispy' ? { outputDir: outDir } : undefined,
    timeoutMs: 120_000,
  });
  let client;
  try {
    await c.sleep(1000); // settle: the agent's worker up, the heap build's garbage behind us
    const heap = await c.getJson(app.port, '/heap', 5000);
    const before = c.readRss(app.pid);
    let hwmReset = true;
    try {
      fs.writeFileSync(`/proc/${app.pid}/clear_refs`, '5');
    } catch {
      hwmReset = false;
    }
    const hwmAfterReset = c.readRss(app.pid).hwmKB;
    let refusal;
    let file;
    let answer;
    if (method === 'ispy') {
      const { connect } = c.requireBuilt();
      client = await c.withTimeout(connect(app.socket, { clientName: 'bench' }), 10000, 'connecting');
    }
    await c.getJson(app.port, '/gap/reset', 5000);
    const stop = sampleRss(app.pid);
    const t0 = performance.now();
    let wallMs;
    let rss;
    try {
      if (method === 'ispy') {
        try {
          answer = await client.call('heap', 'snapshot', {}, { timeoutMs });
        } catch (err) {
          if (err.code !== 'ISPY_ERR_UNAVAILABLE' || !/refusing/.test(err.message)) throw err;
          refusal = err.message;
          answer = await client.call('heap', 'snapshot', { force: true }, { timeoutMs });
        }
        file = answer.file;
      } else {
        file = path.join(outDir, `${method}.heapsnapshot`);
        answer = await c.getJson(app.port, `/snapshot?method=${method}&file=${encodeURIComponent(file)}`, timeoutMs);
        if (answer.error) throw new Error(`${method}: ${answer.error}`);
      }
    } finally {
      wallMs = performance.now() - t0;
      rss = stop();
    }
    await c.sleep(50); // let the timer tick once more, so a gap still open is closed
    const gap = await c.getJson(app.port, '/gap', 5000);
    const after = c.readRss(app.pid);
    const bytes = fs.statSync(file).size;
    // A complete snapshot is one JSON object: check its two ends cheaply.
    const fd = fs.openSync(file, 'r');
    const head = Buffer.alloc(64);
    const tail = Buffer.alloc(16);
    fs.readSync(fd, head, 0, 64, 0);
    fs.readSync(fd, tail, 0, 16, Math.max(0, bytes - 16));
    fs.closeSync(fd);
    const valid = head.toString().startsWith('{"snapshot":') && tail.toString().trim().endsWith('}');
    fs.rmSync(file, { force: true });
    const peakKB = Math.max(rss.peakKB, hwmReset ? after.hwmKB : 0);
    return {
      method,
      heapUsedMB: c.round(heap.usedMB, 1),
      wallMs: Math.round(wallMs),
      mainThreadPauseMs: gap.maxGapMs,
      rssBeforeMiB: MiB(before.rssKB),
      peakRssMiB: MiB(peakKB),
      addedPeakMiB: MiB(peakKB - before.rssKB),
      sampledPeakMiB: MiB(rss.peakKB),
      vmHwmMiB: hwmReset ? MiB(after.hwmKB) : undefined,
      hwmReset: hwmReset && hwmAfterReset <= before.rssKB + 1024,
      rssSamples: rss.samples,
      fileMB: c.round(bytes / 1048576, 1),
      valid,
      ...(method === 'ispy' ? { agentTookMs: answer.tookMs, estimate: { needMB: answer.estimatedNeedMB, availableMB: answer.availableMB, limitedBy: answer.limitedBy }, refusedWithoutForce: refusal ?? false } : { appMs: Math.round(answer.ms) }),
    };
  } finally {
    await client?.close().catch(() => {});
    await app.kill();
  }
}

async function run(opts = {}) {
  const heapMb = c.num(opts['heap-mb'], 100);
  const rounds = c.num(opts.rounds, 3);
  const methods = typeof opts.methods === 'string' ? opts.methods.split(',') : METHODS;
  const timeoutMs = c.num(opts.timeout, 300_000);
  c.requireBuilt();
  const install = methods.includes('heapdump') ? ensurePeers() : { installed: false };
  console.log(`snapshot: ${methods.join(', ')} on a ${heapMb} MB heap, ${rounds} rounds, a fresh process each`);
  const runs = Object.fromEntries(methods.map((m) => [m, []]));
  const failures = Object.fromEntries(methods.map((m) => [m, []]));
  const byRound = [];
  for (let r = 0; r < rounds; r++) {
    const order = methods.map((_, i) => methods[(i + r) % methods.length]);
    byRound.push({});
    for (const m of order) {
      try {
        const x = await oneSnapshot(m, heapMb, timeoutMs);
        runs[m].push(x);
        byRound[r][m] = x;
        console.log(`  round ${r + 1} ${m.padEnd(8)} wall ${x.wallMs} ms, pause ${x.mainThreadPauseMs} ms, RSS ${x.rssBeforeMiB} → peak ${x.peakRssMiB} MiB (+${x.addedPeakMiB}), file ${x.fileMB} MB${x.valid ? '' : ' (NOT VALID)'}${x.refusedWithoutForce ? ' (refused without --force)' : ''}`);
      } catch (err) {
        failures[m].push(String(err.message ?? err).slice(0, 400));
        console.log(`  round ${r + 1} ${m.padEnd(8)} FAILED: ${err.message}`);
      }
    }
  }
  const med = (m, k) => (runs[m].length ? c.round(c.median(runs[m].map((x) => x[k])), 1) : null);
  const summary = {};
  for (const m of methods) {
    summary[m] = {
      ok: runs[m].length,
      failed: failures[m].length,
      wallMs: med(m, 'wallMs'),
      mainThreadPauseMs: med(m, 'mainThreadPauseMs'),
      rssBeforeMiB: med(m, 'rssBeforeMiB'),
      peakRssMiB: med(m, 'peakRssMiB'),
      addedPeakMiB: med(m, 'addedPeakMiB'),
      fileMB: med(m, 'fileMB'),
      heapUsedMB: med(m, 'heapUsedMB'),
      allValid: runs[m].every((x) => x.valid),
    };
  }
  // Paired: each method's figure over v8.writeHeapSnapshot()'s in the same round (the two
  // runs next to each other in time), then the median of those ratios and its bootstrap
  // interval over the rounds. Medians of unpaired runs would let a slow stretch of the
  // machine land on one method only.
  const ratios = {};
  for (const m of methods) {
    if (m === 'v8') continue;
    const pairs = byRound.filter((x) => x[m] && x.v8);
    if (!pairs.length) continue;
    const one = (k) => {
      const xs = pairs.map((x) => x[m][k] / x.v8[k]).filter(Number.isFinite);
      const [lo, hi] = bootstrapCI(xs);
      return { median: c.round(median(xs), 3), ci95: [c.round(lo, 3), c.round(hi, 3)], pairs: xs.map((x) => c.round(x, 3)) };
    };
    ratios[m] = { pairs: pairs.length, wall: one('wallMs'), pause: one('mainThreadPauseMs'), addedPeak: one('addedPeakMiB') };
  }
  const ispyRuns = runs.ispy ?? [];
  return {
    benchmark: 'snapshot',
    heapMb,
    rounds,
    peers: { installedNow: install.installed, heapdump: peerVersion('heapdump') },
    summary,
    ratiosToV8: ratios,
    ispyEstimate: ispyRuns[0]?.estimate,
    ispyRefusedWithoutForce: ispyRuns.filter((x) => x.refusedWithoutForce).length,
    ispyAgentTookMs: ispyRuns.map((x) => x.agentTookMs),
    runs,
    failures,
  };
}

function markdown(r) {
  const s = r.summary;
  const name = { ispy: '`heap snapshot` (ispy, from the agent worker)', v8: '`v8.writeHeapSnapshot()` (baseline)', heapdump: `\`heapdump.writeSnapshot()\` ${r.peers.heapdump ?? ''}` };
  const ratio = (m, k) => {
    const x = r.ratiosToV8[m]?.[k];
    if (!x) return '';
    return Number.isFinite(x.ci95[0]) ? ` (×${x.median}, CI ×${x.ci95.join('–×')})` : ` (×${x.median}, ${x.pairs.length} pair${x.pairs.length === 1 ? '' : 's'}: no interval)`;
  };
  const rows = Object.keys(s).map((m) =>
    s[m].ok
      ? `| ${name[m]} | ${s[m].wallMs} ms${ratio(m, 'wall')} | ${s[m].mainThreadPauseMs} ms${ratio(m, 'pause')} | ${s[m].peakRssMiB} MiB | +${s[m].addedPeakMiB} MiB${ratio(m, 'addedPeak')} | ${s[m].fileMB} MB | ${s[m].ok}/${s[m].ok + s[m].failed}${s[m].allValid ? '' : ' (**invalid file**)'} |`
      : `| ${name[m]} | failed: ${(r.failures[m][0] ?? '').replace(/\|/g, '\\|').replace(/\n/g, ' ')} | | | | | 0/${s[m].failed} |`,
  );
  const e = r.ispyEstimate;
  return [
    `Same heap (bench/apps/heap-app.js: ${r.heapMb} MB of small linked objects, ${s.v8?.heapUsedMB ?? s.ispy?.heapUsedMB} MB used), a fresh process per method and round, ${r.rounds} rounds in rotating order, medians. Peak = max of VmRSS sampled every 20 ms and VmHWM (reset through /proc/<pid>/clear_refs just before); pause = the longest gap of the app's 5 ms interval timer during the snapshot. Ratios in brackets are paired: each run over \`v8.writeHeapSnapshot()\`'s in the same round, the median of those ratios and its bootstrap 95% interval over the rounds (no target: an observation).`,
    '',
    '| method | wall time | main-thread pause | peak RSS | added at peak | file | runs ok |',
    '|---|---|---|---|---|---|---|',
    ...rows,
    '',
    e
      ? `ispy's memory check: ${r.ispyRefusedWithoutForce ? `**refused** without \`--force\` in ${r.ispyRefusedWithoutForce} run(s)` : 'passed without `--force` in every run'} (estimate ${e.needMB} MB needed, ${e.availableMB} MB available, limited by ${e.limitedBy}).`
      : '',
  ].join('\n');
}

module.exports = { run, markdown };
c.mainIfDirect(module, run);
