'use strict';
// What a trace costs the traced function (issue 6), measured in the app's own process
// (bench/apps/hot-app.js: a tight loop calling bench/apps/hot-lib.js's `small` through the
// module object; ns per call from process.hrtime around runs of N calls; bench/lib/hot.js).
// Every measurement of the subject is interleaved with one of a control process that is
// never traced (same app, same agent).
//
// Per cycle, fresh processes:
//   subject A (limits.traceEventsPerSecond 100000: every call of a measurement emits an event)
//     untouched                      the function as the app loaded it
//     trace                          `trace add <target> --limit 1000000` (runs of 1,000 calls, 100 ms apart,
//                                    so every call is recorded and none dropped: checked with `trace list`)
//     trace, watched                 the same while a client streams `trace watch`
//     trace --args --result          arguments and result rendered into each event
//     after `trace remove`           must equal untouched within noise
//   subject B (limits.traceEventsPerSecond 1: the per-second cap drops nearly every call)
//     capped                         runs of 200,000 calls, all but one a second dropped and counted
//     after `trace remove`
// Both "untouched" and "after remove" are also measured through a freshly compiled caller
// (bench/apps/hot-app.js ?fresh=1): V8 keeps type feedback at the call site of a caller
// that ran while the wrapper was in place, which a fresh caller does not have.
//
//   node bench/trace-cost.js [--cycles 2] [--count 10]

const path = require('node:path');
const c = require('./lib/common');
const { HOT_TARGET, measureState, sameAcrossCycles } = require('./lib/hot');

const N = 2_000_000;
const EMIT_N = 1000;
const CAPPED_N = 200_000;


async function connectTo(app) {
  const { connect } = c.requireBuilt();
  return c.withTimeout(connect(app.socket, { clientName: 'bench' }), 10000, `connecting to ${app.label}`);
}

const ADD = { target: HOT_TARGET, limit: 1_000_000, duration: '20m' };

async function cycle(k, count, onlyTrace) {
  const config = (perSecond) => ({ ...onlyTrace, limits: { traceEventsPerSecond: perSecond, traceMaxDuration: '30m' } });
  const [a, b, control] = await Promise.all([
    c.startApp({ script: 'hot-app.js', agent: true, label: 'subject A', config: config(100000) }),
    c.startApp({ script: 'hot-app.js', agent: true, label: 'subject B', config: config(1) }),
    c.startApp({ script: 'hot-app.js', agent: true, label: 'control', config: config(100000) }),
  ]);
  const ca = await connectTo(a);
  const cb = await connectTo(b);
  const s = {};
  const checks = {};
  const emitState = { n: EMIT_N, controlN: N, count, gapMs: 100 };
  try {
    s.untouched = await measureState({ subject: a, control, n: N, count });
    s.untouchedFresh = await measureState({ subject: a, control, n: N, count, fresh: true });

    const t1 = await ca.call('trace', 'add', ADD, { timeoutMs: 10000 });
    s.trace = await measureState({ subject: a, control, ...emitState });
    // The same, with a client streaming the events.
    const watcher = await connectTo(a);
    const ctl = new AbortController();
    let received = 0;
    const watching = watcher.call('trace', 'watch', {}, { signal: ctl.signal, onData: () => received++ }).catch(() => {});
    await c.sleep(200);
    s.traceWatched = await measureState({ subject: a, control, ...emitState });
    ctl.abort();
    await c.withTimeout(watching, 10000, 'trace watch to end');
    await watcher.close();
    const l1 = (await ca.call('trace', 'list', {}, { timeoutMs: 10000 })).traces.find((t) => t.id === t1.id);
    await ca.call('trace', 'remove', { id: String(t1.id) }, { timeoutMs: 10000 });
    checks.trace = { calls: l1.calls, emitted: l1.emitted, dropped: l1.dropped, watchedEventsReceived: received };

    const t2 = await ca.call('trace', 'add', { ...ADD, args: true, result: true }, { timeoutMs: 10000 });
    s.traceArgsResult = await measureState({ subject: a, control, ...emitState });
    const l2 = (await ca.call('trace', 'list', {}, { timeoutMs: 10000 })).traces.find((t) => t.id === t2.id);
    await ca.call('trace', 'remove', { id: String(t2.id) }, { timeoutMs: 10000 });
    checks.traceArgsResult = { calls: l2.calls, emitted: l2.emitted, dropped: l2.dropped };
    const left = (await ca.call('trace', 'list', {}, { timeoutMs: 10000 })).traces.filter((t) => t.state !== 'removed');
    checks.activeAfterRemove = left.length;

    s.removed = await measureState({ subject: a, control, n: N, count });
    s.removedFresh = await measureState({ subject: a, control, n: N, count, fresh: true });

    const t3 = await cb.call('trace', 'add', ADD, { timeoutMs: 10000 });
    s.capped = await measureState({ subject: b, control, n: CAPPED_N, controlN: N, count });
    const l3 = (await cb.call('trace', 'list', {}, { timeoutMs: 10000 })).traces.find((t) => t.id === t3.id);
    await cb.call('trace', 'remove', { id: String(t3.id) }, { timeoutMs: 10000 });
    checks.capped = { calls: l3.calls, emitted: l3.emitted, dropped: l3.dropped };
    s.cappedRemoved = await measureState({ subject: b, control, n: N, count });
  } finally {
    await Promise.all([ca.close(), cb.close()]);
    await Promise.all([a.kill(), b.kill(), control.kill()]);
  }
  const line = (x) => `${x.subjectNs.median} ns (×${x.ratio.median})`;
  console.log(
    `  cycle ${k + 1}: untouched ${line(s.untouched)}; trace ${line(s.trace)}; watched ${line(s.traceWatched)}; --args --result ${line(s.traceArgsResult)}; removed ${line(s.removed)}; ` +
      `fresh caller untouched ${line(s.untouchedFresh)}, removed ${line(s.removedFresh)}; capped ${line(s.capped)}, then removed ${line(s.cappedRemoved)}`,
  );
  console.log(`    checks: ${JSON.stringify(checks)}`);
  return { states: s, checks };
}

async function run(opts = {}) {
  const cycles = c.num(opts.cycles, 2);
  const count = c.num(opts.count, 10);
  c.requireBuilt();
  const onlyTrace = { disable: c.builtinPlugins().filter((b) => b !== 'trace') };
  console.log(`trace-cost: ${cycles} cycles (fresh processes each), ${count} interleaved measurements per state`);
  const all = [];
  for (let k = 0; k < cycles; k++) all.push(await cycle(k, count, onlyTrace));
  const names = Object.keys(all[0].states);
  const states = {};
  for (const n of names) {
    const list = all.map((x) => x.states[n]);
    states[n] = {
      calls: list[0].n,
      subjectNs: c.round(c.median(list.flatMap((x) => x.raw.subject)), 3),
      controlNs: c.round(c.median(list.flatMap((x) => x.raw.control)), 3),
      ratio: c.round(c.median(list.map((x) => x.ratio.median)), 4),
      perCycle: list.map((x) => ({ subjectNs: x.subjectNs.median, subjectCi95: x.subjectNs.ci95, ratio: x.ratio.median, ratioCi95: x.ratio.ci95 })),
    };
  }
  const verdict = (after, before) => sameAcrossCycles(all.map((x) => x.states[after]), all.map((x) => x.states[before]));
  const base = states.untouched.subjectNs;
  const result = {
    benchmark: 'trace-cost',
    cycles,
    count,
    states,
    extraNsPerCall: Object.fromEntries(['trace', 'traceWatched', 'traceArgsResult', 'capped'].map((n) => [n, c.round(states[n].subjectNs - base, 1)])),
    removedVsUntouched: verdict('removed', 'untouched'),
    removedVsUntouchedFreshCaller: verdict('removedFresh', 'untouchedFresh'),
    cappedRemovedVsUntouched: verdict('cappedRemoved', 'untouched'),
    checks: all.map((x) => x.checks),
  };
  result.everyEmittedNoneDropped = result.checks.every((x) => x.trace.dropped === 0 && x.traceArgsResult.dropped === 0);
  result.pass = result.removedVsUntouched.same;
  console.log(
    `trace-cost: untouched ${base} ns/call; +${result.extraNsPerCall.trace} ns with a trace, +${result.extraNsPerCall.traceWatched} watched, +${result.extraNsPerCall.traceArgsResult} with --args --result, +${result.extraNsPerCall.capped} when capped; ` +
      `removed ÷ untouched ×${result.removedVsUntouched.ratio} (${result.removedVsUntouched.same ? 'same' : 'DIFFERENT'}), fresh caller ×${result.removedVsUntouchedFreshCaller.ratio} (${result.removedVsUntouchedFreshCaller.same ? 'same' : 'DIFFERENT'})`,
  );
  return result;
}

function markdown(r) {
  const s = r.states;
  const ck = r.checks;
  const sum = (f) => ck.reduce((a, x) => a + f(x), 0);
  const label = {
    untouched: 'untouched',
    trace: '`trace add` (no flags), every call recorded',
    traceWatched: 'the same, with a client streaming `trace watch`',
    traceArgsResult: '`trace add --args --result`, every call recorded',
    removed: 'after `trace remove`',
    untouchedFresh: 'untouched, through a freshly compiled caller',
    removedFresh: 'after `trace remove`, through a freshly compiled caller',
    capped: 'trace over its per-second cap (cap 1/s: nearly every call dropped)',
    cappedRemoved: 'after `trace remove` of the capped trace',
  };
  const order = ['untouched', 'trace', 'traceWatched', 'traceArgsResult', 'capped', 'removed', 'cappedRemoved', 'untouchedFresh', 'removedFresh'];
  const extra = (n) => (['trace', 'traceWatched', 'traceArgsResult', 'capped'].includes(n) ? `+${r.extraNsPerCall[n]} ns` : '');
  return [
    `Hot function \`lib.small(i)\` (bench/apps/hot-lib.js) called in a tight loop in the app, ns per call measured in the app (median of 5 timed runs per measurement); ${r.cycles} cycles with fresh processes, ${r.count} measurements per state, each interleaved with a control process never traced. Ratios are to that control.`,
    '',
    '| state | calls per run | ns per call | added per call | ÷ control (per cycle) |',
    '|---|---|---|---|---|',
    ...order.map((n) => `| ${label[n]} | ${s[n].calls.toLocaleString('en')} | ${s[n].subjectNs} | ${extra(n)} | ×${s[n].ratio} (${s[n].perCycle.map((x) => `×${x.ratio}`).join(', ')}) |`),
    '',
    `After \`trace remove\`, the same caller: ×${r.removedVsUntouched.ratio} of untouched → ${r.removedVsUntouched.same ? 'the same within noise' : '**not the same**'}; through a fresh caller: ×${r.removedVsUntouchedFreshCaller.ratio} → ${r.removedVsUntouchedFreshCaller.same ? 'the same within noise' : '**not the same**'} (untouched itself varies ${(r.removedVsUntouchedFreshCaller.cycleNoise * 100).toFixed(0)}% between cycles through a fresh caller, ${(r.removedVsUntouched.cycleNoise * 100).toFixed(0)}% through the same caller: the yardstick for "the same"). ` +
      `Checks: traced runs recorded ${sum((x) => x.trace.emitted + x.traceArgsResult.emitted).toLocaleString('en')} events and dropped ${sum((x) => x.trace.dropped + x.traceArgsResult.dropped)}; the watcher received ${ck.map((x) => x.trace.watchedEventsReceived).join(', ')} events; the capped trace saw ${sum((x) => x.capped.calls).toLocaleString('en')} calls, recorded ${sum((x) => x.capped.emitted)} and dropped ${sum((x) => x.capped.dropped).toLocaleString('en')}; traces still active after remove: ${ck.map((x) => x.activeAfterRemove).join(', ')}.`,
  ].join('\n');
}

module.exports = { run, markdown };
c.mainIfDirect(module, run);
