'use strict';
// bench/RESULTS.md as the full run writes it (issue 12): every figure from that one run, at
// the commit named at the top. First the goals of the issue, each row met / not met /
// cannot resolve (bench/lib/verdict.js: met only when the whole 95 % interval lies within
// the goal); then each part's figures. Pure functions of the run's results: run.js writes
// the file, and `node bench/run.js --from bench/out/cost-<date>.json` renders it again.

const { show, showTarget, cell, MET, NOT_MET } = require('./verdict');

const LABEL = { http: 'node:http hello-world', express: 'Express', fastify: 'Fastify' };
const esc = (s) => String(s).replace(/\|/g, '\\|').replace(/\n/g, ' ');
const table = (head, rows) => [`| ${head.join(' | ')} |`, `|${head.map(() => '---').join('|')}|`, ...rows.map((r) => `| ${r.map(esc).join(' | ')} |`)];
const n = (x, d = 1) => (Number.isFinite(x) ? (Math.round(x * 10 ** d) / 10 ** d).toString() : 'n/a');
const inflightLabel = (g) => `${g.inflight.toLocaleString('en')} in flight`;
const instrLoadLabel = (g) => (g.held ? `${g.inflight.toLocaleString('en')} in flight (${g.held.toLocaleString('en')} held)` : inflightLabel(g));
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor((xs.length - 1) / 2)];
const pct = (x) => (Number.isFinite(x) ? `${n(x, 2)} %` : 'n/a');

/** Every goal row: [goal, measured, target, result]; also returns the judgements for the tally. */
function goalRows(by) {
  const rows = [];
  const judged = [];
  const add = (goal, measured, target, j) => {
    rows.push([goal, measured, target, cell(j)]);
    judged.push({ goal, j });
  };
  const fw = by.frameworks;
  if (fw?.error) rows.push(['frameworks', `did not finish: ${fw.error}`, '—', '**NOT MET** (no figure)']);
  for (const g of fw?.groups ?? []) {
    const where = `${LABEL[g.framework]}, ${inflightLabel(g)}`;
    if (g.error) {
      rows.push([where, `did not finish: ${g.error}`, '—', '**NOT MET** (no figure)']);
      continue;
    }
    const r = g.summary.ratios;
    const v = g.verdicts;
    add(`${where}: default agent, CPU per request`, show(r['default/bare'].cpu), showTarget(1.02), v.defaultCpu);
    add(`${where}: default agent, req/s`, show(r['default/bare'].rps), Number.isFinite(v.defaultRps.target) ? `${showTarget(v.defaultRps.target, 'higher')} (bare's own spread)` : "within bare's own spread", v.defaultRps);
    add(`${where}: default agent, p99`, show(r['default/bare'].p99), Number.isFinite(v.defaultP99.target) ? `${showTarget(v.defaultP99.target)} (bare's own spread)` : "within bare's own spread", v.defaultP99);
    add(`${where}: \`requests track\` armed, CPU per request`, show(r['armed/bare'].cpu), showTarget(1.15), v.armedCpu);
  }
  const ins = by.instructions;
  if (ins?.error) rows.push(['instructions per request (callgrind)', `did not finish: ${ins.error}`, '—', '**NOT MET** (no figure)']);
  for (const g of ins?.groups ?? []) {
    const where = `${LABEL[g.framework]}, ${instrLoadLabel(g)}`;
    if (g.error) {
      rows.push([`${where}: instructions per request`, `did not finish: ${g.error}`, '—', '**NOT MET** (no figure)']);
      continue;
    }
    if (g.ratios.default) add(`${where}: default agent, **instructions** per request (callgrind; settles the ×${ins.goals.default} goal)`, show(g.ratios.default), showTarget(ins.goals.default), g.verdicts.default);
    if (g.ratios.armed) add(`${where}: \`requests track\` armed, **instructions** per request (callgrind; settles the ×${ins.goals.armed} goal)`, show(g.ratios.armed), showTarget(ins.goals.armed), g.verdicts.armed);
  }
  const po = by['profile-overhead'];
  if (po?.error) rows.push(['profile cpu', `did not finish: ${po.error}`, '—', '**NOT MET** (no figure)']);
  else if (po?.cpu) add('`profile cpu` (1 ms) ÷ v8-profiler-next (1 ms), CPU per request, same run', show(po.cpu.verdict), showTarget(po.cpu.verdict.target), po.cpu.verdict);
  const vc = by['visit-cost'];
  if (vc?.error) rows.push(['client visit', `did not finish: ${vc.error}`, '—', '**NOT MET** (no figure)']);
  else if (vc) add("one client visit (`ispy run <socket> -c 'process info'`): the app's CPU, all threads", show(vc.perVisitMs, 'ms', 2), showTarget(vc.goalMs, 'lower', 'ms'), vc.verdict);
  const rf = by['run-fanout'];
  if (rf?.error) rows.push(['fan-out', `did not finish: ${rf.error}`, '—', '**NOT MET** (no figure)']);
  else if (rf) {
    const [, mid, big] = rf.sizes;
    add(`\`ispy run process info\` over ${big} local agents ÷ over ${mid} (wall)`, show(rf.linear, 'ratio', 2), showTarget(rf.goals.linearRatio), rf.verdicts.linear);
    add(`agents' CPU in the ${rf.afterMs / 1000} s after the run over ${big}, above idle, per agent (no burst)`, show(rf.burstBig, 'ms', 2), showTarget(rf.goals.burstMsPerAgent, 'lower', 'ms'), rf.verdicts.burst);
  }
  const su = by.startup;
  if (su?.error) rows.push(['preload', `did not finish: ${su.error}`, '—', '**NOT MET** (no figure)']);
  else if (su) add("preload: the app's first line held back (paired with − without)", show(su.delay, 'ms', 1), showTarget(su.goalMs, 'lower', 'ms'), su.verdict);
  return { rows, judged };
}

function frameworkSection(fw) {
  const out = ['## Frameworks: node:http, Express, Fastify (bench/frameworks.js)', ''];
  if (fw.error) return [...out, `**Did not finish:** ${fw.error}`, ''];
  const v = fw.versions;
  out.push(
    `Each app (bench/apps/framework-server.js) started five ways in every round: **bare**; **bare′** (a second bare app: bare′ ÷ bare is what "no difference" looks like, and the bare app's own spread); **default** (\`-r ispy/register\`); **armed** (the same, \`requests track\` armed all round); **otel** (no agent, OpenTelemetry HTTP instrumentation ${v.otelHttp ?? '?'} with SDK ${v.otelSdk ?? '?'}, spans dropped by the exporter). Express ${v.express}, Fastify ${v.fastify}. ` +
      'Load: our generator (bench/lib/loadgen.js), closed loop over raw keep-alive connections, one request open per connection: 10 in flight = 10 connections answered at once; 10,000 in flight = 10,000 connections and every answer held ' +
      `${fw.groups.find((g) => g.delayMs)?.delayMs ?? 1000} ms by the app (a timer), so 10,000 requests are in the app's hands at any moment (p99 is then the latency over that delay). ` +
      'Windows alternate between the five servers (their order shuffled afresh each round, so no server always follows the same neighbour); each window is divided by the bare level interpolated around it; 95 % intervals are clustered by round (rounds resampled, then windows). Rounds go on until every goal of the group is settled or its time budget is spent.',
    '',
  );
  const rows = [];
  for (const g of fw.groups) {
    if (g.error) {
      rows.push([LABEL[g.framework], inflightLabel(g), `did not finish: ${g.error}`, '', '', '', '']);
      continue;
    }
    const L = g.summary.levels;
    const r = g.summary.ratios;
    for (const k of ['bare′', 'default', 'armed', 'otel']) {
      const x = r[`${k}/bare`];
      rows.push([LABEL[g.framework], inflightLabel(g), k, show(x.cpu), show(x.rps), show(x.p99), `${L[k].cpuUsPerRequest} µs, ${L[k].rps} req/s, p99 ${L[k].p99Ms} ms (bare ${L.bare.cpuUsPerRequest} µs, ${L.bare.rps} req/s, p99 ${L.bare.p99Ms} ms)`]);
    }
  }
  out.push(...table(['app', 'load', 'variant', 'CPU per request ÷ bare', 'req/s ÷ bare', 'p99 ÷ bare', 'levels (median window)'], rows), '');
  const runs = fw.groups
    .filter((g) => !g.error)
    .map((g) => `${LABEL[g.framework]} at ${inflightLabel(g)}: ${g.rounds} rounds of ${g.summary.windowsPerServerPerRound} windows per server (${g.stoppedBecause === 'settled' ? 'every goal settled' : g.stoppedBecause.startsWith('budget') ? `time budget spent${g.stoppedBecause.slice(6)}` : 'round limit'}, ${g.elapsedS} s), bare window-to-window noise CPU ${g.summary.baselineNoisePct.cpu.median} %, armed throughout ${g.checks.armedThroughout ? 'yes' : '**no**'}, OTel spans per round ${g.checks.otelSpans.join(', ')}`);
  out.push(...runs.map((x) => `- ${x}`), '');
  return out;
}

function instructionSection(ins) {
  const out = ['## Instructions per request under callgrind (bench/instructions.js)', ''];
  if (ins.error) return [...out, `**Did not finish:** ${ins.error}`, ''];
  const m = ins.method;
  out.push(
    `The hello-world of the frameworks section, each app under \`valgrind --tool=callgrind --smc-check=all-non-file\` (${ins.valgrind}), every thread of the process counted (the agent's worker too), user-space instructions only. ` +
      `A fresh process per repeat and variant (bare, default, armed: \`requests track\` armed through the real client before any load); ${m.repeats} repeats, interleaved (each repeat runs every variant before the next), ${m.parallel} processes at a time. ` +
      `Start-up and a warm-up of ${m.warmup.toLocaleString('en')} requests (plus 0–999, a different number per process, so the counted requests meet the garbage collector at a different phase) run with counting off; then two counted segments of ${m.n1} and ${m.n2} requests at ${m.measuredConnections} in flight (our load generator, outside valgrind), each dumped and zeroed: per request = (I(${m.n2}) − I(${m.n1})) ÷ ${m.n2 - m.n1}. ` +
      `A larger in-flight size adds requests the app holds (GET /held, answered after an hour), opened and confirmed held before counting starts: the counted requests then run beside them. ` +
      'Ratio to bare: geometric means of the repeats, 95 % interval by Welch\'s t on the log counts (degrees of freedom rounded down). Spread: half the range of a variant\'s repeats, in % of their median.',
    '',
    '**Which measure settles the ×1.02 and ×1.15 goals:** these instruction rows. The CPU-time rows of the frameworks section stay as measured, but on this shared VM their windows move by 10–30 % from one to the next, so their intervals cannot come within 2 %; an instruction count does not depend on what else the machine runs, and its repeats agree to the spread shown here. What a count leaves out: the kernel\'s time in system calls, and what an instruction costs (cache misses, stalls); the agent\'s timers run at a rate per second, not per request, so under valgrind (tens of times slower) they weigh more per request than at full speed, which errs against the agent.',
    '',
  );
  const rows = [];
  for (const g of ins.groups) {
    if (g.error) {
      rows.push([LABEL[g.framework], instrLoadLabel(g), `did not finish: ${g.error}`, '', '', '']);
      continue;
    }
    for (const [v, lv] of Object.entries(g.levels)) {
      const r = g.ratios[v];
      rows.push([LABEL[g.framework], instrLoadLabel(g), v, `${lv.median.toLocaleString('en')} (${lv.repeats.map((x) => x.toLocaleString('en')).join(', ')})`, r ? show(r) : '—', r ? pct(r.spreadPct.a) : pct(g.ratios[Object.keys(g.ratios)[0]]?.spreadPct.b)]);
    }
  }
  out.push(...table(['app', 'load', 'variant', 'instructions per request: median (repeats)', '÷ bare', 'spread of repeats'], rows), '');
  const failed = ins.groups.flatMap((g) => (g.failed ?? []).map((f) => `${LABEL[g.framework]} ${instrLoadLabel(g)} ${f.variant} repeat ${f.rep + 1}: ${f.error}`));
  if (failed.length) out.push('Processes that failed (left out of the figures):', '', ...failed.map((f) => `- ${f}`), '');
  out.push(`${ins.processes.length} processes in ${Math.round(ins.elapsedS / 60)} min ${ins.elapsedS % 60} s of wall time.`, '');
  return out;
}

function profileSection(po, markdown) {
  const out = ['## Profilers side by side (bench/profile-overhead.js)', ''];
  if (po.error) return [...out, `**Did not finish:** ${po.error}`, ''];
  return [...out, markdown(po), ''];
}

function visitSection(vc) {
  const out = ['## A client visit (bench/visit-cost.js)', ''];
  if (vc.error) return [...out, `**Did not finish:** ${vc.error}`, ''];
  return [
    ...out,
    `${vc.visits} visits (\`ispy run <socket> -c "process info"\`, the real binary), one every ${vc.segmentMs / 1000} s, to an idle app with the agent; beside it a control app with the agent, never visited. Per visit, the CPU of every thread of the visited app (schedstat) minus the control's over the same segment, plus an equal share of a ${vc.tailMs / 1000} s tail after the last visit: **${show(vc.perVisitMs, 'ms', 2)}** (main thread ${vc.mainThreadMs} ms, other threads ${vc.otherThreadsMs} ms, tail ${vc.tailPerVisitMs} ms per visit; cross-check from /proc/<pid>/stat ticks ${vc.ticksPerVisitMs} ms). The client's own wall time per visit: ${vc.clientWallMs} ms (median).`,
    '',
  ];
}

function fanoutSection(rf) {
  const out = [`## \`ispy run\` over ${(rf.sizes ?? [10, 50, 200]).join(', ')} local agents (bench/run-fanout.js)`, ''];
  if (rf.error) return [...out, `**Did not finish:** ${rf.error}`, ''];
  const rows = [['`ispy --version` (the CLI\'s own start-up)', `${rf.wallMs.version.median} ms`, '—', '—', '—']];
  for (const s of rf.sizes) {
    const k = String(s);
    rows.push([`\`ispy run\` over ${s} agents, \`process info\``, `${rf.wallMs[k].median} ms`, `×${rf.overVersion[k]}`, `${rf.perAgentBeyondVersionMs[k]} ms`, `agents ${rf.burstMsPerAgent[k].mean} ms per agent; host ${rf.hostBurstMs[k].median} ms`]);
  }
  return [
    ...out,
    `${rf.sizes[2]} copies of bench/apps/hello-server.js with the agent, all alive through the run (started in ${rf.startS} s; their idle CPU together ${n(rf.idleAgentsCpuShare * 100, 1)} % of a core). ${rf.rounds} rounds, the four commands in a rotated order, medians of wall time from spawn to exit. After each run, the agents' CPU over ${rf.afterMs / 1000} s minus their idle rate before it (the burst a run leaves), and the host's busy CPU over the same time minus its rate before (/proc/stat).`,
    '',
    ...table(['command', 'wall (median)', '÷ --version', 'per agent beyond --version', `CPU after the run, over ${rf.afterMs / 1000} s, above idle`], rows),
    '',
  ];
}

const GC_VARIANTS = {
  bare: 'bare app',
  observer: 'bare app + a GC PerformanceObserver alone (what `process gc` keeps)',
  default: 'default agent (`-r ispy/register`)',
  'default-noprocess': 'default agent, `process` plugin disabled (no GC observer)',
  'default-norequests': 'default agent, `requests` plugin disabled',
  'fastify-start': 'bare app + the fastify.initialization subscription alone',
  gcprofiler: 'bare app + v8.GCProfiler alone',
};

function gcSection(gc) {
  const out = ["## What the agent does to the app's garbage collection (bench/gc-pattern.js)", ''];
  if (gc.error) return [...out, `**Did not finish:** ${gc.error}`, ''];
  const cols = { scavenges: 'scavenges per 100k requests', pauseMs: 'pause ms per 100k requests', maxPause: 'longest pause ms', bytesPerReq: 'bytes allocated per request', promotedPerReq: 'bytes promoted per request', cpuUsPerReq: 'CPU µs per request' };
  const rows = gc.variants.map((v) => [GC_VARIANTS[v] ?? v, ...Object.keys(cols).map((k) => n(gc.medians[v]?.[k], 2))]);
  return [
    ...out,
    `${LABEL[gc.framework] ?? gc.framework} at 10 in flight, ${gc.requests.toLocaleString('en')} counted requests per process after ${gc.warmup.toLocaleString('en')} of warm-up, ${gc.rounds} rounds (variants interleaved, shuffled per round), medians; counted by V8 itself (\`--trace-gc-nvp\`), so nothing inside the app observes what is measured. Counts, not a verdict: the CPU column moves with the machine's load.`,
    '',
    ...table(['variant', ...Object.values(cols)], rows),
    '',
  ];
}

function startupSection(su, si) {
  const out = ["## The preload's hold on the app's first line (bench/startup.js)", ''];
  if (su.error) return [...out, `**Did not finish:** ${su.error}`, ''];
  return [
    ...out,
    `${su.runs} pairs of fresh processes (\`node [-r ispy/register] -e <first line>\`, the first line noting \`performance.now()\` and printing it from a \`setImmediate\`; the order alternating): the first line at ${su.withoutMs} ms without the preload and ${su.withMs} ms with it (medians; ranges ${su.withoutRangeMs.join('–')} / ${su.withRangeMs.join('–')} ms). Held back, median of the paired differences: **${show(su.delay, 'ms', 1)}**.`,
    '',
    ...(su.firstTurnDelay
      ? [
          `The agent sets itself up at the end of the app's synchronous start, before the event loop's first turn (src/agent/early.ts; before the first line when the config has traces or plugins). Where that time went: the loop's first turn came **${show(su.firstTurnDelay, 'ms', 1)}** later with the preload (not a goal; an observation).`,
          '',
        ]
      : []),
    ...(si && !si.error
      ? [
          `In instructions (bench/startup-instructions.js: callgrind, every thread, V8's seed fixed; medians of ${si.bare.length}): a first line that exits at once runs after ${(median(si.bare) / 1e6).toFixed(2)} M instructions bare and **+${si.addedMillions} M** with the preload; one that exits in a tick it queues (after the agent's setup), **+${si.setupAddedMillions} M**.`,
          '',
        ]
      : si?.error
        ? [`bench/startup-instructions.js did not finish: ${si.error}`, '']
        : []),
  ];
}

function snapshotSection(sn, markdown) {
  const out = ['## Heap snapshots, paired (bench/snapshot.js)', ''];
  if (sn.error) return [...out, `**Did not finish:** ${sn.error}`, ''];
  return [...out, markdown(sn), ''];
}

/**
 * The whole of RESULTS.md. meta: { date, node, machine, loadBefore, loadAfter, seconds,
 * command, code: { commit, clean, dirty[], changedDuringRun } }; results: the benchmarks'
 * result objects; markdowns: { 'profile-overhead': fn, snapshot: fn }.
 */
function renderResults(results, meta, markdowns) {
  const by = Object.fromEntries(results.map((r) => [r.benchmark, r]));
  const { rows, judged } = goalRows(by);
  const count = (v) => judged.filter((x) => x.j.verdict === v).length;
  const unresolved = judged.length - count(MET) - count(NOT_MET);
  const m = meta.machine;
  const code = meta.code;
  const lines = ['# Benchmark results', ''];
  if (!code.clean || code.changedDuringRun) {
    lines.push(
      `> **⚠ NOT FROM A CLEAN TREE.** ${code.changedDuringRun ? `The code changed during the run (${code.changedDuringRun}). ` : ''}${code.dirty.length ? `Uncommitted changes were built and measured: ${code.dirty.map((d) => `\`${d}\``).join(', ')}. ` : ''}These figures do not belong to commit \`${code.commit}\` alone; do not quote them.`,
      '',
    );
  }
  lines.push(
    `Every figure in this file comes from one run of \`${meta.command}\` at commit **\`${code.commit}\`**${code.clean && !code.changedDuringRun ? ' (clean working tree, built by the run)' : ''}: ${meta.date}, Node ${meta.node}, ${m.nproc} CPUs (${m.model}), ${m.memGiB} GiB, ${m.kernel}; load average ${meta.loadBefore} before, ${meta.loadAfter} after; ${Math.round(meta.seconds / 60)} min. Figures of benchmarks run on their own (the agent and plugin groups of issues 2–6, reliability, ssh, attach) are in [RESULTS-other.md](RESULTS-other.md), each with its own commit.`,
    '',
    '## Goals (issue 12)',
    '',
    'Each a ratio against the bare app (or a time) measured in the same interleaved run, with its 95 % confidence interval. **met**: the whole interval lies within the goal; **NOT MET**: the whole interval lies outside it; otherwise the run could not tell at the noise it measured, and says how wide its interval was.',
    '',
    ...table(['goal', 'measured', 'target', 'result'], rows),
    '',
    `${count(MET)} met, ${count(NOT_MET)} not met, ${unresolved} unresolved at this noise, of ${judged.length}.`,
    '',
  );
  if (by.frameworks) lines.push(...frameworkSection(by.frameworks));
  if (by.instructions) lines.push(...instructionSection(by.instructions));
  if (by['profile-overhead']) lines.push(...profileSection(by['profile-overhead'], markdowns['profile-overhead']));
  if (by['visit-cost']) lines.push(...visitSection(by['visit-cost']));
  if (by['run-fanout']) lines.push(...fanoutSection(by['run-fanout']));
  if (by['gc-pattern']) lines.push(...gcSection(by['gc-pattern']));
  if (by.startup) lines.push(...startupSection(by.startup, by['startup-instructions']));
  if (by.snapshot) lines.push(...snapshotSection(by.snapshot, markdowns.snapshot));
  lines.push(`Reproduce: \`${meta.command}\` on a quiet machine (see bench/README.md); the full JSON of the run is in bench/out/ (not committed).`, '');
  return lines.join('\n');
}

module.exports = { renderResults, goalRows };
