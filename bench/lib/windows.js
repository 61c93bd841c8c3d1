'use strict';
// Interleaved load windows over several servers, and the ratios that come out of them.
// One load generator (bench/lib/loadgen.js) per round, short windows alternating between
// the servers (A B C D, A B C D, …, the order shuffled each round, see roundOrder), each window's
// requests/s, p99 latency and the server's CPU time per request (all threads,
// /proc/<pid>/task/*/schedstat, read when the generator starts and ends counting). Every
// subject window is divided by its reference's level linearly interpolated between the
// nearest reference windows before and after it, which cancels a linear drift of the
// machine's speed.
//
// Rounds go on until every verdict the caller asks about is settled (bench/lib/verdict.js),
// or `maxRounds`, or the time budget: a run stops as soon as it can tell, and otherwise
// says it could not. Intervals are clustered by round (bench/lib/stats.js).

const { spawn } = require('node:child_process');
const path = require('node:path');
const c = require('./common');
const { summarize, median, rng } = require('./stats');

const LOADGEN = path.join(__dirname, 'loadgen.js');

/** The measures of a window, and the field of the window result each is read from. */
const MEASURES = { rps: 'rps', cpu: 'cpuUsPerRequest', p99: 'p99' };

class LoadGen {
  constructor() {
    this.proc = c.track(spawn(process.execPath, [LOADGEN], { stdio: ['pipe', 'pipe', 'pipe'] }));
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

  /**
   * One window against app (its `port`, `pid`, `label`). Resolves with req/s, CPU µs per
   * request, the server's CPU share, and latency: p99 is the latency over the app's
   * deliberate delay when `load.delayMs` is set (the server's own share of the wait).
   */
  window(app, load) {
    const { connections, warmup, duration, path: urlPath = '/', keep = true, delayMs = 0, drainMs = 10_000 } = load;
    return new Promise((resolve, reject) => {
      let cpu0;
      let cpu1;
      const limit = warmup + duration + drainMs + 45_000;
      const timer = setTimeout(() => done(undefined, new Error(`load window on ${app.label} did not finish within ${limit} ms (stderr: ${this.err})`)), limit);
      const done = (line, err) => {
        if (!err && line === 'START') return void (cpu0 = c.readCpuMs(app.pid));
        if (!err && line === 'END') return void (cpu1 = c.readCpuMs(app.pid));
        this.waiter = undefined;
        clearTimeout(timer);
        if (err) return reject(err);
        try {
          const r = JSON.parse(line);
          if (r.error) throw new Error(`load generator, window on ${app.label}: ${r.error}`);
          if (r.errors || r.non200) throw new Error(`load generator saw ${r.errors} errors and ${r.non200} non-200 answers from ${app.label}`);
          if (!r.requests) throw new Error(`no request completed in a window on ${app.label}`);
          resolve({
            rps: r.rps,
            requests: r.requests,
            cpuUsPerRequest: ((cpu1 - cpu0) * 1000) / r.requests,
            serverCpuUtilisation: (cpu1 - cpu0) / r.windowMs,
            p50: r.p50,
            p99: delayMs > 0 ? r.p99OverDelay : r.p99,
            p99Total: r.p99,
            drained: r.drained,
          });
        } catch (e) {
          reject(e);
        }
      };
      this.waiter = done;
      this.proc.stdin.write(`${JSON.stringify({ port: app.port, connections, warmup, duration, path: urlPath, keep, delayMs, drainMs })}\n`);
    });
  }

  close() {
    this.proc.stdin.end();
    const t = setTimeout(() => this.proc.kill('SIGKILL'), 5000);
    return new Promise((resolve) => {
      if (this.proc.exitCode !== null || this.proc.signalCode !== null) return resolve();
      this.proc.once('exit', () => resolve());
    }).finally(() => clearTimeout(t));
  }
}

/**
 * For every entry of `variant` in seq (objects with a `variant` field), its `key` over the
 * reference's level interpolated (by position) between the nearest reference entries on
 * either side. Entries with no reference on one side are skipped.
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

const pairKey = (subject, reference) => `${subject}/${reference}`;

/**
 * The order of the servers' windows in round r: the baseline first, the others in a
 * seeded shuffle that differs from round to round, the whole reversed on odd rounds. A
 * fixed order repeated `pairs` times would give every server the same neighbour each
 * round, and a server's work that spills past its own window (an exporter's timer, a
 * sweep, a GC) would then always land on the same neighbour's window: a bias no number of
 * rounds averages out. Shuffled, it lands on a different neighbour each round.
 */
function roundOrder(variants, baseline, r) {
  const base = variants.find((v) => v.name === baseline);
  const others = variants.filter((v) => v !== base);
  const rand = rng(0x5eed + r);
  for (let i = others.length - 1; i > 0; i--) {
    const j = Math.floor(rand() * (i + 1));
    [others[i], others[j]] = [others[j], others[i]];
  }
  const order = base ? [base, ...others] : others;
  return r % 2 === 0 ? order : order.reverse();
}

/** Median, bootstrap 95% CI of the median (windows as independent: a rough resolution), quartiles, range. */
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
 * Rounds of interleaved windows over servers started afresh each round.
 *
 *   variants:    [{ name, start: () => Promise<app>, afterStart?(app, round), beforeKill?(app, round) → note }]
 *   baseline:    the variant every other one is compared with by default
 *   comparisons: [[subject, reference], …] (default: every other variant against baseline)
 *   minRounds, maxRounds, budgetMs, floorRounds: a round more while fewer than minRounds
 *                are done or `settled(summary)` is false, up to maxRounds, and only while
 *                the time spent plus one more round fits in budgetMs (past floorRounds,
 *                2 by default: the budget bounds the run even on a slow machine)
 *   pairs:       windows per server per round; load: the generator's window settings
 *   prewarm:     an unmeasured window per server at the start of each round (warmupMs long)
 *
 * Returns { summary, rounds, stoppedBecause, perRound } where summary has per variant its
 * median levels, and per comparison and measure (rps, cpu, p99) a clustered estimate with
 * its 95 % interval.
 */
async function interleavedRounds({ variants, baseline, comparisons, rounds: fixedRounds, minRounds = fixedRounds ?? 3, maxRounds = fixedRounds ?? minRounds, budgetMs = Infinity, floorRounds = Math.min(2, minRounds), settled = () => true, pairs, load, warmupMs = 1500, prewarm = true, log = console.log }) {
  const names = variants.map((v) => v.name);
  const pairsToCompare = comparisons ?? names.filter((n) => n !== baseline).map((n) => [n, baseline]);
  const windows = Object.fromEntries(names.map((n) => [n, []]));
  const ratios = Object.fromEntries(pairsToCompare.map(([s, r]) => [pairKey(s, r), Object.fromEntries(Object.keys(MEASURES).map((m) => [m, []]))]));
  const noise = { rps: [], cpu: [], p99: [] };
  const notes = Object.fromEntries(names.map((n) => [n, []]));
  const perRound = [];
  const started0 = Date.now();
  let stoppedBecause = 'maxRounds';
  let summary;
  for (let r = 0; r < maxRounds; r++) {
    const t0 = Date.now();
    const apps = {};
    const started = await Promise.allSettled(variants.map(async (v) => [v.name, await v.start(r)]));
    for (const s of started) if (s.status === 'fulfilled') apps[s.value[0]] = s.value[1];
    const gen = new LoadGen();
    try {
      const failed = started.find((s) => s.status === 'rejected');
      if (failed) throw failed.reason;
      await c.sleep(300);
      for (const v of variants) if (v.afterStart) await v.afterStart(apps[v.name], r);
      // An unmeasured window per server first (its JIT, its pools), unless every window's own
      // warm-up already does that (long windows, as at 10,000 in flight).
      if (prewarm) for (const v of variants) await gen.window(apps[v.name], { ...load, warmup: warmupMs, duration: 200 });
      const order = roundOrder(variants, baseline, r);
      // A baseline window opens and closes the round when the order does not, so every
      // subject window has a baseline window on both sides to be interpolated from.
      const base = variants.find((v) => v.name === baseline);
      const plan = [];
      for (let i = 0; i < pairs; i++) plan.push(...order);
      if (plan[0] !== base) plan.unshift(base);
      if (plan[plan.length - 1] !== base) plan.push(base);
      const seq = [];
      for (const v of plan) {
        const m = await gen.window(apps[v.name], load);
        seq.push({ ...m, variant: v.name });
      }
      for (const n of names) windows[n].push(seq.filter((x) => x.variant === n));
      const row = { round: r + 1, order: order.map((v) => v.name).join(' '), cpuUs: {}, rps: {}, p99: {}, cpuRatio: {} };
      for (const n of names) {
        const mine = seq.filter((x) => x.variant === n);
        row.rps[n] = c.round(median(mine.map((x) => x.rps)), 0);
        row.cpuUs[n] = c.round(median(mine.map((x) => x.cpuUsPerRequest)), 2);
        row.p99[n] = c.round(median(mine.map((x) => x.p99)), 3);
      }
      for (const [s, ref] of pairsToCompare) {
        for (const [m, key] of Object.entries(MEASURES)) ratios[pairKey(s, ref)][m].push(ratiosAgainstBaseline(seq, s, key, ref));
        row.cpuRatio[pairKey(s, ref)] = c.round(median(ratios[pairKey(s, ref)].cpu[r]), 4);
      }
      for (const [m, key] of Object.entries(MEASURES)) noise[m].push(...baselineNoise(seq, key, baseline));
      for (const v of variants) {
        if (!v.beforeKill) continue;
        const note = await v.beforeKill(apps[v.name], r);
        if (note) notes[v.name].push(note);
      }
      perRound.push(row);
      log(
        `  round ${r + 1} (${row.order}), ${Math.round((Date.now() - t0) / 1000)} s: CPU µs/request ${names.map((n) => `${n} ${row.cpuUs[n]}`).join(', ')}; ` +
          `CPU ratios ${Object.entries(row.cpuRatio).map(([k, x]) => `${k} ×${x}`).join(', ')}`,
      );
    } finally {
      await gen.close();
      await Promise.all(Object.values(apps).map((a) => a.kill()));
    }
    summary = summarise();
    const rounds = r + 1;
    if (rounds >= minRounds && settled(summary)) {
      stoppedBecause = 'settled';
      break;
    }
    // The time budget wins over minRounds (a slow, busy machine gets fewer rounds and wider
    // intervals, not a longer run), but not over floorRounds: an interval clustered by
    // round needs two of them.
    const perRoundMs = (Date.now() - started0) / rounds;
    if (rounds >= floorRounds && Date.now() - started0 + perRoundMs > budgetMs) {
      stoppedBecause = rounds < minRounds ? `budget (before ${minRounds} rounds)` : 'budget';
      break;
    }
  }
  return { summary, rounds: perRound.length, stoppedBecause, perRound, elapsedS: Math.round((Date.now() - started0) / 1000), ...legacyShape() };

  // The shape the issue 4–6 benchmarks read (requests-overhead, profile-overhead): per
  // variant its levels and, against the baseline, the ratios' median, clustered interval
  // and per-round medians.
  function legacyShape() {
    const variantsOut = {};
    for (const n of names) {
      const lv = summary.levels[n];
      variantsOut[n] = { rps: lv.rps, cpuUsPerRequest: lv.cpuUsPerRequest, p99Ms: lv.p99Ms, serverCpuUtilisation: lv.serverCpuUtilisation, ...(lv.notes ? { notes: lv.notes } : {}) };
      const k = pairKey(n, baseline);
      if (n === baseline || !ratios[k]) continue;
      const legacy = (m) => {
        const all = ratios[k][m].flat();
        const sm = summary.ratios[k][m];
        return { median: sm.estimate, ci95: sm.ci95, p25: c.round(c.percentile(all, 25), 4), p75: c.round(c.percentile(all, 75), 4), n: all.length, roundMedians: sm.groupMedians };
      };
      const rr = legacy('rps');
      const cr = legacy('cpu');
      Object.assign(variantsOut[n], { ratio: rr, cpuPerRequestRatio: cr, throughputCostPct: c.round((1 - rr.median) * 100, 2), cpuCostPct: c.round((cr.median - 1) * 100, 2) });
    }
    return { variants: variantsOut, baselineNoisePct: summary.baselineNoisePct.rps, cpuBaselineNoisePct: summary.baselineNoisePct.cpu };
  }

  function summarise() {
    const levels = {};
    for (const n of names) {
      const all = windows[n].flat();
      levels[n] = {
        rps: c.round(median(all.map((x) => x.rps)), 0),
        cpuUsPerRequest: c.round(median(all.map((x) => x.cpuUsPerRequest)), 2),
        p99Ms: c.round(median(all.map((x) => x.p99)), 3),
        p99TotalMs: c.round(median(all.map((x) => x.p99Total)), 3),
        serverCpuUtilisation: c.round(median(all.map((x) => x.serverCpuUtilisation)), 3),
        windows: all.length,
        ...(notes[n].length ? { notes: notes[n] } : {}),
      };
    }
    const out = {};
    for (const [key, byMeasure] of Object.entries(ratios)) {
      out[key] = Object.fromEntries(Object.entries(byMeasure).map(([m, groups]) => [m, summarize(groups)]));
    }
    const pct = (xs) => ({ median: c.round(median(xs) * 100, 2), p90: c.round(c.percentile(xs, 90) * 100, 2) });
    return { levels, ratios: out, baselineNoisePct: { rps: pct(noise.rps), cpu: pct(noise.cpu), p99: pct(noise.p99) }, windowsPerServerPerRound: pairs, load };
  }
}

module.exports = { LoadGen, MEASURES, spread, roundOrder, ratiosAgainstBaseline, baselineNoise, interleavedRounds, pairKey };
