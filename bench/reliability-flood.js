'use strict';
// Sockets that never finish their WebSocket handshake, while the app serves HTTP, in two
// shapes. A burst (`burst` of them at once, as the audit did with 300): an operator must get
// in as soon as they have been stuck long enough to give way (2 s), and each must be cut by
// the agent within its handshake deadline (5 s). A stream (`rate` a second for `seconds`):
// newcomers faster than the limit can turn over keep new clients out while it lasts (the
// agent cannot tell a stuck client from a slow one), which is recorded, not judged; the app
// must not notice. Either way the agent holds at most its share of the app's descriptors
// (an eighth of RLIMIT_NOFILE: connections, and refused sockets letting go), no HTTP request
// fails, and afterwards the app holds exactly the descriptors it held before.
//
//   node bench/reliability-flood.js [--burst 300] [--seconds 60] [--rate 100]

const net = require('node:net');
const path = require('node:path');
const { performance } = require('node:perf_hooks');
const lib = require('./reliability-lib');

/** src/agent/server.ts: HANDSHAKE_TIMEOUT_MS and CONNECTING_GRACE_MS. */
const HANDSHAKE_DEADLINE_MS = 5000;
const CONNECTING_GRACE_MS = 2000;

/** The soft RLIMIT_NOFILE of a process. */
function fdLimitOf(pid) {
  const m = /^Max open files\s+(\d+)/m.exec(require('node:fs').readFileSync(`/proc/${pid}/limits`, 'utf8'));
  return m ? Number(m[1]) : Infinity;
}

/** Opens silent sockets (each reads and drops whatever comes) and keeps count of them. */
function silentSockets(socket) {
  const open = new Set();
  const stats = { opened: 0, longestLivedMs: 0 };
  return {
    stats,
    open,
    add(n) {
      for (let i = 0; i < n; i++) {
        const s = net.connect(socket);
        const born = performance.now();
        stats.opened++;
        open.add(s);
        s.resume();
        s.on('error', () => {});
        s.once('close', () => {
          open.delete(s);
          stats.longestLivedMs = Math.max(stats.longestLivedMs, performance.now() - born);
        });
      }
    },
  };
}

async function visit(connect, socket, timeoutMs) {
  try {
    const c = await connect(socket, { timeoutMs, clientName: 'flood-operator' });
    await c.call('process', 'info', {}, { timeoutMs });
    await c.close();
    return 'ok';
  } catch (err) {
    return /refused the connection: .*is at its limit|closed the connection during the handshake/.test(err.message) ? 'refused' : `failed: ${err.code ?? ''} ${err.message}`;
  }
}

async function runFlood(app, { burst = 300, seconds = 60, rate = 100, timeoutMs = 10_000, log = () => {} } = {}) {
  const { connect } = lib.client();
  const problems = [];
  const fdBaseline = await lib.settledFdCount(app.pid);
  const load = lib.httpLoad(app.port, { connections: 4 });
  let fdPeak = fdBaseline;
  const sampler = setInterval(() => (fdPeak = Math.max(fdPeak, lib.fdCount(app.pid))), 50);
  const unclear = [];

  // The burst, then an operator trying every 100 ms until it gets in.
  const b = silentSockets(app.socket);
  const t0 = performance.now();
  b.add(burst);
  let operatorInMs;
  while (operatorInMs === undefined && performance.now() - t0 < 3 * HANDSHAKE_DEADLINE_MS) {
    const r = await visit(connect, app.socket, timeoutMs);
    if (r === 'ok') operatorInMs = performance.now() - t0;
    else if (r !== 'refused') unclear.push(r);
    else await new Promise((res) => setTimeout(res, 100));
  }
  await lib.waitFor(() => b.open.size === 0, HANDSHAKE_DEADLINE_MS * 3, 'the agent to cut the burst').catch((err) => problems.push(err.message));
  if (operatorInMs === undefined) problems.push(`after a burst of ${burst} silent sockets the operator never got in`);
  else if (operatorInMs > CONNECTING_GRACE_MS + 2000) problems.push(`after a burst of ${burst} silent sockets the operator got in only after ${Math.round(operatorInMs)} ms`);

  // The stream, with an operator trying once a second.
  const st = silentSockets(app.socket);
  const opener = setInterval(() => st.add(rate / 10), 100);
  const operator = { ok: 0, refused: 0 };
  for (const until = performance.now() + seconds * 1000; performance.now() < until; await new Promise((res) => setTimeout(res, 1000))) {
    const r = await visit(connect, app.socket, timeoutMs);
    if (r === 'ok' || r === 'refused') operator[r]++;
    else unclear.push(r);
  }
  clearInterval(opener);
  // What is still open must be cut by the agent, not by us.
  await lib.waitFor(() => st.open.size === 0, HANDSHAKE_DEADLINE_MS * 3, `the agent to cut the last ${st.open.size} silent sockets`).catch((err) => problems.push(err.message));
  clearInterval(sampler);
  for (const s of [...b.open, ...st.open]) s.destroy();
  const http = await load.stop();

  const longestLivedMs = Math.max(b.stats.longestLivedMs, st.stats.longestLivedMs);
  // The agent's share of the fds (connections, and refused sockets letting go), the
  // operator's own connection and the HTTP load's.
  const share = Math.floor(fdLimitOf(app.pid) / 8);
  const allowed = share + 1 + 4;
  if (fdPeak - fdBaseline > allowed) problems.push(`the app held ${fdPeak - fdBaseline} descriptors above its baseline at the peak; at most ${allowed} expected (an eighth of its fd limit, and the load's)`);
  if (longestLivedMs > HANDSHAKE_DEADLINE_MS + 2000) problems.push(`a silent socket lived ${Math.round(longestLivedMs)} ms; the handshake deadline is ${HANDSHAKE_DEADLINE_MS} ms`);
  for (const f of [...new Set(unclear)].slice(0, 3)) problems.push(`an operator's visit failed without saying why: ${f}`);
  if (http.failed) problems.push(`${http.failed} of ${http.ok + http.failed} HTTP requests failed: ${http.errors.join('; ')}`);
  const fdAfter = await lib.settledFdCount(app.pid, fdBaseline);
  if (fdAfter !== fdBaseline) problems.push(`the app holds ${fdAfter} file descriptors after the flood, ${fdBaseline} before: ${lib.fdList(app.pid).join(', ')}`);
  log(`  burst of ${burst}: operator in after ${operatorInMs === undefined ? 'never' : `${Math.round(operatorInMs)} ms`}; stream of ${st.stats.opened} over ${seconds} s: operator in ${operator.ok}, refused ${operator.refused}; app fds ${fdBaseline} → ${fdPeak} → ${fdAfter}`);
  return {
    burst,
    operatorInAfterBurstMs: operatorInMs === undefined ? null : lib.round(operatorInMs, 0),
    stream: { seconds, rate, opened: st.stats.opened, operatorIn: operator.ok, operatorRefused: operator.refused },
    longestLivedMs: lib.round(longestLivedMs, 0),
    http,
    fdBaseline,
    fdPeak,
    fdAfter,
    problems,
  };
}

module.exports = { runFlood };

if (require.main === module) {
  const common = require('./lib/common');
  const opts = common.parseArgs();
  const burst = common.num(opts.burst, 300);
  const seconds = common.num(opts.seconds, 60);
  const rate = common.num(opts.rate, 100);
  common.finishEngine((async () => {
    const script = path.relative(path.join(__dirname, 'apps'), lib.RELIAB_APP);
    const app = await common.startApp({ script, agent: true });
    console.log(`a burst of ${burst} silent sockets, then ${rate} a second for ${seconds} s, on pid ${app.pid}; an operator visiting`);
    const result = await runFlood(app, { burst, seconds, rate, log: console.log });
    await app.kill();
    return result;
  })());
}
