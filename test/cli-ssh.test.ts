// `ispy run` across a fleet over ssh, against a real OpenSSH server on loopback (our own
// sshd process, throwaway keys; see sshd.ts). Behind it: four live agents and one stale
// socket in one folder. Beside it: a host whose port is closed, and one that accepts TCP
// and never says a word. The remote `ispy bridge` is this repository's bin/ispy.js, since
// the "remote" host is this machine, started through a small shell script that notes each
// start (its pid and arguments) in a log: how many bridges ran, and with what, is how the
// tests see one mux channel carry every socket, and the fallback take one per socket.

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as net from 'node:net';
import * as path from 'node:path';
import { spawn } from 'node:child_process';
import { globWord, listCommand, parseSshTarget, remoteSettings, shellQuote } from '../src/cli/ssh';
import { mergeResults } from '../src/cli/merge';
import { BIN, cleanup, runBlocks, runCli, slowdown, startApp, tempDir, waitFor, type App } from './helpers';
import { processAlive } from '../dist/src/protocol/socket-path.js';
import { freePort, sshdMissing, startSshd, type Sshd } from './sshd';

const missing = sshdMissing();
if (missing && process.env.CI) throw new Error(`cli-ssh tests need OpenSSH in CI: ${missing}`);

const LIVE = 4;
let sshd: Sshd;
let dir: string;
let apps: App[];
let stale: string;
let closedPort: number;
let hung: net.Server;
let hungPort: number;
const hungSockets = new Set<net.Socket>();
let env: Record<string, string>;
let host: string;
let glob: string;
const held: http.ClientRequest[] = [];

let bridgeLog: string;
/** `<script> <args…>`: the script notes its start, then does what its body says. */
function bridgeScript(name: string, body: string): string {
  const file = path.join(dir, name);
  fs.writeFileSync(file, `#!/bin/sh\necho "$$ $*" >> ${shellQuote(bridgeLog)}\n${body}\n`, { mode: 0o755 });
  return shellQuote(file);
}
const NODE_ISPY = `exec ${shellQuote(process.execPath)} ${shellQuote(BIN)} "$@"`;

/** Bridges started since `from` lines of the log: [pid, arguments]. */
function bridgesSince(from: number): [number, string][] {
  const lines = fs.existsSync(bridgeLog) ? fs.readFileSync(bridgeLog, 'utf8').split('\n').filter(Boolean) : [];
  return lines.slice(from).map((l) => [Number(l.slice(0, l.indexOf(' '))), l.slice(l.indexOf(' ') + 1)]);
}
const logged = () => bridgesSince(0).length;

beforeAll(async () => {
  if (missing) return;
  sshd = await startSshd();
  dir = tempDir('ispy-ssh-');
  bridgeLog = path.join(dir, 'bridges.log');
  // The agents keep their copy of an artefact in this folder, not the user's default one.
  const config = { outputDir: dir };
  apps = await Promise.all(Array.from({ length: LIVE }, (_, i) => startApp({ script: 'hold-app.cjs', dir, config, socket: path.join(dir, `app-${i}.sock`) })));
  const doomed = await startApp({ script: 'hold-app.cjs', dir, config, socket: path.join(dir, 'stale.sock') });
  await doomed.kill('SIGKILL');
  stale = doomed.socket;
  expect(fs.existsSync(stale)).toBe(true);
  closedPort = await freePort();
  // Accepts the TCP connection, then silence: ssh waits for a banner that never comes.
  hung = net.createServer((s) => {
    hungSockets.add(s);
    s.on('error', () => {});
  });
  await new Promise<void>((r) => hung.listen(0, '127.0.0.1', () => r()));
  hungPort = (hung.address() as net.AddressInfo).port;
  // A private TMPDIR for the client, to check it leaves no control folder behind.
  // `<script> bridge`: ispy's own bridge as far as the client can tell, so mux is tried.
  env = { ISPY_SSH_OPTIONS: sshd.sshOptions, ISPY_REMOTE_BRIDGE: `${bridgeScript('ispy', NODE_ISPY)} bridge`, TMPDIR: tempDir('ispy-ctl-') };
  host = `127.0.0.1:${sshd.port}`;
  glob = `ssh://${sshd.user}@127.0.0.1:${sshd.port}${dir}/*.sock`;
}, 60_000);

afterAll(async () => {
  for (const r of held) r.destroy();
  for (const s of hungSockets) s.destroy();
  hung?.close();
  await cleanup();
  await sshd?.stop();
});


const accepted = () => (sshd.log().match(/Accepted publickey/g) ?? []).length;

// For the runs whose subject is not a time limit: a limit far from what a loaded 2-core
// machine needs for ssh's handshake, a bridge's start and the line (ispy run's 10 s default was
// not, for `process report` over ssh beside two CPU burners), and the client's own bound above it.
const PATIENT = ['--timeout', '60s'];
const PATIENT_CLI = { timeoutMs: 120_000 };

// Each test may take minutes on a busy machine; what they assert is state, not time.
describe.skipIf(missing !== undefined)('ispy run over ssh', { timeout: 300_000 }, () => {
  it('answers from every live agent behind one ssh connection, labels the failures, exits 1 and cleans up', async () => {
    const before = accepted();
    const r = await runCli(['run', glob, `ssh://127.0.0.1:${closedPort}/tmp/x.sock`, '-c', 'process info', ...PATIENT], { env, ...PATIENT_CLI });
    expect(r.code).toBe(1);
    expect(r.stderr).toBe(`${LIVE} ok, 2 failed\n`);
    const b = runBlocks(r.stdout);
    expect(b.size).toBe(LIVE + 2);
    for (const app of apps) {
      const block = b.get(`${host}:${app.socket}`);
      expect(block, app.socket).toMatch(new RegExp(`^── ${host}:${app.socket} \\(pid ${app.pid}, .+\\) ──\n`));
      expect(block).toMatch(new RegExp(`^pid +${app.pid}$`, 'm'));
    }
    expect(b.get(`${host}:${stale}`)).toBe(`── ${host}:${stale} ── failed\nerror: stale socket ${stale}: nothing is listening on it (the process that created it is gone)\n`);
    expect(b.get(`127.0.0.1:${closedPort}:/tmp/x.sock`)).toBe(
      `── 127.0.0.1:${closedPort}:/tmp/x.sock ── failed\nerror: cannot reach 127.0.0.1:${closedPort} over ssh: connect to host 127.0.0.1 port ${closedPort}: Connection refused\n`,
    );
    // The glob listing and five bridges were channels of one TCP connection.
    expect(accepted() - before).toBe(1);
    // The master was told to exit and the control folder removed.
    expect(fs.readdirSync(env.TMPDIR!)).toEqual([]);
  });

  it('carries every socket of a host over one channel to one bridge; a stale or missing socket fails alone; nothing is left running', async () => {
    const from = logged();
    const missing = `${dir}/gone.sock`;
    // The same user@host:port as the glob, so the same ssh master (and so the same mux channel).
    const r = await runCli(['run', glob, `ssh://${sshd.user}@127.0.0.1:${sshd.port}${missing}`, '-c', 'process info'], { env });
    expect(r.stderr).toBe(`${LIVE} ok, 2 failed\n`);
    const b = runBlocks(r.stdout);
    for (const app of apps) expect(b.get(`${host}:${app.socket}`)).toMatch(new RegExp(`^pid +${app.pid}$`, 'm'));
    expect(b.get(`${host}:${stale}`)).toBe(`── ${host}:${stale} ── failed\nerror: stale socket ${stale}: nothing is listening on it (the process that created it is gone)\n`);
    expect(b.get(`${host}:${missing}`)).toBe(`── ${host}:${missing} ── failed\nerror: no agent socket at ${missing} (no such file); \`ispy ps\` lists live agents\n`);
    // Six sockets, one bridge: the mux one (the glob's listing runs sh, not a bridge).
    const started = bridgesSince(from);
    expect(started.map(([, args]) => args)).toEqual(['bridge --mux']);
    // It left when the run closed its stdin, before the run exited.
    expect(processAlive(started[0]![0])).toBe(false);
    expect(fs.readdirSync(env.TMPDIR!)).toEqual([]);
  });

  it('falls back to one channel per socket when the bridge does not know --mux, and never tries it with a bridge that is not ispy\'s', async () => {
    // An older ispy: `bridge --mux` is a usage error, and it exits at once.
    const old = `${bridgeScript('old-ispy', `for a in "$@"; do if [ "$a" = --mux ]; then echo "error: unknown option '--mux'" >&2; exit 2; fi; done\n${NODE_ISPY}`)} bridge`;
    // Not ispy's own by its last word (a wrapper, socat, …): one channel per socket from the start.
    const plain = bridgeScript('plain-bridge', `exec ${shellQuote(process.execPath)} ${shellQuote(BIN)} bridge "$@"`);
    for (const [bridge, mux] of [[old, ['bridge --mux']], [plain, []]] as const) {
      const from = logged();
      const r = await runCli(['run', glob, '-c', 'process info', '--bridge', bridge], { env });
      expect(r.stderr, bridge).toBe(`${LIVE} ok, 1 failed\n`);
      const b = runBlocks(r.stdout);
      for (const app of apps) expect(b.get(`${host}:${app.socket}`)).toMatch(new RegExp(`^pid +${app.pid}$`, 'm'));
      expect(b.get(`${host}:${stale}`)).toContain(`error: stale socket ${stale}: nothing is listening on it`);
      const started = bridgesSince(from).map(([, args]) => args);
      expect(started.filter((a) => a.includes('--mux'))).toEqual(mux);
      const sockets = [...apps.map((a) => a.socket), stale].sort();
      expect(started.filter((a) => !a.includes('--mux')).sort()).toEqual(sockets.map((f) => (bridge === plain ? f : `bridge ${f}`)));
      expect(fs.readdirSync(env.TMPDIR!)).toEqual([]);
    }
  });

  it('falls back when the bridge takes --mux but never greets, within a bounded wait', async () => {
    // Reads its stdin and says nothing: the client gives up on it (3 s) and ends it.
    const mute = `${bridgeScript('mute-ispy', `for a in "$@"; do if [ "$a" = --mux ]; then exec cat > /dev/null; fi; done\n${NODE_ISPY}`)} bridge`;
    const from = logged();
    const slow = slowdown();
    const started = Date.now();
    const r = await runCli(['run', ...apps.slice(0, 2).map((a) => `ssh://127.0.0.1:${sshd.port}${a.socket}`), '-c', 'process info', '--bridge', mute], { env });
    expect(r.code).toBe(0);
    expect(Date.now() - started).toBeLessThan(9000 * Math.max(slow, slowdown()));
    const bridges = bridgesSince(from);
    expect(bridges.map(([, args]) => args).sort()).toEqual(['bridge --mux', ...apps.slice(0, 2).map((a) => `bridge ${a.socket}`)].sort());
    // The mute one saw its channel close and went.
    await waitFor(() => !processAlive(bridges.find(([, a]) => a === 'bridge --mux')![0]), 5000, 'the mute bridge to exit');
  });

  it('honours --timeout: a host that never speaks fails within it, the others answer first', async () => {
    // 5 s on a quiet machine (generous: the live ones must answer well inside it), longer by
    // as much as the machine is busy just now.
    const timeoutMs = Math.round(5000 * slowdown());
    const started = Date.now();
    const r = await runCli(['run', glob, `ssh://127.0.0.1:${hungPort}/tmp/x.sock`, `ssh://127.0.0.1:${hungPort}/tmp/*.sock`, '-c', 'process info', '--timeout', `${timeoutMs}ms`], { env, timeoutMs: 4 * timeoutMs });
    const elapsed = Date.now() - started;
    expect(r.code).toBe(1);
    expect(r.stderr).toBe(`${LIVE} ok, 3 failed\n`);
    // The timeout for the hung host, plus the client's own start and closing; never one per target.
    expect(elapsed).toBeLessThan(2 * timeoutMs);
    const b = runBlocks(r.stdout);
    for (const label of [`127.0.0.1:${hungPort}:/tmp/x.sock`, `127.0.0.1:${hungPort}:/tmp/*.sock`]) {
      expect(b.get(label)).toBe(`── ${label} ── failed\nerror: 127.0.0.1:${hungPort} did not answer over ssh within ${timeoutMs} ms\n`);
    }
    const order = [...b.keys()];
    for (const app of apps) expect(order.indexOf(`${host}:${app.socket}`)).toBeLessThan(order.indexOf(`127.0.0.1:${hungPort}:/tmp/x.sock`));
  });

  it('--json lines carry host and pid, for answers and failures alike; --targets-file reads targets with comments', async () => {
    const file = path.join(tempDir('ispy-tf-'), 'fleet.txt');
    fs.writeFileSync(file, `# the fleet\n${glob}   # four apps and a stale socket\n\nssh://127.0.0.1:${closedPort}/tmp/x.sock\n`);
    const r = await runCli(['run', '--targets-file', file, '-c', 'process info', '--json', ...PATIENT], { env, ...PATIENT_CLI });
    expect(r.code).toBe(1);
    const rows = r.stdout.trim().split('\n').map((l) => JSON.parse(l));
    expect(rows.length).toBe(LIVE + 2);
    for (const app of apps) {
      expect(rows.find((x) => x.target === `${host}:${app.socket}`)).toMatchObject({ host, pid: app.pid, ok: true, result: { pid: app.pid } });
    }
    expect(rows.find((x) => x.target === `${host}:${stale}`)).toMatchObject({ host, pid: null, ok: false, error: { code: 'ISPY_ERR_CONNECT' } });
    expect(rows.find((x) => x.target === `127.0.0.1:${closedPort}:/tmp/x.sock`)).toMatchObject({ host: `127.0.0.1:${closedPort}`, pid: null, ok: false });
  });

  it('--merge prints one table per line across the fleet, sorted by the natural key', async () => {
    // One held request per app, a second apart: the first app's is the oldest in the fleet.
    const order = [apps[2]!, apps[0]!, apps[3]!, apps[1]!];
    for (const app of order) {
      const port = await app.port();
      const req = http.get({ host: '127.0.0.1', port, path: `/hold?app=${app.pid}`, agent: false });
      req.on('error', () => {});
      held.push(req);
      await new Promise((r) => setTimeout(r, 1000));
    }
    const r = await runCli(['run', glob, '-c', 'requests list', '-c', 'process info', '--merge', ...PATIENT], { env, ...PATIENT_CLI });
    expect(r.code).toBe(1);
    expect(r.stderr).toBe(`${LIVE} ok, 1 failed\n`);
    const b = runBlocks(r.stdout);
    // The failure is told in its own block; the answers are in the tables.
    expect(b.get(`${host}:${stale}`)).toContain('error: stale socket');
    const [, requests, info] = r.stdout.split(/^── (?:requests list|process info): /m);
    expect(r.stdout).toContain(`── requests list: ${LIVE} targets merged, by ageMs, descending ──\n`);
    const reqLines = requests!.trim().split('\n').slice(1);
    expect(reqLines[0]).toMatch(/^host +pid +id +method +url +ageMs/);
    const reqRows = reqLines.slice(1);
    expect(reqRows.length).toBe(LIVE);
    expect(reqRows.map((l) => Number(l.split(/\s+/)[1]))).toEqual(order.map((a) => a.pid));
    for (const [i, l] of reqRows.entries()) expect(l).toContain(`/hold?app=${order[i]!.pid}`);
    expect(reqRows.every((l) => l.startsWith(`${host} `))).toBe(true);
    expect(r.stdout).toContain(`── process info: ${LIVE} targets merged, by pid, ascending ──\n`);
    const infoRows = info!.trim().split('\n').slice(2);
    expect(infoRows.map((l) => Number(l.split(/\s+/)[1]))).toEqual(apps.map((a) => a.pid).sort((x, y) => x - y));

    const j = await runCli(['run', glob, '-c', 'requests list', '--merge', '--json', ...PATIENT], { env, ...PATIENT_CLI });
    const docs = j.stdout.trim().split('\n').map((l) => JSON.parse(l));
    expect(docs.length).toBe(1);
    expect(docs[0]).toMatchObject({ line: 'requests list', command: 'requests list', targets: LIVE, failed: [{ target: `${host}:${stale}`, host, pid: null }] });
    expect(docs[0].rows.map((x: { pid: number }) => x.pid)).toEqual(order.map((a) => a.pid));
    expect(docs[0].rows[0]).toMatchObject({ host, source: `${host}:${order[0]!.socket}`, method: 'GET', url: expect.stringContaining('/hold') });
  });

  it('saves one artefact per remote target with -o, host and pid in the name', async () => {
    const out = tempDir('ispy-ssh-o-');
    const r = await runCli(['run', ...apps.slice(0, 2).map((a) => `ssh://127.0.0.1:${sshd.port}${a.socket}`), '-c', `process report -o ${out}/report.json`, ...PATIENT], { env, ...PATIENT_CLI });
    expect(r.code, r.stdout + r.stderr).toBe(0);
    const tag = host.replace(/[^A-Za-z0-9._-]/g, '_');
    expect(fs.readdirSync(out).sort()).toEqual(apps.slice(0, 2).map((a) => `report-${tag}-${a.pid}.json`).sort());
    for (const a of apps.slice(0, 2)) expect(JSON.parse(fs.readFileSync(path.join(out, `report-${tag}-${a.pid}.json`), 'utf8')).header.processId).toBe(a.pid);
  });

  it('connects a shell to one remote socket, and says so when the bridge is missing on the host', async () => {
    const one = `ssh://127.0.0.1:${sshd.port}${apps[0]!.socket}`;
    const c = await runCli(['connect', one], { env, input: 'process info --json\n' });
    expect(c.code).toBe(0);
    expect(JSON.parse(c.stdout).pid).toBe(apps[0]!.pid);

    const r = await runCli(['run', one, '-c', 'process info', '--bridge', 'ispy-not-installed bridge'], { env });
    expect(r.code).toBe(1);
    expect(r.stdout).toContain(`error: the bridge command \`ispy-not-installed bridge\` is not available on ${host}`);
    expect(r.stdout).toContain('--bridge "node /path/to/ispy/bin/ispy.js bridge"');
  });

  it('closes the ssh connection and removes its control folder when interrupted mid-run', async () => {
    const tmp = tempDir('ispy-int-');
    const before = (sshd.log().match(/Disconnected from user/g) ?? []).length;
    const child = spawn(process.execPath, [BIN, 'run', glob, '-c', 'process loop --duration 20s'], { env: { ...process.env, ...env, TMPDIR: tmp }, stdio: 'ignore' });
    const exited = new Promise<NodeJS.Signals | null>((resolve) => child.once('exit', (_code, signal) => resolve(signal)));
    try {
      // The master is up once its control socket is in the run's private folder.
      await waitFor(() => fs.readdirSync(tmp).some((d) => fs.readdirSync(path.join(tmp, d)).length > 0), 10_000, 'the ssh control socket');
      await new Promise((r) => setTimeout(r, 500));
      child.kill('SIGINT');
      expect(await Promise.race([exited, new Promise((r) => setTimeout(() => r('still running'), 5000))])).toBe('SIGINT');
    } finally {
      child.kill('SIGKILL');
    }
    expect(fs.readdirSync(tmp)).toEqual([]);
    await waitFor(() => (sshd.log().match(/Disconnected from user/g) ?? []).length > before, 5000, 'sshd to see the connection end');
  });

  it('refuses target strings that could reach a shell as code (exit 2), before contacting anything', async () => {
    for (const [spec, says] of [
      [`ssh://127.0.0.1:${sshd.port}/tmp/$(touch pwned)/a.sock`, 'bad socket path'],
      [`ssh://127.0.0.1:${sshd.port}/tmp/a.sock;id`, 'bad socket path'],
      ["ssh://127.0.0.1/tmp/a'b.sock", 'bad socket path'],
      ['ssh://-oProxyCommand=touch%20pwned/tmp/a.sock', 'bad host'],
      ['ssh://127.0.0.1:99999/tmp/a.sock', 'bad port'],
      ['ssh://127.0.0.1', 'expected ssh://[user@]host[:port]/path/to.sock'],
    ] as const) {
      const r = await runCli(['run', spec, '-c', 'process info', ...PATIENT], { env, ...PATIENT_CLI });
      expect(r.code, spec).toBe(2);
      expect(r.stderr, spec).toContain(says);
    }
  });
});

describe('ssh target parsing and quoting', () => {
  it('parses user, host, port and path', () => {
    expect(parseSshTarget('ssh://web1/tmp/ispy-1000/*.sock')).toEqual({ host: 'web1', path: '/tmp/ispy-1000/*.sock' });
    expect(parseSshTarget('ssh://app@10.0.0.7:2222/run/a.sock')).toEqual({ user: 'app', host: '10.0.0.7', port: 2222, path: '/run/a.sock' });
    expect(parseSshTarget('ssh://[::1]:22/run/a.sock')).toEqual({ host: '::1', port: 22, path: '/run/a.sock' });
  });

  it("tries the mux bridge only with ispy's own bridge command, unless ISPY_SSH_MUX=0", () => {
    for (const bridge of ['ispy bridge', "'/opt/node 20/bin/node' /opt/ispy/bin/ispy.js bridge", 'sudo -u app ispy bridge']) expect(remoteSettings({}, { bridge }).mux, bridge).toBe(true);
    for (const bridge of ['socat - UNIX-CONNECT:', '/usr/local/bin/my-bridge', 'ispy bridge --verbose']) expect(remoteSettings({}, { bridge }).mux, bridge).toBe(false);
    expect(remoteSettings({ ISPY_SSH_MUX: '0' }).mux).toBe(false);
    expect(() => remoteSettings({ ISPY_SSH_MUX: 'off' })).toThrow('ISPY_SSH_MUX must be 1 (try one channel per host, the default) or 0 (one channel per socket), not off');
  });

  it('quotes everything but the glob characters', () => {
    expect(shellQuote("it's")).toBe(`'it'\\''s'`);
    expect(globWord('/tmp/ispy-1000/*.sock')).toBe(`'/tmp/ispy-1000/'*'.sock'`);
    expect(globWord('/tmp/a?/*')).toBe(`'/tmp/a'?'/'*`);
    expect(listCommand('/t/*.sock')).toBe(`sh -c 'for f in '\\''/t/'\\''*'\\''.sock'\\''; do if [ -S "$f" ] && [ ! -h "$f" ]; then printf '\\''%s\\0'\\'' "$f"; fi; done; exit 0'`);
  });
});

describe('merged views', () => {
  const at = (host: string, pid: number, value: unknown, answeredAt?: number) => ({ host, pid, source: `${host}:/s/${pid}.sock`, value, ...(answeredAt !== undefined ? { answeredAt } : {}) });

  it('sorts requests by age as of one moment, across targets that answered at different times', () => {
    const m = mergeResults(
      'requests list',
      [
        at('web1', 1, { total: 2, requests: [{ id: 1, url: '/a', ageMs: 900 }, { id: 2, url: '/b', ageMs: 100 }] }, 10_000),
        // Answered 500 ms later: its 1200 ms-old request started 300 ms after /a.
        at('web2', 2, { total: 1, requests: [{ id: 7, url: '/c', ageMs: 1200 }] }, 10_500),
      ],
      11_000,
    );
    expect(m.order).toBe('ageMs, descending');
    expect(m.table).toEqual([
      { host: 'web1', pid: 1, id: 1, url: '/a', ageMs: 1900 },
      { host: 'web2', pid: 2, id: 7, url: '/c', ageMs: 1700 },
      { host: 'web1', pid: 1, id: 2, url: '/b', ageMs: 1100 },
    ]);
    expect(m.rows[0]).toEqual({ host: 'web1', pid: 1, source: 'web1:/s/1.sock', id: 1, url: '/a', ageMs: 1900 });
  });

  it("merges any plugin's list by shape: the first array-of-objects property, unsorted rows by host and pid", () => {
    const m = mergeResults('mine things', [
      at('b', 2, { count: 1, note: 'x', things: [{ name: 'z', pid: 99 }] }),
      at('a', 3, { count: 2, note: 'y', things: [{ name: 'q' }, { name: 'r', size: { kb: 4 } }] }),
    ]);
    expect(m.order).toBeUndefined();
    expect(m.table).toEqual([
      { host: 'a', pid: 3, name: 'q' },
      { host: 'a', pid: 3, name: 'r', 'size.kb': 4 },
      // An item's own pid is kept beside the process's.
      { host: 'b', pid: 2, name: 'z', 'item.pid': 99 },
    ]);
  });

  it('makes records one row per target, with the chosen columns, sorted by the natural key', () => {
    const info = (pid: number, rss: number) => ({ pid, title: 'node', versions: { node: '20.1.0' }, uptimeSeconds: 5, memory: { processRssMB: rss, mainThread: { heapUsedMB: 3 } }, cpu: { averagePercent: 1 }, mainThread: 'event loop turning', argv: ['node'] });
    const m = mergeResults('process info', [at('h', 30, info(30, 50)), at('h', 4, info(4, 60))]);
    expect(m.table).toEqual([
      { host: 'h', pid: 4, title: 'node', node: '20.1.0', uptimeSeconds: 5, rssMB: 60, heapUsedMB: 3, cpuPercent: 1, mainThread: 'event loop turning' },
      { host: 'h', pid: 30, title: 'node', node: '20.1.0', uptimeSeconds: 5, rssMB: 50, heapUsedMB: 3, cpuPercent: 1, mainThread: 'event loop turning' },
    ]);
    const heap = mergeResults('heap stats', [at('h', 1, { usedMB: 5, spaces: [{ space: 'new' }] }), at('h', 2, { usedMB: 9, spaces: [] })]);
    expect(heap.table).toEqual([{ host: 'h', pid: 2, usedMB: 9 }, { host: 'h', pid: 1, usedMB: 5 }]);
    expect(heap.rows[0]).toMatchObject({ usedMB: 9, spaces: [] });
    // A scalar answer is a row of its own.
    expect(mergeResults(undefined, [at('h', 1, 'ok')]).table).toEqual([{ host: 'h', pid: 1, value: 'ok' }]);
  });
});
