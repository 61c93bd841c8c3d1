'use strict';
// Instructions per request of bench/apps/framework-server.js under valgrind's callgrind,
// bare against `requests track` armed: a figure other work on the machine does not move
// (wall-clock and CPU-time ratios here have 10-30 % noise). For each variant: start the
// server under callgrind, send a warm-up, zero the counters (callgrind_control -z), send N
// requests C at a time, dump the counters (callgrind_control -d), and divide the
// instructions of that stretch (all threads) by N.
//
//   node bench/track-callgrind.js [--node <path>] [--frameworks http,express,fastify]
//       [--n 2000] [--c 10] [--delay 0] [--warmup 300] [--variants bare,armed]
//
// Variants: bare (no agent), default (the agent), armed (the agent, `requests track` armed),
// and without the agent (apps/track-preload.js: the requests table alone): table, armed-pre
// (armed, the mode track picks), armed-hooks (armed with --hooks).
//
// --delay 1000 with --c 500 holds each answer on a timer, the way the 10,000-in-flight
// groups of frameworks.js do (fewer connections: valgrind runs the app ~50x slower).

const { spawn, execFileSync } = require('node:child_process');
const fs = require('node:fs');
const http = require('node:http');
const os = require('node:os');
const path = require('node:path');

const ROOT = path.join(__dirname, '..');
const REGISTER = path.join(ROOT, 'dist', 'src', 'register.js');
const APP = path.join(__dirname, 'apps', 'framework-server.js');

function args() {
  const out = {};
  const a = process.argv.slice(2);
  for (let i = 0; i < a.length; i += 2) out[a[i].replace(/^--/, '')] = a[i + 1];
  return out;
}

function waitFor(fn, ms, what) {
  const until = Date.now() + ms;
  return new Promise((resolve, reject) => {
    const tick = () => {
      let v;
      try {
        v = fn();
      } catch (e) {
        return reject(e);
      }
      if (v) return resolve(v);
      if (Date.now() > until) return reject(new Error(`timed out waiting for ${what}`));
      setTimeout(tick, 100);
    };
    tick();
  });
}

/** N GET / requests over C keep-alive connections, C in flight at a time. */
async function load(port, n, c) {
  const agent = new http.Agent({ keepAlive: true, maxSockets: c });
  let sent = 0;
  let errors = 0;
  const one = () =>
    new Promise((resolve) => {
      const req = http.get({ host: '127.0.0.1', port, path: '/', agent }, (res) => {
        res.resume();
        res.on('end', resolve);
      });
      req.on('error', () => {
        errors++;
        resolve();
      });
    });
  const worker = async () => {
    while (sent < n) {
      sent++;
      await one();
    }
  };
  await Promise.all(Array.from({ length: Math.min(c, n) }, worker));
  agent.destroy();
  if (errors) throw new Error(`${errors} requests failed`);
}

function totalIr(file) {
  // Sum the totals of every thread's dump (--separate-threads is off: one summary line).
  const text = fs.readFileSync(file, 'utf8');
  const m = /^summary:\s+(\d+)/m.exec(text) ?? /^totals:\s+(\d+)/m.exec(text);
  if (!m) throw new Error(`no totals in ${file}`);
  return Number(m[1]);
}

async function measure({ node, framework, variant, n, c, delay, warmup }) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'trk-cg-'));
  const socket = path.join(dir, 'a.sock');
  // 'table'/'armed'/'armed-hooks': the requests plugin's main-thread part alone (apps/track-preload.js).
  const preload = variant === 'table' || variant.startsWith('armed-') || variant === 'armed-pre';
  const agent = !preload && variant !== 'bare';
  if (agent) fs.writeFileSync(path.join(dir, 'ispy.config.json'), JSON.stringify({ outputDir: dir, limits: { trackMaxDuration: '30m', setupTimeout: '300s', mainThreadTimeout: '60s', inspectorTimeout: '60s' } }));
  const out = path.join(dir, 'cg.out');
  const env = { ...process.env, BENCH_FRAMEWORK: framework, BENCH_DELAY_MS: String(delay), ISPY_SOCKET: socket };
  if (preload && variant !== 'table') env.TRACK_ARM = variant === 'armed-hooks' ? 'hooks' : '1';
  delete env.NODE_OPTIONS;
  const child = spawn('valgrind', ['--tool=callgrind', '--smc-check=all-non-file', `--callgrind-out-file=${out}`, node, ...(agent ? ['-r', REGISTER] : preload ? ['-r', path.join(__dirname, 'apps', 'track-preload.js')] : []), APP], { cwd: dir, env, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d) => (stdout += d));
  child.stderr.on('data', (d) => (stderr += d));
  try {
    const port = Number((await waitFor(() => /PORT (\d+)/.exec(stdout), 240_000, `${framework} to listen: ${stderr.slice(-500)}`))[1]);
    if (agent) {
      await waitFor(() => fs.existsSync(socket), 240_000, `the agent socket: ${stderr.slice(-300)}`);
      if (variant === 'armed') {
        const { connect } = require(path.join(ROOT, 'dist', 'src', 'client', 'index.js'));
        // The agent's worker is slow under valgrind: its handshake may time out; try again.
        let r;
        for (let attempt = 1; ; attempt++) {
          try {
            const client = await connect(socket, { timeoutMs: 60_000 });
            r = await client.call('requests', 'track', { duration: '25m' }, { timeoutMs: 60_000 });
            await client.close();
            break;
          } catch (e) {
            if (attempt >= 10) throw e;
            await new Promise((res) => setTimeout(res, 2000));
          }
        }
        if (r.tracking !== 'armed') throw new Error(`track answered ${JSON.stringify(r)}`);
      }
    }
    await load(port, warmup, c);
    execFileSync('callgrind_control', ['-z', String(child.pid)], { stdio: 'ignore' });
    await load(port, n, c);
    execFileSync('callgrind_control', ['-d', String(child.pid)], { stdio: 'ignore' });
    const dumps = fs.readdirSync(dir).filter((f) => f.startsWith('cg.out.'));
    if (!dumps.length) throw new Error('no dump');
    let ir = 0;
    for (const f of dumps) ir += totalIr(path.join(dir, f));
    return ir / n;
  } finally {
    child.kill('SIGKILL');
    await new Promise((r) => (child.exitCode !== null || child.signalCode !== null ? r() : child.on('exit', r)));
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

async function main() {
  const a = args();
  const node = a.node ?? process.execPath;
  const frameworks = (a.frameworks ?? 'http,express,fastify').split(',');
  const variants = (a.variants ?? 'bare,armed').split(',');
  const n = Number(a.n ?? 2000);
  const c = Number(a.c ?? 10);
  const delay = Number(a.delay ?? 0);
  const warmup = Number(a.warmup ?? 300);
  const version = execFileSync(node, ['-v']).toString().trim();
  for (const framework of frameworks) {
    const per = {};
    for (const variant of variants) {
      // Under valgrind on a busy machine an app now and then never comes up: once more.
      for (let attempt = 1; ; attempt++) {
        try {
          per[variant] = await measure({ node, framework, variant, n, c, delay, warmup });
          break;
        } catch (e) {
          if (attempt >= 3) throw e;
          console.error(`${framework} ${variant}: ${e.message}; again`);
        }
      }
    }
    const base = per.bare;
    const cols = variants.map((v) => `${v} ${Math.round(per[v])}${base && v !== 'bare' ? ` (x${(per[v] / base).toFixed(3)})` : ''}`);
    console.log(`${version} ${framework} c=${c} delay=${delay} n=${n}: instructions/request ${cols.join(', ')}`);
  }
}

main().catch((e) => {
  console.error(e.message);
  process.exit(1);
});
