// A fleet on one machine, for trying `ispy run`: starts N copies of the demo app (default
// 5) with the agent preloaded, their sockets side by side in one temp folder, prints the
// command to try, and stays until Ctrl-C, then stops every copy and removes the folder.
//
//   node examples/fleet.js [N]
//   ispy run '/tmp/ispy-fleet-<random>/*.sock' -c "process info"
//
// Prints `FLEET <dir>` once every socket is up (the example test reads it).
'use strict';

const { spawn } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const ROOT = path.resolve(__dirname, '..');
const REGISTER = path.join(ROOT, 'dist', 'src', 'register.js');
const START_TIMEOUT_MS = 20_000;

const count = Number(process.argv[2] ?? 5);
const children = [];
let dir;
let stopping = false;

function stopAll(signal = 'SIGTERM') {
  for (const child of children) if (child.exitCode === null && child.signalCode === null) child.kill(signal);
}

function alive(child) {
  return child.exitCode === null && child.signalCode === null;
}

async function main() {
  if (!Number.isSafeInteger(count) || count < 1 || count > 500) {
    console.error('usage: node examples/fleet.js [N]   (N between 1 and 500, default 5)');
    process.exitCode = 2;
    return;
  }
  if (!fs.existsSync(REGISTER)) {
    console.error('fleet: ispy is not built yet: run `npm run build` first');
    process.exitCode = 1;
    return;
  }
  // 0700 by mkdtemp: the sockets inside are reachable by this user only.
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ispy-fleet-'));
  process.on('exit', () => {
    stopAll('SIGKILL');
    fs.rmSync(dir, { recursive: true, force: true });
  });
  for (let i = 0; i < count; i++) {
    const child = spawn(process.execPath, ['-r', REGISTER, path.join(__dirname, 'demo-app.js')], {
      cwd: ROOT,
      stdio: ['ignore', 'ignore', 'pipe'],
      env: { ...process.env, ISPY_CONFIG: path.join(ROOT, 'ispy.config.json'), ISPY_SOCKET: path.join(dir, '{pid}.sock') },
    });
    let err = '';
    child.stderr.on('data', (d) => (err += d));
    child.on('exit', (code, signal) => {
      if (!stopping) console.error(`fleet: app ${child.pid} exited (${signal ?? code})${err ? `: ${err.trim()}` : ''}`);
    });
    children.push(child);
  }
  const deadline = Date.now() + START_TIMEOUT_MS;
  while (!children.every((c) => !alive(c) || fs.existsSync(path.join(dir, `${c.pid}.sock`)))) {
    if (Date.now() > deadline) {
      console.error('fleet: timed out waiting for the agents to start');
      process.exitCode = 1;
      stopping = true;
      stopAll();
      return;
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  const up = children.filter(alive).length;
  console.log(`FLEET ${dir}`);
  console.log(`${up} demo apps running (pids ${children.filter(alive).map((c) => c.pid).join(', ')}). Try:\n`);
  console.log(`  node ${path.relative(process.cwd(), path.join(ROOT, 'bin', 'ispy.js')) || 'bin/ispy.js'} run '${dir}/*.sock' -c "process info"`);
  console.log(`  node ${path.relative(process.cwd(), path.join(ROOT, 'bin', 'ispy.js')) || 'bin/ispy.js'} ps ${dir}\n`);
  console.log('Ctrl-C stops them all.');
}

for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.on(signal, () => {
    if (stopping) return;
    stopping = true;
    stopAll();
    // Children exit (removing their sockets); the 'exit' hook then removes the folder.
    const t = setTimeout(() => stopAll('SIGKILL'), 3000);
    t.unref();
  });
}

main().catch((e) => {
  console.error(e);
  process.exitCode = 1;
  stopping = true;
  stopAll();
});
