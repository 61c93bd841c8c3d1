// Shared by the reliability tests: the app they run against (test/fixtures/reliab-app.cjs
// with the agent), the `ispy` binary started so that it can be killed mid-command, and the
// checks' engines, which live in bench/reliability-*.js so that the long forms run the
// very same code (`node bench/reliability.js`).

import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import * as path from 'node:path';
import { afterAll } from 'vitest';
import { BIN, ROOT, startApp, tempDir, waitFor, type App } from '../helpers';

export interface ReliabApp extends App {
  /** The HTTP port the app printed. */
  httpPort: number;
  /** The agent's artefact folder (config `outputDir`). */
  outputDir: string;
}

/**
 * Starts test/fixtures/reliab-app.cjs with the agent. `config` is written as its
 * ispy.config.json (relative paths resolve from its folder); `outputDir` defaults to
 * `<its folder>/out`.
 */
export async function startReliabApp(config: Record<string, unknown> = {}, opts: { dir?: string; env?: Record<string, string> } = {}): Promise<ReliabApp> {
  const dir = opts.dir ?? tempDir('ispy-r-');
  const full = { outputDir: 'out', ...config };
  const app = await startApp({ script: 'reliab-app.cjs', dir, config: full, ...(opts.env ? { env: opts.env } : {}) });
  const httpPort = await app.port();
  return Object.assign(app, { httpPort, outputDir: path.resolve(dir, String(full.outputDir)) });
}

/** What the engines in bench/reliability-*.js take as the app. */
export function engineApp(app: ReliabApp): { pid: number; socket: string; port: number; outputDir: string; stdout(): string; stderr(): string } {
  return { pid: app.pid, socket: app.socket, port: app.httpPort, outputDir: app.outputDir, stdout: app.stdout, stderr: app.stderr };
}

/** The files in a folder (none when it does not exist). */
export function filesIn(dir: string): string[] {
  return existsSync(dir) ? readdirSync(dir).sort() : [];
}

/** The names of a process's threads (V8's CPU profiler runs one, `v8:ProfEvntProc`, only while it profiles). */
export function threadNames(pid: number): string[] {
  const names: string[] = [];
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    try {
      names.push(readFileSync(`/proc/${pid}/task/${tid}/comm`, 'utf8').trim());
    } catch {
      // the thread ended between the listing and the read
    }
  }
  return names;
}

export interface RunningCli {
  child: ChildProcess;
  pid: number;
  output(): string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** Whether it has ended (by itself or killed). */
  done(): boolean;
  /** kill -9, by its pid; resolves once it is gone. */
  kill9(): Promise<void>;
}

const clis = new Set<ChildProcess>();
afterAll(() => {
  for (const c of clis) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
});

/** Starts the built `ispy` binary as runCli does, but returns at once so the test can kill it mid-command. */
export function spawnCli(args: string[]): RunningCli {
  const child = spawn(process.execPath, [BIN, ...args], { cwd: ROOT, env: { ...process.env, NO_COLOR: '1' }, stdio: ['ignore', 'pipe', 'pipe'] });
  clis.add(child);
  let out = '';
  child.stdout!.on('data', (d) => (out += d));
  child.stderr!.on('data', (d) => (out += d));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.on('exit', (code, signal) => {
      clis.delete(child);
      resolve({ code, signal });
    }),
  );
  const done = () => child.exitCode !== null || child.signalCode !== null;
  return {
    child,
    pid: child.pid!,
    output: () => out,
    exited,
    done,
    async kill9() {
      if (!done()) process.kill(child.pid!, 'SIGKILL');
      await exited;
    },
  };
}

/** Waits (bounded) until `running` says the CLI's command is under way; a CLI that ends first is reported with its output. */
export async function whenRunning(cli: RunningCli, running: () => Promise<boolean>, what: string, timeoutMs = 20_000): Promise<void> {
  await waitFor(
    async () => {
      if (cli.done()) throw new Error(`ispy ended before ${what} (output: ${cli.output()})`);
      return running();
    },
    timeoutMs,
    what,
  );
}
