'use strict';
// Confidence intervals for the benchmarks' verdicts. Pure functions, seeded (the same data
// gives the same interval), no process hooks: the tests load this file.
//
// Windows measured in one round share a server process (its JIT, its memory layout) and a
// stretch of the machine's time, so they are not independent samples: a bootstrap that
// resampled all windows of all rounds as one pool would give an interval far too narrow.
// `clusteredCI` resamples the rounds first, then the windows inside each chosen round (the
// two-stage bootstrap), so the interval carries the spread between processes as well as
// the spread between windows. With few rounds it errs wide, which is the side a verdict
// that must be able to fail has to err on.

const { percentile, sorted } = require('./util');

/** mulberry32: a small seeded PRNG in [0, 1). */
function rng(seed = 12345) {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function median(xs) {
  if (xs.length === 0) return NaN;
  const s = sorted(xs);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

function mean(xs) {
  return xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : NaN;
}

/**
 * 95 % interval of `stat` (median by default) over groups of samples (rounds of windows):
 * each bootstrap draw takes as many rounds as there are, with replacement, and from each
 * drawn round as many of its samples as it has, with replacement. Empty groups are ignored.
 * Returns [lo, hi]; [NaN, NaN] when there are fewer than 3 samples in all.
 */
function clusteredCI(groups, { stat = median, iterations = 2000, seed = 12345, level = 0.95 } = {}) {
  const gs = groups.filter((g) => g.length > 0);
  const n = gs.reduce((a, g) => a + g.length, 0);
  if (n < 3) return [NaN, NaN];
  const rand = rng(seed);
  const out = new Array(iterations);
  const pool = [];
  for (let i = 0; i < iterations; i++) {
    pool.length = 0;
    for (let k = 0; k < gs.length; k++) {
      const g = gs[Math.floor(rand() * gs.length)];
      for (let j = 0; j < g.length; j++) pool.push(g[Math.floor(rand() * g.length)]);
    }
    out[i] = stat(pool);
  }
  const tail = ((1 - level) / 2) * 100;
  return [percentile(out, tail), percentile(out, 100 - tail)];
}

/** 95 % bootstrap interval of `stat` over independent samples (one group of them). */
function bootstrapCI(xs, opts = {}) {
  return clusteredCI(xs.map((x) => [x]), opts);
}

// Student's t, two-sided 95 %, for 1–9 degrees of freedom.
const T95 = [NaN, 12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262];

/**
 * 95 % t-interval of the mean of the per-group medians: with few groups (rounds) a
 * bootstrap cannot see the spread between rounds it never drew and comes out too narrow;
 * Student's t on the round medians does not. [NaN, NaN] with fewer than 2 groups.
 * `log`: on the logarithms of the medians (all > 0), so the interval of a ratio or a time
 * stays positive and is as wide in ×0.9 as in ×1.1 (two rounds of a noisy ratio gave
 * ×-12–×26 on the linear scale).
 */
function roundsTInterval(groupMedians, { log = false } = {}) {
  const k = groupMedians.length;
  if (k < 2) return [NaN, NaN];
  const xs = log ? groupMedians.map(Math.log) : groupMedians;
  const m = mean(xs);
  const sd = Math.sqrt(xs.reduce((a, x) => a + (x - m) ** 2, 0) / (k - 1));
  const h = (T95[k - 1] ?? 1.96) * (sd / Math.sqrt(k));
  return log ? [Math.exp(m - h), Math.exp(m + h)] : [m - h, m + h];
}

/**
 * Median, its 95 % interval, the count and the per-group medians, rounded. The interval is
 * the clustered bootstrap's; with fewer than 10 groups it is widened to cover the t-interval
 * of the group medians too (the wider of the two on each side), so that three rounds that
 * happen to agree do not pass for a resolution they do not have; that t-interval is taken on
 * the log scale when every median is positive (ratios, times).
 */
function summarize(groups, { digits = 4, stat = median } = {}) {
  const all = groups.flat();
  let [lo, hi] = clusteredCI(groups, { stat });
  const medians = groups.filter((g) => g.length).map((g) => median(g));
  if (medians.length < 10 && Number.isFinite(lo)) {
    const [tlo, thi] = roundsTInterval(medians, { log: medians.every((m) => m > 0) });
    if (Number.isFinite(tlo)) {
      lo = Math.min(lo, tlo);
      hi = Math.max(hi, thi);
    }
  }
  const r = (x) => (Number.isFinite(x) ? Math.round(x * 10 ** digits) / 10 ** digits : x);
  return {
    estimate: r(stat(all)),
    ci95: [r(lo), r(hi)],
    n: all.length,
    groups: groups.filter((g) => g.length).length,
    groupMedians: groups.filter((g) => g.length).map((g) => r(median(g))),
  };
}

// Student's t, two-sided 95 %, for 10–30 degrees of freedom (T95 has 1–9).
const T95_MORE = [2.228, 2.201, 2.179, 2.16, 2.145, 2.131, 2.12, 2.11, 2.101, 2.093, 2.086, 2.08, 2.074, 2.069, 2.064, 2.06, 2.056, 2.052, 2.048, 2.045, 2.042];

/** Two-sided 95 % t quantile for df degrees of freedom, rounded down to a whole df (the wider side). */
function t95(df) {
  const k = Math.floor(df);
  if (!(k >= 1)) return NaN;
  if (k <= 9) return T95[k];
  return k <= 30 ? T95_MORE[k - 10] : 1.96;
}

function sampleVariance(xs) {
  const m = mean(xs);
  return xs.reduce((a, x) => a + (x - m) ** 2, 0) / (xs.length - 1);
}

/**
 * The ratio of two positive figures measured in independent repeats (instruction counts of
 * separate processes: a, the subject; b, the baseline), with its 95 % interval: Welch's
 * t-interval of the difference of the mean logarithms, exponentiated. The estimate is the
 * ratio of geometric means. Welch, not a pooled variance, because an agent may make a count
 * less repeatable than the bare app's; the degrees of freedom (Welch–Satterthwaite) are
 * rounded down, so with three repeats a side the interval errs wide. When neither side
 * varies at all the interval is the point: the counts then agree to the last instruction.
 * Returns { estimate, ci95, n, repeats: { a, b }, spreadPct: { a, b } } (n: the fewer repeats
 * of the two sides, what more of would narrow it; spread: half the range of a side, in % of
 * its median: how repeatable its repeats were); NaNs with fewer than 2 a side.
 */
function logRatioInterval(a, b, { digits = 4 } = {}) {
  const r = (x) => (Number.isFinite(x) ? Math.round(x * 10 ** digits) / 10 ** digits : x);
  const spread = (xs) => (xs.length ? r(((Math.max(...xs) - Math.min(...xs)) / 2 / median(xs)) * 100) : NaN);
  const base = { n: Math.min(a.length, b.length), repeats: { a: a.length, b: b.length }, spreadPct: { a: spread(a), b: spread(b) } };
  if (a.length < 2 || b.length < 2 || ![...a, ...b].every((x) => x > 0)) return { ...base, estimate: r(mean(a) / mean(b)), ci95: [NaN, NaN] };
  const la = a.map(Math.log);
  const lb = b.map(Math.log);
  const d = mean(la) - mean(lb);
  const va = sampleVariance(la) / la.length;
  const vb = sampleVariance(lb) / lb.length;
  const se = Math.sqrt(va + vb);
  if (se === 0) return { ...base, estimate: r(Math.exp(d)), ci95: [r(Math.exp(d)), r(Math.exp(d))], df: Infinity };
  const df = (va + vb) ** 2 / (va ** 2 / (la.length - 1) + vb ** 2 / (lb.length - 1));
  const h = t95(df) * se;
  return { ...base, estimate: r(Math.exp(d)), ci95: [r(Math.exp(d - h)), r(Math.exp(d + h))], df: Math.round(df * 10) / 10 };
}

/**
 * The ratio a ÷ b from pairs [a_i, b_i] measured alike (the same V8 seed, say): the geometric
 * mean of the pair ratios, with a t-interval of their logs (n − 1 degrees of freedom).
 */
function pairedLogRatioInterval(pairs, { digits = 4 } = {}) {
  const r = (x) => (Number.isFinite(x) ? Math.round(x * 10 ** digits) / 10 ** digits : x);
  const good = pairs.filter(([a, b]) => a > 0 && b > 0);
  const d = good.map(([a, b]) => Math.log(a / b));
  const spread = (xs) => (xs.length ? r(((Math.max(...xs) - Math.min(...xs)) / 2 / median(xs)) * 100) : NaN);
  const base = { n: d.length, paired: true, repeats: { a: d.length, b: d.length }, spreadPct: { a: spread(good.map((p) => p[0])), b: spread(good.map((p) => p[1])) } };
  if (d.length < 2) return { ...base, estimate: d.length ? r(Math.exp(d[0])) : NaN, ci95: [NaN, NaN] };
  const m = mean(d);
  const se = Math.sqrt(sampleVariance(d) / d.length);
  const h = t95(d.length - 1) * se;
  return { ...base, estimate: r(Math.exp(m)), ci95: [r(Math.exp(m - h)), r(Math.exp(m + h))], df: d.length - 1 };
}

module.exports = { rng, median, mean, clusteredCI, bootstrapCI, roundsTInterval, summarize, t95, logRatioInterval, pairedLogRatioInterval };
