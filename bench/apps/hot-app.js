'use strict';
// The app under test for profile-overhead.js (idle gate) and trace-cost.js: measures, in
// its own process, the cost per call of a tight loop that calls bench/apps/hot-lib.js's
// `small` through the module object (`lib.small(i)`), so a gate or trace installed on
// that export is seen.
//
//   GET /loop?n=N&reps=R   one untimed warm-up run of N calls, then R timed runs; answers
//                          {nsPerCall: [R values], median} (process.hrtime.bigint around each run)
//   GET /loop?...&fresh=1  the same with a loop function compiled for this request alone
//                          (new Function): a caller with no type feedback from earlier calls,
//                          to tell what V8 remembers at the call site from what is installed now
//
// Prints `PORT <n>` once listening.
const http = require('node:http');
const lib = require('./hot-lib.js');

const LOOP_BODY = 'let acc = 0; for (let i = 0; i < n; i++) acc = (acc + lib.small(i)) | 0; return acc;';
function loop(n) {
  let acc = 0;
  for (let i = 0; i < n; i++) acc = (acc + lib.small(i)) | 0;
  return acc;
}

let sink = 0;
function measure(n, reps, fresh) {
  const run = fresh ? new Function('lib', 'n', LOOP_BODY).bind(null, lib) : loop;
  sink ^= run(n);
  const out = [];
  for (let r = 0; r < reps; r++) {
    const t0 = process.hrtime.bigint();
    sink ^= run(n);
    out.push(Number(process.hrtime.bigint() - t0) / n);
  }
  return out;
}

const server = http.createServer((req, res) => {
  const url = new URL(req.url, 'http://x');
  if (url.pathname === '/loop') {
    const n = Math.max(1, Number(url.searchParams.get('n') ?? 1e6));
    const reps = Math.max(1, Number(url.searchParams.get('reps') ?? 5));
    const ns = measure(n, reps, url.searchParams.get('fresh') === '1');
    const sorted = [...ns].sort((a, b) => a - b);
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ nsPerCall: ns, median: sorted[sorted.length >> 1], sink }));
    return;
  }
  res.writeHead(404);
  res.end();
});
server.keepAliveTimeout = 60000;
server.listen(0, '127.0.0.1', () => console.log(`PORT ${server.address().port}`));
