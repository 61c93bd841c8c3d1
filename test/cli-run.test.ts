// `ispy run` and `ispy ps` over a dozen real agent processes with mixed fortunes: eleven
// live apps, one stale socket left by an app killed with SIGKILL, and one app killed in
// the middle of a line. Every target is reported in its own block (or its own JSON lines),
// none hides another, and the exit status says whether every target answered every line.

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { cleanup, runBlocks, runCli, startApp, tempDir, waitFor, type App } from './helpers';

const LIVE = 11;
let dir: string;
let apps: App[];
let staleSocket: string;

beforeAll(async () => {
  dir = tempDir('ispy-run-');
  // A few at a time: twelve Node processes starting at once on two busy cores each take
  // twelve times as long, and one of them can outlast its start-up wait.
  apps = [];
  for (let i = 0; i < LIVE; i += 3) {
    const batch = Array.from({ length: Math.min(3, LIVE - i) }, (_, j) => startApp({ script: 'http-app.cjs', dir, socket: path.join(dir, `app-${i + j}.sock`), config: { outputDir: dir } }));
    apps.push(...(await Promise.all(batch)));
  }
  // SIGKILL leaves no chance to clean up: the socket file stays, nothing listens.
  const doomed = await startApp({ script: 'http-app.cjs', dir, socket: path.join(dir, 'stale.sock') });
  await doomed.kill('SIGKILL');
  staleSocket = doomed.socket;
  expect(fs.existsSync(staleSocket)).toBe(true);
}, 180_000);
afterAll(cleanup);


describe('ispy run', () => {
  it('runs a line on every agent a glob matches and exits 0 when all answer', async () => {
    const r = await runCli(['run', `${dir}/app-*.sock`, '-c', 'process info']);
    expect(r.code).toBe(0);
    expect(r.stderr).toBe(`${LIVE} ok, 0 failed\n`);
    const b = runBlocks(r.stdout);
    expect(b.size).toBe(LIVE);
    for (const app of apps) {
      const block = b.get(app.socket);
      expect(block, app.socket).toMatch(new RegExp(`^── ${app.socket} \\(pid ${app.pid}, .+\\) ──\n`));
      expect(block).toMatch(new RegExp(`^pid +${app.pid}$`, 'm'));
    }
  });

  it('ps lists the live agents and hides the stale socket unless --all', async () => {
    const r = await runCli(['ps', dir]);
    expect(r.code).toBe(0);
    const lines = r.stdout.trim().split('\n');
    expect(lines[0]).toMatch(/^\s*pid\s+title\s+uptime\s+node\s+socket$/);
    expect(lines.length).toBe(LIVE + 1);
    for (const app of apps) expect(r.stdout).toMatch(new RegExp(`^\\s*${app.pid} .* ${process.version} +${app.socket}$`, 'm'));
    expect(r.stdout).not.toContain('stale.sock');
    expect(r.stderr).toContain('1 stale not shown');

    const all = await runCli(['ps', dir, '--all', '--json']);
    const entries = all.stdout.trim().split('\n').map((l) => JSON.parse(l));
    expect(entries.length).toBe(LIVE + 1);
    expect(entries.find((e) => e.socket === staleSocket)).toMatchObject({ status: 'stale' });
    expect(entries.filter((e) => e.status === 'live').map((e) => e.pid).sort()).toEqual(apps.map((a) => a.pid).sort());
  });

  it('reports each target in its own block when one is stale and one dies mid-line, exit 1', async () => {
    const victim = apps[LIVE - 1]!;
    const infoBefore = answeredInfoCalls(victim.pid);
    const run = runCli(['run', `${dir}/*.sock`, '-c', 'process info', '-c', 'process loop --duration 3s', '-c', 'process info'], { timeoutMs: 30_000 });
    // Kill the victim once it has answered the run's first line (its audit log says so): the
    // run then sends the loop line, which runs 3 s. A connection alone is not enough: on a
    // busy machine the run may not yet have read the agent's hello, which names the pid.
    await waitFor(() => answeredInfoCalls(victim.pid) > infoBefore, 20_000, "the victim to answer the run's first line");
    await victim.kill('SIGKILL');
    const r = await run;
    expect(r.code).toBe(1);
    expect(r.stderr).toBe(`${LIVE - 1} ok, 2 failed\n`);
    const b = runBlocks(r.stdout);
    expect(b.size).toBe(LIVE + 1);
    expect(b.get(staleSocket)).toBe(`── ${staleSocket} ── failed\nerror: stale socket ${staleSocket}: nothing is listening on it (the process that created it is gone)\n`);
    const died = b.get(victim.socket)!;
    expect(died).toMatch(new RegExp(`^── ${victim.socket} \\(pid ${victim.pid}, .+\\) ── failed$`, 'm'));
    expect(died).toContain(`» process loop --duration 3s\nerror: agent ${victim.pid} went away`);
    expect(died).toContain(`» process info\nerror: not run: agent ${victim.pid} went away`);
    for (const app of apps.slice(0, LIVE - 1)) {
      const block = b.get(app.socket)!;
      expect(block).toMatch(/» process loop --duration 3s\nsampledMs +\d+\n/);
      expect(block).toMatch(new RegExp(`» process info\npid +${app.pid}\n`));
    }
  });

  it('prints one JSON object per target per line with --json', async () => {
    const r = await runCli(['run', `${dir}/*.sock`, '-c', 'process info', '-c', 'process stack --limit 1', '--json']);
    expect(r.code).toBe(1);
    const rows = r.stdout.trim().split('\n').map((l) => JSON.parse(l));
    expect(rows.length).toBe((LIVE + 1) * 2);
    const live = apps.slice(0, LIVE - 1);
    for (const app of live) {
      const mine = rows.filter((x) => x.target === app.socket);
      expect(mine.map((x) => x.line)).toEqual(['process info', 'process stack --limit 1']);
      expect(mine[0]).toMatchObject({ pid: app.pid, ok: true, result: { pid: app.pid } });
      expect(typeof mine[0].host).toBe('string');
      expect(mine[1]).toMatchObject({ ok: true, result: { state: expect.any(String) } });
    }
    const failed = rows.filter((x) => !x.ok);
    expect(failed.length).toBe(4);
    for (const x of failed) {
      expect(x).toMatchObject({ pid: null, host: null, error: { code: 'ISPY_ERR_CONNECT', message: expect.stringContaining('stale socket') } });
    }
    expect(r.stderr).toBe(`${LIVE - 1} ok, 2 failed\n`);
  });

  it('saves one artefact per target with -o, the pid before the extension', async () => {
    const out = tempDir('ispy-run-o-');
    const targets = apps.slice(0, 2);
    const r = await runCli(['run', ...targets.map((a) => a.socket), '-c', `process report -o ${out}/report.json`]);
    expect(r.code).toBe(0);
    expect(fs.readdirSync(out).sort()).toEqual(targets.map((a) => `report-${a.pid}.json`).sort());
    for (const a of targets) {
      const file = path.join(out, `report-${a.pid}.json`);
      expect(JSON.parse(fs.readFileSync(file, 'utf8')).header.processId).toBe(a.pid);
      expect(fs.statSync(file).mode & 0o777).toBe(0o600);
    }
  });

  it('exits 2 when every reachable target rejects a line as mistyped; runs scripts with -f', async () => {
    const typo = await runCli(['run', apps[0]!.socket, apps[1]!.socket, '-c', 'process stak']);
    expect(typo.code).toBe(2);
    expect(typo.stdout).toContain('error: plugin process has no command "stak"; did you mean "stack"?');
    const script = path.join(tempDir('ispy-script-'), 'check.ispy');
    fs.writeFileSync(script, '# a script\n\nuse process\ninfo --json\n');
    const r = await runCli(['run', apps[0]!.socket, '-f', script, '--json']);
    expect(r.code).toBe(0);
    const rows = r.stdout.trim().split('\n').map((l) => JSON.parse(l));
    expect(rows.map((x) => x.line)).toEqual(['use process', 'info --json']);
    expect(rows[1].result.pid).toBe(apps[0]!.pid);
  });

  it('never lets a hung target hold up the others: it fails on --timeout, the rest print first', async () => {
    const [hung, healthy] = [apps[0]!, apps[1]!];
    // A stopped process still has its socket's listen backlog: connecting "works", then nothing answers.
    hung.child.kill('SIGSTOP');
    try {
      const started = Date.now();
      const r = await runCli(['run', hung.socket, healthy.socket, '-c', 'process info', '--timeout', '1s']);
      expect(Date.now() - started).toBeLessThan(6000);
      expect(r.code).toBe(1);
      expect(r.stderr).toBe('1 ok, 1 failed\n');
      const order = [...runBlocks(r.stdout).keys()];
      expect(order).toEqual([healthy.socket, hung.socket]);
      expect(runBlocks(r.stdout).get(hung.socket)).toContain(`error: agent at ${hung.socket} did not answer within 1000 ms`);
    } finally {
      hung.child.kill('SIGCONT');
    }
  });

  it('treats bad options as usage errors (exit 2), in one line', async () => {
    const none = await runCli(['run', apps[0]!.socket]);
    expect(none.code).toBe(2);
    expect(none.stderr).toContain('nothing to run');
    const conc = await runCli(['run', apps[0]!.socket, '-c', 'process info', '--concurrency', '0']);
    expect(conc.code).toBe(2);
    expect(conc.stderr).toContain("option '--concurrency <n>' argument '0' is invalid");
    const quote = await runCli(['run', apps[0]!.socket, '-c', 'process env "PATH']);
    expect(quote.code).toBe(2);
    expect(quote.stderr).toBe('ispy: unclosed " quote in: process env "PATH\n');
  });

  it('ps --clean removes stale sockets and nothing else', async () => {
    const decoy = path.join(dir, 'decoy.sock');
    fs.writeFileSync(decoy, 'not a socket');
    const victim = apps[LIVE - 1]!;
    await waitFor(() => victim.child.exitCode !== null || victim.child.signalCode !== null, 5000, 'the victim to exit');
    const r = await runCli(['ps', dir, '--clean']);
    expect(r.code).toBe(0);
    expect(r.stderr).toContain(`removed stale socket ${staleSocket}`);
    expect(r.stderr).toContain(`removed stale socket ${victim.socket}`);
    expect(fs.existsSync(staleSocket)).toBe(false);
    expect(fs.existsSync(victim.socket)).toBe(false);
    expect(fs.readFileSync(decoy, 'utf8')).toBe('not a socket');
    for (const app of apps.slice(0, LIVE - 1)) expect(fs.existsSync(app.socket)).toBe(true);
    expect(r.stdout.trim().split('\n').length).toBe(LIVE);
  });
});

/** `process info` calls the agent of `pid` has answered, from the audit log the apps share. */
function answeredInfoCalls(pid: number): number {
  const file = path.join(dir, 'audit.jsonl');
  if (!fs.existsSync(file)) return 0;
  return fs
    .readFileSync(file, 'utf8')
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as { pid: number; phase?: string; plugin?: string; command?: string })
    .filter((e) => e.pid === pid && e.phase === 'end' && e.plugin === 'process' && e.command === 'info').length;
}
