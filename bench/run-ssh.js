'use strict';
// `ispy run` over 50 agents through one ssh host, end to end: the wall time of
//
//   node bin/ispy.js run 'ssh://<user>@127.0.0.1:<port>/<dir>/*.sock' -c "process info"
//
// from spawn to exit: the client's start-up, the ssh ControlMaster to the host, the glob
// listed on the host, the transport, 50 hello/welcome exchanges and calls, the printed
// blocks, and closing the masters. Two transports, interleaved in the same run:
//   mux         the default: one ssh channel per master running one remote
//               `ispy bridge --mux` (here `node bin/ispy.js bridge --mux`) that carries every
//               socket of the host;
//   per socket  ISPY_SSH_MUX=0: one ssh channel and one remote `ispy bridge <socket>` (a
//               Node process) per agent, masters of 8 channels each.
//
// The "host" is this machine: our own sshd on 127.0.0.1 (a private process with a
// throwaway host key and user key in a temp folder; never the system service), so the
// figure has no network latency in it but all of ssh's and the bridges' CPU, on the same
// two cores as the agents and the client. Baseline, measured interleaved in the same run:
// the same `ispy run` over the same 50 sockets locally (no ssh). No target was set for
// this one; the figure is recorded as it is.
//
//   npm run build && node bench/run-ssh.js [--agents 50] [--runs 5] [--no-write]
//
// Needs /usr/sbin/sshd, ssh and ssh-keygen (`apt-get install openssh-server openssh-client`).
// Rewrites the section "## ispy run over 50 agents through one ssh host" of
// bench/RESULTS-other.md; every other section is kept as it is.

const { spawn, execFileSync } = require('node:child_process');
const fs = require('node:fs');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');
const { BIN, requireBuilt, parseArgs, num, tempDir, track, sleep, timed, median, fmtMs: fmt, provenance, writeResultsSection, killAll } = require('./lib/common');
const { HELLO, startAgents, checkRun } = require('./lib/agents');

const SECTION = '## ispy run over 50 agents through one ssh host';
const SSHD = '/usr/sbin/sshd';

const opts = parseArgs();
const AGENTS = num(opts.agents, 50);
const RUNS = num(opts.runs, 5);
const WRITE = !opts['no-write'];

const shq = (s) => `'${s.replace(/'/g, `'\\''`)}'`;

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

/** Our own sshd on loopback; resolves with what the client needs to reach it. */
async function startSshd() {
  const dir = tempDir('ispy-bsshd-');
  const hostKey = path.join(dir, 'host_key');
  const userKey = path.join(dir, 'user_key');
  for (const key of [hostKey, userKey]) execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', key], { stdio: 'ignore' });
  if (process.getuid?.() === 0 && !fs.existsSync('/run/sshd')) fs.mkdirSync('/run/sshd', { mode: 0o755 });
  const port = await freePort();
  const config = path.join(dir, 'sshd_config');
  fs.writeFileSync(
    config,
    [
      'ListenAddress 127.0.0.1',
      `Port ${port}`,
      `HostKey ${hostKey}`,
      `AuthorizedKeysFile ${userKey}.pub`,
      `PidFile ${path.join(dir, 'sshd.pid')}`,
      'StrictModes no',
      'UsePAM no',
      'PasswordAuthentication no',
      'KbdInteractiveAuthentication no',
      'PermitRootLogin prohibit-password',
      '',
    ].join('\n'),
  );
  const child = track(spawn(SSHD, ['-D', '-e', '-f', config], { stdio: ['ignore', 'ignore', 'pipe'] }));
  let log = '';
  child.stderr.on('data', (d) => (log += d));
  const deadline = Date.now() + 10_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`sshd exited with ${child.exitCode}: ${log}`);
    if (log.includes('Server listening')) break;
    if (Date.now() > deadline) throw new Error(`sshd did not start within 10 s: ${log}`);
    await sleep(50);
  }
  const sshOptions = ['-F', '/dev/null', '-i', userKey, '-o', 'IdentitiesOnly=yes', '-o', `UserKnownHostsFile=${path.join(dir, 'known_hosts')}`, '-o', 'StrictHostKeyChecking=no'].join(' ');
  return { port, sshOptions, log: () => log };
}

const accepted = (log) => (log.match(/Accepted publickey/g) ?? []).length;

async function main() {
  requireBuilt();
  if (!fs.existsSync(SSHD)) throw new Error(`${SSHD} is missing: apt-get install openssh-server openssh-client`);
  const sshd = await startSshd();
  console.log(`sshd on 127.0.0.1:${sshd.port}`);
  console.log(`starting ${AGENTS} agents (${path.basename(HELLO)})…`);
  const { dir, startMs } = await startAgents(AGENTS, 'ispy-bssh-');
  console.log(`  all up in ${fmt(startMs)}; socket folder ${dir}`);
  // Fifty fresh processes keep both cores busy for a while after their sockets appear.
  await sleep(3000);
  const user = os.userInfo().username;
  const env = { ISPY_SSH_OPTIONS: sshd.sshOptions, ISPY_REMOTE_BRIDGE: `${shq(process.execPath)} ${shq(BIN)} bridge` };
  const perSocketEnv = { ...env, ISPY_SSH_MUX: '0' };
  const sshArgs = [BIN, 'run', `ssh://${user}@127.0.0.1:${sshd.port}${dir}/*.sock`, '-c', 'process info'];
  const localArgs = [BIN, 'run', `${dir}/*.sock`, '-c', 'process info'];
  // One unmeasured run of each warms the file cache and every agent's first-call paths.
  checkRun(await timed(sshArgs, { env }), AGENTS, 'warm-up over ssh (mux)');
  checkRun(await timed(sshArgs, { env: perSocketEnv }), AGENTS, 'warm-up over ssh (per socket)');
  checkRun(await timed(localArgs), AGENTS, 'warm-up, local');
  const viaSsh = [];
  const perSocket = [];
  const local = [];
  const connections = [];
  const perSocketConnections = [];
  const bridgeFloor = [];
  for (let i = 0; i < RUNS; i++) {
    // Interleaved, order rotating, so drift in the machine's speed hits all three alike.
    const order = ['ssh', 'per socket', 'local'];
    for (let k = 0; k < order.length; k++) {
      const which = order[(k + i) % order.length];
      if (which === 'local') {
        const r = await timed(localArgs);
        checkRun(r, AGENTS, `local run ${i + 1}`);
        local.push(r.ms);
      } else {
        const before = accepted(sshd.log());
        const r = await timed(sshArgs, { env: which === 'ssh' ? env : perSocketEnv });
        checkRun(r, AGENTS, `${which === 'ssh' ? 'mux' : 'per-socket'} ssh run ${i + 1}`);
        (which === 'ssh' ? viaSsh : perSocket).push(r.ms);
        (which === 'ssh' ? connections : perSocketConnections).push(accepted(sshd.log()) - before);
      }
    }
    // What one remote bridge costs before it does anything: a Node start and ispy's CLI.
    bridgeFloor.push((await timed([BIN, '--version'])).ms);
  }
  // One bare ssh channel on an open master, running `true`: what sshd, the login shell
  // (with its rc files) and the mux client cost per agent before any bridge starts.
  const sshBase = [...sshd.sshOptions.split(' '), '-o', 'BatchMode=yes', '-p', String(sshd.port), '-T'];
  const ctl = path.join(tempDir('ispy-bctl-'), 'cm');
  await timed([...sshBase, '-o', 'ControlMaster=yes', '-o', `ControlPath=${ctl}`, '-o', 'ControlPersist=30', '-N', `${user}@127.0.0.1`], { command: 'ssh' });
  const channel = [];
  for (let i = 0; i < RUNS; i++) channel.push((await timed([...sshBase, '-o', `ControlPath=${ctl}`, `${user}@127.0.0.1`, 'true'], { command: 'ssh' })).ms);
  await timed([...sshBase, '-o', `ControlPath=${ctl}`, '-O', 'exit', `${user}@127.0.0.1`], { command: 'ssh' }).catch(() => {});
  const shell = process.env.SHELL ? path.basename(process.env.SHELL) : 'sh';
  // What the login shell's rc file costs on its own (bash reads ~/.bashrc for ssh commands).
  let rcNote = '';
  const bashrc = path.join(os.homedir(), '.bashrc');
  if (shell === 'bash' && fs.existsSync(bashrc)) {
    const rc = [];
    for (let i = 0; i < RUNS; i++) rc.push((await timed(['-c', `. ${shq(bashrc)}; true`], { command: 'bash' })).ms);
    rcNote = `Sourcing this machine's \`~/.bashrc\` on its own, which bash does for every ssh command, takes ${fmt(median(rc))}${/pyenv init/.test(fs.readFileSync(bashrc, 'utf8')) ? ' (it runs `pyenv init`)' : ''}: most of a channel's ${fmt(median(channel))} is the login shell's rc file, and a lighter one makes every channel cheaper. `;
  }
  const med = median(viaSsh);
  const base = median(local);
  const floor = median(bridgeFloor);
  const medPer = median(perSocket);
  console.log(`ispy run over ${AGENTS} agents through ssh (mux): median ${fmt(med)} (runs: ${viaSsh.map(fmt).join(', ')})`);
  console.log(`  per socket (ISPY_SSH_MUX=0): median ${fmt(medPer)} (runs: ${perSocket.map(fmt).join(', ')}); mux ÷ per socket ×${(med / medPer).toFixed(2)}`);
  console.log(`same agents, local: median ${fmt(base)}; ratio ${(med / base).toFixed(1)}x; ssh cost per agent ${((med - base) / AGENTS).toFixed(1)} ms`);
  console.log(`ssh connections per run: ${connections.join(', ')}; one bridge's start (node bin/ispy.js --version): ${fmt(floor)}; one bare channel (ssh -S … true): ${fmt(median(channel))}`);
  if (!WRITE) return;
  writeResultsSection(SECTION, 
    [
      `\`node bin/ispy.js run 'ssh://<user>@127.0.0.1:<port>/<dir>/*.sock' -c "process info"\` over ${AGENTS} agents (copies of \`bench/apps/hello-server.js\` with \`-r dist/src/register.js\`) behind one ssh host: our own \`sshd\` on loopback, the remote bridge \`node bin/ispy.js bridge\` (ISPY_REMOTE_BRIDGE). Wall time from spawn to exit: client start-up, ssh master, the glob listed on the host, the transport, ${AGENTS} connections and calls, output, masters closed. Two transports: mux (the default: one channel per master carrying every socket through one remote \`bridge --mux\`) and per socket (\`ISPY_SSH_MUX=0\`: a channel and a Node bridge per agent). ${RUNS} runs of each after one warm-up, interleaved with the baseline: the same run over the same sockets locally. No target was set; this is the figure as measured. Written by \`node bench/run-ssh.js\`.`,
      '',
      '| metric | value |',
      '|---|---|',
      `| median wall time, ${AGENTS} agents through ssh (mux) | ${fmt(med)} |`,
      `| runs | ${viaSsh.map(fmt).join(', ')} |`,
      `| median wall time, one channel per socket (\`ISPY_SSH_MUX=0\`) | ${fmt(medPer)} (runs ${perSocket.map(fmt).join(', ')}); mux ÷ per socket ×${(med / medPer).toFixed(2)} |`,
      `| baseline: same run, local sockets (median) | ${fmt(base)} |`,
      `| ratio to baseline (mux) | ${(med / base).toFixed(1)}x |`,
      `| ssh cost per agent beyond the baseline (mux / per socket) | ${((med - base) / AGENTS).toFixed(1)} ms / ${((medPer - base) / AGENTS).toFixed(1)} ms |`,
      `| TCP connections to the host per run (sshd's "Accepted publickey"), mux / per socket | ${[...new Set(connections)].join(', ')} / ${[...new Set(perSocketConnections)].join(', ')} (per socket: 32 targets in flight, 8 channels per connection) |`,
      `| one remote bridge's start, \`node bin/ispy.js --version\` (median) | ${fmt(floor)} |`,
      `| one bare ssh channel on an open master, \`ssh -S … host true\` (median, sequential) | ${fmt(median(channel))} |`,
      '',
      `${provenance()}. The machine is a shared VM; expect tens of percent of drift between runs.`,
      '',
      `Where the time goes: per socket, every agent costs one ssh channel (sshd forks a session and runs the login shell, here ${shell} with the user's rc files, before the command) and a remote Node process (the bridge) that starts, loads the CLI, and pipes bytes: ${AGENTS} × (${fmt(median(channel))} + ${fmt(floor)}) on ${os.cpus().length} cores, which here are also running sshd, the client and the ${AGENTS} agents, is most of its difference from the local run. ${rcNote}With mux the host pays one channel and one bridge start per run, whatever the number of agents; what is left beyond the local run is the master's connection, the glob listed over ssh, and the bytes of ${AGENTS} WebSocket sessions framed through one channel.`,
    ].join('\n'),
  );
  console.log(`wrote "${SECTION}" in bench/RESULTS-other.md`);
}

main().then(
  () => killAll(),
  (err) => {
    console.error(`run-ssh: ${err.message}`);
    process.exitCode = 1;
    killAll();
  },
);
