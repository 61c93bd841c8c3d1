// Shared by the reliability tests: the app they run against (test/fixtures/reliab-app.cjs
// with the agent) in the shape the checks' engines take. The engines live in
// bench/reliability-*.js, so that the long forms (`node bench/reliability.js`) run the very
// same checks.

import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import * as path from 'node:path';
import { startApp, tempDir, type App } from '../helpers';

/** Why the checks cannot run here, when they cannot: they read the app's fds, threads and memory in /proc. */
export const NO_PROC = existsSync('/proc/self/fd') && existsSync('/proc/self/task') ? undefined : 'needs /proc (Linux): the checks read the app\'s fds, threads and memory there';

/** A describe title that says why it was skipped, when it was. */
export const needsProc = (title: string): string => (NO_PROC ? `${title} (skipped: ${NO_PROC})` : title);

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
  // These tests are about what is left behind, not about the agent's time limits: limits long
  // enough that a loaded machine does not turn a slow inspector answer into a failed command.
  const full = { outputDir: 'out', limits: { inspectorTimeout: '10s' }, ...config };
  const app = await startApp({ script: 'reliab-app.cjs', dir, config: full, ...(opts.env ? { env: opts.env } : {}) });
  const httpPort = await app.port();
  return Object.assign(app, { httpPort, outputDir: path.resolve(dir, String(full.outputDir)) });
}

/** What the engines in bench/reliability-*.js take as the app. */
export function engineApp(app: ReliabApp): { pid: number; socket: string; port: number; outputDir: string; stdout(): string; stderr(): string } {
  return { pid: app.pid, socket: app.socket, port: app.httpPort, outputDir: app.outputDir, stdout: app.stdout, stderr: app.stderr };
}

/** The files in a folder (none when it does not exist), but for the agent's audit log, which lives there. */
export function filesIn(dir: string): string[] {
  return existsSync(dir) ? readdirSync(dir).filter((n) => !n.startsWith('audit.jsonl')).sort() : [];
}

/**
 * Raises the running app's soft RLIMIT_NOFILE to at least `min` (the agent holds its
 * connections to an eighth of it), up to the hard limit. Returns why it could not, if so.
 */
export function ensureFdLimit(pid: number, min: number): string | undefined {
  const m = /^Max open files\s+(\d+|unlimited)\s+(\d+|unlimited)/m.exec(readFileSync(`/proc/${pid}/limits`, 'utf8'));
  if (!m) return `cannot read the fd limit of process ${pid}`;
  const [soft, hard] = [m[1] === 'unlimited' ? Infinity : Number(m[1]), m[2] === 'unlimited' ? Infinity : Number(m[2])];
  if (soft >= min) return undefined;
  if (hard < min) return `the fd limit's hard ceiling (${hard}) is below the ${min} this check needs`;
  if (!existsSync('/usr/bin/prlimit')) return `the fd limit (${soft}) is below ${min}, and prlimit is missing to raise it`;
  execFileSync('/usr/bin/prlimit', [`--pid=${pid}`, `--nofile=${min}:${m[2] === 'unlimited' ? 'unlimited' : hard}`]);
  return undefined;
}
