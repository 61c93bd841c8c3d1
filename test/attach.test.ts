// `ispy attach <pid>` against real processes started without the agent: the built binary
// attaches, the agent answers over its socket, and the inspector port is closed again;
// every refusal is clear and leaves the inspector as it found it; the safety net closes an
// inspector that opens after ispy has gone. The port checks read the target's own
// listening sockets from /proc and try to connect to the reported port.
//
// Port 9229 (Node's default inspector port) is host-wide: only the tests in this file use
// it, one after another (no other test in the repo signals or opens an inspector). Tests
// that only need *an* inspector give the app --inspect-port=127.0.0.1:0 through
// NODE_OPTIONS, which ispy honours.

import { spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, existsSync, readdirSync } from 'node:fs';
import * as http from 'node:http';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { WebSocketServer } from 'ws';
import { BIN, DIST, cleanup, runCli, slowdown, startApp, waitFor, writeFile, type App } from './helpers';
import { processAlive } from '../dist/src/protocol/socket-path.js';
import { openVerifiedSession } from '../src/cli/inspector-client';
import { inspectAddress, isLoopback, listeningPorts, nodeOptionsOf, readProc } from '../src/cli/procfs';
import { DEADLINE_MS, SESSION_MS, WINDOW_MS } from '../src/cli/attach';

const ours = new Set<ChildProcess>();

afterAll(async () => {
  for (const c of ours) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  await cleanup();
});

const isRoot = process.getuid?.() === 0;
const INSPECTOR_LINE = /^inspector was open on 127\.0\.0\.1:(\d+) for (\d+) ms \(open to local users for that window\), now closed$/m;

/** A request left in flight; its outcome is ignored (the app may be gone first). */
function fire(port: number, pathname: string): http.ClientRequest {
  const req = http.get({ host: '127.0.0.1', port, path: pathname, agent: false }, (res) => res.resume());
  req.on('error', () => {});
  return req;
}

/** Resolves true when something accepts a TCP connection on 127.0.0.1:port. */
function accepts(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect({ host: '127.0.0.1', port });
    const t = setTimeout(() => {
      s.destroy();
      resolve(false);
    }, 2000);
    s.once('connect', () => {
      clearTimeout(t);
      s.destroy();
      resolve(true);
    });
    s.once('error', () => {
      clearTimeout(t);
      resolve(false);
    });
  });
}

async function plainApp(script: string, env: Record<string, string> = {}, config?: Record<string, unknown>): Promise<App & { appPort: number }> {
  const app = await startApp({ script, preload: 'none', socket: null, env, ...(config ? { config } : {}) });
  return Object.assign(app, { appPort: await app.port() });
}

const debuggerLines = (app: App) => app.stderr().split('\n').filter((l) => l.startsWith('Debugger listening on ws://')).length;

/** `ispy run <socket> -c <line> --json`, one result. */
async function runJson(socket: string, line: string): Promise<any> {
  const r = await runCli(['run', socket, '-c', line, '--json']);
  expect(r.code, r.stderr).toBe(0);
  return JSON.parse(r.stdout.trim().split('\n')[0]!).result;
}

describe('ispy attach: a plain app with no ispy code', () => {
  it('attaches to a CommonJS HTTP app: process info, requests list, inspector closed, socket gone at exit', async () => {
    const app = await plainApp('attach-app.cjs');
    const portsBefore = listeningPorts(app.pid);
    expect(portsBefore).toEqual([app.appPort]);
    // Started before the agent: never in its table.
    fire(app.appPort, '/timer?ms=20000&n=before');
    const sock = path.join(app.dir, 'attached.sock');

    const slow = slowdown();
    const r = await runCli(['attach', String(app.pid), '--socket', sock]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain(`attached to process ${app.pid}: agent listening on ${sock}\n`);
    expect(r.stdout).toContain(`connect with: ispy connect ${sock}\n`);
    const m = INSPECTOR_LINE.exec(r.stdout);
    expect(m, r.stdout).not.toBeNull();
    const inspectorPort = Number(m![1]);
    const openMs = Number(m![2]);
    expect(inspectorPort).toBe(9229);
    expect(openMs).toBeGreaterThan(0);
    expect(openMs).toBeLessThan(5000 * Math.max(slow, slowdown()));

    // The inspector is closed: the target listens on its own port only, and nothing answers on the inspector's.
    expect(listeningPorts(app.pid)).toEqual(portsBefore);
    expect(await accepts(inspectorPort)).toBe(false);
    expect(debuggerLines(app)).toBe(1);

    fire(app.appPort, '/timer?ms=20000&n=after');
    const info = await runCli(['connect', sock], { input: 'process info\n' });
    expect(info.code, info.stderr).toBe(0);
    expect(info.stdout).toMatch(new RegExp(`^pid\\s+${app.pid}$`, 'm'));

    const list = await waitFor(
      async () => {
        const res = await runJson(sock, 'requests list');
        return res.requests.some((q: { url: string }) => q.url.includes('n=after')) && res;
      },
      10_000,
      'the request made after attaching to be listed',
    );
    expect(list.requests.map((q: { url: string }) => q.url)).toEqual(['/timer?ms=20000&n=after']);

    // A second attach is refused, found through the agent's socket without opening the inspector.
    const again = await runCli(['attach', String(app.pid)]);
    expect(again.code).toBe(1);
    expect(again.stderr).toBe(`ispy: process ${app.pid} already has an ispy agent (socket ${sock}); connect with \`ispy connect ${sock}\`\n`);
    expect(debuggerLines(app)).toBe(1);

    // A normal exit removes the socket.
    await app.get('/exit');
    expect(await app.exited).toEqual({ code: 0, signal: null });
    expect(existsSync(sock)).toBe(false);
  });

  it('attaches to an ES module app (the console require works there), with --json', async () => {
    const app = await plainApp('attach-app.mjs');
    const sock = path.join(app.dir, 'esm.sock');
    const r = await runCli(['attach', String(app.pid), '--socket', sock, '--json']);
    expect(r.code, r.stderr).toBe(0);
    const out = JSON.parse(r.stdout);
    expect(out).toMatchObject({ pid: app.pid, socket: sock, inspector: { host: '127.0.0.1', port: 9229, closed: true }, failedPlugins: [], connect: `ispy connect ${sock}` });
    expect(out.inspector.openMs).toBeGreaterThan(0);
    expect(out.plugins).toEqual(expect.arrayContaining(['process', 'requests']));
    expect(listeningPorts(app.pid)).toEqual([app.appPort]);
    expect(await accepts(9229)).toBe(false);

    fire(app.appPort, '/timer?ms=20000&n=esm');
    expect((await runJson(sock, 'process info')).pid).toBe(app.pid);
    await waitFor(async () => (await runJson(sock, 'requests list')).requests.some((q: { url: string }) => q.url.includes('n=esm')), 10_000, 'the ESM request');

    await app.get('/exit');
    expect((await app.exited).code).toBe(0);
    expect(existsSync(sock)).toBe(false);
  });

  it('loads the same plugins as the preload would, from the config the app would read', async () => {
    // The same config (in each app's cwd) and the same script; one preloaded, one attached.
    const config = { disable: ['trace'] };
    const preloaded = await startApp({ script: 'attach-app.cjs', config });
    const plain = await plainApp('attach-app.cjs', {}, config);
    const sock = path.join(plain.dir, 'same.sock');
    const r = await runCli(['attach', String(plain.pid), '--socket', sock]);
    expect(r.code, r.stderr).toBe(0);
    const names = async (s: string) => (await runJson(s, 'plugins')) as unknown;
    const want = await names(preloaded.socket);
    expect(JSON.stringify(want)).not.toContain('"trace"');
    expect(await names(sock)).toEqual(want);
    expect(r.stdout).toMatch(/^plugins: (?!.*\btrace\b).*\bprocess\b/m);
  });
});

describe('ispy attach --config', () => {
  it('reports a config the agent rejects, and one whose plugin fails, with the inspector closed each time', async () => {
    const app = await plainApp('attach-app.cjs', { NODE_OPTIONS: '--inspect-port=127.0.0.1:0' });
    const bad = writeFile(app.dir, 'bad.json', JSON.stringify({ limits: { maxFrameBytes: 10 } }));
    const r = await runCli(['attach', String(app.pid), '--config', bad, '--socket', path.join(app.dir, 'c.sock')]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(new RegExp(`^ispy: the agent did not start in process ${app.pid}: config ${bad.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: key "limits\\.maxFrameBytes" must be .*\\(its inspector is closed\\)\n$`));
    expect(listeningPorts(app.pid)).toEqual([app.appPort]);

    const withMissing = writeFile(app.dir, 'missing.json', JSON.stringify({ plugins: ['./no-such-plugin.js'] }));
    const ok = await runCli(['attach', String(app.pid), '--config', withMissing, '--socket', path.join(app.dir, 'c.sock')]);
    expect(ok.code, ok.stderr).toBe(0);
    expect(ok.stdout).toMatch(/^failed plugin \.\/no-such-plugin\.js: cannot find plugin module .+$/m);
    expect(ok.stdout).toContain(`connect with: ispy connect ${path.join(app.dir, 'c.sock')}\n`);
    expect(listeningPorts(app.pid)).toEqual([app.appPort]);

    const missing = await runCli(['attach', String(app.pid), '--config', path.join(app.dir, 'nope.json')]);
    expect(missing.code).toBe(2);
    expect(missing.stderr).toBe(`ispy: --config ${path.join(app.dir, 'nope.json')}: file not found\n`);
  });
});

describe('ispy attach: refusals, each leaving the inspector as it was', () => {
  it('refuses text that is not a pid (usage, status 2)', async () => {
    for (const bad of ['abc', '12x', '-5']) {
      const r = await runCli(['attach', bad]);
      expect(r.code, `${bad}: ${r.stderr}`).toBe(2);
      if (bad !== '-5') expect(r.stderr).toBe(`ispy: "${bad}" is not a process id (expected a number, such as 4242)\n`);
    }
    const zero = await runCli(['attach', '0']);
    expect(zero.code).toBe(2);
    expect(zero.stderr).toContain('"0" is not a process id');
  });

  it('refuses a pid with no process', async () => {
    const gone = spawn(process.execPath, ['-e', ''], { stdio: 'ignore' });
    const pid = gone.pid!;
    await new Promise((r) => gone.once('exit', r));
    const r = await runCli(['attach', String(pid)]);
    expect(r.code).toBe(1);
    expect(r.stderr).toBe(`ispy: no process ${pid}\n`);
  });

  it('refuses a process that is not Node.js, and does not signal it', async () => {
    const sleeper = spawn('sleep', ['30'], { stdio: 'ignore' });
    ours.add(sleeper);
    await waitFor(() => processAlive(sleeper.pid!), 5000, 'sleep to start');
    const r = await runCli(['attach', String(sleeper.pid)]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(new RegExp(`^ispy: process ${sleeper.pid} is not Node\\.js \\(its program is /.*sleep\\)\\n$`));
    // SIGUSR1 would have killed it.
    await new Promise((res) => setTimeout(res, 200));
    expect(sleeper.exitCode).toBeNull();
    expect(processAlive(sleeper.pid!)).toBe(true);
    sleeper.kill('SIGKILL');
  });

  it('refuses a process started with the agent', async () => {
    const app = await startApp({ script: 'attach-app.cjs' });
    const r = await runCli(['attach', String(app.pid)]);
    expect(r.code).toBe(1);
    expect(r.stderr).toBe(`ispy: process ${app.pid} already has an ispy agent (socket ${app.socket}); connect with \`ispy connect ${app.socket}\`\n`);
    expect(debuggerLines(app)).toBe(0);
  });

  it('refuses an agent it finds only through the session, and closes the inspector it opened', async () => {
    // A socket that does not look like an agent's (not 0600) is not asked: the marker on
    // globalThis, read through the inspector, is what finds the agent.
    const app = await startApp({ script: 'attach-app.cjs', env: { NODE_OPTIONS: '--inspect-port=127.0.0.1:0' } });
    const appPort = await app.port();
    chmodSync(app.socket, 0o660);
    const r = await runCli(['attach', String(app.pid)]);
    expect(r.code).toBe(1);
    expect(r.stderr).toBe(`ispy: process ${app.pid} already has an ispy agent (socket ${app.socket}); connect with \`ispy connect ${app.socket}\` (its inspector is closed)\n`);
    expect(debuggerLines(app)).toBe(1);
    expect(listeningPorts(app.pid)).toEqual([appPort]);
  });

  it("refuses a process whose inspector someone else opened, and leaves it open", async () => {
    const app = await plainApp('attach-app.cjs', { NODE_OPTIONS: '--inspect=127.0.0.1:0' });
    const theirs = Number(await waitFor(() => /Debugger listening on ws:\/\/127\.0\.0\.1:(\d+)\//.exec(app.stderr())?.[1], 10_000, 'the inspector banner'));
    const r = await runCli(['attach', String(app.pid)]);
    expect(r.code).toBe(1);
    expect(r.stderr).toBe(
      `ispy: process ${app.pid} already has its inspector open on 127.0.0.1:${theirs} (someone else's debugging session); ispy will neither use nor close it\n`,
    );
    expect(listeningPorts(app.pid)).toContain(theirs);
    expect(await accepts(theirs)).toBe(true);
    expect(debuggerLines(app)).toBe(1);
  });

  it.skipIf(!isRoot)('refuses a process of another user (spawned as nobody; needs root)', async () => {
    const nobody = spawn(process.execPath, ['-e', 'setInterval(() => {}, 1000)'], { uid: 65534, gid: 65534, stdio: ['ignore', 'ignore', 'pipe'], cwd: '/' });
    ours.add(nobody);
    let err = '';
    nobody.stderr!.on('data', (d) => (err += d));
    await waitFor(() => processAlive(nobody.pid!), 5000, 'the nobody process');
    const r = await runCli(['attach', String(nobody.pid)]);
    expect(r.code).toBe(1);
    expect(r.stderr).toBe(`ispy: process ${nobody.pid} belongs to uid 65534, not to you (uid 0); run ispy attach as that user\n`);
    await new Promise((res) => setTimeout(res, 200));
    expect(err).not.toContain('Debugger listening');
    expect(nobody.exitCode).toBeNull();
    nobody.kill('SIGKILL');
  });

  it('refuses when the port its inspector would take is held by another process, and never talks to that process', async () => {
    // A stand-in holder of the port, in this test process: it counts connections.
    let contacted = 0;
    const holder = net.createServer((s) => {
      contacted++;
      s.destroy();
    });
    await new Promise<void>((res) => holder.listen(0, '127.0.0.1', () => res()));
    const held = (holder.address() as net.AddressInfo).port;
    try {
      const app = await plainApp('attach-app.cjs', { NODE_OPTIONS: `--inspect-port=127.0.0.1:${held}` });
      const r = await runCli(['attach', String(app.pid)]);
      expect(r.code).toBe(1);
      expect(r.stderr).toMatch(
        new RegExp(
          `^ispy: port ${held}, where process ${app.pid} would open its inspector, is held by process ${process.pid} \\(.+\\) on 127\\.0\\.0\\.1; ispy will not signal it \\(free the port, or start the app with --inspect-port=127\\.0\\.0\\.1:0\\)\n$`,
        ),
      );
      expect(contacted).toBe(0);
      expect(debuggerLines(app)).toBe(0);
      expect(listeningPorts(app.pid)).toEqual([app.appPort]);
    } finally {
      await new Promise((res) => holder.close(res));
    }
  });

  it('refuses to open an inspector on an address beyond loopback', async () => {
    const app = await plainApp('attach-app.cjs', { NODE_OPTIONS: '--inspect-port=0.0.0.0:0' });
    const r = await runCli(['attach', String(app.pid)]);
    expect(r.code).toBe(1);
    expect(r.stderr).toBe(
      `ispy: process ${app.pid} would open its inspector on 0.0.0.0:0 (its --inspect-port), reachable beyond this host; ispy only opens it on loopback\n`,
    );
    expect(debuggerLines(app)).toBe(0);
  });
});

describe('ispy attach: the session is checked to be the target', () => {
  /** A fake inspector: /json/list and a WebSocket that answers every evaluate with `pid`. */
  async function fakeInspector(pid: number, urlHost = '127.0.0.1'): Promise<{ port: number; evaluated: string[]; close(): Promise<void> }> {
    const evaluated: string[] = [];
    const server = http.createServer((req, res) => {
      const { port } = server.address() as net.AddressInfo;
      if (req.url === '/json/list') res.end(JSON.stringify([{ webSocketDebuggerUrl: `ws://${urlHost}:${port}/fake` }]));
      else res.end(JSON.stringify({ Browser: 'node.js/v20.0.0' }));
    });
    const wss = new WebSocketServer({ server });
    wss.on('connection', (ws) =>
      ws.on('message', (d) => {
        const msg = JSON.parse(String(d)) as { id: number; params: { expression: string } };
        evaluated.push(msg.params.expression);
        ws.send(JSON.stringify({ id: msg.id, result: { result: { type: 'number', value: pid } } }));
      }),
    );
    await new Promise<void>((res) => server.listen(0, '127.0.0.1', () => res()));
    return {
      port: (server.address() as net.AddressInfo).port,
      evaluated,
      close: () =>
        new Promise<void>((res) => {
          for (const c of wss.clients) c.terminate();
          wss.close();
          server.closeAllConnections();
          server.close(() => res());
        }),
    };
  }

  it('refuses an inspector that answers as another process, after asking only for its pid', async () => {
    const fake = await fakeInspector(4242);
    try {
      await expect(openVerifiedSession(777, 777, '127.0.0.1', fake.port, 2000)).rejects.toThrow(
        `the inspector on 127.0.0.1:${fake.port} belongs to process 4242, not 777; ispy did not touch it`,
      );
      expect(fake.evaluated).toEqual(['process.pid']);
      // The right pid: a session is handed back.
      const conn = await openVerifiedSession(4242, 4242, '127.0.0.1', fake.port, 2000);
      conn.close();
    } finally {
      await fake.close();
    }
  });

  it('refuses an inspector whose debugger URL points elsewhere, without connecting to it', async () => {
    const fake = await fakeInspector(777, '10.1.2.3');
    try {
      await expect(openVerifiedSession(777, 777, '127.0.0.1', fake.port, 2000)).rejects.toThrow(/points elsewhere \(ws:\/\/10\.1\.2\.3:\d+\/fake\); not touching it/);
      expect(fake.evaluated).toEqual([]);
    } finally {
      await fake.close();
    }
  });
});

// Minutes on a busy machine: each bound asserted is stretched by slowdown(), the test's own time is not.
describe('ispy attach: the window is bounded whatever the main thread does', { timeout: 300_000 }, () => {
  const INSPECT_ANY = { NODE_OPTIONS: '--inspect-port=127.0.0.1:0' };

  /**
   * Samples the target's listening ports from /proc every few milliseconds (on this test's
   * event loop, idle while it awaits the CLI) and records each span in which it listened
   * on a port other than its own: the inspector's windows as an outsider sees them.
   */
  function watchWindows(pid: number, appPort: number): { stop(): { from: number; to: number }[] } {
    const spans: { from: number; to: number }[] = [];
    let openSince: number | undefined;
    let last = performance.now();
    let stopped = false;
    const sample = () => {
      if (stopped) return;
      const now = performance.now();
      const open = listeningPorts(pid).some((p) => p !== appPort);
      if (open && openSince === undefined) openSince = last;
      if (!open && openSince !== undefined) {
        spans.push({ from: openSince, to: now });
        openSince = undefined;
      }
      last = now;
      setTimeout(sample, 2);
    };
    sample();
    return {
      stop() {
        stopped = true;
        if (openSince !== undefined) spans.push({ from: openSince, to: Infinity });
        return spans;
      },
    };
  }

  async function state(app: App): Promise<{ symbols: string[]; workers: number; agent: boolean; inspector: string | null }> {
    return JSON.parse((await app.get('/state', 20_000)).body);
  }

  /** Waits until /state reads `want`: a terminated worker's exit reaches the app a moment later. */
  async function settles(app: App, want: Awaited<ReturnType<typeof state>>): Promise<void> {
    let last: unknown;
    await waitFor(async () => {
      last = await state(app);
      return JSON.stringify(last) === JSON.stringify(want);
    }, 10_000, `the app's state to be ${JSON.stringify(want)}`).catch((err: Error) => {
      throw new Error(`${err.message}; last: ${JSON.stringify(last)}`);
    });
  }

  /** Gone, or a zombie (killed, not yet reaped by whoever inherited it). */
  function dead(pid: number): boolean {
    const stat = readProc(pid, 'stat');
    return !processAlive(pid) || stat === undefined || stat.slice(stat.lastIndexOf(')') + 2).startsWith('Z');
  }

  /** The pid of `ispy attach`'s watcher: its child running attach-watch.js. */
  function watcherOf(cli: number): number | undefined {
    for (const name of readdirSync('/proc').filter((n) => /^\d+$/.test(n))) {
      const stat = readProc(Number(name), 'stat');
      const ppid = stat ? Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]) : NaN;
      if (ppid === cli && (readProc(Number(name), 'cmdline') ?? '').includes('attach-watch.js')) return Number(name);
    }
    return undefined;
  }

  it('attaches to a main thread busy in JavaScript within the bound, and closes the inspector Node reopens when the loop comes back', async () => {
    const app = await plainApp('attach-busy.cjs', INSPECT_ANY);
    const sock = path.join(app.dir, 'busy.sock');
    // It spins until ispy has opened its inspector and closed it again from the interrupt, however
    // long ispy takes to get there on a busy machine: the signal lands while it spins.
    const slow = slowdown();
    await app.get('/spin?until=reclosed&in=handler');
    const windows = watchWindows(app.pid, app.appPort);
    const r = await runCli(['attach', String(app.pid), '--socket', sock, '--json', '--timeout', `${Math.round(10_000 * slow)}ms`], { timeoutMs: 60_000 });
    const spans = windows.stop();
    // The bound is kept by timers: on a busy machine they fire late by about this much.
    const bound = WINDOW_MS * Math.max(slow, slowdown());
    expect(r.code, r.stderr).toBe(0);
    const out = JSON.parse(r.stdout);
    // Closed from the interrupt while the thread spun; the agent started once it was free.
    expect(out.inspector.openMs).toBeLessThan(bound);
    expect(out.inspector.reopened).toBe(true);
    expect(spans.length, JSON.stringify(spans)).toBeGreaterThan(0);
    for (const s of spans) expect(s.to - s.from, JSON.stringify(spans)).toBeLessThan(bound);
    // Node's second opening (its wake-up of the event loop) was closed again at once.
    expect(debuggerLines(app)).toBe(2);
    expect(listeningPorts(app.pid)).toEqual([app.appPort]);
    expect(await accepts(out.inspector.port)).toBe(false);
    // Nothing of the attach is left: no global, no deadline worker (the one worker is the agent's).
    await settles(app, { symbols: [], workers: 1, agent: true, inspector: null });
    expect((await runJson(sock, 'process info')).pid).toBe(app.pid);
  });

  it('says the main thread is busy and loads nothing when it does not come back to its event loop in time', async () => {
    // It spins from the moment its inspector opens, however long ispy took to get there.
    const app = await plainApp('attach-busy.cjs', { ...INSPECT_ANY, ATTACH_BUSY_ON_OPEN: '0,3000' });
    const sock = path.join(app.dir, 'late.sock');
    const windows = watchWindows(app.pid, app.appPort);
    const slow = slowdown();
    const r = await runCli(['attach', String(app.pid), '--socket', sock, '--timeout', '1s']);
    const bound = WINDOW_MS * Math.max(slow, slowdown());
    expect(r.code).toBe(1);
    const m = new RegExp(
      `^ispy: process ${app.pid}'s main thread is busy: it ran ispy's close between its own work \\(its inspector was open for (\\d+) ms and is closed\\) but has not come back to its event loop within 1000 ms, so ispy loaded nothing and left nothing in it; try again when it is less busy, or with a longer --timeout\n$`,
    ).exec(r.stderr);
    expect(m, r.stderr).not.toBeNull();
    expect(Number(m![1])).toBeLessThan(bound);
    expect(listeningPorts(app.pid)).toEqual([app.appPort]);
    // Once the thread is back (it answers), nothing starts later, and a reopening by Node
    // (when the signal's interrupt, not its wake-up of the loop, opened it) is closed again.
    expect(await state(app)).toMatchObject({ symbols: [], agent: false });
    await waitFor(async () => (await state(app)).inspector === null && listeningPorts(app.pid).length === 1, 10_000, 'any reopened inspector to be closed');
    // An absence: an agent started from the abandoned attach would have its socket within
    // this time (its start takes ~0.2 s here).
    await new Promise((res) => setTimeout(res, 1500));
    expect(existsSync(sock)).toBe(false);
    await settles(app, { symbols: [], workers: 0, agent: false, inspector: null });
    for (const s of windows.stop()) expect(s.to - s.from).toBeLessThan(bound);
  });

  it('queues the close in a main thread blocked in native code, says so, and the port closes the moment the thread returns (without the watcher)', async () => {
    // The app blocks (a synchronous child process) as soon as its inspector opens, before
    // ispy's first evaluation arrives.
    const app = await plainApp('attach-busy.cjs', { ...INSPECT_ANY, ATTACH_BUSY_ON_OPEN: '4500,0' });
    const r = await runCli(['attach', String(app.pid), '--socket', path.join(app.dir, 'blocked.sock')]);
    expect(r.code).toBe(1);
    const m = new RegExp(
      `^ispy: process ${app.pid}'s main thread did not answer within ${SESSION_MS} ms of its inspector opening: it is blocked in native code or in a long built-in call \\(.+\\), which the inspector cannot interrupt; ispy loaded nothing; port (\\d+) stays open until that thread returns: ispy's close waits in its queue and runs then \\(Node's inspector can only be closed from the main thread\\); a watcher \\(pid (\\d+)\\) also watches it, for up to 5 minutes\n$`,
    ).exec(r.stderr);
    expect(m, r.stderr).not.toBeNull();
    // ispy gave up at the bound (3 s after the port opened), not at the thread's return (4.5 s).
    expect(app.stdout()).not.toContain('UNBLOCKED');
    // The close queued in the target does it, not the watcher: kill that first.
    process.kill(Number(m![2]), 'SIGKILL');
    await waitFor(() => app.stdout().includes('UNBLOCKED'), 15_000, 'the main thread to return');
    await waitFor(() => !listeningPorts(app.pid).includes(Number(m![1])), 5000, `port ${m![1]} to close once the thread returned`);
    expect(await accepts(Number(m![1]))).toBe(false);
    await settles(app, { symbols: [], workers: 0, agent: false, inspector: null });
  });

  it('the target closes its own inspector when ispy and its watcher are both killed mid-attach, even with its main thread spinning', async () => {
    // Blocked when ispy's first evaluation (pid check, deadline armed) arrives, then spinning
    // in JavaScript: no timer of the main thread could fire, and neither ispy nor its
    // watcher is left to close the port.
    const app = await plainApp('attach-busy.cjs', { ...INSPECT_ANY, ATTACH_BUSY_ON_OPEN: '1000,6000' });
    const before = listeningPorts(app.pid);
    const reportDirs = () => readdirSync(os.tmpdir()).filter((n) => n.startsWith('ispy-attach-'));
    const dirsBefore = new Set(reportDirs());
    const cli = spawn(process.execPath, [BIN, 'attach', String(app.pid), '--socket', path.join(app.dir, 'killed.sock')], {
      detached: true,
      env: { ...process.env, ISPY_VERBOSE: '1' },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    ours.add(cli);
    let err = '';
    cli.stderr!.on('data', (d) => (err += d));
    await waitFor(() => err.includes('first evaluation sent') || cli.exitCode !== null, 15_000, 'ispy to send its first evaluation');
    expect(err).toContain('first evaluation sent (pid check, deadline armed in the target)');
    const watcher = watcherOf(cli.pid!);
    // Both groups: ispy's (it leads its own here), and the watcher's (it starts its own session).
    process.kill(-cli.pid!, 'SIGKILL');
    if (watcher !== undefined) process.kill(-watcher, 'SIGKILL');
    expect(watcher, err).toBeGreaterThan(0);
    expect(app.stdout()).toContain('BLOCKED');
    expect(app.stdout(), 'the first evaluation came before the block; ispy went on').not.toContain('UNBLOCKED');
    const port = listeningPorts(app.pid).find((p) => !before.includes(p));
    expect(port, err).toBeGreaterThan(0);
    await waitFor(() => dead(watcher!) && cli.signalCode !== null, 5000, 'ispy and its watcher to die');

    await waitFor(() => app.stdout().includes('UNBLOCKED'), 10_000, 'the main thread to return');
    const unblocked = performance.now();
    await waitFor(() => !listeningPorts(app.pid).includes(port!), DEADLINE_MS + 5000, `port ${port} to be closed by the deadline in the target`);
    // Closed by the deadline, mid-spin.
    expect(performance.now() - unblocked).toBeGreaterThan(DEADLINE_MS - 1000);
    expect(app.stdout()).not.toContain('SPUN');
    expect(await accepts(port!)).toBe(false);
    // Then nothing of it is left: the worker ended, the global is gone, and the deadline
    // removed the dead ispy's report folder.
    await settles(app, { symbols: [], workers: 0, agent: false, inspector: null });
    expect(reportDirs().filter((n) => !dirsBefore.has(n))).toEqual([]);
  });
});

describe('ispy attach: the safety net closes an inspector that outlives ispy', () => {
  const INSPECT_ANY = { NODE_OPTIONS: '--inspect-port=127.0.0.1:0' };

  it('closes an inspector that opens late, after ispy gave up (main thread blocked in native code)', async () => {
    const app = await plainApp('attach-app.cjs', INSPECT_ANY);
    await app.get('/block?ms=4000');
    const r = await runCli(['attach', String(app.pid), '--timeout', '1s']);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`ispy: process ${app.pid} did not open its inspector within 1000 ms: its main thread may be blocked in native code`);
    const watcher = Number(/a watcher \(pid (\d+)\) will close process \d+'s inspector if it opens late, for up to 5 minutes/.exec(r.stderr)?.[1]);
    expect(watcher, r.stderr).toBeGreaterThan(0);
    // The thread returns, Node opens the inspector, the watcher closes it and exits.
    await waitFor(() => debuggerLines(app) === 1, 15_000, 'the late inspector to open');
    await waitFor(() => !processAlive(watcher), 15_000, 'the watcher to close it and exit');
    expect(listeningPorts(app.pid)).toEqual([app.appPort]);
    expect(processAlive(app.pid)).toBe(true);
  });

  it('closes the inspector when ispy attach is killed while the port is open', async () => {
    // Freeze ispy the moment the target's inspector port appears, then SIGKILL it: nothing
    // of ispy's runs after that; its watcher must close the port. The port is open for tens
    // of milliseconds, so the freeze can come too late: then try again with a fresh app.
    for (let attempt = 1; ; attempt++) {
      const app = await plainApp('attach-app.cjs', INSPECT_ANY);
      const before = listeningPorts(app.pid);
      const reportDirs = () => readdirSync(os.tmpdir()).filter((n) => n.startsWith('ispy-attach-'));
      const dirsBefore = new Set(reportDirs());
      const ispy = spawn(process.execPath, [BIN, 'attach', String(app.pid), '--socket', path.join(app.dir, 'killed.sock')], { stdio: 'ignore' });
      ours.add(ispy);
      let port: number | undefined;
      // A tight synchronous poll of /proc (bounded): an event-loop poll would be too slow.
      for (const deadline = Date.now() + 10_000; port === undefined && Date.now() < deadline && ispy.exitCode === null; ) {
        port = listeningPorts(app.pid).find((p) => !before.includes(p));
      }
      if (port !== undefined) process.kill(ispy.pid!, 'SIGSTOP');
      const caught = port !== undefined && listeningPorts(app.pid).includes(port);
      ispy.kill('SIGKILL');
      await new Promise((r) => ispy.once('exit', r));
      if (!caught) {
        expect(attempt, 'could not freeze ispy while the port was open').toBeLessThan(5);
        continue;
      }
      await waitFor(() => !listeningPorts(app.pid).includes(port!), 15_000, `the watcher to close port ${port}`);
      expect(await accepts(port!)).toBe(false);
      expect(processAlive(app.pid)).toBe(true);
      // The watcher also removed the dead ispy's private report folder.
      await waitFor(() => reportDirs().every((n) => dirsBefore.has(n)), 10_000, 'the report folder to be removed');
      return;
    }
  });

  it('closes the inspector when ispy dies with it open (stdin of the watcher ends without "closed")', async () => {
    const app = await plainApp('attach-app.cjs', INSPECT_ANY);
    const before = listeningPorts(app.pid);
    const watcher = spawn(process.execPath, [path.join(DIST, 'src', 'cli', 'attach-watch.js'), String(app.pid), String(app.pid), '', '60000', before.join(',')], {
      stdio: ['pipe', 'ignore', 'ignore'],
    });
    ours.add(watcher);
    // Open its inspector as ispy would, and "die" holding it open.
    process.kill(app.pid, 'SIGUSR1');
    const port = await waitFor(() => listeningPorts(app.pid).find((p) => !before.includes(p)), 10_000, 'the inspector to open');
    expect(await accepts(port)).toBe(true);
    watcher.stdin!.end();
    await waitFor(() => watcher.exitCode !== null, 15_000, 'the watcher to close the inspector and exit');
    expect(listeningPorts(app.pid)).toEqual(before);
    expect(await accepts(port)).toBe(false);
  });

  it('leaves everything alone and exits when told "closed"', async () => {
    const app = await plainApp('attach-app.cjs', INSPECT_ANY);
    const before = listeningPorts(app.pid);
    const watcher = spawn(process.execPath, [path.join(DIST, 'src', 'cli', 'attach-watch.js'), String(app.pid), String(app.pid), '', '60000', before.join(',')], {
      stdio: ['pipe', 'ignore', 'ignore'],
    });
    ours.add(watcher);
    process.kill(app.pid, 'SIGUSR1');
    const port = await waitFor(() => listeningPorts(app.pid).find((p) => !before.includes(p)), 10_000, 'the inspector to open');
    watcher.stdin!.end('closed\n');
    await waitFor(() => watcher.exitCode !== null, 10_000, 'the watcher to exit');
    expect(listeningPorts(app.pid)).toContain(port);
  });
});

describe('ispy attach: reading the target', () => {
  it('finds where SIGUSR1 will open the inspector', () => {
    expect(inspectAddress([])).toEqual({ host: '127.0.0.1', port: 9229 });
    expect(inspectAddress(['--inspect-port=0'])).toEqual({ host: '127.0.0.1', port: 0 });
    expect(inspectAddress(['--inspect-port', '9300'])).toEqual({ host: '127.0.0.1', port: 9300 });
    expect(inspectAddress(['--debug-port=0.0.0.0:9230'])).toEqual({ host: '0.0.0.0', port: 9230 });
    expect(inspectAddress(['--inspect=[::1]:9231'])).toEqual({ host: '::1', port: 9231 });
    expect(inspectAddress(['--inspect=localhost'])).toEqual({ host: 'localhost', port: 9229 });
    expect(inspectAddress(['--inspect-port=1', '--inspect-port=2'])).toEqual({ host: '127.0.0.1', port: 2 });
  });

  it('reads Node options from NODE_OPTIONS, then the command line up to the script', () => {
    expect(nodeOptionsOf(['node', '-r', 'x', '--inspect-port', '0', 'app.js', '--inspect-port=5'], '--max-old-space-size=100')).toEqual([
      '--max-old-space-size=100',
      '-r',
      'x',
      '--inspect-port',
      '0',
    ]);
    expect(inspectAddress(nodeOptionsOf(['node', 'app.js', '--inspect-port=5'], undefined))).toEqual({ host: '127.0.0.1', port: 9229 });
    expect(inspectAddress(nodeOptionsOf(['node', '--inspect-port=7', 'app.js'], '--inspect-port=6'))).toEqual({ host: '127.0.0.1', port: 7 });
  });

  it('tells loopback from other addresses', () => {
    for (const h of ['127.0.0.1', '127.1.2.3', 'localhost', '::1', '[::1]', '::ffff:127.0.0.1']) expect(isLoopback(h), h).toBe(true);
    for (const h of ['0.0.0.0', '::', '10.0.0.1', 'example.com']) expect(isLoopback(h), h).toBe(false);
  });

  it('documents the command in --help', async () => {
    const r = await runCli(['attach', '--help']);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('any local user could connect to that port');
  });
});
