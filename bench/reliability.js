'use strict';
// Runs the long forms of the reliability checks one after another, each in its own process
// (bench/reliability-fuzz.js, -clients.js, -kill.js, -flood.js, -soak.js: the same engines
// the tests in test/reliability/ run short; test/reliability/connections.test.ts has the
// flood's short form), and writes their figures into the section "## Reliability (issue
// 11)" of bench/RESULTS-other.md, between its "generated" markers; notes below the end marker are
// kept. About 27 minutes.
//
//   node bench/reliability.js                 all five, long; rewrites the section
//   node bench/reliability.js --only soak     some of them (fuzz, clients, kill, flood, soak)
//   node bench/reliability.js --quick         small sizes, a smoke test; RESULTS.md left alone
//   node bench/reliability.js --no-write      run and print only

const { execFileSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { parseArgs, ROOT, runScript } = require('./lib/common');

// RESULTS.md is the full run's alone (bench/run.js); the reliability checks write here.
const RESULTS = path.join(__dirname, 'RESULTS-other.md');
const SECTION = '## Reliability (issue 11)';
const BEGIN = '<!-- bench/reliability.js: generated, begin -->';
const END = '<!-- bench/reliability.js: generated, end (notes below this line are kept) -->';

const CHECKS = [
  // 100k frames with a 64 KB frame limit (as in CI, so frames at the limit are cheap), then
  // 10k with the default 1 MB one.
  { name: 'fuzz', args: ['--frames', '100000', '--concurrency', '12', '--max-frame', '65536'], quick: ['--frames', '3000', '--max-frame', '65536'], timeoutMs: 1_800_000 },
  { name: 'fuzz', args: ['--frames', '10000', '--concurrency', '12'], quick: ['--frames', '500'], timeoutMs: 1_800_000 },
  { name: 'clients', args: ['--clients', '200', '--seconds', '60'], quick: ['--clients', '200', '--seconds', '5'], timeoutMs: 600_000 },
  { name: 'kill', args: ['--rounds', '25'], quick: ['--rounds', '1'], timeoutMs: 1_800_000 },
  { name: 'flood', args: ['--burst', '300', '--seconds', '60', '--rate', '100'], quick: ['--burst', '100', '--seconds', '5', '--rate', '50'], timeoutMs: 600_000 },
  { name: 'soak', args: ['--seconds', '600'], quick: ['--seconds', '20', '--warmup-visits', '1000', '--settle', '5', '--max-warmup', '40'], timeoutMs: 1_200_000 },
];

async function runOne(check, quick) {
  // The engine's own progress lines, not its pretty-printed figures (the table has those).
  const onLine = (line) => {
    if (!line.startsWith('{') && !line.startsWith(' ') && !line.startsWith('}')) process.stdout.write(`${check.name}: ${line}\n`);
  };
  const { result, exited, seconds } = await runScript(path.join(__dirname, `reliability-${check.name}.js`), quick ? check.quick : check.args, { timeoutMs: check.timeoutMs, label: check.name, onLine });
  return { check: check.name, seconds, ...(result ?? { problems: [`exited with ${exited} before reporting a result`] }) };
}

const n = (x) => (typeof x === 'number' ? x.toLocaleString('en-US') : String(x));
const verdict = (problems) => (problems.length ? `**FAIL** (${problems.length}: ${problems.slice(0, 2).join('; ').replace(/\|/g, '/')})` : 'pass');

function rows(r) {
  const out = [];
  if (r.check === 'fuzz') {
    out.push([`fuzz: ${n(r.frames)} frames over ${n(r.sessions)} connections, ${r.concurrency} at a time (seed ${r.seed})`, `${r.fuzzSeconds} s, ${n(r.framesPerSecond)} frames/s; longest connection ${n(r.longestSessionMs)} ms; ${r.commandsCalled} commands called; maxFrameBytes ${n(r.maxFrameBytes)}`, verdict(r.problems)]);
    out.push(['fuzz: error frames by code / closes by code', `${Object.entries(r.errorCodes ?? {}).map(([k, v]) => `${k.replace('ISPY_ERR_', '')} ${n(v)}`).join(', ')} / ${Object.entries(r.closeCodes ?? {}).map(([k, v]) => `${k}: ${n(v)}`).join(', ')}`, '—']);
    out.push(['fuzz: the app meanwhile', `HTTP ${n(r.http?.ok)} ok, ${n(r.http?.failed)} failed (p99 ${r.http?.latencyMs?.p99} ms, max ${r.http?.latencyMs?.max} ms, heap snapshots included); visiting client ${n(r.visits?.ok)} ok, ${n(r.visits?.failed)} failed; fds ${r.fdBaseline} before, ${r.fdAfter} after`, '—']);
    out.push(['fuzz: lines the agent wrote to the app\'s stderr', `${n(r.agentStderrLines)} (${(r.agentStderrSample ?? []).slice(0, 3).map((l) => `"${l}"`).join(', ')})`, '— (see notes)']);
  } else if (r.check === 'clients') {
    const w = r.withRoom ?? { problems: r.problems ?? [] };
    const d = r.defaultLimit ?? { problems: [] };
    if (r.withRoom) {
      out.push([`${w.clients} clients at once for ${w.seconds} s (limits.maxConnections ${w.clients + 10})`, `${n(w.connected)} connected (connect p50 ${w.connectMs.p50} ms, p99 ${w.connectMs.p99} ms); ${n(w.calls)} calls, ${n(w.failedCalls)} failed (p50 ${w.callMs.p50} ms, p99 ${w.callMs.p99} ms, max ${w.callMs.max} ms); HTTP ${n(w.http.ok)} ok, ${n(w.http.failed)} failed (p99 ${w.http.latencyMs.p99} ms); fds ${w.fdBaseline} → ${w.fdPeak} → ${w.fdAfter}`, verdict(w.problems)]);
      out.push([`${d.clients} clients at once, default limit`, `${d.connected} in, ${d.refused} refused ("${(d.refusal ?? '').replace(/^agent at \S+ /, '')}"); ${n(d.calls)} calls, ${n(d.failedCalls)} failed; fds ${d.fdBaseline} → ${d.fdPeak} → ${d.fdAfter}`, verdict(d.problems)]);
    } else out.push(['clients', 'did not finish', verdict(w.problems)]);
  } else if (r.check === 'kill') {
    out.push([`kill -9 of \`ispy\` mid-command, ${r.rounds} rounds (seed ${r.seed})`, `${Object.entries(r.kills ?? {}).map(([k, v]) => `${k} ×${v}`).join(', ')}; app killed mid snapshot ×${r.appKills}, its .partial swept ${r.swept}×`, verdict(r.problems)]);
  } else if (r.check === 'flood') {
    out.push([`handshake flood: a burst of ${n(r.burst)} silent sockets`, `an operator in after ${r.operatorInAfterBurstMs ?? 'never'} ms (a silent socket gives way after 2 s); the longest-lived silent socket ${n(r.longestLivedMs)} ms (deadline 5 s)`, verdict(r.problems)]);
    const st = r.stream ?? {};
    out.push([`handshake flood: ${n(st.rate)} new silent sockets a second for ${st.seconds} s`, `${n(st.opened)} opened; an operator visiting once a second got in ${st.operatorIn}×, refused ${st.operatorRefused}× (recorded, not judged: see notes); HTTP ${n(r.http?.ok)} ok, ${n(r.http?.failed)} failed (p99 ${r.http?.latencyMs?.p99} ms); fds ${r.fdBaseline} → ${r.fdPeak} → ${r.fdAfter}`, '—']);
  } else if (r.check === 'soak') {
    const m = r.memory ?? {};
    out.push([`soak: ${r.measuredSeconds} s measured after a ${r.warmupSeconds} s warm-up (${n(r.warmupVisits)} visits)`, `${n(r.visits)} visits (${r.visitsPerSecond}/s) by ${r.clients} clients; HTTP ${n(r.http?.ok)} ok, ${n(r.http?.failed)} failed`, verdict(r.problems)]);
    out.push(['soak: RSS', `${(r.rssSeries ?? []).join(', ')}; idle after: ${r.rssIdleMB} MB. At the end of the busy part: app heap ${r.heapsMB?.mainThread?.heapTotalMB} MB, agent worker heap ${r.heapsMB?.agentWorker?.heapTotalMB} MB`, '—']);
    out.push(['soak: memory verdict', `trend ${m.driftKB} kB (${m.slopeKBPerMin} kB/min), median rise ${m.medianRiseKB} kB; allowed ${m.toleranceKB} kB (3 × the settled warm-up's swing of ${m.warmSwingKB} kB)`, m.flat ? 'flat' : '**not flat**']);
    out.push(['soak: file descriptors', `${r.fdBaseline} before, at most ${r.fdMax} during (ceiling ${r.fdCeiling}), ${r.fdAfter} after`, r.fdAfter === r.fdBaseline && r.fdMax <= r.fdCeiling ? 'pass' : '**FAIL**']);
  }
  return out;
}

function sh(cmd, args) {
  try {
    return execFileSync(cmd, args, { cwd: ROOT, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
  } catch {
    return '';
  }
}

function markdown(results, startedAt) {
  const dirty = sh('git', ['status', '--porcelain', '--', 'src', 'plugins'])
    .split('\n')
    .filter(Boolean)
    .map((l) => l.replace(/^\s*\S+\s+/, ''));
  const lines = [
    BEGIN,
    '',
    `Run ${startedAt} · Node ${process.version} · ${os.availableParallelism()} CPUs · load average ${os.loadavg().map((x) => x.toFixed(2)).join(' ')} after · ${results.reduce((s, r) => s + r.seconds, 0)} s · commit \`${sh('git', ['rev-parse', '--short', 'HEAD'])}\`${dirty.length ? `, with uncommitted changes in ${dirty.join(', ')}` : ', clean working tree'}. Written by \`node bench/reliability.js\`.`,
    '',
    '| check | figures | result |',
    '|---|---|---|',
    ...results.flatMap(rows).map((r) => `| ${r.join(' | ')} |`),
    '',
    END,
  ];
  return lines.join('\n');
}

function writeSection(block) {
  const text = fs.existsSync(RESULTS) ? fs.readFileSync(RESULTS, 'utf8') : '# Benchmark results: benchmarks run on their own\n';
  const start = text.indexOf(`${SECTION}\n`);
  if (start < 0) return fs.writeFileSync(RESULTS, `${text.trimEnd()}\n\n${SECTION}\n\n${block}\n`);
  const nextSection = text.indexOf('\n## ', start + SECTION.length);
  const sectionEnd = nextSection < 0 ? text.length : nextSection + 1;
  const section = text.slice(start, sectionEnd);
  const endAt = section.indexOf(END);
  const notes = endAt < 0 ? '' : section.slice(endAt + END.length);
  fs.writeFileSync(RESULTS, `${text.slice(0, start)}${SECTION}\n\n${block}${notes || '\n'}${nextSection < 0 ? '' : `\n${text.slice(sectionEnd).replace(/^\n+/, '')}`}`);
}

if (require.main === module) {
  const opts = parseArgs();
  const only = typeof opts.only === 'string' ? opts.only.split(',') : undefined;
  const startedAt = new Date().toISOString().replace(/\.\d+Z$/, 'Z');
  (async () => {
    const results = [];
    for (const check of CHECKS.filter((c) => !only || only.includes(c.name))) {
      console.log(`── ${check.name}`);
      results.push(await runOne(check, opts.quick === true));
    }
    const block = markdown(results, startedAt);
    console.log(`\n${block}`);
    if (!opts.quick && !opts['no-write'] && !only) {
      writeSection(block);
      console.log(`\nwrote "${SECTION}" in ${path.relative(ROOT, RESULTS)}`);
    }
    const failed = results.filter((r) => (r.problems ?? [...(r.withRoom?.problems ?? []), ...(r.defaultLimit?.problems ?? [])]).length);
    process.exit(failed.length ? 1 : 0);
  })();
}

module.exports = { markdown };
