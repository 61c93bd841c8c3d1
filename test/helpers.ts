// Shared by the integration tests: start a real app process with the agent in a temp
// folder, wait (bounded) for its socket, talk to it, and kill only what we started.

import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, realpathSync, rmSync, writeFileSync } from 'node:fs';
import * as http from 'node:http';
import * as os from 'node:os';
import * as path from 'node:path';

export const ROOT = path.resolve(__dirname, '..');
export const DIST = path.join(ROOT, 'dist');
export const REGISTER = path.join(DIST, 'src', 'register.js');
export const BIN = path.join(ROOT, 'bin', 'ispy.js');
export const FIXTURES = path.join(__dirname, 'fixtures');

const started = new Set<ChildProcess>();
const dirs: string[] = [];

/** How long an app may take to start (print its port, make its socket) before a test gives up on it. */
export const START_WAIT_MS = 60_000;

/**
 * How much slower than its own CPU time the wall clock runs for this process just now: about 1
 * on an idle machine, about N when N busy processes share each core. A test asserting a time
 * bound the product promises (a window kept short, a timeout kept) multiplies the bound by
 * it, so the promise is checked on a quiet machine and a busy one does not turn it red.
 * Measured by spinning for `cpuMs` of CPU and timing that on the wall clock (bounded at 5 s).
 */
export function slowdown(cpuMs = 30): number {
  const start = performance.now();
  const before = process.cpuUsage();
  let used = 0;
  while (used < cpuMs * 1000 && performance.now() - start < 5000) {
    const d = process.cpuUsage(before);
    used = d.user + d.system;
  }
  return Math.max(1, (performance.now() - start) / Math.max(1, used / 1000));
}

/** A fresh temp folder, removed by cleanup(). Short, so socket paths stay under 107 bytes. */
export function tempDir(prefix = 'ispy-t-'): string {
  const dir = realpathSync(mkdtempSync(path.join(os.tmpdir(), prefix)));
  dirs.push(dir);
  return dir;
}

export async function waitFor<T>(check: () => T | undefined | false | Promise<T | undefined | false>, timeoutMs: number, what: string): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await check();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

export interface App {
  child: ChildProcess;
  pid: number;
  socket: string;
  dir: string;
  stdout(): string;
  stderr(): string;
  /** The app's HTTP port, when it printed `PORT <n>`. */
  port(): Promise<number>;
  get(pathname: string, timeoutMs?: number): Promise<{ status: number; body: string }>;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  kill(signal?: NodeJS.Signals): Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

export interface StartAppOptions {
  /** Fixture file name in test/fixtures, or an absolute path. */
  script: string;
  args?: string[];
  /** How the agent is loaded: -r (default), --import, or not at all. */
  preload?: 'require' | 'import' | 'none';
  /** Written to <dir>/ispy.config.json (object) or used as-is (string path). */
  config?: Record<string, unknown>;
  env?: Record<string, string | undefined>;
  /** Wait for the socket to appear (default true when the agent is preloaded). */
  waitForSocket?: boolean;
  /** Socket path; default <dir>/app.sock via ISPY_SOCKET. Pass null to leave ISPY_SOCKET unset. */
  socket?: string | null;
  dir?: string;
  cwd?: string;
  preloadPath?: string;
  /** Node options put before the preload and the script (e.g. the permission model's flags). */
  nodeArgs?: string[];
}

export async function startApp(opts: StartAppOptions): Promise<App> {
  const dir = opts.dir ?? tempDir();
  const script = path.isAbsolute(opts.script) ? opts.script : path.join(FIXTURES, opts.script);
  const socket = opts.socket === null ? '' : (opts.socket ?? path.join(dir, 'app.sock'));
  if (opts.config) writeFileSync(path.join(dir, 'ispy.config.json'), JSON.stringify(opts.config, null, 2));
  const preload = opts.preload ?? 'require';
  const preloadPath = opts.preloadPath ?? REGISTER;
  const nodeArgs = preload === 'require' ? ['-r', preloadPath] : preload === 'import' ? ['--import', preloadPath.startsWith('/') ? `file://${preloadPath}` : preloadPath] : [];
  const env: NodeJS.ProcessEnv = { ...process.env, ISPY_CONFIG: undefined, ...opts.env };
  if (socket) env.ISPY_SOCKET = socket;
  else if (opts.socket === null) delete env.ISPY_SOCKET;
  for (const [k, v] of Object.entries(env)) if (v === undefined) delete env[k];
  const child = spawn(process.execPath, [...(opts.nodeArgs ?? []), ...nodeArgs, script, ...(opts.args ?? [])], { cwd: opts.cwd ?? dir, env, stdio: ['ignore', 'pipe', 'pipe'] });
  started.add(child);
  let out = '';
  let err = '';
  child.stdout!.on('data', (d) => (out += d));
  child.stderr!.on('data', (d) => (err += d));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.on('exit', (code, signal) => {
      started.delete(child);
      resolve({ code, signal });
    });
  });
  const app: App = {
    child,
    pid: child.pid!,
    socket,
    dir,
    stdout: () => out,
    stderr: () => err,
    // Generous (a start-up is well under a second on a quiet machine): two test files start
    // apps at once on two cores, maybe beside other work; the wait ends on the state.
    port: () => waitFor(() => Number(/PORT (\d+)/.exec(out)?.[1]) || undefined, START_WAIT_MS, `the app to print PORT (stderr: ${err})`),
    async get(pathname, timeoutMs = 10_000) {
      const port = await app.port();
      return new Promise((resolve, reject) => {
        const req = http.get({ host: '127.0.0.1', port, path: pathname, timeout: timeoutMs, agent: false }, (res) => {
          let body = '';
          res.on('data', (d) => (body += d));
          res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
        });
        req.on('timeout', () => req.destroy(new Error(`GET ${pathname} timed out`)));
        req.on('error', reject);
      });
    },
    exited,
    async kill(signal = 'SIGTERM') {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      const t = setTimeout(() => child.kill('SIGKILL'), 5000);
      const r = await exited;
      clearTimeout(t);
      return r;
    },
  };
  if ((opts.waitForSocket ?? preload !== 'none') && socket) {
    await waitFor(() => existsSync(socket) || child.exitCode !== null, START_WAIT_MS, `socket ${socket} (stderr: ${err})`);
    if (child.exitCode !== null) throw new Error(`app exited early with ${child.exitCode}: ${err}`);
  }
  return app;
}

/** Kills every process the tests started and removes the temp folders. Call in afterAll/afterEach. */
export async function cleanup(): Promise<void> {
  await Promise.all(
    [...started].map(
      (c) =>
        new Promise<void>((resolve) => {
          if (c.exitCode !== null || c.signalCode !== null) return resolve();
          c.once('exit', () => resolve());
          c.kill('SIGKILL');
        }),
    ),
  );
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
}

/** Runs the built `ispy` binary; resolves with its output and exit code. */
export function runCli(
  args: string[],
  opts: { input?: string; env?: Record<string, string>; timeoutMs?: number; cwd?: string; onStdout?: (soFar: string) => void } = {},
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [BIN, ...args], { cwd: opts.cwd ?? ROOT, env: { ...process.env, NO_COLOR: '1', ...opts.env }, stdio: ['pipe', 'pipe', 'pipe'] });
    started.add(child);
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => {
      stdout += d;
      opts.onStdout?.(stdout);
    });
    child.stderr.on('data', (d) => (stderr += d));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`ispy ${args.join(' ')} did not finish within ${opts.timeoutMs ?? 20_000} ms\nstdout: ${stdout}\nstderr: ${stderr}`));
    }, opts.timeoutMs ?? 20_000);
    child.on('exit', (code) => {
      clearTimeout(timer);
      started.delete(child);
      resolve({ code, stdout, stderr });
    });
    child.stdin.end(opts.input ?? '');
  });
}

/** The files in an output folder other than the agent's audit log (which sits there by default). */
export function artefactsIn(dir: string): string[] {
  return readdirSync(dir).filter((n) => !n.startsWith('audit.jsonl'));
}

export function writeFile(dir: string, name: string, content: string): string {
  const file = path.join(dir, name);
  writeFileSync(file, content);
  return file;
}

/** Splits human `ispy run` output into blocks keyed by the label in their `── label` header. */
export function runBlocks(stdout: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const block of stdout.split(/^(?=── )/m).filter(Boolean)) {
    const header = /^── (\S+)/.exec(block);
    if (header) out.set(header[1]!, block);
  }
  return out;
}
