'use strict';
// Cost per call of a hot function, measured inside the app (bench/apps/hot-app.js: a tight
// loop calling bench/apps/hot-lib.js's `small` through the module object), for
// profile-overhead.js (idle gate) and trace-cost.js (traces). A *state* of the subject app
// (untouched, traced, gated, after removal…) is measured `count` times, each measurement
// interleaved with one of a *control* app that is never touched (same app, same agent, its
// own process), the order alternating, so every subject figure has a control figure taken
// on the same machine a moment before or after it. Ratios are subject ÷ control level
// interpolated between the neighbouring control measurements (as bench/lib/windows.js).

const path = require('node:path');
const c = require('./common');
const { ratiosAgainstBaseline, spread } = require('./windows');

const HOT_LIB = path.join(__dirname, '..', 'apps', 'hot-lib.js');
/** The target naming the hot function (an absolute path: the app's own module instance). */
const HOT_TARGET = `${HOT_LIB}:small`;

/** Median ns per call of `reps` timed runs of n calls (after one untimed run), in the app. */
async function loopNs(app, n, reps = 5, fresh = false) {
  const r = await c.getJson(app.port, `/loop?n=${n}&reps=${reps}${fresh ? '&fresh=1' : ''}`);
  return r.median;
}

/**
 * Measures one state: `count` subject measurements of n calls each, interleaved with
 * control measurements of controlN calls (with `fresh`, both through a newly compiled caller). `gapMs` pauses between pairs (to keep a traced
 * function under a per-second event cap). Returns ns/call of both and the ratios.
 */
async function measureState({ subject, control, n, controlN = n, count = 12, reps = 5, gapMs = 0, fresh = false }) {
  const seq = [];
  for (let i = 0; i < count; i++) {
    const pair = i % 2 ? [['subject', subject, n], ['control', control, controlN]] : [['control', control, controlN], ['subject', subject, n]];
    for (const [variant, app, calls] of pair) seq.push({ variant, ns: await loopNs(app, calls, reps, fresh) });
    if (gapMs) await c.sleep(gapMs);
  }
  // One control measurement more at the end, so every subject one has a control after it.
  seq.push({ variant: 'control', ns: await loopNs(control, controlN, reps, fresh) });
  const subjectNs = seq.filter((x) => x.variant === 'subject').map((x) => x.ns);
  const controlNs = seq.filter((x) => x.variant === 'control').map((x) => x.ns);
  const ratios = ratiosAgainstBaseline(seq, 'subject', 'ns', 'control');
  return {
    n,
    subjectNs: spread(subjectNs, 3),
    controlNs: spread(controlNs, 3),
    ratio: spread(ratios, 4),
    raw: { subject: subjectNs.map((x) => c.round(x, 3)), control: controlNs.map((x) => c.round(x, 3)) },
  };
}

/** Do two states agree within noise? Their ratio CIs overlap, or their medians differ by < tolerance. */
function sameWithinNoise(a, b, tolerance = 0.03) {
  const overlap = a.ratio.ci95[0] <= b.ratio.ci95[1] && b.ratio.ci95[0] <= a.ratio.ci95[1];
  const diff = Math.abs(a.ratio.median / b.ratio.median - 1);
  return { same: overlap || diff < tolerance, ciOverlap: overlap, relativeDifference: c.round(diff, 4) };
}

/**
 * Is the state `after` (one measureState result per cycle) the same as `before`? Each cycle
 * compiles its callers afresh, and the same untouched function differs by tens of percent
 * from one cycle to the next at these sub-nanosecond costs (alignment, inlining decisions).
 * So the overall verdict asks whether after ÷ before (medians over cycles) is within that
 * cycle-to-cycle spread of `before` itself (or within `tolerance`, whichever is larger);
 * the per-cycle comparisons are kept for the report.
 */
function sameAcrossCycles(after, before, tolerance = 0.03) {
  const perCycle = after.map((s, i) => sameWithinNoise(s, before[i]));
  const medianOf = (list) => c.median(list.map((s) => s.ratio.median));
  const beforeRatios = before.map((s) => s.ratio.median);
  const cycleNoise = before.length > 1 ? Math.max(...beforeRatios) / Math.min(...beforeRatios) - 1 : 0;
  const ratio = medianOf(after) / medianOf(before);
  const allowed = Math.max(tolerance, cycleNoise);
  return { perCycle, same: Math.abs(ratio - 1) <= allowed, ratio: c.round(ratio, 4), cycleNoise: c.round(cycleNoise, 4) };
}

module.exports = { HOT_LIB, HOT_TARGET, loopNs, measureState, sameWithinNoise, sameAcrossCycles };
