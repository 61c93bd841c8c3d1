'use strict';
// The benchmark peers (OpenTelemetry's HTTP instrumentation, heapdump, v8-profiler-next)
// live in bench/peers, a private package of their own, so they never enter the root
// package.json. They are installed on demand, from the committed lock file, by the first
// benchmark that needs them: `npm ci --prefix bench/peers` when bench/peers/node_modules is
// missing. heapdump and v8-profiler-next are native addons: npm builds them with node-gyp
// (g++ and Node's headers) during that install.

const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');
const { createRequire } = require('node:module');

const PEERS = path.resolve(__dirname, '..', 'peers');
const NODE_MODULES = path.join(PEERS, 'node_modules');

/** A require() that resolves from bench/peers (for the apps that load a peer). */
const peerRequire = createRequire(path.join(PEERS, 'package.json'));

function npm(args, timeoutMs) {
  const t0 = process.hrtime.bigint();
  const r = spawnSync('npm', args, { cwd: path.resolve(PEERS, '..', '..'), encoding: 'utf8', timeout: timeoutMs, stdio: ['ignore', 'pipe', 'pipe'] });
  const ms = Number(process.hrtime.bigint() - t0) / 1e6;
  return { ok: r.status === 0, status: r.status, signal: r.signal, ms: Math.round(ms), stdout: r.stdout ?? '', stderr: r.stderr ?? '', error: r.error?.message };
}

/**
 * Installs bench/peers from its lock file if its node_modules is missing. Says what it does.
 * Returns { installed: false } or { installed: true, ms } ; throws if the install failed.
 */
function ensurePeers({ log = console.log, timeoutMs = 600_000 } = {}) {
  if (fs.existsSync(NODE_MODULES)) return { installed: false };
  const args = ['ci', '--prefix', path.relative(path.resolve(PEERS, '..', '..'), PEERS), '--no-audit', '--no-fund', '--foreground-scripts'];
  log(`bench/peers/node_modules is missing: running \`npm ${args.join(' ')}\` (the benchmark peers from bench/peers/package-lock.json; builds the native addons heapdump and v8-profiler-next with node-gyp)`);
  const r = npm(args, timeoutMs);
  if (!r.ok) {
    throw new Error(`npm ci --prefix bench/peers failed (${r.error ?? `exit ${r.status ?? r.signal}`}):\n${(r.stderr || r.stdout).split('\n').slice(-30).join('\n')}`);
  }
  log(`  installed in ${(r.ms / 1000).toFixed(1)} s`);
  return { installed: true, ms: r.ms };
}

/**
 * Rebuilds one native peer from source and times it: its build/ folder is removed (else
 * node-pre-gyp finds the binary already there and compiles nothing), then
 * `npm rebuild <name> --prefix bench/peers` runs its install script, which compiles it as
 * an install does. Returns { ok, ms, compiled, error? }.
 */
function timeRebuild(name, { timeoutMs = 300_000 } = {}) {
  const build = path.join(NODE_MODULES, ...name.split('/'), 'build');
  fs.rmSync(build, { recursive: true, force: true });
  const r = npm(['rebuild', name, '--prefix', path.relative(path.resolve(PEERS, '..', '..'), PEERS), '--foreground-scripts'], timeoutMs);
  const compiled = fs.existsSync(build);
  return r.ok ? { ok: true, ms: r.ms, compiled } : { ok: false, ms: r.ms, compiled, error: (r.error ?? (r.stderr || r.stdout).split('\n').filter(Boolean).slice(-5).join(' | ')).slice(0, 500) };
}

/** The installed version of a peer, or undefined. */
function peerVersion(name) {
  try {
    return JSON.parse(fs.readFileSync(path.join(NODE_MODULES, ...name.split('/'), 'package.json'), 'utf8')).version;
  } catch {
    return undefined;
  }
}

module.exports = { PEERS, NODE_MODULES, peerRequire, ensurePeers, timeRebuild, peerVersion };
