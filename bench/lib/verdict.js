'use strict';
// Verdicts that can fail. A target is met only when the whole 95 % confidence interval of
// the measured figure lies on the right side of it; it is not met when the whole interval
// lies on the wrong side; otherwise this run could not tell, and says so with the width of
// its interval and roughly how many more samples would settle it. "The interval includes
// ×1" is never a pass: an interval wide enough to include both ×1 and a 20 % cost says
// nothing about either.
//
// Pure functions, loaded by the tests.

const MET = 'met';
const NOT_MET = 'not met';
const UNRESOLVED = 'cannot resolve';

/**
 * Judges an estimate and its interval against a bound.
 *   m: { estimate, ci95: [lo, hi], n, groups? } (groups: rounds the interval is clustered by)
 *   target: the bound; `better` says which side of it is good: 'lower' (at most target)
 *           or 'higher' (at least target)
 *   unit: 'ratio' (shown ×1.023, widths in %), 'ms' or 'MiB' (shown as such)
 * Returns { verdict, target, better, halfWidth, needN?, text }.
 */
function judge(m, target, { better = 'lower', unit = 'ratio' } = {}) {
  const [lo, hi] = m.ci95 ?? [NaN, NaN];
  const base = { target, better, unit, estimate: m.estimate, ci95: m.ci95 };
  if (!Number.isFinite(lo) || !Number.isFinite(hi)) {
    return { ...base, verdict: UNRESOLVED, halfWidth: NaN, text: `cannot resolve: too few samples (${m.n ?? 0}) for an interval` };
  }
  const halfWidth = (hi - lo) / 2;
  const good = better === 'lower' ? hi <= target : lo >= target;
  const bad = better === 'lower' ? lo > target : hi < target;
  if (good) return { ...base, verdict: MET, halfWidth, text: MET };
  if (bad) return { ...base, verdict: NOT_MET, halfWidth, text: NOT_MET };
  // The interval straddles the bound. Its width shrinks about as 1/√n, so to clear the
  // bound it must shrink to the estimate's distance from it.
  // An interval clustered by round (m.groups) narrows with more rounds, not more windows.
  const gap = Math.abs(m.estimate - target);
  const taken = m.groups ?? m.n;
  const what = m.groups ? 'rounds' : 'samples';
  const needN = gap > 0 && taken ? Math.ceil(taken * (halfWidth / gap) ** 2) : undefined;
  const width = unit === 'ratio' ? `±${round(halfWidth * 100, 1)} %` : `±${round(halfWidth, 1)} ${unit}`;
  const more = needN === undefined ? 'the estimate sits on the bound' : `~${needN} ${what} would be needed, ${taken} were taken`;
  return { ...base, verdict: UNRESOLVED, halfWidth, needN, text: `cannot resolve at this noise (CI ${width}; ${more})` };
}

const round = (x, d) => Math.round(x * 10 ** d) / 10 ** d;

/** "×1.023 (95 % CI ×1.004–×1.041)" for ratios; "12.3 ms (95 % CI 10.1–14.2 ms)" otherwise. */
function show(m, unit = 'ratio', digits = unit === 'ratio' ? 3 : 1) {
  const f = (x) => (Number.isFinite(x) ? round(x, digits).toFixed(digits) : 'n/a');
  if (unit === 'ratio') return `×${f(m.estimate)} (95 % CI ×${f(m.ci95[0])}–×${f(m.ci95[1])})`;
  return `${f(m.estimate)} ${unit} (95 % CI ${f(m.ci95[0])}–${f(m.ci95[1])} ${unit})`;
}

/** The target as the table shows it: "≤ ×1.02", "≥ ×0.97", "≤ 15 ms". */
function showTarget(target, better = 'lower', unit = 'ratio') {
  const op = better === 'lower' ? '≤' : '≥';
  return unit === 'ratio' ? `${op} ×${target}` : `${op} ${target} ${unit}`;
}

/** The result cell: **met**, **NOT MET**, or the unresolved text. */
function cell(j) {
  if (!j) return '—';
  if (j.verdict === MET) return 'met';
  if (j.verdict === NOT_MET) return '**NOT MET**';
  return `**${j.text}**`;
}

/** True when every verdict is settled one way or the other. */
const resolved = (judgements) => judgements.every((j) => j.verdict !== UNRESOLVED);

module.exports = { MET, NOT_MET, UNRESOLVED, judge, show, showTarget, cell, resolved };
