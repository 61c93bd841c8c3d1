// A small HTTP app that misbehaves on purpose, for trying ispy on something with problems
// worth finding. Run it with the agent preloaded:
//
//   node -r ./dist/src/register.js examples/demo-app.js
//
//   GET /slow         holds the request ~10 s on a timer     → requests list, requests show
//   GET /hot          ~200 ms of CPU in findPrimes()         → profile cpu, process stack
//   GET /leak         grows a cache that is never trimmed     → process info, heap stats
//   GET /block?ms=N   blocks the event loop synchronously     → process stack, process loop
//
// Prints `PORT <n>` once listening (examples/demo.js and the tests read it). PORT in the
// environment picks the port; the default is any free one.
'use strict';

const http = require('node:http');

// /leak: every request adds ~100 KB that nothing ever removes: the kind of cache that
// grows in production until the process is restarted.
const cache = new Map();

function remember(key) {
  cache.set(key, { at: Date.now(), payload: 'x'.repeat(100 * 1024) });
  return cache.size;
}

// /hot: a deliberately naive prime search, run for about `ms` of CPU time. A named function
// so it stands out in `process stack` and `profile cpu`.
function findPrimes(ms) {
  const until = Date.now() + ms;
  const primes = [];
  for (let n = 2; Date.now() < until; n++) {
    let prime = true;
    for (let d = 2; d * d <= n; d++) {
      if (n % d === 0) {
        prime = false;
        break;
      }
    }
    if (prime) primes.push(n);
  }
  return primes;
}

// /block: the event loop does nothing else meanwhile, not even answering health checks.
function blockFor(ms) {
  const until = Date.now() + ms;
  while (Date.now() < until) {
    // busy on purpose
  }
}

let leakCount = 0;

const server = http.createServer((req, res) => {
  const url = new URL(req.url, 'http://localhost');
  switch (url.pathname) {
    case '/slow': {
      const ms = Number(url.searchParams.get('ms') ?? 10_000);
      setTimeout(() => res.end(`slow: answered after ${ms} ms\n`), ms);
      return;
    }
    case '/hot': {
      const primes = findPrimes(200);
      res.end(`hot: found ${primes.length} primes, the largest ${primes[primes.length - 1]}\n`);
      return;
    }
    case '/leak': {
      const size = remember(`entry-${++leakCount}`);
      res.end(`leak: the cache now holds ${size} entries (~${Math.round((size * 100) / 1024)} MB)\n`);
      return;
    }
    case '/block': {
      const ms = Math.min(Number(url.searchParams.get('ms') ?? 2000) || 2000, 60_000);
      blockFor(ms);
      res.end(`block: held the event loop for ${ms} ms\n`);
      return;
    }
    default:
      res.setHeader('content-type', 'text/plain');
      res.end('ispy demo app: GET /slow, /hot, /leak, /block?ms=2000\n');
  }
});

server.listen(Number(process.env.PORT) || 0, '127.0.0.1', () => {
  console.log(`PORT ${server.address().port}`);
});
