'use strict';
// Many clients at once. `clients` connections open together on one agent, each runs a few
// commands (`process info`, `process stack`, `requests list`) for `rounds` rounds or for
// `seconds`, while the app serves HTTP; then they all leave. Every command must succeed,
// no HTTP request may fail, and once they have gone the app holds exactly the file
// descriptors it held before. With `limit` (the agent's limits.maxConnections, when it is
// below `clients`), exactly that many get in, the rest are refused with a message naming
// the limit, and those in still succeed.
//
//   node bench/reliability-clients.js [--clients 200] [--seconds 60]

const path = require('node:path');
const { performance } = require('node:perf_hooks');
const lib = require('./reliability-lib');

const COMMANDS = [
  ['process', 'info', {}],
  ['process', 'stack', {}],
  ['requests', 'list', {}],
];

async function runClients(app, { clients = 200, rounds = 1, seconds, limit, loadConnections = 4, timeoutMs = 30_000, log = () => {} } = {}) {
  const { connect } = lib.client();
  const problems = [];
  const fdBaseline = await lib.settledFdCount(app.pid);
  // Requests that take a little while, so `requests list` has some in flight to show.
  const load = lib.httpLoad(app.port, { connections: loadConnections, path: '/slow?ms=5' });

  const t0 = performance.now();
  const connectMs = [];
  const attempts = await Promise.allSettled(
    Array.from({ length: clients }, async (_, i) => {
      const t = performance.now();
      const c = await connect(app.socket, { timeoutMs, clientName: `many-${i}` });
      connectMs.push(performance.now() - t);
      return c;
    }),
  );
  const connected = attempts.filter((a) => a.status === 'fulfilled').map((a) => a.value);
  const refused = attempts.filter((a) => a.status === 'rejected').map((a) => a.reason);
  const fdPeak = lib.fdCount(app.pid);
  log(`  ${connected.length} connected, ${refused.length} refused in ${Math.round(performance.now() - t0)} ms; app fds ${fdBaseline} → ${fdPeak}`);
  if (limit === undefined) {
    for (const err of refused.slice(0, 5)) problems.push(`a client could not connect: ${err.code ?? ''} ${err.message}`);
    if (refused.length > 5) problems.push(`… and ${refused.length - 5} more`);
  } else {
    if (connected.length !== Math.min(limit, clients)) problems.push(`${connected.length} of ${clients} clients got in with limits.maxConnections at ${limit}`);
    const unclear = refused.filter((e) => !/refused the connection: .*limits\.maxConnections/.test(e.message));
    for (const err of unclear.slice(0, 3)) problems.push(`a refused client was not told why: ${err.code ?? ''} ${err.message}`);
  }

  const callMs = [];
  const failures = [];
  const until = seconds === undefined ? undefined : performance.now() + seconds * 1000;
  let calls = 0;
  await Promise.all(
    connected.map(async (c) => {
      for (let round = 0; until === undefined ? round < rounds : performance.now() < until; round++) {
        for (const [plugin, command, args] of COMMANDS) {
          const t = performance.now();
          try {
            await c.call(plugin, command, args, { timeoutMs });
            callMs.push(performance.now() - t);
            calls++;
          } catch (err) {
            failures.push(`${plugin} ${command}: ${err.code ?? ''} ${err.message}`);
          }
        }
      }
    }),
  );
  await Promise.all(connected.map((c) => c.close()));
  const http = await load.stop();
  for (const f of [...new Set(failures)].slice(0, 5)) problems.push(`a command failed: ${f}`);
  if (failures.length) problems.push(`${failures.length} of ${calls + failures.length} commands failed`);
  if (http.failed) problems.push(`${http.failed} of ${http.ok + http.failed} HTTP requests failed: ${http.errors.join('; ')}`);

  // Nobody is connected any more: the agent holds no connection (nor anything else).
  const fdAfter = await lib.settledFdCount(app.pid, fdBaseline);
  if (fdAfter !== fdBaseline) problems.push(`the app holds ${fdAfter} file descriptors after the clients left, ${fdBaseline} before: ${lib.fdList(app.pid).join(', ')}`);
  try {
    const c = await connect(app.socket, { timeoutMs, clientName: 'many-after' });
    await c.call('process', 'info');
    await c.close();
  } catch (err) {
    problems.push(`a client after the crowd could not get \`process info\`: ${err.message}`);
  }
  const stat = (xs) => ({ p50: lib.round(lib.percentile(xs, 50), 1), p99: lib.round(lib.percentile(xs, 99), 1), max: lib.round(xs.reduce((m, x) => Math.max(m, x), 0), 1) });
  return {
    clients,
    connected: connected.length,
    refused: refused.length,
    refusal: refused[0]?.message,
    calls,
    failedCalls: failures.length,
    seconds: lib.round((performance.now() - t0) / 1000, 1),
    connectMs: stat(connectMs),
    callMs: stat(callMs),
    http,
    fdBaseline,
    fdPeak,
    fdAfter,
    problems,
  };
}

module.exports = { runClients };

if (require.main === module) {
  const common = require('./lib/common');
  const opts = common.parseArgs();
  const clients = common.num(opts.clients, 200);
  const seconds = common.num(opts.seconds, 60);
  common.finishEngine((async () => {
    const script = path.relative(path.join(__dirname, 'apps'), lib.RELIAB_APP);
    const results = {};
    // With room for all of them, for `seconds`: every command answered.
    let app = await common.startApp({ script, agent: true, config: { limits: { maxConnections: clients + 10 } } });
    console.log(`${clients} clients for ${seconds} s on pid ${app.pid}`);
    results.withRoom = await runClients(app, { clients, seconds, log: console.log });
    await app.kill();
    // With the default limit: the excess refused, clearly; the rest served.
    app = await common.startApp({ script, agent: true });
    results.defaultLimit = await runClients(app, { clients, rounds: 3, limit: 32, log: console.log });
    await app.kill();
    return results;
  })(), (results) => Object.values(results).flatMap((r) => r.problems));
}
