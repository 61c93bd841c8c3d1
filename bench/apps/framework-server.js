'use strict';
// The app under test for frameworks.js: a hello-world on one of three frameworks, chosen by
// BENCH_FRAMEWORK: `http` (node:http alone), `express` or `fastify` (the root package's dev
// dependencies). Each answers GET / with "hello world\n" and a Content-Length, the way its
// own docs write a hello-world; with BENCH_DELAY_MS=<ms> every answer waits that long
// first (a timer), so a load generator with N connections keeps N requests in the app's
// hands at once. Prints `PORT <n>` once listening on loopback.
//
// The accept queue is as long as the kernel allows (net.core.somaxconn), so 10,000
// connections opening together are not dropped; idle keep-alive connections are kept for
// 10 minutes, since the benchmark alternates between servers and comes back to each.
//
// With BENCH_HOLD_MS=<ms> (bench/instructions.js) two routes more: GET /held answers after
// that long (requests the app holds while others are measured), GET /held-count says how
// many it holds now ({"held": n}). Without it the app has the one route only.

const holdMs = Number(process.env.BENCH_HOLD_MS ?? 0);
let holding = 0;
const hold = (send) => {
  holding++;
  setTimeout(() => {
    holding--;
    send();
  }, holdMs);
};
const heldCount = () => JSON.stringify({ held: holding });

const framework = process.env.BENCH_FRAMEWORK ?? 'http';
const delayMs = Number(process.env.BENCH_DELAY_MS ?? 0);
const BACKLOG = 65535;
const KEEP_ALIVE_MS = 600_000;
const text = 'hello world\n';
const wait = (ms) => new Promise((r) => setTimeout(r, ms));
const listening = (port) => console.log(`PORT ${port}`);

function tune(server) {
  server.keepAliveTimeout = KEEP_ALIVE_MS;
  server.headersTimeout = KEEP_ALIVE_MS + 1000;
  server.requestTimeout = 0;
}

if (framework === 'http') {
  const http = require('node:http');
  const body = Buffer.from(text);
  const answer = (res) => {
    res.writeHead(200, { 'content-type': 'text/plain', 'content-length': body.length });
    res.end(body);
  };
  const handler = (req, res) => (delayMs > 0 ? setTimeout(answer, delayMs, res) : answer(res));
  const sendText = (res, t) => {
    res.writeHead(200, { 'content-type': 'text/plain', 'content-length': Buffer.byteLength(t) });
    res.end(t);
  };
  const holding = (req, res) => {
    if (req.url === '/held') hold(() => answer(res));
    else if (req.url === '/held-count') sendText(res, heldCount());
    else handler(req, res);
  };
  const server = http.createServer(holdMs > 0 ? holding : handler);
  tune(server);
  server.listen({ port: 0, host: '127.0.0.1', backlog: BACKLOG }, () => listening(server.address().port));
} else if (framework === 'express') {
  const http = require('node:http');
  const express = require('express');
  const app = express();
  app.get('/', (req, res) => (delayMs > 0 ? setTimeout(() => res.send(text), delayMs) : res.send(text)));
  if (holdMs > 0) {
    app.get('/held', (req, res) => hold(() => res.send(text)));
    app.get('/held-count', (req, res) => res.send(heldCount()));
  }
  const server = http.createServer(app);
  tune(server);
  server.listen({ port: 0, host: '127.0.0.1', backlog: BACKLOG }, () => listening(server.address().port));
} else if (framework === 'fastify') {
  const fastify = require('fastify')({ logger: false, keepAliveTimeout: KEEP_ALIVE_MS, requestTimeout: 0 });
  fastify.get('/', async () => {
    if (delayMs > 0) await wait(delayMs);
    return text;
  });
  if (holdMs > 0) {
    fastify.get('/held', () => new Promise((resolve) => hold(() => resolve(text))));
    fastify.get('/held-count', async () => heldCount());
  }
  fastify.listen({ port: 0, host: '127.0.0.1', backlog: BACKLOG }).then(() => listening(fastify.server.address().port));
} else {
  console.error(`BENCH_FRAMEWORK must be http, express or fastify, not ${JSON.stringify(framework)}`);
  process.exit(2);
}
