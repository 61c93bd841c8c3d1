// `npm run demo`: ispy on a misbehaving app, in one command.
//
// Starts examples/demo-app.js with the agent preloaded (config: the repo's
// ispy.config.json; socket: a fresh private temp folder), sends it some traffic so there
// is something to see (a request held open, CPU-hot requests, a growing cache), prints a
// few commands to try, and attaches `ispy connect` with this terminal. When the shell
// exits, the app is stopped and the temp folder removed.
//
// Works with piped stdin too: `echo "process info" | npm run demo` runs the line and exits.
'use strict';

const { spawn } = require('node:child_process');
const fs = require('node:fs');
const http = require('node:http');
const os = require('node:os');
const path = require('node:path');

const ROOT = path.resolve(__dirname, '..');
const REGISTER = path.join(ROOT, 'dist', 'src', 'register.js');
const BIN = path.join(ROOT, 'bin', 'ispy.js');
const START_TIMEOUT_MS = 15_000;

// mkdtemp creates the folder 0700: only this user can reach the socket inside it.
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ispy-demo-'));
let app;

function stopApp() {
  if (app && app.pid !== undefined && app.exitCode === null && app.signalCode === null) app.kill('SIGTERM');
}

function removeDir() {
  fs.rmSync(dir, { recursive: true, force: true });
}

// Whatever ends this script ends the app with it. The app runs in its own process group
// (detached) so Ctrl-C at the terminal reaches only the shell, which uses it to cancel.
process.on('exit', () => {
  stopApp();
  removeDir();
});
for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.on(signal, () => {
    stopApp();
    process.exitCode = 130;
  });
}

function get(port, pathname) {
  return new Promise((resolve) => {
    const req = http.get({ host: '127.0.0.1', port, path: pathname, agent: false }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode));
    });
    // Requests still open when the app stops simply end; the demo does not care.
    req.on('error', () => resolve(0));
  });
}

function waitFor(check, what) {
  const deadline = Date.now() + START_TIMEOUT_MS;
  return new Promise((resolve, reject) => {
    const tick = () => {
      const value = check();
      if (value) return resolve(value);
      if (app.exitCode !== null || app.signalCode !== null) return reject(new Error(`the demo app exited while waiting for ${what}`));
      if (Date.now() > deadline) return reject(new Error(`timed out waiting for ${what}`));
      setTimeout(tick, 50);
    };
    tick();
  });
}

async function main() {
  if (!fs.existsSync(REGISTER)) {
    console.error('demo: ispy is not built yet: run `npm run build` first (npm run demo does it for you)');
    process.exitCode = 1;
    return;
  }
  app = spawn(process.execPath, ['-r', REGISTER, path.join(__dirname, 'demo-app.js')], {
    cwd: ROOT,
    detached: true,
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, ISPY_CONFIG: path.join(ROOT, 'ispy.config.json'), ISPY_SOCKET: path.join(dir, '{pid}.sock') },
  });
  let out = '';
  let err = '';
  app.stdout.on('data', (d) => (out += d));
  app.stderr.on('data', (d) => (err += d));
  const socket = path.join(dir, `${app.pid}.sock`);
  let port;
  try {
    port = await waitFor(() => Number(/PORT (\d+)/.exec(out)?.[1]), 'the app to listen');
    await waitFor(() => fs.existsSync(socket), `the agent socket ${socket}`);
  } catch (e) {
    console.error(`demo: ${e.message}\n${err}`);
    process.exitCode = 1;
    stopApp();
    return;
  }

  // Traffic: one request held open (requests list shows it), CPU-hot ones, a growing cache.
  void get(port, '/slow?ms=600000');
  await Promise.all([get(port, '/hot'), get(port, '/hot'), ...Array.from({ length: 20 }, () => get(port, '/leak'))]);

  const say = (text) => process.stdout.write(`${text}\n`);
  say(`demo app: pid ${app.pid}, http://127.0.0.1:${port} (GET /slow, /hot, /leak, /block?ms=2000)`);
  say(`agent socket: ${socket}`);
  say('');
  say('Try:');
  say('  help                          what this process offers');
  say('  process info                  pid, versions, memory, CPU');
  say('  requests list                 the /slow request is still in flight');
  say('  process loop --duration 2s    event-loop delay; then in another terminal:');
  say(`                                curl 'http://127.0.0.1:${port}/block?ms=3000' and run process stack`);
  say('  process report -o report.json save Node\'s diagnostic report here');
  say(`  (from another terminal: node ${path.relative(process.cwd(), BIN) || BIN} run '${dir}/*.sock' -c "process info")`);
  say('');

  const shell = spawn(process.execPath, [BIN, 'connect', socket], { stdio: 'inherit' });
  // While the shell runs, Ctrl-C belongs to it (it cancels the running command).
  const code = await new Promise((resolve) => shell.on('exit', (c, signal) => resolve(c ?? (signal ? 1 : 0))));
  process.exitCode = code;
  stopApp();
  await new Promise((resolve) => (app.exitCode !== null || app.signalCode !== null ? resolve() : app.once('exit', resolve)));
}

main().catch((e) => {
  console.error(e);
  process.exitCode = 1;
  stopApp();
});
