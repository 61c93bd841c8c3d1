'use strict';
// Round-trip latency of `process info` over one connection, against an idle hello-world
// server with the agent. For comparison, `process handles` (a trivial command that runs
// on the main thread, reached over the worker's MessagePort) is measured in the same run,
// call for call interleaved with `process info` (info, handles, info, handles, ...), so
// machine noise hits both alike. Target: `process info` p50 < 2 ms.
//
//   node bench/info-latency.js [--calls 1500] [--warmup 200]

const { performance } = require('node:perf_hooks');
const c = require('./lib/common');

const TARGET_P50_MS = 2;

async function run(opts = {}) {
  const calls = c.num(opts.calls, 1500);
  const warmup = c.num(opts.warmup, 200);
  const { connect } = c.requireBuilt();
  const app = await c.startApp({ script: 'hello-server.js', agent: true });
  let client;
  try {
    let t = performance.now();
    client = await connect(app.socket, { timeoutMs: 5000, clientName: 'ispy-bench' });
    const connectMs = performance.now() - t;

    const timed = async (command) => {
      const t0 = performance.now();
      const value = await client.call('process', command, {}, { timeoutMs: 5000 });
      return { ms: performance.now() - t0, value };
    };

    const firstInfoMs = (await timed('info')).ms;
    const firstHandlesMs = (await timed('handles')).ms;
    for (let i = 0; i < warmup; i++) {
      await timed('info');
      await timed('handles');
    }

    const info = [];
    const handles = [];
    let memoryUnavailable = 0;
    let memoryError;
    const deadline = Date.now() + 120_000;
    for (let i = 0; i < calls; i++) {
      if (Date.now() > deadline) throw new Error(`only ${i} of ${calls} call pairs finished within 120 s`);
      // Alternate which goes first so neither always follows the other.
      const order = i % 2 ? ['handles', 'info'] : ['info', 'handles'];
      for (const command of order) {
        const r = await timed(command);
        if (command === 'info') {
          info.push(r.ms);
          const mem = r.value && r.value.memory && r.value.memory.mainThread;
          if (!mem || mem.unavailable) {
            memoryUnavailable++;
            memoryError ??= mem && mem.unavailable;
          }
        } else handles.push(r.ms);
      }
    }

    const infoS = c.latencySummary(info);
    const handlesS = c.latencySummary(handles);
    const result = {
      benchmark: 'info-latency',
      calls,
      warmup,
      connectMs: c.round(connectMs, 2),
      firstInfoMs: c.round(firstInfoMs, 2),
      firstHandlesMs: c.round(firstHandlesMs, 2),
      info: infoS,
      handles: handlesS,
      ratioInfoToHandlesP50: c.round(infoS.p50 / handlesS.p50, 2),
      infoAnswersWithoutMainThreadMemory: memoryUnavailable,
      ...(memoryError ? { infoMemoryError: memoryError } : {}),
      target: { infoP50Ms: TARGET_P50_MS },
      pass: infoS.p50 < TARGET_P50_MS,
    };
    console.log(
      `info-latency: process info p50 ${infoS.p50} ms, p99 ${infoS.p99} ms (n=${infoS.n}); ` +
        `process handles p50 ${handlesS.p50} ms, p99 ${handlesS.p99} ms; info/handles p50 ×${result.ratioInfoToHandlesP50}; ` +
        `connect ${result.connectMs} ms, first info ${result.firstInfoMs} ms — target p50 < ${TARGET_P50_MS} ms: ${result.pass ? 'PASS' : 'FAIL'}`,
    );
    if (memoryUnavailable) console.log(`  note: ${memoryUnavailable} info answers lacked the main thread's memory (${memoryError})`);
    return result;
  } finally {
    if (client) await c.withTimeout(client.close(), 3000, 'client close').catch(() => {});
    await app.kill();
  }
}

module.exports = { run };
c.mainIfDirect(module, run);
