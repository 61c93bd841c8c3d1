'use strict';
// HTTP load generator, run as its own process so it never shares an event loop (or a
// core's time slice) with the server it measures. One keep-alive http.Agent per target
// holds a fixed number of connections, each driven by a request-after-request loop
// (closed loop: concurrency is exactly `connections`). A window: run for `warmup` ms
// uncounted, print START, count the requests completed during `duration` ms, print one
// JSON line {"requests", "windowMs", "rps", "errors", "non200"}. Requests go to `path`
// (default "/").
//
// Two ways to drive it:
//   node bench/lib/loadgen.js --port 8080 [--connections 8] [--warmup 1000] [--duration 3000]
//       one window, then exit;
//   node bench/lib/loadgen.js            (idle-overhead.js does this)
//       windows on demand: each stdin line {"port", "connections", "warmup", "duration", "path"?}
//       runs one window against that port; the connections to every port stay open, so
//       windows can alternate between two servers many times in quick succession.

const http = require('node:http');
const readline = require('node:readline');
const { performance } = require('node:perf_hooks');

const agents = new Map();
function agentFor(port, connections) {
  let a = agents.get(port);
  if (!a) {
    a = new http.Agent({ keepAlive: true, maxSockets: connections, maxFreeSockets: connections });
    agents.set(port, a);
  }
  return a;
}

function runWindow({ port, connections = 8, warmup = 1000, duration = 3000, path = '/' }) {
  return new Promise((resolve) => {
    const agent = agentFor(port, connections);
    let counting = false;
    let stopped = false;
    let requests = 0;
    let errors = 0;
    let non200 = 0;
    let windowStart = 0;

    const loop = () => {
      if (stopped) return;
      const req = http.request({ host: '127.0.0.1', port, path, agent }, (res) => {
        if (res.statusCode !== 200) non200++;
        res.on('data', () => {});
        res.on('end', () => {
          if (counting) requests++;
          loop();
        });
      });
      req.on('error', () => {
        if (counting) errors++;
        // Back off a little so a dead server does not become a hot loop.
        if (!stopped) setTimeout(loop, 10);
      });
      req.end();
    };
    for (let i = 0; i < connections; i++) loop();

    // The window is bounded by these timers, so START (the parent reads the server's CPU
    // time when it sees it) and the result line mark the interval in which we counted.
    setTimeout(() => {
      windowStart = performance.now();
      counting = true;
      process.stdout.write('START\n');
      setTimeout(() => {
        const windowMs = performance.now() - windowStart;
        counting = false;
        stopped = true;
        // Requests still in flight finish in the background and are not counted.
        resolve({ port, requests, windowMs, rps: (requests * 1000) / windowMs, errors, non200, connections });
      }, duration);
    }, warmup);
  });
}

function argValue(name) {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? Number(process.argv[i + 1]) : undefined;
}

if (argValue('port')) {
  runWindow({ port: argValue('port'), connections: argValue('connections') ?? 8, warmup: argValue('warmup') ?? 1000, duration: argValue('duration') ?? 3000 }).then((r) => {
    process.stdout.write(`${JSON.stringify(r)}\n`);
    process.exit(0);
  });
} else {
  // Serve windows one at a time, in the order asked; exit when stdin closes.
  let chain = Promise.resolve();
  const rl = readline.createInterface({ input: process.stdin });
  rl.on('line', (line) => {
    if (!line.trim()) return;
    const cmd = JSON.parse(line);
    chain = chain.then(() => runWindow(cmd)).then((r) => void process.stdout.write(`${JSON.stringify(r)}\n`));
  });
  rl.on('close', () => chain.then(() => process.exit(0)));
}
