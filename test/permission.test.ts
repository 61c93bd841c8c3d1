// Node's permission model (`--permission`; `--experimental-permission` on 20), with the
// node that runs the suite (.ci/test-lines runs it under each line): an app started without
// the grants the agent needs gets one line naming them and serves on, with no socket made;
// with them the agent answers, its worker stays inside the model, and a command that needs a
// withheld inspector says which flag would give it; `ispy attach` refuses such a process
// before any signal. What each line has is feature-tested, never read from its version.

import { spawnSync } from 'node:child_process';
import { existsSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { FIXTURES, ROOT, cleanup, runCli, startApp, tempDir, waitFor, type App } from './helpers';

afterAll(cleanup);

const flags = process.allowedNodeEnvironmentFlags;
/** The flag that turns the model on here, if this node has one. */
const MODEL = flags.has('--permission') ? '--permission' : flags.has('--experimental-permission') ? '--experimental-permission' : undefined;
const HAS_NET = flags.has('--allow-net');
const HAS_INSPECTOR = flags.has('--allow-inspector');
const APP = path.join(FIXTURES, 'http-app.cjs');
/** What the app itself needs: on a line with --allow-net, its own listen does. */
const APP_NEEDS = HAS_NET ? ['--allow-net'] : [];

/**
 * Whether this node runs a -r preload it was given no read grant for (22 and later do; 20
 * refuses to start instead, before any code of ispy's could run).
 */
function preloadRunsUngranted(): boolean {
  if (!MODEL) return false;
  const dir = tempDir();
  const pre = path.join(dir, 'pre.js');
  const main = path.join(dir, 'main.js');
  writeFileSync(pre, "process.stdout.write('preloaded')");
  writeFileSync(main, '');
  const r = spawnSync(process.execPath, [MODEL, `--allow-fs-read=${main}`, '-r', pre, main], { encoding: 'utf8', timeout: 30_000 });
  return r.stdout === 'preloaded';
}

/** An app with the agent preloaded under the model; everything the agent writes goes in its folder (the socket, artefacts; no audit log). */
async function appUnderModel(grants: (dir: string) => string[], opts: { waitForSocket?: boolean; script?: string; dir?: string; config?: Record<string, unknown> } = {}): Promise<App> {
  const dir = opts.dir ?? tempDir();
  return startApp({
    script: opts.script ?? APP,
    nodeArgs: [MODEL!, ...grants(dir)],
    config: { outputDir: dir, audit: false, ...opts.config },
    dir,
    waitForSocket: opts.waitForSocket ?? false,
  });
}

/** The agent's lines on the app's stderr (Node's own warnings left out). */
const ispyLines = (app: App) => app.stderr().split('\n').filter((l) => l.startsWith('ispy:'));

/** One result of `ispy run <socket> -c <line> --json`. */
async function runOne(socket: string, line: string): Promise<{ code: number | null; result?: any; error?: { code: string; message: string } }> {
  const r = await runCli(['run', socket, '-c', line, '--json']);
  const out = JSON.parse(r.stdout.trim().split('\n')[0]!);
  return { code: r.code, result: out.result, error: out.error };
}

describe.skipIf(!MODEL)(`the agent under Node's permission model (${MODEL ?? 'this node has none'})`, () => {
  it('without the grants: one line naming the flags the agent needs, no socket, and the app serves', async () => {
    const app = await appUnderModel((dir) => [`--allow-fs-read=${ROOT}`, `--allow-fs-read=${path.join(dir, 'ispy.config.json')}`, ...APP_NEEDS]);
    await waitFor(() => ispyLines(app).length > 0, 30_000, `the agent's line (stderr: ${app.stderr()})`);
    expect((await app.get('/')).body).toBe('ok');
    const lines = ispyLines(app);
    expect(lines, app.stderr()).toHaveLength(1);
    const inspector = HAS_INSPECTOR ? ' (and --allow-inspector for ' : ' (this Node has no --allow-inspector: ';
    expect(lines[0]).toContain(`the permission model is on and withholds what the agent needs; start node with --allow-worker --allow-fs-read=${app.dir} --allow-fs-write=${app.dir}${inspector}`);
    expect(lines[0]).toMatch(/; agent not started \(the app runs on without it\)$/);
    expect(existsSync(app.socket)).toBe(false);
  });

  it.skipIf(!HAS_NET)('on a line with --allow-net, the line names it when the app has not got it', async () => {
    const dir = tempDir();
    const script = path.join(dir, 'idle.cjs');
    writeFileSync(script, 'setInterval(() => {}, 1000);');
    const app = await appUnderModel(() => [`--allow-fs-read=${ROOT}`, `--allow-fs-read=${dir}`, `--allow-fs-write=${dir}`], { script, dir });
    await waitFor(() => ispyLines(app).length > 0, 30_000, `the agent's line (stderr: ${app.stderr()})`);
    expect(ispyLines(app)).toHaveLength(1);
    expect(ispyLines(app)[0]).toContain('start node with --allow-worker --allow-net');
    expect(ispyLines(app)[0]).not.toContain('--allow-fs-');
    expect(existsSync(app.socket)).toBe(false);
  });

  it.skipIf(!preloadRunsUngranted())("when it cannot read its own files (on a Node that runs an ungranted -r preload; 20 refuses to start): one line naming that grant, and the app serves", async () => {
    const app = await appUnderModel(() => [`--allow-fs-read=${APP}`, ...APP_NEEDS]);
    await waitFor(() => ispyLines(app).length > 0, 30_000, `the agent's line (stderr: ${app.stderr()})`);
    expect((await app.get('/')).body).toBe('ok');
    expect(ispyLines(app)).toHaveLength(1);
    expect(ispyLines(app)[0]).toContain(`start node with --allow-worker --allow-fs-read=${ROOT} (then the agent names the folders it must write)`);
    expect(existsSync(app.socket)).toBe(false);
  });

  const allGrants = (dir: string) => [`--allow-fs-read=${ROOT}`, `--allow-fs-read=${dir}`, `--allow-fs-write=${dir}`, '--allow-worker', ...APP_NEEDS];

  it('with the grants: process info and process stack answer', async () => {
    const app = await appUnderModel((d) => [...allGrants(d), ...(HAS_INSPECTOR ? ['--allow-inspector'] : [])], { waitForSocket: true });
    const info = await runOne(app.socket, 'process info');
    expect(info.error, JSON.stringify(info)).toBeUndefined();
    expect(info.result.pid).toBe(app.pid);
    const stack = await runOne(app.socket, 'process stack');
    if (HAS_INSPECTOR) {
      expect(stack.error, JSON.stringify(stack)).toBeUndefined();
      expect(['idle', 'running']).toContain(stack.result.state);
    } else {
      expect(stack.error).toEqual({ code: 'ISPY_ERR_UNAVAILABLE', message: 'this Node gives no inspector under its permission model (it has no --allow-inspector flag)' });
    }
    expect((await app.get('/')).body).toBe('ok');
    expect(ispyLines(app)).toEqual([]);
    await app.kill();
  });

  it('a worker-side command cannot write where the app may not', async () => {
    const dir = tempDir();
    const outside = tempDir();
    writeFileSync(
      path.join(dir, 'probe.cjs'),
      `const fs = require('node:fs');
const { definePlugin, command } = require(${JSON.stringify(path.join(ROOT, 'dist', 'src', 'plugin', 'index.js'))});
module.exports = definePlugin({ name: 'probe', summary: 'writes outside the grants', commands: {
  write: command({ summary: 'try it', thread: 'worker', run() {
    try { fs.writeFileSync(${JSON.stringify(path.join(outside, 'escaped'))}, 'x'); return 'wrote'; } catch (err) { return err.code; }
  } }),
} });`,
    );
    const app = await appUnderModel(allGrants, { dir, waitForSocket: true, config: { plugins: ['./probe.cjs'] } });
    const r = await runOne(app.socket, 'probe write');
    expect(r.result, JSON.stringify(r) + app.stderr()).toBe('ERR_ACCESS_DENIED');
    expect(existsSync(path.join(outside, 'escaped'))).toBe(false);
    await app.kill();
  });

  it.skipIf(!HAS_INSPECTOR)('with all but --allow-inspector: process info answers, process stack names the flag, the app lives on', async () => {
    const app = await appUnderModel(allGrants, { waitForSocket: true });
    const info = await runOne(app.socket, 'process info');
    expect(info.error, JSON.stringify(info)).toBeUndefined();
    const stack = await runOne(app.socket, 'process stack');
    expect(stack.error).toEqual({ code: 'ISPY_ERR_UNAVAILABLE', message: "Node's permission model withholds the inspector; start node with --allow-inspector to use it" });
    // Connecting to the main thread's inspector here would abort the process (an assertion in Node).
    expect((await app.get('/')).body).toBe('ok');
    expect(app.child.exitCode).toBeNull();
    await app.kill();
  });
});

describe.skipIf(!MODEL || process.platform !== 'linux')('ispy attach and the permission model', () => {
  it('refuses a process under the model before any signal, naming the grants a preloaded agent needs', async () => {
    const app = await startApp({ script: APP, nodeArgs: [MODEL!, `--allow-fs-read=${APP}`, ...APP_NEEDS], preload: 'none', socket: null });
    await app.port();
    const r = await runCli(['attach', String(app.pid)]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`ispy: process ${app.pid} runs under Node's permission model (${MODEL}): `);
    expect(r.stderr).toContain(`start the app with the agent preloaded instead (-r ispy/register) with --allow-worker `);
    expect(r.stderr).toContain(`--allow-fs-read=${ROOT} `);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect((await app.get('/')).body).toBe('ok');
    expect(app.stderr()).not.toContain('Debugger listening');
    await app.kill();
  });
});
