'use strict';
// Shared by the reliability checks: the protocol fuzzer, the many-clients run, the kill
// checks and the soak (bench/reliability-*.js). Each runs short in `npm test`
// (test/reliability/) and long from `node bench/reliability.js`, against a real app with
// the agent (test/fixtures/reliab-app.cjs). This file has no side effects when loaded (the
// test runner loads it too): it reads /proc, drives HTTP load, seeds random numbers and
// asks an agent what it left running.

const fs = require('node:fs');
const http = require('node:http');
const path = require('node:path');
const { performance } = require('node:perf_hooks');
const { sleep, waitFor, percentile, getJson, round: round2 } = require('./lib/util');

/** One decimal unless asked for more: the engines' figures. */
const round = (n, digits = 1) => round2(n, digits);

const ROOT = path.resolve(__dirname, '..');
const CLIENT = path.join(ROOT, 'dist', 'src', 'client', 'index.js');
/** The app every reliability check runs against, and the functions of it they trace and gate. */
const RELIAB_APP = path.join(ROOT, 'test', 'fixtures', 'reliab-app.cjs');
const TARGETS = ['./reliab-lib.cjs:handle', './reliab-lib.cjs:tick', './reliab-lib.cjs:Store.prototype.get'];

/** The built client library (`npm run build` first). */
function client() {
  if (!fs.existsSync(CLIENT)) throw new Error(`no build at ${CLIENT}: run \`npm run build\` first`);
  return require(CLIENT);
}

/** mulberry32: a small seeded generator, so a failing run can be replayed from its seed. */
function prng(seed) {
  let state = seed >>> 0;
  const next = () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const int = (lo, hi) => lo + Math.floor(next() * (hi - lo + 1));
  return {
    next,
    /** An integer in [lo, hi]. */
    int,
    chance: (p) => next() < p,
    pick: (xs) => xs[Math.floor(next() * xs.length)],
    bytes(n) {
      const b = Buffer.allocUnsafe(n);
      for (let i = 0; i < n; i++) b[i] = Math.floor(next() * 256);
      return b;
    },
    /** Picks a key of `weights` ({name: weight}) in proportion to its weight. */
    weighted(weights) {
      const entries = Object.entries(weights).filter(([, w]) => w > 0);
      let r = next() * entries.reduce((n, [, w]) => n + w, 0);
      for (const [k, w] of entries) if ((r -= w) < 0) return k;
      return entries[entries.length - 1][0];
    },
  };
}

/** The seed named by environment variable `name` (decimal or 0x hex), else `fallback`. */
function seedFrom(name, fallback, env = process.env) {
  const raw = env[name];
  if (raw === undefined || raw === '') return fallback >>> 0;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 0 || n > 0xffffffff) throw new Error(`${name}=${raw}: expected an integer seed between 0 and 4294967295`);
  return n;
}

function processAlive(pid) {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return err.code === 'EPERM';
  }
}

/** Open file descriptors of a process (sockets, files, pipes, epoll...). */
function fdCount(pid) {
  return fs.readdirSync(`/proc/${pid}/fd`).length;
}

/** The fds of a process with what each points at, for a message when a count is off. */
function fdList(pid) {
  const out = [];
  for (const fd of fs.readdirSync(`/proc/${pid}/fd`)) {
    try {
      out.push(`${fd} → ${fs.readlinkSync(`/proc/${pid}/fd/${fd}`)}`);
    } catch {
      // closed between readdir and readlink
    }
  }
  return out;
}

/** The fd count once it has stopped moving (or reached `target`), bounded. */
async function settledFdCount(pid, target) {
  let last = fdCount(pid);
  let stableSince = Date.now();
  const deadline = Date.now() + 15_000;
  while (Date.now() < deadline) {
    await sleep(100);
    const now = fdCount(pid);
    if (target !== undefined && now === target) return now;
    if (now !== last) {
      last = now;
      stableSince = Date.now();
    } else if (target === undefined && Date.now() - stableSince >= 500) return now;
  }
  return last;
}

/** Resident set size of a process, in kB. */
function rssKB(pid) {
  const m = /^VmRSS:\s+(\d+) kB/m.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) : NaN;
}




/**
 * HTTP load on the app while a check runs: `connections` loops, each a request after the
 * previous one ended (plus `gapMs`), on its own keep-alive socket. A request that errors,
 * times out or answers other than 200 is a failure: the app must keep serving whatever the
 * agent is put through. stop() ends the loops, closes the sockets and summarises.
 */
function httpLoad(port, { connections = 2, gapMs = 0, timeoutMs = 10_000, path: urlPath = '/' } = {}) {
  const agent = new http.Agent({ keepAlive: true, maxSockets: connections });
  // A uniform sample of the latencies (a long run makes millions), and the exact worst.
  const latencies = [];
  let seen = 0;
  let worst = 0;
  const record = (ms) => {
    worst = Math.max(worst, ms);
    if (latencies.length < 20_000) latencies.push(ms);
    else if (Math.random() < 20_000 / (seen + 1)) latencies[Math.floor(Math.random() * latencies.length)] = ms;
    seen++;
  };
  const errors = [];
  let ok = 0;
  let failed = 0;
  let stopped = false;
  const one = () =>
    new Promise((resolve) => {
      const t0 = performance.now();
      const req = http.get({ host: '127.0.0.1', port, path: urlPath, agent, timeout: timeoutMs }, (res) => {
        res.resume();
        res.on('end', () => {
          record(performance.now() - t0);
          if (res.statusCode === 200) ok++;
          else {
            failed++;
            errors.push(`HTTP ${res.statusCode}`);
          }
          resolve();
        });
        res.on('error', () => {});
      });
      req.on('timeout', () => req.destroy(new Error(`no answer within ${timeoutMs} ms`)));
      req.on('error', (err) => {
        failed++;
        errors.push(err.message);
        resolve();
      });
    });
  const loops = Array.from({ length: connections }, async () => {
    while (!stopped) {
      await one();
      if (gapMs) await sleep(gapMs);
    }
  });
  return {
    stats: () => ({ ok, failed }),
    async stop() {
      stopped = true;
      await Promise.all(loops);
      agent.destroy();
      return {
        ok,
        failed,
        errors: [...new Set(errors)].slice(0, 5),
        latencyMs: { p50: round(percentile(latencies, 50), 2), p99: round(percentile(latencies, 99), 2), max: round(worst, 2) },
      };
    },
  };
}

/**
 * A well-behaved client visiting now and then (`everyMs`): connect, `process info`, close.
 * Every visit must get its welcome and its answer; stop() says how many did and did not.
 */
function visitor(socket, { everyMs = 500, timeoutMs = 10_000 } = {}) {
  const { connect } = client();
  let stopped = false;
  let ok = 0;
  const failures = [];
  const times = [];
  const loop = (async () => {
    while (!stopped) {
      const t0 = performance.now();
      try {
        const c = await connect(socket, { timeoutMs, clientName: 'reliability-visitor' });
        try {
          const info = await c.call('process', 'info', {}, { timeoutMs });
          if (typeof info.pid !== 'number') throw new Error(`process info without a pid: ${JSON.stringify(info).slice(0, 200)}`);
          ok++;
          times.push(performance.now() - t0);
        } finally {
          await c.close();
        }
      } catch (err) {
        failures.push(`${err.code ?? ''} ${err.message}`.trim());
      }
      await sleep(everyMs);
    }
  })();
  return {
    async stop() {
      stopped = true;
      await loop;
      return { ok, failed: failures.length, failures: failures.slice(0, 5), p99Ms: round(percentile(times, 99), 2) };
    },
  };
}


/** Traces and gates still on, as `trace list` and `profile gates` show them. */
async function activeInstrumentation(c) {
  const traces = (await c.call('trace', 'list')).traces.filter((t) => t.state !== 'removed');
  const gates = (await c.call('profile', 'gates')).gates.filter((g) => g.state === 'armed');
  return { traces, gates };
}

/**
 * What the agent left running in the app, once every client that asked for something has
 * gone and every bounded instrumentation has had `graceMs` to expire: active traces and
 * gates (waited for, up to graceMs), whether `requests track` was still armed (read with
 * `requests track --off`, which also disarms it: call this last), and whether every
 * function of the app is its original again.
 */
async function leftovers(socket, port, { graceMs = 5000 } = {}) {
  const { connect } = client();
  const c = await connect(socket, { timeoutMs: 10_000, clientName: 'reliability-leftovers' });
  try {
    let active = await activeInstrumentation(c);
    const deadline = Date.now() + graceMs;
    while ((active.traces.length || active.gates.length) && Date.now() < deadline) {
      await sleep(100);
      active = await activeInstrumentation(c);
    }
    const track = await c.call('requests', 'track', { off: true });
    const identity = await getJson(port, '/identity');
    return { traces: active.traces, gates: active.gates, trackWasArmed: track.wasArmed, originals: Object.values(identity).every(Boolean), identity };
  } finally {
    await c.close();
  }
}

/** Theil–Sen slope (median of pairwise slopes) of [{t, v}]: one GC spike cannot tilt it. */
function theilSen(points) {
  const slopes = [];
  const step = Math.max(1, Math.floor(points.length / 120));
  const xs = points.filter((_, i) => i % step === 0);
  for (let i = 0; i < xs.length; i++) {
    for (let j = i + 1; j < xs.length; j++) {
      if (xs[j].t !== xs[i].t) slopes.push((xs[j].v - xs[i].v) / (xs[j].t - xs[i].t));
    }
  }
  return percentile(slopes, 50);
}

/**
 * Whether memory stayed flat after a warm-up, judged by the run's own noise. `warm` is the
 * settled end of the warm-up, `measured` what follows ([{t: ms, v: kB}]). The warm-up shows
 * how far RSS swings on its own under this load on this machine (GC cycles, arenas): the
 * spread (5th to 95th percentile) of its samples around their own trend, so that a warm-up
 * still creeping up does not widen the allowance. A leak is a drift past that: the trend
 * over the measured span (Theil–Sen slope × span), and the rise of its median over the
 * warm-up's, must both stay within `factor` times that swing.
 */
function memoryVerdict(warm, measured, { factor = 3 } = {}) {
  const warmSlope = theilSen(warm);
  const residuals = warm.map((p) => p.v - warmSlope * p.t);
  const swing = Math.max(percentile(residuals, 95) - percentile(residuals, 5), 1);
  const tolerance = factor * swing;
  const spanMs = measured[measured.length - 1].t - measured[0].t;
  const slope = theilSen(measured);
  const drift = slope * spanMs;
  const rise = percentile(measured.map((p) => p.v), 50) - percentile(warm.map((p) => p.v), 50);
  return {
    warmSwingKB: round(swing, 0),
    toleranceKB: round(tolerance, 0),
    slopeKBPerMin: round(slope * 60_000, 1),
    driftKB: round(drift, 0),
    medianRiseKB: round(rise, 0),
    flat: drift <= tolerance && rise <= tolerance,
  };
}

module.exports = {
  ROOT,
  RELIAB_APP,
  TARGETS,
  client,
  prng,
  seedFrom,
  processAlive,
  fdCount,
  fdList,
  settledFdCount,
  rssKB,
  sleep,
  waitFor,
  percentile,
  round,
  httpLoad,
  visitor,
  getJson,
  activeInstrumentation,
  leftovers,
  theilSen,
  memoryVerdict,
};
