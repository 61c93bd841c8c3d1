'use strict';
// Where the per-call cost of a gate or a trace goes (a diagnostic beside trace-cost.js and
// profile-overhead.js). In one child process that loads the built plugin code directly
// (dist/src/plugin/wrap.js, dist/plugins/profile/gate.js, dist/plugins/trace/*), the same
// small function is called in a tight loop, each time through a freshly compiled caller
// (no call-site feedback carried over), wrapped in turn by:
//
//   closure            a plain JS wrapper `function (...a) { return f.apply(this, a) }`: the floor of any wrapper
//   wrap, no-op        wrapFunction with an interceptor that only calls proceed()
//   gate, waiting      the real Gate interceptor, one sample taken, `every` 1 h
//   trace, capped      the real Trace interceptor over its per-second cap (every call dropped)
//   trace, recording   the real Trace + TraceRegistry, every call recorded (no flags)
//   trace, --args --result
//
// and, for reference, the cost of the calls the interceptors make on every call:
// performance.now(), new Date().toISOString() (what trace events used to carry), Array.prototype.slice of a 1-element list.
// The rows are alternated over several rounds; medians are reported.
//
//   node bench/wrap-breakdown.js [--rounds 7]

const { spawnSync } = require('node:child_process');
const path = require('node:path');
const c = require('./lib/common');

function child() {
  const dist = path.join(c.ROOT, 'dist');
  const { wrapFunction } = require(path.join(dist, 'src', 'plugin', 'wrap.js'));
  const { Gate } = require(path.join(dist, 'plugins', 'profile', 'gate.js'));
  const { TraceRegistry } = require(path.join(dist, 'plugins', 'trace', 'registry.js'));
  const lib = {};
  lib.small = function small(x) {
    return (x * 31 + 7) & 1023;
  };
  const original = lib.small;
  const descriptor = Object.getOwnPropertyDescriptor(lib, 'small');
  const BODY = 'let acc = 0; for (let i = 0; i < n; i++) acc = (acc + lib.small(i)) | 0; return acc;';
  let sink = 0;
  const time = (n) => {
    const f = new Function('lib', 'n', BODY);
    sink ^= f(lib, Math.min(n, 20000));
    const out = [];
    for (let r = 0; r < 5; r++) {
      const t0 = process.hrtime.bigint();
      sink ^= f(lib, n);
      out.push(Number(process.hrtime.bigint() - t0) / n);
    }
    return out.sort((a, b) => a - b)[2];
  };
  const micro = (fn, n) => {
    fn();
    const out = [];
    for (let r = 0; r < 5; r++) {
      const t0 = process.hrtime.bigint();
      for (let i = 0; i < n; i++) fn();
      out.push(Number(process.hrtime.bigint() - t0) / n);
    }
    return out.sort((a, b) => a - b)[2];
  };
  const lifetime = {
    setTimeout(fn, ms) {
      const t = setTimeout(fn, ms);
      t.unref();
      return { clear: () => clearTimeout(t) };
    },
    setInterval(fn, ms) {
      const t = setInterval(fn, ms);
      t.unref();
      return { clear: () => clearInterval(t) };
    },
    wrap: (o, k, i) => wrapFunction(o, k, i),
  };
  const traceOpts = (extra) => ({ args: false, result: false, stack: false, limit: 1e9, durationMs: 3600_000, perSecond: 1e9, detached: true, ...extra });
  const rows = {
    untouched: () => time(2_000_000),
    closure: () => {
      lib.small = function (...a) {
        return original.apply(this, a);
      };
      try {
        return time(500_000);
      } finally {
        Object.defineProperty(lib, 'small', descriptor);
      }
    },
    'wrap, no-op': () => {
      const h = wrapFunction(lib, 'small', (_call, proceed) => proceed());
      try {
        return time(500_000);
      } finally {
        h.unwrap();
      }
    },
    'gate, waiting': () => {
      const g = new Gate(1, { spec: 'x', everyMs: 3600_000, want: 2, intervalUs: 100 });
      g.handle = wrapFunction(lib, 'small', g.intercept);
      lib.small(1); // the one profiled call; from now on it waits
      try {
        return time(500_000);
      } finally {
        g.close('removed');
      }
    },
    'trace, capped': () => {
      const reg = new TraceRegistry(lifetime);
      const t = reg.create('x', traceOpts({ perSecond: 1 }), 'bench');
      reg.attach(t, lib, 'small');
      try {
        return time(500_000);
      } finally {
        t.remove('done');
      }
    },
    'trace, recording': () => {
      const reg = new TraceRegistry(lifetime);
      const t = reg.create('x', traceOpts({}), 'bench');
      reg.attach(t, lib, 'small');
      try {
        return time(20_000);
      } finally {
        t.remove('done');
      }
    },
    'trace, recording --args --result': () => {
      const reg = new TraceRegistry(lifetime);
      const t = reg.create('x', traceOpts({ args: true, result: true }), 'bench');
      reg.attach(t, lib, 'small');
      try {
        return time(20_000);
      } finally {
        t.remove('done');
      }
    },
    'performance.now()': () => micro(() => performance.now(), 1_000_000),
    'new Date().toISOString()': () => micro(() => new Date().toISOString(), 200_000),
    '[f].slice()': () => {
      const list = [() => 0];
      return micro(() => list.slice(), 1_000_000);
    },
  };
  const rounds = Number(process.argv[3] ?? 7);
  const acc = Object.fromEntries(Object.keys(rows).map((k) => [k, []]));
  for (let r = 0; r < rounds; r++) {
    const names = Object.keys(rows);
    for (const k of r % 2 ? names.reverse() : names) acc[k].push(rows[k]());
  }
  const out = {};
  for (const [k, xs] of Object.entries(acc)) out[k] = xs.sort((a, b) => a - b)[xs.length >> 1];
  process.stdout.write(`${JSON.stringify({ nsPerCall: out, restored: lib.small === original, sink })}\n`);
}

async function run(opts = {}) {
  c.requireBuilt();
  const rounds = c.num(opts.rounds, 7);
  const r = spawnSync(process.execPath, [__filename, '--child', String(rounds)], { encoding: 'utf8', timeout: 300_000 });
  if (r.status !== 0) throw new Error(`breakdown child failed (${r.status ?? r.signal}): ${r.stderr}`);
  const res = JSON.parse(r.stdout.trim().split('\n').pop());
  const ns = Object.fromEntries(Object.entries(res.nsPerCall).map(([k, v]) => [k, c.round(v, 1)]));
  for (const [k, v] of Object.entries(ns)) console.log(`  ${k.padEnd(34)} ${v} ns/call`);
  return { benchmark: 'wrap-breakdown', rounds, nsPerCall: ns, originalRestored: res.restored };
}

function markdown(r) {
  const ns = r.nsPerCall;
  const u = ns.untouched;
  const row = (k, what) => `| ${k} | ${ns[k]} | ${k === 'untouched' || /\(\)/.test(k) ? '' : `+${c.round(ns[k] - u, 1)}`} | ${what} |`;
  return [
    'Where the per-call cost goes: the built plugin code loaded directly in one process, the same small function called in a tight loop through a freshly compiled caller each time, medians of ' +
      `${r.rounds} alternating rounds (\`node bench/wrap-breakdown.js\`).`,
    '',
    '| wrapped by | ns per call | added | what runs per call |',
    '|---|---|---|---|',
    row('untouched', 'the call, inlined'),
    row('closure', 'a plain JS wrapper `(...a) => f.apply(this, a)`: the floor of any wrapper'),
    row('wrap, no-op', 'Proxy apply trap, an Invocation object, a `proceed` closure, Reflect.apply (the interceptor list is copied on wrap/unwrap, not per call)'),
    row('gate, waiting', '+ one flag test (a timer reopens the gate; no clock read)'),
    row('trace, capped', '+ state, window and cap checks, `dropped++` (a timer resets the window; no clock read)'),
    row('trace, recording', '+ an event object, `Date.now()`, a `done` closure, two `performance.now()`, Math.round, publish (push/shift of a 500-event ring)'),
    row('trace, recording --args --result', '+ util.inspect of the argument and the result'),
    `| performance.now() | ${ns['performance.now()']} | | one call, alone |`,
    `| new Date().toISOString() | ${ns['new Date().toISOString()']} | | one call, alone |`,
    `| [f].slice() | ${ns['[f].slice()']} | | one call, alone |`,
    '',
    `Original function object back after every row: ${r.originalRestored ? 'yes' : '**no**'}.`,
  ].join('\n');
}

module.exports = { run, markdown };
if (process.argv[2] === '--child') child();
else c.mainIfDirect(module, run);
