'use strict';
// HTTP load generator, run as its own process so it never shares an event loop (or a
// core's time slice) with the server it measures. Closed loop over raw keep-alive TCP
// connections: each connection holds exactly one request open at a time (the next is sent
// when the answer is complete), so the number of requests in flight is `connections`.
// HTTP/1.1 is written and parsed by hand (a fixed GET, answers with Content-Length): the
// generator does far less per request than node:http's client, so at 10,000 connections
// it stays out of the way of the server it measures.
//
// A window: open the connections if they are not open yet (in batches, so the server's
// accept queue never overflows), run `warmup` ms uncounted, print START, count the answers
// completed during `duration` ms and their latencies (request written → answer complete),
// print END, stop sending, wait for the answers still out (at most `drainMs`), close the
// connections unless `keep`, and print one JSON line:
//   {"requests", "windowMs", "rps", "errors", "non200", "p50", "p99", "max", "p99OverDelay", "drained"}
// `p99OverDelay` is the p99 of (latency − `delayMs`): the server's own share of the wait
// when it answers every request after a deliberate delay of `delayMs`.
//
// Two ways to drive it:
//   node bench/lib/loadgen.js --port 8080 [--connections 8] [--warmup 1000] [--duration 3000]
//       one window, then exit;
//   node bench/lib/loadgen.js
//       windows on demand: each stdin line {"port", "connections", "warmup", "duration",
//       "path"?, "keep"?, "delayMs"?, "drainMs"?} runs one window against that port; kept
//       connections stay open for that port's next window.
//       A line with "requests": N instead runs a counted segment (bench/instructions.js):
//       exactly N requests over the connections, one open per connection, then every answer
//       awaited; prints {"answered", "errors", "non200", "ms"}. A line with "hold": true
//       opens "connections" more connections on their own (to "path") and writes one request
//       on each, never to be read again: requests the app holds while others are counted;
//       prints {"held"} once all are written.

const net = require('node:net');
const readline = require('node:readline');
const { performance } = require('node:perf_hooks');

const HEADER_END = Buffer.from('\r\n\r\n');
const CONNECT_BATCH = 500;

/** One keep-alive connection and the answer it is reading. */
class Conn {
  constructor(pool) {
    this.pool = pool;
    this.buf = null;
    this.sentAt = 0;
    this.busy = false;
    this.open = false;
    this.socket = net.connect({ host: '127.0.0.1', port: pool.port });
    this.socket.setNoDelay(true);
    this.socket.on('connect', () => {
      this.open = true;
      pool.onConnect(this);
    });
    this.socket.on('data', (d) => this.onData(d));
    this.socket.on('error', (err) => pool.onError(this, err));
    this.socket.on('close', () => pool.onClose(this));
  }

  send() {
    this.busy = true;
    this.sentAt = performance.now();
    this.socket.write(this.pool.request);
  }

  onData(d) {
    this.buf = this.buf ? Buffer.concat([this.buf, d]) : d;
    for (;;) {
      const end = this.buf.indexOf(HEADER_END);
      if (end < 0) return;
      const head = this.buf.toString('latin1', 0, end);
      const m = /\r\ncontent-length:\s*(\d+)/i.exec(head);
      if (!m) {
        this.pool.fatal(new Error(`the server answered without a Content-Length (this generator reads only those): ${head.split('\r\n')[0]}`));
        return;
      }
      const total = end + 4 + Number(m[1]);
      if (this.buf.length < total) return;
      const status = Number(head.slice(9, 12));
      this.buf = this.buf.length === total ? null : this.buf.subarray(total);
      this.busy = false;
      this.pool.onAnswer(this, status, performance.now() - this.sentAt);
      if (!this.buf) return;
    }
  }
}

/** The connections to one port, and the window running on them. */
class Pool {
  constructor(port, path) {
    this.port = port;
    this.request = Buffer.from(`GET ${path} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nAccept: */*\r\n\r\n`);
    this.conns = new Set();
    this.connected = 0;
    this.win = undefined;
    this.failure = undefined;
    this.onConnected = undefined;
  }

  /** Opens connections until there are `n`, CONNECT_BATCH at a time; resolves when all are up. */
  async grow(n) {
    while (this.conns.size < n) {
      const batch = Math.min(CONNECT_BATCH, n - this.conns.size);
      const target = this.connected + batch;
      const up = new Promise((resolve) => (this.onConnected = () => this.connected >= target && resolve()));
      for (let i = 0; i < batch; i++) this.conns.add(new Conn(this));
      await Promise.race([up, new Promise((_, reject) => setTimeout(() => reject(new Error(`only ${this.connected} of ${n} connections to port ${this.port} opened within 30 s`)), 30_000).unref())]);
      if (this.failure) throw this.failure;
    }
    this.onConnected = undefined;
  }

  onConnect(conn) {
    this.connected++;
    this.onConnected?.();
    if (this.win?.limit !== undefined) return;
    if (this.win && !this.win.stopped) conn.send();
  }

  onAnswer(conn, status, ms) {
    const w = this.win;
    if (!w) return;
    if (w.limit !== undefined) return this.onCounted(conn, status, w);
    if (w.counting) {
      w.requests++;
      if (status !== 200) w.non200++;
      if (w.latencies.length < w.latencyCap) w.latencies.push(ms);
    }
    if (!w.stopped) conn.send();
    else if (w.onIdle && !this.anyBusy()) w.onIdle();
  }

  onError(conn, err) {
    if (this.win?.counting) this.win.errors++;
    if (!conn.open && this.onConnected) this.failure ??= new Error(`connecting to port ${this.port}: ${err.message}`);
  }

  onClose(conn) {
    if (conn.open) this.connected--;
    const wasBusy = conn.busy;
    conn.busy = false;
    this.conns.delete(conn);
    const w = this.win;
    if (w?.limit !== undefined && !w.closing) {
      // A counted segment is not topped up: the dropped request is an error, and ends it if last.
      if (wasBusy) w.errors++;
      if (w.answered + w.errors >= w.limit) w.onDone?.();
      return;
    }
    // A connection the server dropped mid-window is replaced, so the load stays as set.
    if (w && !w.stopped && !w.closing) {
      if (wasBusy && w.counting) w.errors++;
      setTimeout(() => !w.stopped && this.conns.add(new Conn(this)), 10).unref();
    } else if (w?.onIdle && !this.anyBusy()) w.onIdle();
  }

  /** A counted segment: the next request only while fewer than `limit` were sent. */
  onCounted(conn, status, w) {
    w.answered++;
    if (status !== 200) w.non200++;
    if (w.sent < w.limit) {
      w.sent++;
      conn.send();
    } else if (w.answered + w.errors >= w.limit) w.onDone?.();
  }

  anyBusy() {
    for (const c of this.conns) if (c.busy) return true;
    return false;
  }

  fatal(err) {
    this.failure ??= err;
    for (const c of this.conns) c.socket.destroy();
  }

  /** Closes every connection with a reset, so no TIME_WAIT is left behind for 10,000 of them. */
  close() {
    if (this.win) this.win.closing = true;
    for (const c of this.conns) {
      if (typeof c.socket.resetAndDestroy === 'function') c.socket.resetAndDestroy();
      else c.socket.destroy();
    }
    this.conns.clear();
    this.connected = 0;
  }
}

const pools = new Map();
// Connections whose one request the app holds (`hold`): apart from `pools`, never closed
// before the process exits.
const holders = [];

/** The kept pool of connections to `port`, made afresh when its size or path differs. */
function poolFor(port, connections, path) {
  const pool = pools.get(port);
  if (pool && pool.conns.size === connections && pool.request.toString().split(' ')[1] === path) return pool;
  pool?.close();
  const fresh = new Pool(port, path);
  pools.set(port, fresh);
  return fresh;
}

/**
 * Exactly `requests` requests to `port`, at most one open per connection, and every answer
 * awaited (a dropped connection counts as an error and is replaced by none). Returns the
 * answers and the time taken.
 */
async function runCounted({ port, connections = 10, requests, path = '/', keep = true, drainMs = 600_000 }) {
  const pool = poolFor(port, connections, path);
  await pool.grow(connections);
  const w = { limit: requests, sent: 0, answered: 0, errors: 0, non200: 0, stopped: true, closing: false, onDone: undefined };
  const t0 = performance.now();
  const done = new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`only ${w.answered} of ${requests} requests answered within ${drainMs} ms`)), drainMs);
    w.onDone = () => {
      clearTimeout(t);
      resolve();
    };
  });
  pool.win = w;
  for (const c of pool.conns) {
    if (w.sent >= requests) break;
    w.sent++;
    c.send();
  }
  await done;
  pool.win = undefined;
  if (!keep) {
    pool.close();
    pools.delete(port);
  }
  if (pool.failure) throw pool.failure;
  return { port, connections, requests, answered: w.answered, errors: w.errors, non200: w.non200, ms: performance.now() - t0 };
}

/** Opens `connections` connections to `port` and writes one request (to `path`) on each. */
async function runHold({ port, connections, path = '/held' }) {
  const pool = new Pool(port, path);
  holders.push(pool);
  pool.win = { limit: 0, sent: 0, answered: 0, errors: 0, non200: 0, stopped: true, closing: true };
  await pool.grow(connections);
  for (const c of pool.conns) c.send();
  return { port, held: pool.conns.size };
}

function percentileSorted(s, p) {
  if (s.length === 0) return NaN;
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))];
}

async function runWindow({ port, connections = 8, warmup = 1000, duration = 3000, path = '/', keep = true, delayMs = 0, drainMs = 10_000 }) {
  const pool = poolFor(port, connections, path);
  const w = { counting: false, stopped: false, closing: false, requests: 0, errors: 0, non200: 0, latencies: [], latencyCap: 2_000_000, onIdle: undefined };
  pool.win = w;
  // Connections that were kept idle since the last window start their loop again.
  for (const c of pool.conns) if (c.open && !c.busy) c.send();
  await pool.grow(connections);
  await new Promise((r) => setTimeout(r, warmup));
  if (pool.failure) throw pool.failure;
  const windowStart = performance.now();
  w.counting = true;
  process.stdout.write('START\n');
  await new Promise((r) => setTimeout(r, duration));
  const windowMs = performance.now() - windowStart;
  w.counting = false;
  w.stopped = true;
  process.stdout.write('END\n');
  // Answers still out finish before the next window starts (on this or another server), so
  // one window's tail never runs beside the next one's count.
  const drained = await new Promise((resolve) => {
    if (!pool.anyBusy()) return resolve(true);
    const t = setTimeout(() => resolve(false), drainMs);
    w.onIdle = () => {
      clearTimeout(t);
      resolve(true);
    };
  });
  w.onIdle = undefined;
  if (!keep || !drained) {
    pool.close();
    pools.delete(port);
  }
  pool.win = undefined;
  if (pool.failure) throw pool.failure;
  const s = Float64Array.from(w.latencies).sort();
  const over = s.map((x) => x - delayMs);
  const r3 = (x) => Math.round(x * 1000) / 1000;
  return {
    port,
    connections,
    requests: w.requests,
    windowMs,
    rps: (w.requests * 1000) / windowMs,
    errors: w.errors,
    non200: w.non200,
    p50: r3(percentileSorted(s, 50)),
    p99: r3(percentileSorted(s, 99)),
    max: r3(s.length ? s[s.length - 1] : NaN),
    p99OverDelay: r3(percentileSorted(over, 99)),
    drained,
  };
}

function argValue(name) {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? Number(process.argv[i + 1]) : undefined;
}

if (argValue('port')) {
  runWindow({ port: argValue('port'), connections: argValue('connections') ?? 8, warmup: argValue('warmup') ?? 1000, duration: argValue('duration') ?? 3000, delayMs: argValue('delay') ?? 0, keep: false }).then(
    (r) => {
      process.stdout.write(`${JSON.stringify(r)}\n`);
      process.exit(0);
    },
    (err) => {
      process.stderr.write(`${err.message}\n`);
      process.exit(1);
    },
  );
} else {
  // Serve windows one at a time, in the order asked; exit when stdin closes.
  let chain = Promise.resolve();
  const rl = readline.createInterface({ input: process.stdin });
  rl.on('line', (line) => {
    if (!line.trim()) return;
    const cmd = JSON.parse(line);
    chain = chain
      .then(() => (cmd.hold ? runHold(cmd) : cmd.requests !== undefined ? runCounted(cmd) : runWindow(cmd)))
      .then(
        (r) => void process.stdout.write(`${JSON.stringify(r)}\n`),
        (err) => void process.stdout.write(`${JSON.stringify({ error: err.message })}\n`),
      );
  });
  rl.on('close', () =>
    chain.then(() => {
      for (const p of [...pools.values(), ...holders]) p.close();
      process.exit(0);
    }),
  );
}
