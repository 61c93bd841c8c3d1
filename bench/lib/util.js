'use strict';
// Small helpers with no side effects, shared by the benchmarks (lib/common.js) and the
// reliability engines the tests load too (reliability-lib.js): waiting with a deadline,
// percentiles, rounding, a JSON GET of the app.

const http = require('node:http');

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function waitFor(check, timeoutMs, what, everyMs = 20) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await check();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(everyMs);
  }
}

function sorted(xs) {
  return [...xs].sort((a, b) => a - b);
}

/** Nearest-rank percentile (p in 0..100) of a list of numbers. */
function percentile(xs, p) {
  if (xs.length === 0) return NaN;
  const s = sorted(xs);
  const rank = Math.ceil((p / 100) * s.length);
  return s[Math.min(s.length - 1, Math.max(0, rank - 1))];
}

const round = (n, digits = 2) => (Number.isFinite(n) ? Math.round(n * 10 ** digits) / 10 ** digits : n);

/** GET http://127.0.0.1:<port><urlPath> and parse the JSON answer; rejects on a bad body or after timeoutMs. */
function getJson(port, urlPath, timeoutMs = 30000) {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port, path: urlPath, agent: false }, (res) => {
      let body = '';
      res.on('data', (d) => (body += d));
      res.on('end', () => {
        try {
          resolve(JSON.parse(body));
        } catch (e) {
          reject(new Error(`GET ${urlPath}: ${e.message}: ${body.slice(0, 200)}`));
        }
      });
    });
    req.setTimeout(timeoutMs, () => req.destroy(new Error(`GET ${urlPath} took more than ${timeoutMs} ms`)));
    req.on('error', reject);
  });
}

module.exports = { sleep, waitFor, sorted, percentile, round, getJson };
