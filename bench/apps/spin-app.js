'use strict';
// The app under test for stack-spinning: an HTTP server whose GET /spin?ms=N runs a
// synchronous busy loop in a function with a distinctive name, blocking the event loop
// for N ms. Prints `PORT <n>` once listening.
const http = require('node:http');

function ispyBenchSpinLoop(ms) {
  const until = Date.now() + ms;
  let n = 0;
  while (Date.now() < until) {
    n++; // busy on purpose: the event loop does not turn until this returns
  }
  return n;
}

const server = http.createServer((req, res) => {
  const url = new URL(req.url, 'http://x');
  if (url.pathname === '/spin') {
    const n = ispyBenchSpinLoop(Number(url.searchParams.get('ms') ?? 20000));
    res.end(`spun ${n}\n`);
    return;
  }
  res.end('ok\n');
});
server.listen(0, '127.0.0.1', () => console.log(`PORT ${server.address().port}`));
