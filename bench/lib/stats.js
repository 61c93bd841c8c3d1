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

module.exports = { rng, median, mean, clusteredCI, bootstrapCI, roundsTInterval, summarize };
