'use strict';
// Interleaved load windows over several servers, and the ratios that come out of them.
// The method of idle-overhead.js, generalised to any number of variants and to a request
// path: one long-lived load generator (bench/lib/loadgen.js) per round, short windows
// alternating between the servers (A B C D, A B C D, …, the order reversed on alternate
// rounds), each window's requests/s and the server's CPU time per request (all threads,
// /proc/<pid>/task/*/schedstat). Every subject window is divided by the baseline level
// linearly interpolated between the nearest baseline windows before and after it, which
// cancels a linear drift of the machine's speed.

const { spawn } = require('node:child_process');
const path = require('node:path');
const c = require('./common');

const LOADGEN = path.join(__dirname, 'loadgen.js');

class LoadGen {
  constructor() {
    this.proc = spawn(process.execPath, [LOADGEN], { stdio: ['pipe', 'pipe', 'pipe'] });
    this.err = '';
    this.buf = '';
    this.waiter = undefined;
    this.proc.stderr.on('data', (d) => (this.err += d));
    this.proc.stdout.on('data', (d) => {
      this.buf += d;
      let nl;
      while ((nl = this.buf.indexOf('\n')) >= 0) {
        const line = this.buf.slice(0, nl);
        this.buf = this.buf.slice(nl + 1);
        this.waiter?.(line);
      }
    });
    this.proc.on('exit', (code) => this.waiter?.(undefined, new Error(`load generator exited with ${code} (stderr: ${this.err})`)));
  }

  /** One window against app (its `port`, `pid`, `label`); resolves with req/s and CPU µs per request. */
  window(app, { connections, warmup, duration, path: urlPath = '/' }) {
    return new Promise((resolve, reject) => {
      let cpu0;
      const limit = warmup + duration + 10000;
      const timer = setTimeout(() => done(undefined, new Error(`load window on ${app.label} did not finish within ${limit} ms (stderr: ${this.err})`)), limit);
      const done = (line, err) => {
        if (err) {
          this.waiter = undefined;
          clearTimeout(timer);
          return reject(err);
        }
        if (line === 'START') {
          cpu0 = c.readCpuMs(app.pid);
          return;
        }
        const cpu1 = c.readCpuMs(app.pid);
        this.waiter = undefined;
        clearTimeout(timer);
        try {
          const r = JSON.parse(line);
          if (r.errors || r.non200) throw new Error(`load generator saw ${r.errors} errors and ${r.non200} non-200 answers from ${app.label}`);
          resolve({ rps: r.rps, requests: r.requests, cpuUsPerRequest: ((cpu1 - cpu0) * 1000) / r.requests, serverCpuUtilisation: (cpu1 - cpu0) / r.windowMs });
        } catch (e) {
          reject(e);
        }
      };
      this.waiter = done;
      this.proc.stdin.write(`${JSON.stringify({ port: app.port, connections, warmup, duration, path: urlPath })}\n`);
    });
  }

  close() {
    this.proc.stdin.end();
    const t = setTimeout(() => this.proc.kill('SIGKILL'), 2000);
    return new Promise((resolve) => {
      if (this.proc.exitCode !== null || this.proc.signalCode !== null) return resolve();
      this.proc.once('exit', () => resolve());
    }).finally(() => clearTimeout(t));
  }
}

/** Median, bootstrap 95% CI of the median, quartiles, range. */
function spread(xs, digits = 4) {
  const [lo, hi] = c.medianCI(xs);
  return {
    median: c.round(c.median(xs), digits),
    ci95: [c.round(lo, digits), c.round(hi, digits)],
    p25: c.round(c.percentile(xs, 25), digits),
    p75: c.round(c.percentile(xs, 75), digits),
    min: c.round(Math.min(...xs), digits),
    max: c.round(Math.max(...xs), digits),
    n: xs.length,
  };
}

/**
 * For every entry of `variant` in seq (objects with a `variant` field), its `key` over the
 * baseline's level interpolated (by position) between the nearest baseline entries on
 * either side. Entries with no baseline on one side are skipped.
 */
function ratiosAgainstBaseline(seq, variant, key, baseline = 'without') {
  const out = [];
  for (let j = 0; j < seq.length; j++) {
    if (seq[j].variant !== variant) continue;
    let before = j - 1;
    while (before >= 0 && seq[before].variant !== baseline) before--;
    let after = j + 1;
    while (after < seq.length && seq[after].variant !== baseline) after++;
    if (before < 0 || after >= seq.length) continue;
    const f = (j - before) / (after - before);
    const base = seq[before][key] + f * (seq[after][key] - seq[before][key]);
    out.push(seq[j][key] / base);
  }
  return out;
}

/** Baseline against the next baseline entry: what no difference looks like here. */
function baselineNoise(seq, key, baseline = 'without') {
  const base = seq.filter((x) => x.variant === baseline);
  const out = [];
  for (let i = 0; i + 1 < base.length; i++) out.push(Math.abs(1 - base[i + 1][key] / base[i][key]));
  return out;
}

/**
 * Rounds of interleaved windows over servers started afresh each round.
 *
 *   variants: [{ name, start: () => Promise<app>, afterStart?: (app) => Promise<void>, beforeKill?: (app) => Promise<object|void> }]
 *   baseline: the name of the variant every other one is divided by
 *
 * Returns per variant: all windows' req/s and CPU µs/request, the ratios against the
 * baseline (throughput and CPU per request), per-round medians, and what beforeKill said.
 */
async function interleavedRounds({ variants, baseline, rounds, pairs, load, warmupMs = 1500, log = console.log }) {
  const names = variants.map((v) => v.name);
  const acc = Object.fromEntries(names.map((n) => [n, { rps: [], cpuUs: [], util: [], ratio: [], cpuRatio: [], roundRatio: [], roundCpuRatio: [], notes: [] }]));
  const noise = [];
  const cpuNoise = [];
  const perRound = [];
  for (let r = 0; r < rounds; r++) {
    const apps = {};
    const started = await Promise.allSettled(variants.map(async (v) => [v.name, await v.start()]));
    for (const s of started) if (s.status === 'fulfilled') apps[s.value[0]] = s.value[1];
    const gen = new LoadGen();
    try {
      const failed = started.find((s) => s.status === 'rejected');
      if (failed) throw failed.reason;
      await c.sleep(300);
      for (const v of variants) if (v.afterStart) await v.afterStart(apps[v.name], r);
      for (const v of variants) await gen.window(apps[v.name], { ...load, warmup: warmupMs, duration: 200 });
      const order = r % 2 === 0 ? variants : [...variants].reverse();
      const seq = [];
      for (let i = 0; i < pairs; i++) {
        for (const v of order) {
          const m = await gen.window(apps[v.name], load);
          seq.push({ ...m, variant: v.name });
          acc[v.name].rps.push(m.rps);
          acc[v.name].cpuUs.push(m.cpuUsPerRequest);
          acc[v.name].util.push(m.serverCpuUtilisation);
        }
      }
      const row = { order: order.map((v) => v.name).join(' '), rps: {}, cpuUs: {}, ratio: {}, cpuRatio: {} };
      for (const n of names) {
        const mine = seq.filter((x) => x.variant === n);
        row.rps[n] = c.round(c.median(mine.map((x) => x.rps)), 0);
        row.cpuUs[n] = c.round(c.median(mine.map((x) => x.cpuUsPerRequest)), 2);
        if (n === baseline) continue;
        const ratios = ratiosAgainstBaseline(seq, n, 'rps', baseline);
        const cpuRatios = ratiosAgainstBaseline(seq, n, 'cpuUsPerRequest', baseline);
        acc[n].ratio.push(...ratios);
        acc[n].cpuRatio.push(...cpuRatios);
        row.ratio[n] = c.round(c.median(ratios), 4);
        row.cpuRatio[n] = c.round(c.median(cpuRatios), 4);
        acc[n].roundRatio.push(row.ratio[n]);
        acc[n].roundCpuRatio.push(row.cpuRatio[n]);
      }
      noise.push(...baselineNoise(seq, 'rps', baseline));
      cpuNoise.push(...baselineNoise(seq, 'cpuUsPerRequest', baseline));
      for (const v of variants) {
        if (!v.beforeKill) continue;
        const note = await v.beforeKill(apps[v.name], r);
        if (note) acc[v.name].notes.push(note);
      }
      perRound.push(row);
      log(
        `  round ${r + 1}/${rounds} (${row.order}): req/s ${names.map((n) => `${n} ${row.rps[n]}`).join(', ')}; ` +
          `÷ ${baseline}: ${names
            .filter((n) => n !== baseline)
            .map((n) => `${n} ×${row.ratio[n].toFixed(3)} (CPU/req ×${row.cpuRatio[n].toFixed(3)})`)
            .join(', ')}`,
      );
    } finally {
      await gen.close();
      await Promise.all(Object.values(apps).map((a) => a.kill()));
    }
  }
  const out = {};
  for (const n of names) {
    const a = acc[n];
    out[n] = {
      rps: c.round(c.median(a.rps), 0),
      cpuUsPerRequest: c.round(c.median(a.cpuUs), 2),
      serverCpuUtilisation: c.round(c.median(a.util), 3),
      ...(n === baseline
        ? {}
        : {
            ratio: { ...spread(a.ratio), roundMedians: a.roundRatio },
            cpuPerRequestRatio: { ...spread(a.cpuRatio), roundMedians: a.roundCpuRatio },
            throughputCostPct: c.round((1 - c.median(a.ratio)) * 100, 2),
            cpuCostPct: c.round((c.median(a.cpuRatio) - 1) * 100, 2),
          }),
      ...(a.notes.length ? { notes: a.notes } : {}),
    };
  }
  return {
    variants: out,
    baselineNoisePct: { median: c.round(c.median(noise) * 100, 2), p90: c.round(c.percentile(noise, 90) * 100, 2) },
    cpuBaselineNoisePct: { median: c.round(c.median(cpuNoise) * 100, 2), p90: c.round(c.percentile(cpuNoise, 90) * 100, 2) },
    perRound,
  };
}

module.exports = { LoadGen, spread, ratiosAgainstBaseline, baselineNoise, interleavedRounds };
