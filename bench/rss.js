'use strict';
// The agent's added memory: resident set size (VmRSS from /proc/<pid>/status) of the same
// idle app (bench/apps/hello-server.js) started without and with `-r ispy/register`, after
// settling. Each start launches the servers side by side (rotating which is spawned
// first), so they settle under the same machine conditions; the added RSS of that start is
// the difference. We report the median over several starts. Then one client connects to
// the agent, calls `process info` and `process stack`, and disconnects (which releases the
// inspector session); after settling again we read every RSS once more. Target: < 15 MiB.
//
// Two reference servers run beside them, to say where the memory goes:
//   core         the agent with every built-in plugin disabled in its config;
//   bare worker  no agent, just one idle worker thread started the way the agent starts
//                its own (bench/apps/bare-worker-preload.js): the floor of the design.
//
//   node bench/rss.js [--starts 5] [--settle 3000]

const path = require('node:path');
const c = require('./lib/common');

const TARGET_MIB = 15;
const mib = (kB) => c.round(kB / 1024, 1);


async function run(opts = {}) {
  const starts = c.num(opts.starts, 5);
  const settleMs = c.num(opts.settle, 3000);
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
      await c.sleep(settleMs);
      const before = {};
      for (const v of variants) before[v.label] = c.readRss(apps[v.label].pid);
      // One operator visit: connect, two commands, disconnect.
      const client = await connect(apps.with.socket, { timeoutMs: 5000, clientName: 'ispy-bench-rss' });
      const info = await client.call('process', 'info', {}, { timeoutMs: 5000 });
      const stack = await client.call('process', 'stack', {}, { timeoutMs: 5000 });
      await c.withTimeout(client.close(), 3000, 'client close');
      if (!info || !info.pid || !stack || !stack.state) throw new Error('process info / process stack gave unexpected answers');
      await c.sleep(settleMs);
      const after = {};
      for (const v of variants) after[v.label] = c.readRss(apps[v.label].pid);
      const base = before.without;
      const row = {
        withoutKB: base.rssKB,
        withKB: before.with.rssKB,
        addedKB: before.with.rssKB - base.rssKB,
        addedAnonKB: before.with.anonKB - base.anonKB,
        addedFileKB: before.with.fileKB - base.fileKB,
        threadsWithout: base.threads,
        threadsWith: before.with.threads,
        coreAddedKB: before.core.rssKB - base.rssKB,
        bareWorkerAddedKB: before['bare worker'].rssKB - base.rssKB,
        addedAfterCallsKB: after.with.rssKB - after.without.rssKB,
        growthFromCallsKB: after.with.rssKB - before.with.rssKB,
        withoutDriftKB: after.without.rssKB - base.rssKB,
      };
      rows.push(row);
      console.log(
        `  start ${i + 1}/${starts}: without ${mib(row.withoutKB)} MiB, with ${mib(row.withKB)} MiB → +${mib(row.addedKB)} MiB ` +
          `(anon +${mib(row.addedAnonKB)}, file-backed +${mib(row.addedFileKB)}, threads ${row.threadsWithout}→${row.threadsWith}; ` +
          `core +${mib(row.coreAddedKB)}, bare worker +${mib(row.bareWorkerAddedKB)}); after info+stack +${mib(row.addedAfterCallsKB)} MiB`,
      );
    } finally {
      await Promise.all(Object.values(apps).map((a) => a.kill()));
    }
  }
  const med = (k) => c.median(rows.map((r) => r[k]));
  const range = (k) => [mib(Math.min(...rows.map((r) => r[k]))), mib(Math.max(...rows.map((r) => r[k])))];
  const result = {
    benchmark: 'rss',
    starts,
    settleMs,
    withoutMiB: mib(med('withoutKB')),
    withMiB: mib(med('withKB')),
    ratioWithToWithout: c.round(med('withKB') / med('withoutKB'), 3),
    addedMiB: mib(med('addedKB')),
    addedRangeMiB: range('addedKB'),
    addedAnonMiB: mib(med('addedAnonKB')),
    addedFileMiB: mib(med('addedFileKB')),
    addedAfterCallsMiB: mib(med('addedAfterCallsKB')),
    addedAfterCallsRangeMiB: range('addedAfterCallsKB'),
    growthFromCallsMiB: mib(med('growthFromCallsKB')),
    coreAddedMiB: mib(med('coreAddedKB')),
    coreDisabledPlugins: builtins,
    bareWorkerAddedMiB: mib(med('bareWorkerAddedKB')),
    perStart: rows,
    target: { addedMiB: TARGET_MIB },
  };
  result.pass = result.addedMiB < TARGET_MIB;
  result.passAfterCalls = result.addedAfterCallsMiB < TARGET_MIB;
  console.log(
    `rss: idle app ${result.withoutMiB} MiB without, ${result.withMiB} MiB with the agent (×${result.ratioWithToWithout}) → added ${result.addedMiB} MiB ` +
      `(median of ${starts}, range ${result.addedRangeMiB.join('–')}; anon +${result.addedAnonMiB}, file-backed +${result.addedFileMiB}); ` +
      `after one info+stack visit: added ${result.addedAfterCallsMiB} MiB — target < ${TARGET_MIB} MiB: ${result.pass ? 'PASS' : 'FAIL'} (idle), ${result.passAfterCalls ? 'PASS' : 'FAIL'} (after calls)`,
  );
  console.log(`  where it goes: a bare idle worker thread adds ${result.bareWorkerAddedMiB} MiB; the agent with no plugins ${result.coreAddedMiB} MiB; with its plugins (${builtins.join(', ')}) ${result.addedMiB} MiB`);
  return result;
}

module.exports = { run };
c.mainIfDirect(module, run);
