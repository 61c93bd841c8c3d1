'use strict';
// The app under test for profile-overhead.js: an HTTP server whose every request runs a
// CPU-bound function (`ispyBenchCpuWork`, ~0.1 ms of plain JavaScript: build, sort and
// fold an array, format a string), so the server, not the load generator, is the
// bottleneck and anything that slows its main thread shows in requests/s.
//
// With BENCH_V8PN_INTERVAL_US=<µs> it profiles itself from start-up with the
// v8-profiler-next package (bench/peers) at that sampling interval, the way that package
// is used in production; GET /profiler/stop stops it and answers {samples, hasWork}.
// Prints `PORT <n>` once listening.
const http = require('node:http');

function ispyBenchCpuWork(seed) {
  const a = new Array(1000);
  for (let i = 0; i < a.length; i++) a[i] = ((i + seed) * 7919) % 1009;
  a.sort((x, y) => x - y);
  let s = 0;
  for (let i = 0; i < a.length; i++) s = (s * 31 + a[i]) | 0;
  return `${seed}:${s.toString(16)}`;
}

let profiler;
const interval = Number(process.env.BENCH_V8PN_INTERVAL_US ?? 0);
if (interval > 0) {
  profiler = require('../lib/peers').peerRequire('v8-profiler-next');
  profiler.setGenerateType(1);
  profiler.setSamplingInterval(interval);
  profiler.startProfiling('bench', true);
}

let n = 0;
const server = http.createServer((req, res) => {
  if (req.url === '/profiler/stop') {
    let out = { error: 'not profiling' };
    if (profiler) {
      const p = profiler.stopProfiling('bench');
      profiler = undefined;
      const names = new Set();
      const walk = (node) => {
        names.add(node.functionName || node.callFrame?.functionName);
        for (const ch of node.children ?? []) if (typeof ch === 'object') walk(ch);
      };
      if (p.head) walk(p.head);
      for (const node of p.nodes ?? []) names.add(node.callFrame?.functionName);
      out = { samples: p.samples?.length ?? null, hasWork: names.has('ispyBenchCpuWork') };
      p.delete?.();
    }
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify(out));
    return;
  }
  const body = ispyBenchCpuWork(n++ & 1023);
  res.writeHead(200, { 'content-type': 'text/plain', 'content-length': Buffer.byteLength(body) });
  res.end(body);
});
server.keepAliveTimeout = 30000;
server.listen(0, '127.0.0.1', () => console.log(`PORT ${server.address().port}`));
