'use strict';
// What one client visit costs the app (issue 12): the CPU time, on all of the app's threads
// (main thread, agent worker, V8's helpers), that one `ispy run <socket> -c "process info"`
// adds, including whatever the agent does after the client has left (closing the session,
// compacting the worker's heap).
//
// Two idle copies of bench/apps/hello-server.js with the agent, side by side: the visited
// app and a control never visited. Each visit opens a segment of --segment ms (3 s); the
// CPU both apps used in it is read from /proc/<pid>/task/*/schedstat at its start and end,
// and the visit's cost is the visited app's minus the control's (what an idle agent costs
// anyway, and what the machine's neighbours do to both alike). After the last visit a
// tail segment (5 s) collects anything deferred past its segment. The cost per visit is the
// mean over the visits (tail included), with a bootstrap 95 % interval of that mean.
// Goal: ≤ 10 ms per visit, met only when the whole interval is under it.
//
// Cross-check: /proc/<pid>/stat's utime + stime (10 ms ticks, but counting threads that
// have exited too) over the whole run, per visit.
//
//   node bench/visit-cost.js [--visits 20] [--segment 3000] [--tail 5000]

const fs = require('node:fs');
const c = require('./lib/common');
const { bootstrapCI, mean } = require('./lib/stats');
const { judge } = require('./lib/verdict');

const GOAL_MS = 10;

/** CPU ms per thread of a process (schedstat), keyed by thread id. */
function threadsCpu(pid) {
  const out = new Map();
  for (const tid of fs.readdirSync(`/proc/${pid}/task`)) {
    try {
      out.set(tid, Number(fs.readFileSync(`/proc/${pid}/task/${tid}/schedstat`, 'utf8').split(' ')[0]) / 1e6);
    } catch {
      // the thread ended between readdir and read
    }
  }
  return out;
}

/** utime + stime of the whole process in ms, threads that have exited included (10 ms ticks). */
function processTicksMs(pid) {
  const fields = fs.readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
  return (Number(fields[11]) + Number(fields[12])) * 10;
}

const sum = (m) => [...m.values()].reduce((a, b) => a + b, 0);

function delta(before, after, pid) {
  let main = 0;
  let others = 0;
  for (const [tid, ms] of after) {
    const d = ms - (before.get(tid) ?? 0);
    if (tid === String(pid)) main += d;
    else others += d;
  }
  const gone = [...before.keys()].filter((t) => !after.has(t)).length;
  return { total: main + others, main, others, gone };
}

async function run(opts = {}) {
  const visits = c.num(opts.visits, 20);
  const segmentMs = c.num(opts.segment, 3000);
  const tailMs = c.num(opts.tail, 5000);
  c.requireBuilt();
  const [visited, control] = await Promise.all([
    c.startApp({ script: 'hello-server.js', agent: true, label: 'visited' }),
    c.startApp({ script: 'hello-server.js', agent: true, label: 'control' }),
  ]);
  try {
    // Both agents finish starting (worker, plugins, the first idle compaction) before anything is read.
    await c.sleep(3000);
    // One visit unmeasured: the CLI's files in the page cache.
    await c.timed([c.BIN, 'run', control.socket, '-c', 'process info']);
    await c.sleep(segmentMs);
    const ticks0 = { v: processTicksMs(visited.pid), k: processTicksMs(control.pid) };
    const segments = [];
    let threadsGone = 0;
    for (let i = 0; i < visits; i++) {
      const t0 = Date.now();
      const v0 = threadsCpu(visited.pid);
      const k0 = threadsCpu(control.pid);
      const r = await c.timed([c.BIN, 'run', visited.socket, '-c', 'process info']);
      if (!/1 ok, 0 failed/.test(r.err)) throw new Error(`visit ${i + 1} did not succeed: ${r.err}`);
      const wait = segmentMs - (Date.now() - t0);
      if (wait > 0) await c.sleep(wait);
      const dv = delta(v0, threadsCpu(visited.pid), visited.pid);
      const dk = delta(k0, threadsCpu(control.pid), control.pid);
      threadsGone += dv.gone;
      segments.push({ ms: dv.total - dk.total, mainMs: dv.main - dk.main, otherThreadsMs: dv.others - dk.others, clientMs: r.ms, segmentMs: Date.now() - t0 });
    }
    const v0 = threadsCpu(visited.pid);
    const k0 = threadsCpu(control.pid);
    await c.sleep(tailMs);
    const tv = delta(v0, threadsCpu(visited.pid), visited.pid);
    const tk = delta(k0, threadsCpu(control.pid), control.pid);
    const tailShare = (tv.total - tk.total) / visits;
    const ticksPerVisit = (processTicksMs(visited.pid) - ticks0.v - (processTicksMs(control.pid) - ticks0.k)) / visits;
    const perVisit = segments.map((s) => s.ms + tailShare);
    const [lo, hi] = bootstrapCI(perVisit, { stat: mean });
    const m = { estimate: c.round(mean(perVisit), 2), ci95: [c.round(lo, 2), c.round(hi, 2)], n: perVisit.length };
    const verdict = judge(m, GOAL_MS, { unit: 'ms' });
    const result = {
      benchmark: 'visit-cost',
      visits,
      segmentMs,
      tailMs,
      perVisitMs: m,
      mainThreadMs: c.round(mean(segments.map((s) => s.mainMs)), 2),
      otherThreadsMs: c.round(mean(segments.map((s) => s.otherThreadsMs)), 2),
      tailPerVisitMs: c.round(tailShare, 2),
      ticksPerVisitMs: c.round(ticksPerVisit, 1),
      threadsGone,
      clientWallMs: c.round(c.median(segments.map((s) => s.clientMs)), 0),
      segments: segments.map((s) => c.round(s.ms, 2)),
      goalMs: GOAL_MS,
      verdict,
    };
    console.log(
      `visit-cost: ${m.estimate} ms of the app's CPU per visit (95% CI ${m.ci95.join('–')} ms; main thread ${result.mainThreadMs}, other threads ${result.otherThreadsMs}, after the segments ${result.tailPerVisitMs}; ` +
        `ticks cross-check ${result.ticksPerVisitMs} ms) — goal ≤ ${GOAL_MS} ms: ${verdict.text}`,
    );
    return result;
  } finally {
    await Promise.all([visited.kill(), control.kill()]);
  }
}

module.exports = { run, GOAL_MS };
c.mainIfDirect(module, run);
