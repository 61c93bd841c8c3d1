'use strict';
// The agent's added memory: resident set size (VmRSS from /proc/<pid>/status) of the same
// app (bench/apps/hello-server.js) started without and with `-r ispy/register`. Each start
// launches the servers side by side (rotating which is spawned first) so they live under
// the same machine conditions; the added RSS of that start is with − without. We report
// medians over several starts, at three moments:
//
//   cold   after settling, before the app has served a request;
//   warm   after every server has served the same --requests (keep-alive, 4 connections)
//          and settled again: the app an on-call engineer attaches to;
//   visit  after one client connected to the agent, called `process info` and
//          `process stack`, disconnected, and the agent settled again.
//
// The target applies at all three. Cold is the strictest: a process that has not yet run
// any JavaScript hot enough to optimize has never touched V8's optimizing compiler (several
// MiB of node's own code pages) nor grown its young generation past its first size, so an
// agent whose start-up does either is charged for it in full, while the app would do both
// by itself within its first few thousand requests (the run reports by how much the
// baseline grew while warming).
//
// Two reference servers run beside them, to say where the memory goes:
//   core         the agent with every built-in plugin disabled in its config;
//   bare worker  no agent, just one idle worker thread started the way the agent starts
//                its own (bench/apps/bare-worker-preload.js): the floor of the design.
//
//   node bench/rss.js [--starts 5] [--settle 3000] [--requests 20000]

const http = require('node:http');
const path = require('node:path');
const c = require('./lib/common');

/** The "15 MB", read strictly: 15 × 10⁶ bytes (14.3 MiB). */
const TARGET_MB = 15;
const TARGET_MIB = c.round((TARGET_MB * 1e6) / 2 ** 20, 1);
const mib = (kB) => c.round(kB / 1024, 1);

/** `count` GET / requests over `connections` keep-alive connections; rejects on any error or non-200. */
async function serve(port, count, connections = 4) {
  const agent = new http.Agent({ keepAlive: true, maxSockets: connections });
  let next = 0;
  const one = () =>
    new Promise((resolve, reject) => {
      const req = http.get({ host: '127.0.0.1', port, path: '/', agent }, (res) => {
        res.resume();
        res.on('end', () => (res.statusCode === 200 ? resolve() : reject(new Error(`status ${res.statusCode}`))));
      });
      req.setTimeout(10_000, () => req.destroy(new Error('request timed out after 10 s')));
      req.on('error', reject);
    });
  try {
    await Promise.all(Array.from({ length: connections }, async () => {
      while (next++ < count) await one();
    }));
  } finally {
    agent.destroy();
  }
}

async function run(opts = {}) {
  const starts = c.num(opts.starts, 5);
  const settleMs = c.num(opts.settle, 3000);
  const requests = c.num(opts.requests, 20000);
  const { connect } = c.requireBuilt();
  const builtins = c.builtinPlugins();
  const variants = [
    { label: 'without', agent: false },
    { label: 'with', agent: true },
    { label: 'core', agent: true, config: { disable: builtins } },
    { label: 'bare worker', agent: false, preload: path.join(c.APPS, 'bare-worker-preload.js') },
  ];
  const rows = [];
  for (let i = 0; i < starts; i++) {
    const order = variants.map((_, k) => variants[(k + i) % variants.length]);
    const settled = await Promise.allSettled(order.map((v) => c.startApp({ script: 'hello-server.js', ...v })));
    const apps = {};
    for (const s of settled) if (s.status === 'fulfilled') apps[s.value.label] = s.value;
    try {
      const failed = settled.find((s) => s.status === 'rejected');
      if (failed) throw failed.reason;
      const read = () => Object.fromEntries(variants.map((v) => [v.label, c.readRss(apps[v.label].pid)]));
      await c.sleep(settleMs);
      const cold = read();
      await c.withTimeout(Promise.all(order.map((v) => serve(apps[v.label].port, requests))), 300_000, `${requests} requests to each server`);
      await c.sleep(settleMs);
      const warm = read();
      // One operator visit: connect, two commands, disconnect.
      const client = await connect(apps.with.socket, { timeoutMs: 5000, clientName: 'ispy-bench-rss' });
      const info = await client.call('process', 'info', {}, { timeoutMs: 5000 });
      const stack = await client.call('process', 'stack', {}, { timeoutMs: 5000 });
      await c.withTimeout(client.close(), 3000, 'client close');
      if (!info || !info.pid || !stack || !stack.state) throw new Error('process info / process stack gave unexpected answers');
      await c.sleep(settleMs);
      const visit = read();
      const added = (at, label = 'with', key = 'rssKB') => at[label][key] - at.without[key];
      const row = {
        coldWithoutKB: cold.without.rssKB,
        coldAddedKB: added(cold),
        coldAddedAnonKB: added(cold, 'with', 'anonKB'),
        coldAddedFileKB: added(cold, 'with', 'fileKB'),
        coldCoreAddedKB: added(cold, 'core'),
        coldBareWorkerAddedKB: added(cold, 'bare worker'),
        warmWithoutKB: warm.without.rssKB,
        warmWithKB: warm.with.rssKB,
        warmAddedKB: added(warm),
        warmAddedAnonKB: added(warm, 'with', 'anonKB'),
        warmAddedFileKB: added(warm, 'with', 'fileKB'),
        warmCoreAddedKB: added(warm, 'core'),
        warmBareWorkerAddedKB: added(warm, 'bare worker'),
        baselineWarmingGrowthKB: warm.without.rssKB - cold.without.rssKB,
        visitAddedKB: added(visit),
        threadsWithout: cold.without.threads,
        threadsWith: cold.with.threads,
      };
      rows.push(row);
      console.log(
        `  start ${i + 1}/${starts}: cold +${mib(row.coldAddedKB)} MiB (anon +${mib(row.coldAddedAnonKB)}, file-backed +${mib(row.coldAddedFileKB)}); ` +
          `warm (${requests} requests each; the baseline grew ${mib(row.baselineWarmingGrowthKB)} MiB) ${mib(row.warmWithoutKB)} → ${mib(row.warmWithKB)} MiB: +${mib(row.warmAddedKB)} MiB ` +
          `(core +${mib(row.warmCoreAddedKB)}, bare worker +${mib(row.warmBareWorkerAddedKB)}); after info+stack +${mib(row.visitAddedKB)} MiB`,
      );
    } finally {
      await Promise.all(Object.values(apps).map((a) => a.kill()));
    }
  }
  const med = (k) => mib(c.median(rows.map((r) => r[k])));
  const range = (k) => [mib(Math.min(...rows.map((r) => r[k]))), mib(Math.max(...rows.map((r) => r[k])))];
  const result = {
    benchmark: 'rss',
    starts,
    settleMs,
    requests,
    cold: { addedMiB: med('coldAddedKB'), rangeMiB: range('coldAddedKB'), anonMiB: med('coldAddedAnonKB'), fileMiB: med('coldAddedFileKB'), coreMiB: med('coldCoreAddedKB'), bareWorkerMiB: med('coldBareWorkerAddedKB'), withoutMiB: med('coldWithoutKB') },
    warm: {
      addedMiB: med('warmAddedKB'),
      rangeMiB: range('warmAddedKB'),
      anonMiB: med('warmAddedAnonKB'),
      fileMiB: med('warmAddedFileKB'),
      coreMiB: med('warmCoreAddedKB'),
      bareWorkerMiB: med('warmBareWorkerAddedKB'),
      withoutMiB: med('warmWithoutKB'),
      withMiB: med('warmWithKB'),
      baselineGrowthMiB: med('baselineWarmingGrowthKB'),
    },
    visit: { addedMiB: med('visitAddedKB'), rangeMiB: range('visitAddedKB') },
    threads: { without: rows[0]?.threadsWithout, with: rows[0]?.threadsWith },
    coreDisabledPlugins: builtins,
    perStart: rows,
    target: { addedMB: TARGET_MB, addedMiB: TARGET_MIB },
  };
  result.pass = result.warm.addedMiB < TARGET_MIB;
  result.passAfterVisit = result.visit.addedMiB < TARGET_MIB;
  result.passCold = result.cold.addedMiB < TARGET_MIB;
  console.log(
    `rss: warm idle app ${result.warm.withoutMiB} MiB without, ${result.warm.withMiB} MiB with the agent → added ${result.warm.addedMiB} MiB ` +
      `(median of ${starts}, range ${result.warm.rangeMiB.join('–')}); after one info+stack visit ${result.visit.addedMiB} MiB; cold (never served a request) ${result.cold.addedMiB} MiB — ` +
      `target < ${TARGET_MB} MB (${TARGET_MIB} MiB): ${result.pass ? 'PASS' : 'FAIL'} (warm), ${result.passAfterVisit ? 'PASS' : 'FAIL'} (after visit), ${result.passCold ? 'PASS' : 'FAIL'} (cold)`,
  );
  console.log(
    `  where it goes (warm): a bare idle worker thread adds ${result.warm.bareWorkerMiB} MiB; the agent with no plugins ${result.warm.coreMiB} MiB; with its plugins (${builtins.join(', ')}) ${result.warm.addedMiB} MiB. ` +
      `Cold: ${result.cold.bareWorkerMiB} / ${result.cold.coreMiB} / ${result.cold.addedMiB} MiB; the baseline grew ${result.warm.baselineGrowthMiB} MiB serving its ${requests} requests.`,
  );
  return result;
}

module.exports = { run };
c.mainIfDirect(module, run);
