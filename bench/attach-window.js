'use strict';
// How long `ispy attach` leaves the target's inspector port open: the window in which any
// local user could connect to it. Each run starts a fresh copy of the hello-world server
// (bench/apps/hello-server.js, no agent, Node's default inspector port 9229), runs
//
//   node bin/ispy.js attach <pid> --json
//
// and records the window it reports (SIGUSR1 to the port observed closed) with its steps,
// checks from /proc that the app listens on nothing but its own port afterwards, and
// kills the app. No target: the figure is recorded to be stated in the docs. Uses port
// 9229: do not run it beside the attach tests.
//
//   npm run build && node bench/attach-window.js [--runs 20] [--no-write]
//
// Rewrites the section "## ispy attach" of bench/RESULTS.md; every other section is kept.

const os = require('node:os');
const path = require('node:path');
const { ROOT, BIN, requireBuilt, parseArgs, num, startApp, timed, percentile, median, fmtMs: f, provenance, writeResultsSection } = require('./lib/common');

const SECTION = '## ispy attach';
const opts = parseArgs();
const RUNS = num(opts.runs, 20);
const WRITE = !opts['no-write'];

// The app's listening TCP ports, from /proc (the reader ispy attach itself uses).
const { listeningPorts: listening } = require(path.join(ROOT, 'dist', 'src', 'cli', 'procfs.js'));

async function attachJson(pid) {
  return JSON.parse((await timed([BIN, 'attach', String(pid), '--json'], { timeoutMs: 30_000 })).out);
}

async function main() {
  requireBuilt();
  const load = [os.loadavg()[0]];
  const rows = [];
  for (let run = 0; run < RUNS; run++) {
    const app = await startApp({ script: 'hello-server.js', agent: false });
    try {
      const r = await attachJson(app.pid);
      const after = listening(app.pid);
      if (after.length !== 1 || after[0] !== app.port) throw new Error(`after attach, process ${app.pid} listens on ${after.join(', ')} (expected only ${app.port})`);
      rows.push({ openMs: r.inspector.openMs, ...r.timings });
      console.log(`run ${run + 1}: open ${r.inspector.openMs} ms (port seen ${r.timings.portOpen}, session ${r.timings.session}, closed ${r.timings.closed}; agent ready ${r.timings.agentReady})`);
    } finally {
      await app.kill(0);
    }
  }
  load.push(os.loadavg()[0]);
  const col = (k) => rows.map((r) => r[k]);
  const stats = (k) => `${f(median(col(k)))} / ${f(percentile(col(k), 90))} / ${f(Math.max(...col(k)))}`;
  const exposed = rows.map((r) => r.closed - r.portOpen);
  console.log(`window (signal to closed): median ${f(median(col('openMs')))}, p90 ${f(percentile(col('openMs'), 90))}, max ${f(Math.max(...col('openMs')))}`);
  if (!WRITE) return;
  writeResultsSection(SECTION, 
    [
      `\`node bin/ispy.js attach <pid> --json\` on a fresh \`bench/apps/hello-server.js\` (no agent, default inspector port 9229) each run, ${RUNS} runs; every run checked from /proc that the app listened on its own port only afterwards. Milliseconds from SIGUSR1. Written by \`node bench/attach-window.js\`.`,
      '',
      '| step (from the signal) | median / p90 / max |',
      '|---|---|',
      `| inspector port seen listening | ${stats('portOpen')} |`,
      `| session open, pid checked | ${stats('session')} |`,
      `| **port observed closed (the reported window)** | **${stats('openMs')}** |`,
      `| of which the port was seen listening | ${f(median(exposed))} / ${f(percentile(exposed, 90))} / ${f(Math.max(...exposed))} |`,
      `| agent ready (after the port closed) | ${stats('agentReady')} |`,
      '',
      `${provenance()}, load average ${load.map((l) => l.toFixed(1)).join(' → ')} (start → end). The machine is a shared VM, busy with other people's runs; expect tens of percent of drift.`,
    ].join('\n'),
  );
  console.log(`wrote "${SECTION}" in bench/RESULTS.md`);
}

main().then(
  () => process.exit(0),
  (err) => {
    console.error(err && err.stack ? err.stack : String(err));
    process.exit(1);
  },
);
