'use strict';
// The app under test for snapshot.js: builds a heap of a chosen size (HEAP_MB, default
// 100) out of many small linked objects (the shape of a real heap: objects, strings,
// arrays, references between them; deterministic, so every process holds the same heap),
// then serves on loopback:
//
//   GET /gap/reset            forget the longest gap seen so far
//   GET /gap                  {maxGapMs, ticks}: the longest gap between two ticks of a 5 ms
//                             interval timer since the reset (how long the main thread froze)
//   GET /snapshot?method=v8&file=F        v8.writeHeapSnapshot(F)
//   GET /snapshot?method=heapdump&file=F  heapdump.writeSnapshot(F) (bench/peers; loaded only then)
//   GET /heap                 heap statistics
//
// Prints `PORT <n>` once the heap is built.
const http = require('node:http');
const v8 = require('node:v8');

const targetBytes = Number(process.env.HEAP_MB ?? 100) * 1024 * 1024;
const retained = [];
function build() {
  let i = 0;
  while (v8.getHeapStatistics().used_heap_size < targetBytes) {
    for (let k = 0; k < 5000; k++, i++) {
      retained.push({ id: i, name: `item-${i}`, tags: [`t${i % 97}`, `k${i % 13}`], value: i * 1.5, parent: retained[i >> 1], when: i % 3 ? null : { at: i } });
    }
  }
  return i;
}
const objects = build();

let last = performance.now();
let maxGap = 0;
let ticks = 0;
setInterval(() => {
  const now = performance.now();
  if (now - last > maxGap) maxGap = now - last;
  last = now;
  ticks++;
}, 5);

let heapdump;
const server = http.createServer((req, res) => {
  const url = new URL(req.url, 'http://x');
  const reply = (obj) => {
    const body = JSON.stringify(obj);
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(body);
  };
  if (url.pathname === '/gap/reset') {
    maxGap = 0;
    ticks = 0;
    last = performance.now();
    return reply({ ok: true });
  }
  if (url.pathname === '/gap') return reply({ maxGapMs: Math.round(maxGap * 10) / 10, ticks });
  if (url.pathname === '/heap') {
    const h = v8.getHeapStatistics();
    return reply({ usedMB: h.used_heap_size / 1048576, totalMB: h.total_heap_size / 1048576, objects });
  }
  if (url.pathname === '/snapshot') {
    const method = url.searchParams.get('method');
    const file = url.searchParams.get('file');
    const t0 = performance.now();
    try {
      if (method === 'v8') {
        v8.writeHeapSnapshot(file);
        return reply({ ms: performance.now() - t0, file });
      }
      if (method === 'heapdump') {
        heapdump ??= require('../lib/peers').peerRequire('heapdump');
        heapdump.writeSnapshot(file, (err) => {
          if (err) reply({ error: String(err) });
          else reply({ ms: performance.now() - t0, file });
        });
        return;
      }
      return reply({ error: `unknown method ${method}` });
    } catch (err) {
      return reply({ error: String(err && err.stack) });
    }
  }
  res.writeHead(404);
  res.end();
});
server.keepAliveTimeout = 60000;
server.listen(0, '127.0.0.1', () => console.log(`PORT ${server.address().port}`));
