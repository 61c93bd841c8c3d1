'use strict';
// Runs the benchmarks, each in its own process (so one benchmark's leftovers cannot colour
// the next), collects the JSON each prints, and writes the results.
//
//   node bench/run.js                  the full run (issue 12, ~30 min on 2 cores): builds dist/,
//                                      refuses a dirty tree, and writes the whole of RESULTS.md
//                                      from this one run at this one commit
//   node bench/run.js --quick          smoke test of the same (~3 min): small sizes, RESULTS.md
//                                      left alone (the page it would write goes to bench/out/)
//   node bench/run.js --only startup,visit-cost   some of them, printed only
//   node bench/run.js --only instructions          instructions per request under callgrind
//                                      (the measure of the ×1.02 / ×1.15 goals; needs valgrind)
//   node bench/run.js --allow-dirty    a full run on uncommitted code; RESULTS.md says so at its top
//   node bench/run.js --budget-scale 2 the same with the frameworks' and profilers' time budgets
//                                      doubled (~50 min): more rounds, narrower intervals
//   node bench/run.js --no-write       run, print, leave RESULTS.md alone
//   node bench/run.js --from bench/out/cost-<date>.json   RESULTS.md again from a saved full run
//
// The older groups write into RESULTS-other.md, each section with its own commit:
//   node bench/run.js --group agent    issue 2: info-latency, stack-spinning, rss, idle-overhead, startup (~4 min)
//   node bench/run.js --group plugins  issues 4–6: requests-overhead, snapshot, profile-overhead,
//                                      trace-cost, wrap-breakdown (~15 min); each its own block
//   node bench/run.js --group all      every group (the cost group as the full run)

const { execFileSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { parseArgs, ROOT, runScript } = require('./lib/common');
const { renderResults, goalRows } = require('./lib/report');
const { withinNoise, cpuWithin } = require('./idle-overhead');

const RESULTS = path.join(__dirname, 'RESULTS.md');
// Everything but the full run of the default group is written here, each with its own commit.
const RESULTS_OTHER = path.join(__dirname, 'RESULTS-other.md');
const OTHER_TITLE = '# Benchmark results: benchmarks run on their own\n\nFigures of the benchmarks that are not part of the full run (`node bench/run.js`, whose figures are in RESULTS.md, all from one commit). Each section names the run and the commit it comes from; they differ from section to section.\n';
const OUT_DIR = path.join(__dirname, 'out');
const SECTION = '## Agent (issue 2)';
const BEGIN = '<!-- bench/run.js: generated, begin -->';
const END = '<!-- bench/run.js: generated, end (notes below this line are kept) -->';

// Issue 12, the default group: the always-on cost, every part of it in one run. `args` are
// the full run's sizes, chosen so the whole group ends within about 30 minutes on 2 cores
// (each part also has its own time budget, so a noisy machine costs rounds, not time).
const COST = [
  { name: 'frameworks', timeoutMs: 1_500_000, args: ['--minutes-small', '2', '--minutes-big', '4'], quick: ['--inflight', '10,500', '--delay', '200', '--pairs', '1', '--min-rounds', '1', '--max-rounds', '1'] },
  { name: 'instructions', timeoutMs: 3_600_000, args: ['--frameworks', 'http,fastify', '--inflight', '10,1000', '--big-frameworks', 'http', '--seed-pairs', '--repeats', '4'], quick: ['--frameworks', 'http', '--inflight', '10,200', '--repeats', '2', '--warmup', '1000', '--n1', '100', '--n2', '300'] },
  { name: 'profile-overhead', timeoutMs: 360_000, args: ['--no-gate', '--no-rebuild', '--minutes', '2.5'], quick: ['--no-gate', '--no-rebuild', '--rounds', '1', '--max-rounds', '1', '--pairs', '2'] },
  { name: 'visit-cost', timeoutMs: 240_000, args: [], quick: ['--visits', '3', '--segment', '1500', '--tail', '1500'] },
  { name: 'run-fanout', timeoutMs: 600_000, args: ['--rounds', '4', '--quiet', '2000', '--after', '6000'], quick: ['--sizes', '2,4,8', '--rounds', '1', '--quiet', '500', '--after', '1000'] },
  { name: 'startup', timeoutMs: 180_000, args: [], quick: ['--runs', '5', '--max-runs', '5'] },
  { name: 'gc-pattern', timeoutMs: 900_000, args: ['--rounds', '2', '--requests', '60000', '--warmup', '10000', '--variants', 'bare,observer,default,default-noprocess'], quick: ['--rounds', '1', '--requests', '5000', '--warmup', '1000', '--variants', 'bare,default'] },
  // Deterministic to ±0.2 M instructions: one repeat of each side is enough.
  { name: 'startup-instructions', timeoutMs: 900_000, args: ['--repeats', '1'], quick: ['--repeats', '1'] },
  { name: 'snapshot', timeoutMs: 600_000, args: ['--methods', 'ispy,v8', '--rounds', '4'], quick: ['--methods', 'ispy,v8', '--rounds', '1', '--heap-mb', '10'] },
].map((b) => ({ ...b, group: 'cost' }));

const BENCHMARKS = [
  ...COST,
  { name: 'info-latency', timeoutMs: 180_000, quick: ['--calls', '300', '--warmup', '50'] },
  { name: 'stack-spinning', timeoutMs: 120_000, quick: ['--calls', '100', '--spin', '8000'] },
  { name: 'rss', timeoutMs: 480_000, quick: ['--starts', '2', '--settle', '1500', '--requests', '5000'] },
  { name: 'idle-overhead', timeoutMs: 900_000, quick: ['--rounds', '1', '--pairs', '6'] },
  { name: 'startup', group: 'agent', timeoutMs: 180_000, quick: ['--runs', '5', '--max-runs', '5'] },
  // Issues 4–6: each renders its own block (its module's `markdown(result)`) in its section.
  { name: 'requests-overhead', group: 'plugins', section: '## requests plugin (issue 4)', timeoutMs: 1_200_000, quick: ['--rounds', '1', '--pairs', '3', '--profile-seconds', '2'] },
  { name: 'snapshot', group: 'plugins', section: '## profile and heap (issue 5)', timeoutMs: 1_200_000, quick: ['--rounds', '1', '--heap-mb', '20'] },
  { name: 'profile-overhead', group: 'plugins', section: '## profile and heap (issue 5)', timeoutMs: 1_200_000, quick: ['--rounds', '1', '--pairs', '3', '--cycles', '1', '--count', '4', '--no-rebuild'] },
  { name: 'trace-cost', group: 'plugins', section: '## trace (issue 6)', timeoutMs: 900_000, quick: ['--cycles', '1', '--count', '4'] },
  { name: 'wrap-breakdown', group: 'plugins', section: '## trace (issue 6)', timeoutMs: 300_000, quick: ['--rounds', '3'] },
];
const groupOf = (b) => b.group ?? 'agent';
const GROUPS = ['cost', 'agent', 'plugins', 'all'];

async function runOne(bench, extraArgs) {
  const { result, exited } = await runScript(path.join(__dirname, `${bench.name}.js`), extraArgs, { timeoutMs: bench.timeoutMs, label: bench.name });
  return result ?? { benchmark: bench.name, error: `exited with ${exited} before reporting a result` };
}

/** When and where a run happened: the date it ended, Node, the machine, the load before and after, its length. */
function runMeta(startedMs, loadBefore) {
  return {
    date: new Date().toISOString().replace(/\.\d+Z$/, 'Z'),
    node: process.version,
    machine: machine(),
    loadBefore,
    loadAfter: os.loadavg().map((x) => x.toFixed(2)).join(' '),
    seconds: (Date.now() - startedMs) / 1000,
  };
}

function sh(cmd, args) {
  try {
    return execFileSync(cmd, args, { cwd: ROOT, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
  } catch {
    return '';
  }
}

function machine() {
  let model = 'unknown';
  try {
    model = /^model name\s*:\s*(.+)$/m.exec(fs.readFileSync('/proc/cpuinfo', 'utf8'))?.[1]?.trim() ?? model;
  } catch {
    // not Linux
  }
  const memGiB = Math.round((os.totalmem() / 2 ** 30) * 10) / 10;
  return { nproc: os.availableParallelism(), model, memGiB, kernel: `${os.type()} ${os.release()}` };
}

function codeState() {
  const commit = sh('git', ['rev-parse', '--short', 'HEAD']);
  const dirty = sh('git', ['status', '--porcelain', '--', 'src', 'plugins', 'package.json'])
    .split('\n')
    .filter(Boolean);
  return { commit, dirtyFiles: dirty.length, dirty };
}

const fmt = (v, unit = '') => (v === undefined || v === null || Number.isNaN(v) ? 'n/a' : `${v}${unit}`);
/** A percentage with its sign always shown: +2.1, -0.4. */
const signed = (v) => (v > 0 ? `+${v}` : `${v}`);
const verdict = (ok) => (ok === undefined ? '—' : ok ? 'pass' : '**FAIL**');

function rowsFor(results) {
  const rows = [];
  const by = Object.fromEntries(results.map((r) => [r.benchmark, r]));
  const err = (name) => by[name]?.error;
  for (const r of results) if (r.error) rows.push([`${r.benchmark}`, `did not finish: ${r.error}`, '—', '**FAIL**']);

  const il = by['info-latency'];
  if (il && !err('info-latency')) {
    rows.push(['`process info` round trip, p50', fmt(il.info.p50, ' ms'), `< ${il.target.infoP50Ms} ms`, verdict(il.info.p50 < il.target.infoP50Ms)]);
    rows.push(['`process info` round trip, p99', fmt(il.info.p99, ' ms'), '—', '—']);
    rows.push(['`process handles` (main-thread command) p50 / p99, same run', `${fmt(il.handles.p50, ' ms')} / ${fmt(il.handles.p99, ' ms')}`, '—', '—']);
    rows.push(['info ÷ handles, p50', `×${il.ratioInfoToHandlesP50}`, '—', '—']);
  }

  const io = by['idle-overhead'];
  if (io && !err('idle-overhead')) {
    const w = io.with;
    rows.push([
      'idle agent: HTTP throughput with ÷ without (median)',
      `×${w.ratio.median} → ${signed(-w.throughputOverheadPct)}% req/s (95% CI ×${w.ratio.ci95.join('–×')}; IQR ×${w.ratio.p25}–×${w.ratio.p75}; round medians ${w.ratio.roundMedians.map((x) => `×${x}`).join(', ')})`,
      `< ${io.target.throughputOverheadPct}% (the whole 95% CI)`,
      verdict(withinNoise(w, io.target.throughputOverheadPct)),
    ]);
    rows.push(['idle agent: requests/s without / with (median window)', `${io.without.rps} / ${w.rps} (baseline window-to-window noise: median ${io.baselineNoisePct.median}%)`, '—', '—']);
    rows.push([
      'idle agent: server CPU per request with ÷ without (median)',
      `×${w.cpuPerRequestRatio.median} → ${signed(w.cpuOverheadPct)}% (${io.without.cpuUsPerRequest} → ${w.cpuUsPerRequest} µs; 95% CI ×${w.cpuPerRequestRatio.ci95.join('–×')}; round medians ${w.cpuPerRequestRatio.roundMedians.map((x) => `×${x}`).join(', ')})`,
      '< 1% (same goal, sharper measure; the whole 95% CI)',
      verdict(cpuWithin(w, 1)),
    ]);
    if (io.core) {
      rows.push([
        `idle agent core only (plugins disabled: ${io.core.disabledPlugins.join(', ')}): throughput / CPU per request`,
        `×${io.core.ratio.median} (${signed(-io.core.throughputOverheadPct)}% req/s) / ×${io.core.cpuPerRequestRatio.median} (${signed(io.core.cpuOverheadPct)}% CPU)`,
        '— (diagnostic)',
        '—',
      ]);
    }
  }

  const rss = by.rss;
  if (rss && !err('rss')) {
    const target = `< ${rss.target.addedMB} MB (${rss.target.addedMiB} MiB)`;
    const w = rss.warm;
    rows.push([`added RSS, idle app after serving ${rss.requests} requests (median of ${rss.starts} starts)`, `${w.addedMiB} MiB (${w.withoutMiB} → ${w.withMiB} MiB; range ${w.rangeMiB.join('–')}; anonymous ${w.anonMiB}, file-backed ${w.fileMiB})`, target, verdict(rss.pass)]);
    rows.push(['added RSS after one `process info` + `process stack` visit', `${rss.visit.addedMiB} MiB (range ${rss.visit.rangeMiB.join('–')})`, target, verdict(rss.passAfterVisit)]);
    rows.push([
      'added RSS, cold: before the app has served a request (worst case)',
      `${rss.cold.addedMiB} MiB (range ${rss.cold.rangeMiB.join('–')}; anonymous ${rss.cold.anonMiB}, file-backed ${rss.cold.fileMiB}); the app alone grew ${w.baselineGrowthMiB} MiB serving its requests`,
      target,
      verdict(rss.passCold),
    ]);
    rows.push([`added RSS of references, warm / cold: one bare idle worker thread; agent with no plugins`, `${w.bareWorkerMiB} / ${rss.cold.bareWorkerMiB} MiB; ${w.coreMiB} / ${rss.cold.coreMiB} MiB`, '— (diagnostic)', '—']);
  }

  const su = by.startup;
  if (su && !err('startup')) {
    rows.push([`the app's first line, from process start, without / with the preload (medians of ${su.runs})`, `${su.withoutMs} / ${su.withMs} ms: held back ${su.delayMs} ms (ranges ${su.withoutRangeMs.join('–')} / ${su.withRangeMs.join('–')} ms)`, '— (observation)', '—']);
  }

  const ss = by['stack-spinning'];
  if (ss && !err('stack-spinning')) {
    rows.push([`\`process stack\` while the main thread spins, p50 (${ss.callsWhileSpinning} calls over ${Math.round(ss.spinMs / 1000)} s)`, fmt(ss.spinning.p50, ' ms'), `< ${ss.target.p50Ms} ms`, verdict(ss.spinning.p50 < ss.target.p50Ms && ss.callsWhileSpinning >= ss.target.minCalls)]);
    rows.push(['`process stack` while spinning, p99 / max', `${fmt(ss.spinning.p99, ' ms')} / ${fmt(ss.spinning.max, ' ms')}`, '—', '—']);
    rows.push(['`process stack` on an idle app, interleaved, p50 / p99', `${fmt(ss.idleBaseline.p50, ' ms')} / ${fmt(ss.idleBaseline.p99, ' ms')} (spinning ÷ idle p50 ×${ss.ratioSpinningToIdleP50})`, '—', '—']);
    rows.push(['answers naming the spinning function', `${ss.answersNamingSpinFunction}/${ss.callsWhileSpinning} (${ss.answersWithSpinFunctionOnTop} with it on top)`, 'all', verdict(ss.allNamed)]);
    const t = (v) => (typeof v === 'number' ? `${v} ms` : v);
    rows.push(['SIGTERM to the spinning app: time to exit with / without the agent', `${t(ss.sigterm.withAgentMs)} / ${t(ss.sigterm.withoutAgentMs)}`, '— (observation)', '—']);
  }
  return rows;
}

function missed(results) {
  const out = [];
  const by = Object.fromEntries(results.map((r) => [r.benchmark, r]));
  for (const r of results) if (r.error) out.push(`${r.benchmark} did not finish: ${r.error}.`);
  const il = by['info-latency'];
  if (il && !il.error && !il.pass) out.push(`\`process info\` p50 is ${il.info.p50} ms, over the ${il.target.infoP50Ms} ms target.`);
  const io = by['idle-overhead'];
  if (io && !io.error) {
    if (!withinNoise(io.with, io.target.throughputOverheadPct)) out.push(`The idle agent costs ${io.with.throughputOverheadPct}% of HTTP throughput (median ratio ×${io.with.ratio.median}), its 95% CI not within the 1% target (CI ×${io.with.ratio.ci95.join("–×")}).`);
    if (!cpuWithin(io.with, 1)) out.push(`The idle agent adds ${io.with.cpuOverheadPct}% server CPU per request (×${io.with.cpuPerRequestRatio.median}; its 95% CI ×${io.with.cpuPerRequestRatio.ci95.join("–×")} not within ×1.01).`);
  }
  const rss = by.rss;
  if (rss && !rss.error) {
    const over = `over the ${rss.target.addedMB} MB (${rss.target.addedMiB} MiB) target`;
    if (!rss.pass) out.push(`The agent adds ${rss.warm.addedMiB} MiB of RSS to an idle app that has served ${rss.requests} requests, ${over}.`);
    if (!rss.passAfterVisit) out.push(`After one info+stack visit the agent's RSS is ${rss.visit.addedMiB} MiB over the app's, ${over}.`);
    if (!rss.passCold) out.push(`Cold (an app that has not served a request yet), the agent adds ${rss.cold.addedMiB} MiB, ${over}: ${rss.cold.fileMiB} MiB of it file-backed (see the notes below).`);
  }
  const ss = by['stack-spinning'];
  if (ss && !ss.error && !ss.pass) out.push(`\`process stack\` while spinning: p50 ${ss.spinning.p50} ms, ${ss.answersNamingSpinFunction}/${ss.callsWhileSpinning} answers named the function.`);
  return out;
}

function section(results, meta) {
  const esc = (s) => String(s).replace(/\|/g, '\\|');
  const lines = [
    SECTION,
    '',
    BEGIN,
    '',
    `Run ${meta.date} · Node ${meta.node} · ${meta.machine.nproc} CPUs, ${meta.machine.model}, ${meta.machine.memGiB} GiB · ${meta.machine.kernel} · load average ${meta.loadBefore} before, ${meta.loadAfter} after · ${Math.round(meta.seconds)} s`,
    '',
    `Code: commit \`${meta.code.commit}\`${meta.code.dirtyFiles ? `, with ${meta.code.dirtyFiles} uncommitted change(s) under src/ and plugins/ built and measured as they stood` : ', clean working tree'}.`,
    '',
    '| metric | value | target | result |',
    '|---|---|---|---|',
    ...rowsFor(results).map((r) => `| ${r.map(esc).join(' | ')} |`),
    '',
  ];
  const miss = missed(results);
  if (miss.length) {
    lines.push('**Targets missed in this run:**', '', ...miss.map((m) => `- ${m}`), '');
  } else lines.push('Every target was met in this run.', '');
  lines.push(
    'Reproduce: `npm run bench` (builds, then runs `node bench/run.js`: about 4 minutes). Each benchmark also runs alone, e.g. ' +
      '`node bench/idle-overhead.js --rounds 5`; see bench/README.md for what each one measures and how. The machine is shared ' +
      'and noisy: every figure is a median, and every comparison is against a baseline measured in the same run, interleaved with it. ' +
      'The full JSON of the run is written to bench/out/ (not committed).',
    '',
    END,
  );
  return lines.join('\n');
}

function updateResults(text, file = RESULTS_OTHER) {
  let doc = fs.existsSync(file) ? fs.readFileSync(file, 'utf8') : OTHER_TITLE;
  const start = doc.indexOf(`${SECTION}\n`) >= 0 ? doc.indexOf(`${SECTION}\n`) : doc.endsWith(SECTION) ? doc.length - SECTION.length : -1;
  if (start < 0) {
    doc = `${doc.replace(/\s*$/, '')}\n\n${text}\n`;
  } else {
    // The section runs to the next "## " heading (or the end of the file).
    const nextHeading = doc.slice(start + SECTION.length).search(/\n## /);
    const end = nextHeading < 0 ? doc.length : start + SECTION.length + nextHeading + 1;
    const old = doc.slice(start, end);
    // Hand-written notes after our end marker stay.
    const endMark = old.indexOf(END);
    const notes = endMark >= 0 ? old.slice(endMark + END.length).replace(/\s*$/, '') : '';
    const replacement = `${text}${notes ? notes : ''}\n${nextHeading < 0 ? '' : '\n'}`;
    doc = doc.slice(0, start) + replacement + doc.slice(end);
  }
  fs.writeFileSync(file, doc);
}

/**
 * Rewrites the generated block of one plugin benchmark inside its section of RESULTS.md:
 * the text between `<!-- bench/<name>.js: generated, begin -->` and its end marker. A
 * missing block is added at the end of its section (before any notes is not attempted:
 * notes are written after the blocks), a missing section at the end of the file.
 */
function updateBlock(sectionTitle, name, text, file = RESULTS_OTHER) {
  const begin = `<!-- bench/${name}.js: generated, begin -->`;
  const end = `<!-- bench/${name}.js: generated, end -->`;
  const block = `${begin}\n\n${text.trim()}\n\n${end}`;
  let doc = fs.existsSync(file) ? fs.readFileSync(file, 'utf8') : OTHER_TITLE;
  let start = doc.indexOf(`\n${sectionTitle}\n`);
  if (start < 0) {
    doc = `${doc.replace(/\s*$/, '')}\n\n${sectionTitle}\n\n${block}\n`;
    fs.writeFileSync(file, doc);
    return;
  }
  start += 1;
  const next = doc.slice(start + sectionTitle.length).search(/\n## /);
  const stop = next < 0 ? doc.length : start + sectionTitle.length + next + 1;
  let sec = doc.slice(start, stop);
  const b = sec.indexOf(begin);
  const e = sec.indexOf(end);
  if (b >= 0 && e > b) sec = sec.slice(0, b) + block + sec.slice(e + end.length);
  else {
    // After the last generated block of the section, or after the heading.
    const lastEnd = sec.lastIndexOf(': generated, end -->');
    const at = lastEnd >= 0 ? lastEnd + ': generated, end -->'.length : sectionTitle.length;
    sec = `${sec.slice(0, at)}\n\n${block}${sec.slice(at).replace(/^\s*/, '\n\n')}`;
  }
  doc = doc.slice(0, start) + sec.replace(/\s*$/, '\n') + (next < 0 ? '' : '\n') + doc.slice(stop);
  fs.writeFileSync(file, doc);
}

function runLine(meta) {
  const dirty = meta.code.dirtyFiles ? `, with ${meta.code.dirtyFiles} uncommitted change(s) under src/ and plugins/ built and measured as they stood` : ', clean working tree';
  return `Run ${meta.date} · Node ${meta.node} · ${meta.machine.nproc} CPUs, ${meta.machine.model} · load average ${meta.loadBefore} before, ${meta.loadAfter} after · ${Math.round(meta.seconds)} s · commit \`${meta.code.commit}\`${dirty}.`;
}

/** HEAD and the uncommitted paths (git status --porcelain, untracked included; bench/out is ignored). */
function treeState() {
  const commit = sh('git', ['rev-parse', '--short', 'HEAD']);
  let status = '';
  try {
    status = execFileSync('git', ['status', '--porcelain'], { cwd: ROOT, encoding: 'utf8' });
  } catch {
    status = '?? (git status failed)';
  }
  const dirty = status.split('\n').filter(Boolean).map((l) => l.slice(3));
  return { commit, dirty, clean: dirty.length === 0 };
}

/** Builds dist/ from the tree as it is, so the figures are those of this commit's code. Throws on a type error. */
function buildDist() {
  console.log('building dist/ (tsc -p tsconfig.json)');
  execFileSync(process.execPath, [require.resolve('typescript/bin/tsc', { paths: [ROOT] }), '-p', 'tsconfig.json'], { cwd: ROOT, stdio: 'inherit' });
}

const FULL_RUN_MARK = '<!-- written by `node bench/run.js` (the full run) as a whole: do not edit, notes go in RESULTS-other.md or bench/README.md -->';

/**
 * RESULTS.md of an older layout (sections written by several scripts at several commits):
 * its sections move to RESULTS-other.md, where the scripts run on their own now write, so
 * that RESULTS.md holds the full run alone. Sections RESULTS-other.md already has stay its own.
 */
function moveOldSections() {
  if (!fs.existsSync(RESULTS)) return [];
  const old = fs.readFileSync(RESULTS, 'utf8');
  if (old.startsWith(FULL_RUN_MARK)) return [];
  let other = fs.existsSync(RESULTS_OTHER) ? fs.readFileSync(RESULTS_OTHER, 'utf8') : OTHER_TITLE;
  const moved = [];
  for (const sec of old.split(/\n(?=## )/).slice(1)) {
    const heading = sec.split('\n')[0];
    if (other.includes(`\n${heading}\n`)) continue;
    other = `${other.trimEnd()}\n\n${sec.trimEnd()}\n`;
    moved.push(heading);
  }
  fs.writeFileSync(RESULTS_OTHER, other);
  return moved;
}

/**
 * Issue 12's group: the benchmarks one after another, each in its own process; then the
 * whole of RESULTS.md from their results (bench/lib/report.js). A run that writes refuses
 * a dirty tree (`--allow-dirty` runs anyway and says so at the top of the file), builds
 * dist/ itself, and checks that HEAD and the tree did not change while it ran.
 */
/** The args with every `--minutes…` value (a part's time budget) multiplied by k. */
function scaleBudgets(args, k) {
  return args.map((a, i) => (k !== 1 && i > 0 && args[i - 1].startsWith('--minutes') ? String(Number(a) * k) : a));
}

async function runCost(chosen, { quick, write, build, allowDirty, command, budgetScale = 1 }) {
  const before = treeState();
  if (write && !before.clean) {
    if (!allowDirty) {
      console.error(
        `refusing the full run: the working tree is not clean (${before.dirty.slice(0, 8).join(', ')}${before.dirty.length > 8 ? ', …' : ''}); ` +
          'every figure of RESULTS.md must come from the commit it names. Commit or stash, or pass --allow-dirty (RESULTS.md then says so at its top), or --no-write.',
      );
      process.exitCode = 2;
      return;
    }
    console.log(`running on a DIRTY tree (${before.dirty.length} paths): RESULTS.md will say so at its top`);
  }
  if (build) buildDist();
  const started = Date.now();
  const loadBefore = os.loadavg().map((x) => x.toFixed(2)).join(' ');
  const results = [];
  for (const b of chosen) {
    const t0 = Date.now();
    console.log(`\n▶ ${b.name} ${(quick ? b.quick : scaleBudgets(b.args, budgetScale)).join(' ')}`);
    const r = await runOne({ ...b, timeoutMs: b.timeoutMs * Math.max(1, budgetScale) }, quick ? b.quick : scaleBudgets(b.args, budgetScale));
    r.wallS = Math.round((Date.now() - t0) / 1000);
    results.push(r);
    console.log(`  (${b.name}: ${r.wallS} s)`);
  }
  const after = treeState();
  const changedDuringRun =
    after.commit !== before.commit ? `HEAD moved from ${before.commit} to ${after.commit}` : after.dirty.join('\n') !== before.dirty.join('\n') ? `the working tree changed: ${after.dirty.join(', ') || 'now clean'}` : undefined;
  const meta = {
    ...runMeta(started, loadBefore),
    command: quick ? `${command} --quick` : command,
    quick,
    code: { commit: before.commit, clean: before.clean, dirty: before.dirty, changedDuringRun },
  };
  fs.mkdirSync(OUT_DIR, { recursive: true });
  const stamp = meta.date.replace(/[:]/g, '-');
  const outFile = path.join(OUT_DIR, `cost-${stamp}${quick ? '-quick' : ''}.json`);
  fs.writeFileSync(outFile, `${JSON.stringify({ meta, results }, null, 2)}\n`);
  const text = renderCost(results, meta);
  const { rows } = goalRows(Object.fromEntries(results.map((r) => [r.benchmark, r])));
  console.log(`\nissue 12 goals (${Math.round(meta.seconds)} s in all; ${results.map((r) => `${r.benchmark} ${r.wallS} s`).join(', ')}):`);
  for (const r of rows) console.log(`  ${r[3].replace(/\*\*/g, '')}: ${r[0]}: ${r[1]} (target ${r[2]})`);
  console.log(`full results: ${path.relative(process.cwd(), outFile)}`);
  if (write) {
    const moved = moveOldSections();
    if (moved.length) console.log(`moved ${moved.length} older sections of RESULTS.md to RESULTS-other.md: ${moved.join('; ')}`);
    fs.writeFileSync(RESULTS, `${FULL_RUN_MARK}\n${text}`);
    console.log(`wrote ${path.relative(process.cwd(), RESULTS)} (commit ${meta.code.commit}${meta.code.clean && !changedDuringRun ? ', clean tree' : ', NOT a clean tree'})`);
  } else {
    const mdFile = outFile.replace(/\.json$/, '.md');
    fs.writeFileSync(mdFile, text);
    console.log(`RESULTS.md left alone; the page this run would write: ${path.relative(process.cwd(), mdFile)}`);
  }
  if (results.some((r) => r.error)) process.exitCode = 1;
}

function renderCost(results, meta) {
  return renderResults(results, meta, { 'profile-overhead': require('./profile-overhead').markdown, snapshot: require('./snapshot').markdown });
}

async function main() {
  const opts = parseArgs();
  if (typeof opts.from === 'string') {
    // Re-render the agent section from a saved run (after a change to how it is written).
    const { meta, results } = JSON.parse(fs.readFileSync(opts.from, 'utf8'));
    if (meta?.command && Array.isArray(results)) {
      // A saved full run (bench/out/cost-*.json): RESULTS.md again, from the same figures.
      if (meta.quick) throw new Error(`${opts.from} is a --quick run: its figures are not for RESULTS.md`);
      moveOldSections();
      fs.writeFileSync(RESULTS, `${FULL_RUN_MARK}\n${renderCost(results, meta)}`);
      console.log(`wrote ${path.relative(process.cwd(), RESULTS)} from ${opts.from}`);
      return;
    }
    if (!Array.isArray(results)) throw new Error(`${opts.from} is not an agent-group run (bench/out/agent-*.json)`);
    updateResults(section(results, meta));
    console.log(`updated ${path.relative(process.cwd(), RESULTS_OTHER)} (section "${SECTION}") from ${opts.from}`);
    return;
  }
  const only = typeof opts.only === 'string' ? opts.only.split(',') : undefined;
  const quick = opts.quick === true;
  const write = !quick && opts['no-write'] !== true;
  const group = typeof opts.group === 'string' ? opts.group : 'cost';
  if (!GROUPS.includes(group)) {
    console.error(`--group ${group}: not a group; the groups are ${GROUPS.join(', ')} (cost, the default, is issue 12's full run)`);
    process.exitCode = 2;
    return;
  }
  const inGroup = (b) => group === 'all' || groupOf(b) === group;
  // A name in two groups (startup, snapshot, profile-overhead) runs once: the chosen group's
  // entry, else the full run's (the default group).
  const all = only ? only.map((n) => BENCHMARKS.find((b) => b.name === n && inGroup(b)) ?? BENCHMARKS.find((b) => b.name === n)) : BENCHMARKS.filter(inGroup);
  if (only && all.includes(undefined)) {
    const known = [...new Set(BENCHMARKS.map((b) => b.name))];
    console.error(`--only ${opts.only}: ${only.filter((n) => !known.includes(n)).join(', ')} is not a benchmark; known: ${known.join(', ')}`);
    process.exitCode = 2;
    return;
  }
  const cost = all.filter((b) => groupOf(b) === 'cost');
  const budgetScale = opts['budget-scale'] === undefined ? 1 : Number(opts['budget-scale']);
  if (!(budgetScale > 0)) {
    console.error(`--budget-scale ${opts['budget-scale']}: not a positive number (2 doubles the time budgets of the frameworks and the profilers, so more rounds and narrower intervals)`);
    process.exitCode = 2;
    return;
  }
  if (cost.length) {
    await runCost(cost, { quick, write: write && !only, build: opts['no-build'] !== true && !quick, allowDirty: opts['allow-dirty'] === true, budgetScale, command: `node bench/run.js${group === 'cost' ? '' : ` --group ${group}`}${budgetScale !== 1 ? ` --budget-scale ${budgetScale}` : ''}` });
    if (process.exitCode === 2) return;
  }
  const chosen = all.filter((b) => groupOf(b) !== 'cost');
  if (!chosen.length) return;
  const started = Date.now();
  const loadBefore = os.loadavg().map((x) => x.toFixed(2)).join(' ');
  const results = [];
  const plugins = [];
  for (const b of chosen) {
    console.log(`\n▶ ${b.name}`);
    const t0 = Date.now();
    const before = os.loadavg().map((x) => x.toFixed(2)).join(' ');
    const r = await runOne(b, quick ? b.quick : []);
    if (groupOf(b) === 'agent') results.push(r);
    else plugins.push({ bench: b, result: r, meta: { ...runMeta(t0, before), code: codeState() } });
  }
  for (const { bench, result, meta } of plugins) {
    fs.mkdirSync(OUT_DIR, { recursive: true });
    const outFile = path.join(OUT_DIR, `${bench.name}-${meta.date.replace(/[:]/g, '-')}.json`);
    fs.writeFileSync(outFile, `${JSON.stringify({ meta, result }, null, 2)}\n`);
    console.log(`\n${bench.name}: full results in ${path.relative(process.cwd(), outFile)}`);
    if (!write) continue;
    let text;
    if (result.error) text = `**Did not finish:** ${result.error}`;
    else {
      try {
        text = require(`./${bench.name}`).markdown(result);
      } catch (err) {
        text = `**Could not render the result:** ${err.message}`;
      }
    }
    updateBlock(bench.section, bench.name, `${runLine(meta)} Written by \`node bench/run.js --only ${bench.name}\` (or \`--group plugins\`).\n\n${text}`);
    console.log(`updated ${path.relative(process.cwd(), RESULTS_OTHER)} (${bench.section}, block of ${bench.name})`);
  }
  if (results.length === 0) {
    if (plugins.some((p) => p.result.error)) process.exitCode = 1;
    return;
  }
  const meta = {
    ...runMeta(started, loadBefore),
    code: codeState(),
  };
  fs.mkdirSync(OUT_DIR, { recursive: true });
  const outFile = path.join(OUT_DIR, `agent-${meta.date.replace(/[:]/g, '-')}.json`);
  fs.writeFileSync(outFile, `${JSON.stringify({ meta, results }, null, 2)}\n`);
  console.log(`\nfull results: ${path.relative(process.cwd(), outFile)}`);
  const miss = missed(results);
  console.log(miss.length ? `targets missed:\n${miss.map((m) => `  - ${m}`).join('\n')}` : 'every target met');
  if (write && !only) {
    updateResults(section(results, meta));
    console.log(`updated ${path.relative(process.cwd(), RESULTS_OTHER)} (section "${SECTION}")`);
  } else if (write && only) {
    console.log('not writing RESULTS-other.md for a partial run (--only)');
  }
  if (results.some((r) => r.error)) process.exitCode = 1;
}

module.exports = { updateResults, section, updateBlock };

if (require.main === module) {
  main().catch((err) => {
    console.error(err.stack ?? String(err));
    process.exitCode = 1;
  });
}
