// Start-up: configs (good and bad), the socket's safety rules, plugin load failures, and
// loading the agent by its package name the way users do.

import { afterAll, describe, expect, it } from 'vitest';
import { existsSync, lstatSync, mkdirSync, readFileSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { cleanup, FIXTURES, ROOT, startApp, tempDir, waitFor } from './helpers';
import { connect } from '../dist/src/client/index.js';

afterAll(cleanup);

/** Starts the app expecting the agent to refuse; checks the one stderr line and that the app serves. */
async function expectRefusal(opts: Parameters<typeof startApp>[0], pattern: RegExp): Promise<string> {
  const app = await startApp({ ...opts, waitForSocket: false });
  await app.port();
  await waitFor(() => app.stderr().includes('agent not started'), 10_000, 'the refusal line');
  const lines = app.stderr().trim().split('\n');
  expect(lines).toHaveLength(1);
  expect(lines[0]).toMatch(pattern);
  expect(lines[0]).toMatch(/; agent not started \(the app runs on without it\)$/);
  expect((await app.get('/')).body).toBe('ok');
  await app.kill();
  return lines[0]!;
}

describe('config', () => {
  it('refuses an output or audit folder where nothing can ever be written, before any command hangs on it', async () => {
    const dir = tempDir();
    const config = path.join(dir, 'ispy.config.json');
    // mkdir -p under /proc never returns: the agent must not even try.
    await expectRefusal({ script: 'http-app.cjs', dir, config: { outputDir: '/proc/self/ispy-out' } }, new RegExp(`^ispy: config ${config}: outputDir: /proc/self is on a proc filesystem, where no file can be made; choose a folder on disk`));
    writeFileSync(path.join(dir, 'a-file'), '');
    await expectRefusal({ script: 'http-app.cjs', dir, config: { audit: 'a-file/audit.jsonl' } }, new RegExp(`^ispy: config ${config}: audit: ${dir}/a-file is not a folder`));
  });

  it('refuses invalid JSON, naming the file', async () => {
    const dir = tempDir();
    writeFileSync(path.join(dir, 'ispy.config.json'), '{ "socket": ');
    await expectRefusal({ script: 'http-app.cjs', dir }, new RegExp(`^ispy: config ${dir}/ispy.config.json: not valid JSON`));
    expect(existsSync(path.join(dir, 'app.sock'))).toBe(false);
  });

  it('refuses a wrong type, naming the key and what was expected', async () => {
    await expectRefusal(
      { script: 'http-app.cjs', config: { limits: { maxFrameBytes: 'big' } } },
      /key "limits\.maxFrameBytes" must be an integer between 1024 and 67108864 \(got "big"\)/,
    );
  });

  it('refuses an unknown key, listing the known ones', async () => {
    await expectRefusal({ script: 'http-app.cjs', config: { sockett: '/tmp/x.sock' } }, /key "sockett" ought not to be there \(unknown key; known keys: socket, plugins/);
  });

  it('refuses a bad duration and a bad redact pattern', async () => {
    await expectRefusal({ script: 'http-app.cjs', config: { limits: { mainThreadTimeout: 'soon' } } }, /key "limits\.mainThreadTimeout" must be a duration such as "500ms"/);
    await expectRefusal({ script: 'http-app.cjs', config: { redact: ['(unclosed'] } }, /key "redact\[0\]" must be a non-empty string holding a valid regular expression/);
  });

  it('refuses a config named by ISPY_CONFIG that does not exist', async () => {
    await expectRefusal({ script: 'http-app.cjs', env: { ISPY_CONFIG: '/nonexistent/ispy.json' } }, /config \/nonexistent\/ispy\.json: file not found \(named by ISPY_CONFIG\)/);
  });

  it('reads ISPY_CONFIG, resolves relative paths from the config folder, and lets ISPY_SOCKET win', async () => {
    const dir = tempDir();
    const confDir = path.join(dir, 'conf');
    mkdirSync(confDir);
    writeFileSync(path.join(confDir, 'my.json'), JSON.stringify({ socket: './from-config.sock', audit: './audit.log' }));
    const viaConfig = await startApp({ script: 'http-app.cjs', dir, socket: null, env: { ISPY_CONFIG: path.join(confDir, 'my.json') }, waitForSocket: false });
    const sock = path.join(confDir, 'from-config.sock');
    await waitFor(() => existsSync(sock), 10_000, 'the configured socket');
    const c = await connect(sock);
    await c.call('process', 'info');
    await c.close();
    await waitFor(() => existsSync(path.join(confDir, 'audit.log')) && readFileSync(path.join(confDir, 'audit.log'), 'utf8').endsWith('\n'), 5000, 'the audit log');
    const audit = JSON.parse(readFileSync(path.join(confDir, 'audit.log'), 'utf8').trim().split('\n')[0]!);
    expect(audit).toMatchObject({ pid: viaConfig.pid, plugin: 'process', command: 'info', ok: true });
    expect(statSync(path.join(confDir, 'audit.log')).mode & 0o777).toBe(0o600);
    await viaConfig.kill();

    const overridden = await startApp({ script: 'http-app.cjs', dir, env: { ISPY_CONFIG: path.join(confDir, 'my.json') } });
    expect(existsSync(overridden.socket)).toBe(true);
    await overridden.kill();
  });

  it('uses the {pid} placeholder and the default private folder', async () => {
    const app = await startApp({ script: 'http-app.cjs', socket: null, waitForSocket: false });
    const uid = process.getuid!();
    const sock = path.join(os.tmpdir(), `ispy-${uid}`, `${app.pid}.sock`);
    await waitFor(() => existsSync(sock), 10_000, 'the default socket');
    expect(statSync(path.dirname(sock)).mode & 0o777).toBe(0o700);
    expect(lstatSync(sock).mode & 0o777).toBe(0o600);
    await app.get('/exit');
    await app.exited;
    expect(existsSync(sock)).toBe(false);
  });
});

describe('socket safety', () => {
  it('creates the socket 0600 even in a world-writable (sticky) folder', async () => {
    const dir = tempDir();
    const open = path.join(dir, 'open');
    mkdirSync(open, { mode: 0o777 });
    (await import('node:fs')).chmodSync(open, 0o1777);
    // TMPDIR: the agent binds there in its own folder (<tmpdir>/ispy-<uid>), kept out of the user's.
    const app = await startApp({ script: 'http-app.cjs', socket: path.join(open, 'a.sock'), env: { TMPDIR: dir } });
    expect(lstatSync(app.socket).mode & 0o777).toBe(0o600);
    expect(lstatSync(app.socket).isSocket()).toBe(true);
    const c = await connect(app.socket);
    expect(c.welcome.pid).toBe(app.pid);
    await c.close();
    await app.kill();
  });

  it('never replaces a regular file', async () => {
    const dir = tempDir();
    const file = path.join(dir, 'app.sock');
    writeFileSync(file, 'precious');
    await expectRefusal({ script: 'http-app.cjs', dir, socket: file }, /socket .*app\.sock: is a regular file, not a socket; ispy never removes it/);
    expect(readFileSync(file, 'utf8')).toBe('precious');
  });

  it('never follows a symbolic link', async () => {
    const dir = tempDir();
    const target = path.join(dir, 'target.sock');
    const link = path.join(dir, 'app.sock');
    symlinkSync(target, link);
    await expectRefusal({ script: 'http-app.cjs', dir, socket: link }, /is a symbolic link; ispy never follows one/);
    expect(lstatSync(link).isSymbolicLink()).toBe(true);
    expect(existsSync(target)).toBe(false);
  });

  it('refuses a path held by a live agent and leaves that agent serving', async () => {
    const first = await startApp({ script: 'http-app.cjs' });
    await expectRefusal({ script: 'http-app.cjs', socket: first.socket }, /held by a live agent/);
    const c = await connect(first.socket);
    expect(c.welcome.pid).toBe(first.pid);
    await c.close();
    await first.kill();
  });

  it('replaces a stale socket whose owner is gone', async () => {
    const dir = tempDir();
    const sock = path.join(dir, 'app.sock');
    // A socket file nobody listens on, as a SIGKILLed agent leaves behind.
    const server = net.createServer().listen(sock);
    await new Promise((r) => server.once('listening', r));
    const fs = await import('node:fs');
    const keep = path.join(dir, 'keep.sock');
    fs.linkSync(sock, keep);
    await new Promise((r) => server.close(r));
    fs.renameSync(keep, sock);
    expect(lstatSync(sock).isSocket()).toBe(true);
    const app = await startApp({ script: 'http-app.cjs', dir, socket: sock });
    const c = await waitFor(() => connect(sock).catch(() => undefined), 10_000, 'the agent to replace the stale socket');
    expect(c.welcome.pid).toBe(app.pid);
    await c.close();
    await app.kill();
  });

  it('refuses a folder that does not exist and a path too long for a UNIX socket', async () => {
    await expectRefusal({ script: 'http-app.cjs', socket: '/nonexistent-dir/a.sock' }, /folder \/nonexistent-dir does not exist/);
    await expectRefusal({ script: 'http-app.cjs', socket: `/tmp/${'x'.repeat(120)}.sock` }, /UNIX sockets allow at most 107/);
  });
});

describe('plugin loading', () => {
  it('reports plugins that fail and loads the rest', async () => {
    const app = await startApp({
      script: 'http-app.cjs',
      config: {
        plugins: [path.join(FIXTURES, 'plugins/named-process.cjs'), path.join(FIXTURES, 'plugins/faulty-setup.cjs'), path.join(FIXTURES, 'plugins/hanging-setup.cjs'), path.join(FIXTURES, 'plugins/hanging-worker-setup.cjs'), path.join(FIXTURES, 'plugins/bad-name.cjs'), './no-such-plugin.js', 'no-such-package', path.join(FIXTURES, 'plugins/misc.cjs')],
        limits: { setupTimeout: '300ms' },
      },
    });
    const c = await connect(app.socket);
    const failed = Object.fromEntries(c.welcome.failedPlugins.map((f) => [f.name, f.error]));
    expect(failed.faulty).toMatchObject({ code: 'ISPY_ERR_PLUGIN_LOAD', message: expect.stringMatching(/setup of plugin "faulty" failed: database handle missing/) });
    expect(failed.hanging).toMatchObject({ code: 'ISPY_ERR_SETUP_TIMEOUT', message: expect.stringMatching(/setup of plugin "hanging" on the main thread did not finish within 300 ms/) });
    expect(failed['hanging-worker']).toMatchObject({ code: 'ISPY_ERR_SETUP_TIMEOUT', message: expect.stringMatching(/setup of plugin "hanging-worker" on the worker thread did not finish within 300 ms/) });
    expect(failed['./no-such-plugin.js']).toMatchObject({ message: expect.stringMatching(/cannot find plugin module/) });
    expect(failed['no-such-package']).toMatchObject({ message: expect.stringMatching(/cannot find plugin module "no-such-package"/) });
    expect(c.plugins.map((p) => p.name).sort()).toEqual(['eval', 'heap', 'misc', 'process', 'profile', 'requests', 'trace']);
    // The built-in keeps its name, though it loads after the app's first line and the impostor before.
    expect(c.welcome.failedPlugins.find((f) => f.error.message.includes('"process" is already loaded (from builtin)'))).toBeDefined();
    expect(await c.call('process', 'info')).toMatchObject({ pid: app.pid });
    await expect(c.call('faulty', 'ping')).rejects.toMatchObject({ code: 'ISPY_ERR_UNKNOWN_PLUGIN', message: expect.stringMatching(/failed to load: .*database handle missing/) });
    expect(await c.call('misc', 'echo', { text: 'ok' })).toMatchObject({ text: 'ok' });
    expect(app.stderr()).toMatch(/plugin faulty not loaded/);
    expect(app.stderr()).toMatch(/plugin \.\/no-such-plugin\.js not loaded: cannot find plugin module/);
    expect(app.stderr()).toMatch(/plugin hanging-worker not loaded/);
    // Failed while "hanging" was still setting up: reported, and the app lives on.
    expect(Object.values(failed).some((e) => /name must match/.test(e.message))).toBe(true);
    expect((await app.get('/')).status).toBe(200);
    await c.close();
    await app.kill();
  });
});

describe('plugin set-up order', () => {
  it('runs synchronous CommonJS plugin setup before the app\'s first line', async () => {
    for (const preload of ['require', 'import'] as const) {
      const app = await startApp({ script: 'early-app.cjs', preload, config: { plugins: [path.join(FIXTURES, 'plugins/early.cjs')] } });
      await waitFor(() => app.stdout().includes('EARLY'), 5000, 'the app to print');
      expect(app.stdout()).toContain('EARLY true');
      await app.kill();
    }
  });
});

describe('a plugin that throws', () => {
  it('from a channel listener on every request: the app answers, and its stderr gets one line, not one per request', async () => {
    const app = await startApp({ script: 'http-app.cjs', config: { plugins: [path.join(FIXTURES, 'plugins/throws-per-request.cjs')] } });
    for (let i = 0; i < 20; i++) expect((await app.get('/')).status).toBe(200);
    await waitFor(() => app.stderr().includes('listener boom'), 5000, 'the throw to be reported');
    expect(app.stderr().split('listener boom').length - 1).toBe(1);
    await app.kill();
  });
});

describe('what the preload holds the first line back for', () => {
  it('leaves the socket (node:net) and the folder checks until after the app\'s first line, and still binds', async () => {
    const dir = tempDir();
    // The first line records whether node:net was loaded yet; moduleLoadList is Node's own
    // record of the builtins loaded, in order.
    const script = path.join(dir, 'first-line.cjs');
    // node:worker_threads (which loads node:stream) too: the thread check before the first
    // line does without it (src/agent/thread.ts); and node:perf_hooks, which the process
    // plugin's GC recorder loads a tick later.
    writeFileSync(script, "const l = process.moduleLoadList; console.log('NET ' + l.includes('NativeModule net') + ' WT ' + l.includes('NativeModule worker_threads') + ' PH ' + l.includes('NativeModule perf_hooks')); setInterval(() => {}, 1000);\n");
    const app = await startApp({ script, dir, waitForSocket: true });
    await waitFor(() => app.stdout().includes('NET '), 5000, 'the first line');
    expect(app.stdout()).toContain('NET false WT false PH false');
    const c = await connect(app.socket);
    expect((await c.call('process', 'info') as { pid: number }).pid).toBe(app.pid);
    await c.close();
    await app.kill();
  });
});

describe('an app that starts worker threads', () => {
  it('starts one agent, on the main thread: a worker inherits the preload and loads nothing of the agent', async () => {
    const dir = tempDir();
    const script = path.join(dir, 'workers.cjs');
    // The worker inherits -r ispy/register (execArgv); it says which of ispy's modules it has.
    const inWorker = "const own = Object.keys(require.cache).filter((f) => f.includes('/dist/')).map((f) => f.replace(/.*\\/dist\\//, '')); require('node:worker_threads').parentPort.postMessage(own.join(',') || 'none');";
    writeFileSync(script, `const { Worker } = require('node:worker_threads');
const w = new Worker(${JSON.stringify(inWorker)}, { eval: true });
w.on('message', (m) => console.log('WORKER ' + m));
setInterval(() => {}, 1000);
`);
    const app = await startApp({ script, dir, waitForSocket: true });
    await waitFor(() => app.stdout().includes('WORKER '), 5000, 'the worker to report');
    // register.js and the two small modules it needs to decide; no agent, no plugin.
    const own = app.stdout().split('WORKER ')[1]!.trim().split(',');
    expect(own.filter((f) => !['src/register.js', 'src/agent/loader.js', 'src/agent/log.js', 'src/agent/thread.js'].includes(f))).toEqual([]);
    const c = await connect(app.socket);
    expect((await c.call('process', 'info') as { pid: number }).pid).toBe(app.pid);
    await c.close();
    await app.kill();
    expect(app.stderr()).toBe('');
  });
});

describe('loading by package name', () => {
  // As users do: `node -r ispy/register` and `node --import ispy/register`, with ispy
  // installed in the app's node_modules.
  for (const preload of ['require', 'import'] as const) {
    it(`works with ${preload === 'require' ? '-r' : '--import'} ispy/register`, async () => {
      const dir = tempDir();
      mkdirSync(path.join(dir, 'node_modules'));
      symlinkSync(ROOT, path.join(dir, 'node_modules', 'ispy'));
      const app = await startApp({ script: path.join(FIXTURES, preload === 'require' ? 'http-app.cjs' : 'http-app.mjs'), dir, preload, preloadPath: 'ispy/register' });
      const c = await connect(app.socket);
      expect(c.welcome.pid).toBe(app.pid);
      await c.close();
      await app.kill();
    });
  }
});
