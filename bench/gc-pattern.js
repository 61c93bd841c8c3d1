'use strict';
// What each always-on piece of the agent does to the app's garbage collection (issue 12,
// Fastify p99): counts that the machine's load does not move. Each variant is a fresh app
// process (bench/apps/framework-server.js) run with `--trace-gc-nvp`, so V8 itself reports
// every collection of the main isolate (pause, bytes allocated since the one before, bytes
// promoted); nothing observes GC from inside the app, which would perturb what is measured.
// Per process: a warm-up of --warmup requests, then --requests counted requests at 10 in
// flight (bench/lib/loadgen.js's counted mode, in its own process); only the collections
// printed during the counted segment are summed. Variants are interleaved, in a shuffled
// order per round.
//
//   node bench/gc-pattern.js [--framework fastify] [--rounds 3] [--requests 100000]
//       [--warmup 20000] [--variants bare,observer,fastify-start,default,default-noprocess]
//       [--path /]   (the URL requested; node:http answers any, Fastify only /)
//       [--before <dir>/dist/src/register.js]   (variant `before`: the default agent of another
//       build, e.g. an older commit's, for before/after counts in one run)
//
// Variants: bare (no agent); observer, fastify-start (a bare app with one piece alone:
// bench/apps/gc-variant-preload.js); default (`-r ispy/register`); default-noprocess (the
// same with the process plugin disabled); default-norequests (requests plugin disabled).

const { spawn } = require('node:child_process');
const path = require('node:path');
const readline = require('node:readline');
const c = require('./lib/common');
const { median, rng } = require('./lib/stats');

const LOADGEN = path.join(__dirname, 'lib', 'loadgen.js');
const PRELOAD = path.join(__dirname, 'apps', 'gc-variant-preload.js');
const VARIANTS = {
  bare: {},
  observer: { preload: PRELOAD, env: { GC_VARIANT: 'observer' } },
  gcprofiler: { preload: PRELOAD, env: { GC_VARIANT: 'gcprofiler' } },
  'fastify-start': { preload: PRELOAD, env: { GC_VARIANT: 'fastify-start' } },
  default: { agent: true },
  'default-noprocess': { agent: true, config: { disable: ['process'] } },
  'default-norequests': { agent: true, config: { disable: ['requests'] } },
};

function startLoadgen() {
  const child = c.track(spawn(process.execPath, [LOADGEN], { stdio: ['pipe', 'pipe', 'inherit'] }));
  const waiting = [];
  readline.createInterface({ input: child.stdout }).on('line', (line) => {
    if (line.startsWith('{')) waiting.shift()?.(JSON.parse(line));
  });
  return {
    ask: (cmd) =>
      new Promise((resolve, reject) => {
        waiting.push((r) => (r.error ? reject(new Error(`load generator: ${r.error}`)) : resolve(r)));
        child.stdin.write(`${JSON.stringify(cmd)}\n`);
      }),
    close: () => {
      child.stdin.end();
      setTimeout(() => child.kill('SIGKILL'), 2000).unref();
    },
  };
}

/** The collections of the isolate that made the most of them in `text` (the main thread, under load). */
function collections(text) {
  const byIsolate = new Map();
  for (const line of text.split('\n')) {
    const m = /^\[\d+:(0x[0-9a-f]+)\]\s+\d+ ms: pause=([\d.]+) .*? gc=(\w+) /.exec(line);
    if (!m) continue;
    const num = (k) => Number(new RegExp(` ${k}=(\\d+)`).exec(line)?.[1] ?? 0);
    const list = byIsolate.get(m[1]) ?? [];
    list.push({ pause: Number(m[2]), kind: m[3], allocated: num('allocated'), promoted: num('promoted'), survived: num('new_space_survived') });
    byIsolate.set(m[1], list);
  }
  return [...byIsolate.values()].sort((a, b) => b.length - a.length)[0] ?? [];
}

async function measure(name, framework, lg, { requests, warmup, path: urlPath }) {
  const v = VARIANTS[name];
  const app = await c.startApp({
    script: 'framework-server.js',
    agent: v.agent,
    preload: v.preload,
    config: v.config,
    nodeArgs: ['--trace-gc-nvp'],
    env: { BENCH_FRAMEWORK: framework, ...v.env },
    label: name,
  });
  try {
    await lg.ask({ port: app.port, connections: 10, requests: warmup, path: urlPath });
    await c.sleep(300);
    const from = app.stdout().length;
    const cpu0 = c.readCpuMs(app.pid);
    await lg.ask({ port: app.port, connections: 10, requests, path: urlPath });
    const cpu1 = c.readCpuMs(app.pid);
    await c.sleep(300);
    const gcs = collections(app.stdout().slice(from));
    const scav = gcs.filter((g) => g.kind === 's');
    const per = (x) => (x * 100_000) / requests;
    const sum = (xs, f) => xs.reduce((a, g) => a + f(g), 0);
    return {
      variant: name,
      scavenges: per(scav.length),
      others: per(gcs.length - scav.length),
      pauseMs: per(sum(gcs, (g) => g.pause)),
      maxPause: Math.max(0, ...gcs.map((g) => g.pause)),
      scavMean: scav.length ? sum(scav, (g) => g.pause) / scav.length : 0,
      bytesPerReq: sum(gcs, (g) => g.allocated) / requests,
      // Promoted by scavenges only (a mark-compact's `promoted` is not young objects surviving).
      promotedPerReq: sum(scav, (g) => g.promoted) / requests,
      survivedPerScav: scav.length ? sum(scav, (g) => g.survived) / scav.length : 0,
      cpuUsPerReq: ((cpu1 - cpu0) * 1000) / requests,
    };
  } finally {
    await app.kill();
  }
}

async function main() {
  const args = c.parseArgs();
  const framework = args.framework ?? 'fastify';
  const rounds = Number(args.rounds ?? 3);
  const requests = Number(args.requests ?? 100_000);
  const warmup = Number(args.warmup ?? 20_000);
  if (args.before) VARIANTS.before = { preload: path.resolve(args.before) };
  const names = (args.variants ?? 'bare,observer,fastify-start,default,default-noprocess').split(',');
  for (const n of names) if (!VARIANTS[n]) throw c.usageError(`--variants: ${n} is not one of ${Object.keys(VARIANTS).join(', ')}`);
  c.requireBuilt();
  const lg = startLoadgen();
  const random = rng(Number(args.seed ?? 7));
  const rows = [];
  try {
    for (let r = 0; r < rounds; r++) {
      const order = [...names].sort(() => random() - 0.5);
      for (const n of order) {
        const row = await measure(n, framework, lg, { requests, warmup, path: args.path ?? '/' });
        rows.push(row);
        console.error(JSON.stringify({ round: r, ...Object.fromEntries(Object.entries(row).map(([k, x]) => [k, typeof x === 'number' ? Math.round(x * 100) / 100 : x])) }));
      }
    }
  } finally {
    lg.close();
  }
  const cols = ['scavenges', 'others', 'pauseMs', 'scavMean', 'maxPause', 'bytesPerReq', 'promotedPerReq', 'survivedPerScav', 'cpuUsPerReq'];
  console.log(`\n${framework}, ${requests} requests at 10 in flight per process, ${rounds} rounds; medians (per 100k requests for counts and pauses)\n`);
  console.log(`| variant | ${cols.join(' | ')} |\n|${' --- |'.repeat(cols.length + 1)}`);
  const medians = {};
  for (const n of names) {
    const mine = rows.filter((x) => x.variant === n);
    medians[n] = Object.fromEntries(cols.map((k) => [k, Math.round(median(mine.map((x) => x[k])) * 100) / 100]));
    console.log(`| ${n} | ${cols.map((k) => String(medians[n][k])).join(' | ')} |`);
  }
  return { benchmark: 'gc-pattern', framework, requests, warmup, rounds, variants: names, columns: cols, medians, rows };
}

c.mainIfDirect(module, main);
