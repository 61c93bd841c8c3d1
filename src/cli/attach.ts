// `ispy attach <pid>`: load the agent into a running Node process that was started
// without it. Linux only (it reads /proc).
//
//   check the pid (procfs.ts): it exists, is ours (same uid), in our network and mount
//     namespaces, runs a Node binary that catches SIGUSR1, has no agent and no inspector
//     open, and the address its inspector would take is loopback and free
//   start the watcher (attach-watch.ts), the safety net should we die or give up
//   SIGUSR1 ─► the target opens its inspector (Node's documented signal)
//   find the port among the target's own listening sockets, never by guessing 9229
//   connect; the first evaluation checks process.pid (we talk to the target, nobody else)
//     and arms a deadline in the target that closes the inspector by itself
//   one evaluation in the target: inspector.close(), take the deadline off, then (next
//     tick) startAgent() unless an agent is already there (globalThis[Symbol.for('ispy.agent')])
//   wait until the port is really closed; release the watcher
//   read the agent's start-up outcome from a file the target writes in a 0700 folder of ours
//
// Security note: while the inspector port is open, any local user who can connect to
// 127.0.0.1 can connect to it and run code in the target. It is open from the signal to
// the observed close (typically 40-130 ms, and reported), not during the agent's start-up,
// and at most WINDOW_MS after we saw it open whenever the main thread can take the
// inspector's interrupts (idle, or busy running JavaScript). A main thread blocked in native
// code (or in a long built-in such as JSON.parse of a huge string) cannot: nothing in Node
// closes the port from another thread, so the close waits in its queue until it returns.
// Every path closes it: on success and on errors through our session (a new one if ours is
// gone); if we die or give up, through the watcher, which closes it as soon as it sees it
// (pid checked through the session too); and if the watcher dies with us after our first
// evaluation, through the deadline armed in the target.

import { spawn } from 'node:child_process';
import { existsSync, lstatSync, mkdtempSync, readFileSync, readlinkSync, realpathSync, rmSync, unlinkSync, writeFileSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { finalSocketPath, processAlive } from '../protocol/socket-path';
import { connect } from '../client/index';
import { IspyError, isIspyError } from '../protocol/errors';
import {
  CLOSE_FUNCTION,
  DEADLINE_KEY,
  NoAnswerError,
  closeExpression,
  closeInspector,
  closeWithNewSession,
  interrupted,
  isInspector,
  openSession,
  sleep,
  verifyPid,
  waitPortClosed,
  type InspectorConnection,
} from './inspector-client';
import {
  commOf,
  environOf,
  innerPid,
  inspectAddress,
  isLoopback,
  isNodeExecutable,
  isWildcard,
  listeningPorts,
  listeningSockets,
  listeningUnixSockets,
  nodeOptionsOf,
  ownerOfInode,
  readProc,
  sameNamespace,
  startTimeOf,
  statusField,
  tcpListeners,
  uidOf,
  type ListeningSocket,
} from './procfs';


export interface AttachOptions {
  /** Config file for the agent, resolved here and passed as an absolute path. */
  config?: string;
  /** Socket path for the agent ({pid} allowed), resolved here. */
  socket?: string;
  /**
   * Longest wait for the inspector to open, and for the main thread to come back to its
   * event loop once it is closed (the agent's own start-up gets at least 15 s). The steps
   * while the port is open have their own fixed bounds (SESSION_MS, CLOSE_MS).
   */
  timeoutMs?: number;
  /** The agent entry point to load; default: this ispy's own build. */
  agentModule?: string;
  /** Aborting (Ctrl-C) stops waiting and closes the inspector before rejecting. */
  signal?: AbortSignal;
}

export interface AttachResult {
  pid: number;
  socket: string;
  /** Where the target's inspector listened while it was open. */
  inspectorHost: string;
  inspectorPort: number;
  /** How long the inspector port was open, from the signal to the observed close. */
  inspectorOpenMs: number;
  /**
   * Node opened the inspector a second time when the main thread, busy in JavaScript when
   * signalled, came back to its event loop; the target closed it again in that loop turn.
   */
  inspectorReopened: boolean;
  /** Milliseconds from the signal to each step: port seen, session checked, port closed, agent ready. */
  timings: { portOpen: number; session: number; closed: number; agentReady: number };
  plugins: string[];
  failedPlugins: { name: string; message: string }[];
}

/** How long a watcher keeps watching for an inspector that opens after we gave up. */
export const LATE_WATCH_MS = 5 * 60_000;
/**
 * From the port first seen listening to the answer of our first evaluation there: its HTTP
 * check, the session, and the pid check, which the main thread answers from an interrupt.
 */
export const SESSION_MS = 2000;
/** From then to the port seen closed. */
export const CLOSE_MS = 1000;
/**
 * The longest we keep the inspector port open once we have seen it, whatever the main
 * thread does as long as it takes the inspector's interrupts; then we close it or give up
 * and say so. Typical windows are tens of milliseconds: these bounds are for a machine
 * that is starved, never waited out on a healthy one.
 */
export const WINDOW_MS = SESSION_MS + CLOSE_MS;
/**
 * Armed in the target by our first evaluation: unless our close came first, the target
 * closes its own inspector this long after that evaluation ran, should we and our watcher
 * both be gone (a cgroup kill).
 */
export const DEADLINE_MS = WINDOW_MS;
const SIGUSR1_BIT = 1n << 9n; // signal 10, bit 9 of the /proc/<pid>/status masks

function refuse(message: string): IspyError {
  return new IspyError('ISPY_ERR_UNAVAILABLE', message);
}

function userName(): { user?: string } {
  try {
    return { user: os.userInfo().username };
  } catch {
    return {};
  }
}

function defaultAgentModule(): string {
  // dist/src/cli/attach.js → dist/src/index.js
  return path.resolve(__dirname, '..', 'index.js');
}

/**
 * UNIX sockets the process listens on that look like an agent's: ours, and private (0600,
 * as the agent creates them). Only these are asked for a welcome.
 */
function agentLikeSockets(pid: number): string[] {
  const me = process.getuid?.();
  return listeningUnixSockets(pid)
    .map(finalSocketPath)
    .filter((file) => {
      try {
        const st = lstatSync(file);
        return st.isSocket() && (me === undefined || st.uid === me) && (st.mode & 0o077) === 0;
      } catch {
        return false; // gone, or not reachable from here
      }
    })
    .slice(0, 16);
}

/** The socket path the agent of `pid` answering at `socket` names (it may be reached through a second link), if it does. */
async function agentAnswersAt(socket: string, pid: number): Promise<string | undefined> {
  if (!existsSync(socket)) return undefined;
  try {
    const client = await connect(socket, { timeoutMs: 1000, clientName: `ispy-attach/${process.pid}` });
    const theirs = client.welcome.pid === pid;
    await client.close();
    return theirs ? client.welcome.socket || socket : undefined;
  } catch {
    return undefined;
  }
}

/** Whether `granted` (the values of a process's --allow-fs-* flags) covers `file`. */
function grantCovers(granted: string[], file: string): boolean {
  return granted.some((g) => g === '*' || g === file || file.startsWith(g.endsWith('/') ? g : `${g}/`) || (g.endsWith('*') && file.startsWith(g.slice(0, -1))));
}

/**
 * Node's permission model, read from the target's options (command line, NODE_OPTIONS).
 * Under it, SIGUSR1 opens no inspector unless --allow-inspector was given (measured on 24
 * and 26: the signal is taken and nothing opens; 20 and 22 have no such flag), and even
 * then the agent's start-up would need grants ispy cannot give from outside. So ispy
 * refuses, and says how to start the app with the agent preloaded instead, naming the
 * grants it would need that the target's options lack. --permission-audit enforces
 * nothing and is let through.
 */
function permissionRefusal(pid: number, exe: string, options: string[], env: Record<string, string>, socket: string | undefined): IspyError | undefined {
  let on = false;
  const values = (flag: string) => options.flatMap((o, i) => (o.startsWith(`${flag}=`) ? [o.slice(flag.length + 1)] : o === flag && i + 1 < options.length ? [options[i + 1]!] : []));
  for (const o of options) {
    if (o === '--permission' || o === '--experimental-permission') on = true;
    if (o === '--no-permission' || o === '--no-experimental-permission') on = false;
  }
  if (!on) return undefined;
  const flag = options.includes('--permission') ? '--permission' : '--experimental-permission';
  // Which flags the target's Node accepts is known only when it is this very binary.
  let sameNode = false;
  try {
    sameNode = realpathSync(exe) === realpathSync(process.execPath);
  } catch {
    // cannot tell
  }
  const knows = (f: string) => (sameNode ? process.allowedNodeEnvironmentFlags.has(f) : undefined);
  const want: string[] = [];
  if (!options.includes('--allow-worker')) want.push('--allow-worker');
  if (knows('--allow-net') === true && !options.includes('--allow-net')) want.push('--allow-net');
  const uid = process.getuid?.() ?? 0;
  const defaultDir = path.join(env.TMPDIR || os.tmpdir(), `ispy-${uid}`);
  const cwd = readlinkOr(`/proc/${pid}/cwd`);
  const socketFile = socket ?? (env.ISPY_SOCKET ? path.resolve(cwd, env.ISPY_SOCKET) : path.join(defaultDir, 'x'));
  const socketDir = path.dirname(socketFile.split('{pid}').join(String(pid)));
  const reads = values('--allow-fs-read');
  const writes = values('--allow-fs-write');
  const root = path.resolve(__dirname, '..', '..', '..');
  if (!grantCovers(reads, path.join(root, 'package.json'))) want.push(`--allow-fs-read=${root}`);
  // The agent looks for its config file (absent or not): $ISPY_CONFIG, else ./ispy.config.json.
  const config = path.resolve(cwd, env.ISPY_CONFIG || 'ispy.config.json');
  if (!grantCovers(reads, config)) want.push(`--allow-fs-read=${config}`);
  for (const dir of new Set([socketDir, defaultDir])) if (!grantCovers(reads, dir)) want.push(`--allow-fs-read=${dir}`);
  for (const dir of new Set([socketDir, defaultDir])) if (!grantCovers(writes, dir)) want.push(`--allow-fs-write=${dir}`);
  if (knows('--allow-net') === undefined && !options.includes('--allow-net')) want.push('(and --allow-net on a Node that has it)');
  const why = options.includes('--allow-inspector')
    ? "the agent's start-up there needs grants ispy cannot give from outside"
    : 'without --allow-inspector Node installs no SIGUSR1 handler there (no inspector can open)';
  const grants = want.length ? ` with ${want.join(' ')}` : '';
  return refuse(`process ${pid} runs under Node's permission model (${flag}): ${why}, so ispy does not signal it; start the app with the agent preloaded instead (-r ispy/register)${grants}; the agent then names in one line any grant it still lacks`);
}

function readlinkOr(link: string): string {
  try {
    return readlinkSync(link);
  } catch {
    return '/';
  }
}

export interface TargetInfo {
  pid: number;
  /** The pid the target sees for itself (differs inside a pid namespace). */
  innerPid: number;
  exe: string;
  /** Where its inspector will listen once signalled. */
  inspect: { host: string; port: number };
}

/** Checks the target before anything is done to it; throws a refusal naming the reason. */
export async function checkTarget(pid: number, opts: { socket?: string } = {}): Promise<TargetInfo> {
  if (!Number.isSafeInteger(pid) || pid <= 0) throw new IspyError('ISPY_ERR_USAGE', `"${pid}" is not a process id`);
  if (process.platform !== 'linux') throw refuse('ispy attach reads /proc and works on Linux only');
  if (pid === process.pid) throw refuse(`process ${pid} is this ispy itself`);
  try {
    process.kill(pid, 0);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ESRCH') throw new IspyError('ISPY_ERR_NOT_FOUND', `no process ${pid}`);
    if ((err as NodeJS.ErrnoException).code === 'EPERM') throw refuse(`process ${pid} belongs to another user; run ispy attach as that user`);
    throw err;
  }
  const uid = uidOf(pid);
  const me = process.getuid?.();
  if (uid === undefined) throw new IspyError('ISPY_ERR_NOT_FOUND', `no process ${pid} (it has no /proc/${pid}/status; it may have just exited)`);
  if (me !== undefined && uid !== me) throw refuse(`process ${pid} belongs to uid ${uid}, not to you (uid ${me}); run ispy attach as that user`);
  let exe = '';
  try {
    exe = readlinkSync(`/proc/${pid}/exe`);
  } catch {
    throw refuse(`cannot read /proc/${pid}/exe to check that process ${pid} is Node.js (a zombie or kernel thread?)`);
  }
  if (!isNodeExecutable(exe)) throw refuse(`process ${pid} is not Node.js (its program is ${exe})`);
  for (const ns of ['net', 'mnt']) {
    if (!sameNamespace(pid, ns)) {
      throw refuse(`process ${pid} is in another ${ns === 'net' ? 'network' : 'mount'} namespace (a container?); run ispy attach inside it`);
    }
  }
  const cmdline = (readProc(pid, 'cmdline') ?? '').split('\0').filter((a, i, all) => a !== '' || i < all.length - 1);
  const env = environOf(pid);
  // An agent is found here without opening the inspector; one this misses is found
  // through the session (its marker on globalThis) and the inspector closed at once.
  const sockets = agentLikeSockets(pid);
  const answers = await Promise.all(sockets.map((socket) => agentAnswersAt(socket, pid)));
  const agentSocket = answers.find((a) => a !== undefined);
  if (agentSocket) throw refuse(`process ${pid} already has an ispy agent (socket ${agentSocket}); connect with \`ispy connect ${agentSocket}\``);
  const permission = permissionRefusal(pid, exe, nodeOptionsOf(cmdline, env.NODE_OPTIONS), env, opts.socket);
  if (permission) throw permission;
  // Without Node's handler, SIGUSR1 would end the process (default) or do nothing (ignored).
  const caught = BigInt(`0x${statusField(pid, 'SigCgt') ?? '0'}`);
  const ignored = BigInt(`0x${statusField(pid, 'SigIgn') ?? '0'}`);
  if ((ignored & SIGUSR1_BIT) !== 0n) throw refuse(`process ${pid} ignores SIGUSR1, so its inspector cannot be opened`);
  if ((caught & SIGUSR1_BIT) === 0n) {
    throw refuse(`process ${pid} does not handle SIGUSR1 (started with --disable-sigusr1?); the signal would end it, so ispy does not send it`);
  }

  const mine = listeningSockets(pid);
  const open = await Promise.all(mine.map(async (s) => ((await isInspector(s.host, s.port)) ? s : undefined)));
  const already = open.find((s) => s !== undefined);
  if (already) {
    throw refuse(`process ${pid} already has its inspector open on ${already.host}:${already.port} (someone else's debugging session); ispy will neither use nor close it`);
  }

  const inspect = inspectAddress(nodeOptionsOf(cmdline, env.NODE_OPTIONS));
  if (!isLoopback(inspect.host)) {
    throw refuse(`process ${pid} would open its inspector on ${inspect.host}:${inspect.port} (its --inspect-port), reachable beyond this host; ispy only opens it on loopback`);
  }
  if (inspect.port !== 0) {
    const holders = tcpListeners('self').filter((l) => l.port === inspect.port && (isWildcard(l.host) || isLoopback(l.host)));
    if (holders.length) {
      const own = mine.find((s) => s.port === inspect.port);
      if (own) throw refuse(`process ${pid} itself listens on port ${inspect.port}, where its inspector would go; it cannot be opened`);
      const owner = ownerOfInode(holders[0]!.inode);
      const who = owner !== undefined ? `process ${owner} (${commOf(owner)})` : 'another process';
      throw refuse(`port ${inspect.port}, where process ${pid} would open its inspector, is held by ${who} on ${holders[0]!.host}; ispy will not signal it (free the port, or start the app with --inspect-port=127.0.0.1:0)`);
    }
  }
  return { pid, innerPid: innerPid(pid), exe, inspect };
}

interface FoundInspector extends ListeningSocket {
  /** When the port was first seen listening (performance.now()): the window's bounds count from here. */
  seenAt: number;
}

/** Polls the target's listening sockets for a new one that answers as an inspector. */
async function findNewInspector(pid: number, before: Set<number>, timeoutMs: number, signal?: AbortSignal): Promise<FoundInspector | undefined> {
  const notInspector = new Set<number>();
  const firstSeen = new Map<number, number>();
  // Every moment between the bind and our seeing it is exposure: poll often.
  for (const deadline = Date.now() + timeoutMs; Date.now() < deadline; await sleep(2, signal)) {
    for (const s of listeningSockets(pid)) {
      if (before.has(s.port) || notInspector.has(s.port)) continue;
      if (!firstSeen.has(s.port)) firstSeen.set(s.port, performance.now());
      if (await isInspector(s.host, s.port, Math.min(1000, timeoutMs))) return { ...s, seenAt: firstSeen.get(s.port)! };
      notInspector.add(s.port);
    }
  }
  return undefined;
}

/**
 * The safety net, a detached process (attach-watch.ts) started just before the signal. It
 * idles while we hold its stdin open. We end that pipe with `closed` once we have seen the
 * port closed; with `late` when we could not close it (or it had not opened yet: a main
 * thread blocked in native code handles the signal only when it returns); and if we die
 * (SIGKILL, a crash) the pipe just ends. In the last two cases the watcher closes any
 * inspector the target has open or opens (pid checked through the session), then exits;
 * it gives up after LATE_WATCH_MS or when the target exits.
 */
interface Watcher {
  pid: number | undefined;
  /** We saw the port closed: the watcher exits. */
  release(): void;
  /** The watcher takes over. */
  handOver(): void;
}

/**
 * Starts the watcher and waits (bounded) until it says `ready`, so its own start-up does
 * not compete with the target for CPU while the port is open. A watcher that cannot start
 * leaves us without the net, not without the attach: the error paths say so.
 */
async function startWatcher(pid: number, expectedPid: number, before: Set<number>, timeoutMs: number, reportDir: string): Promise<Watcher> {
  let child: ReturnType<typeof spawn> | undefined;
  try {
    const script = path.join(__dirname, 'attach-watch.js');
    if (existsSync(script)) {
      child = spawn(process.execPath, [script, String(pid), String(expectedPid), String(startTimeOf(pid) ?? ''), String(LATE_WATCH_MS), [...before].join(','), reportDir], {
        detached: true,
        stdio: ['pipe', 'pipe', 'ignore'],
      });
      child.on('error', () => {});
      child.stdin!.on('error', () => {});
      child.unref();
      const c = child;
      await new Promise<void>((resolve) => {
        const t = setTimeout(done, Math.min(timeoutMs, 3000));
        c.stdout!.on('data', (d: Buffer) => d.includes('ready') && done());
        c.once('exit', done);
        function done() {
          clearTimeout(t);
          resolve();
        }
      });
      c.stdout!.destroy();
    }
  } catch {
    child = undefined;
  }
  let done = false;
  const end = (word: string) => {
    if (done) return;
    done = true;
    child?.stdin?.end(`${word}\n`);
  };
  return { pid: child?.exitCode === null ? child.pid : undefined, release: () => end('closed'), handOver: () => end('late') };
}

function watcherNote(pid: number, watcher: Watcher, port?: number): string {
  const where = port !== undefined ? `on port ${port}` : 'if it opens late';
  if (watcher.pid === undefined) return `; WARNING: process ${pid}'s inspector may be open ${where}: check with \`ss -ltnp | grep pid=${pid},\` and restart the process if so`;
  return `; a watcher (pid ${watcher.pid}) will close process ${pid}'s inspector ${where}, for up to ${LATE_WATCH_MS / 60_000} minutes`;
}

/** The port is open and the main thread cannot run our close now: say exactly what holds it, and until when. */
function blockedNote(watcher: Watcher, port: number): string {
  const net = watcher.pid === undefined ? '' : `; a watcher (pid ${watcher.pid}) also watches it, for up to ${LATE_WATCH_MS / 60_000} minutes`;
  return `; port ${port} stays open until that thread returns: ispy's close waits in its queue and runs then (Node's inspector can only be closed from the main thread)${net}`;
}

/** The main thread did not answer while the port was open: blocked where the inspector cannot interrupt it. */
function blocked(pid: number, what: string, ms: number, cause?: unknown): IspyError {
  return new IspyError(
    'ISPY_ERR_INSPECTOR',
    `process ${pid}'s main thread did not ${what} within ${ms} ms of its inspector opening: it is blocked in native code or in a long built-in call (a synchronous child process or file read, JSON.parse of a huge string, sorting a huge array), which the inspector cannot interrupt; ispy loaded nothing`,
    { details: { blocked: true }, ...(cause !== undefined ? { cause } : {}) },
  );
}

/** An IspyError (a plain one, from a socket or the inspector, becomes ISPY_ERR_INSPECTOR) with the note appended. */
function withNote(err: unknown, note: string): IspyError {
  if (isIspyError(err) && !note) return err;
  const message = err instanceof Error ? err.message : String(err);
  const text = isIspyError(err) ? message : `talking to the inspector of the process: ${message}`;
  return new IspyError(isIspyError(err) ? err.code : 'ISPY_ERR_INSPECTOR', `${text}${note}`, { cause: err });
}

/**
 * Our first evaluation in the target: checks the pid (it evaluates to process.pid and acts
 * only in the process that is `expectedPid`) and arms the deadline: unless our close comes
 * first and takes it off (`disarm`), the target closes its own inspector DEADLINE_MS later,
 * should we and our watcher both be gone. The timer lives in a small worker thread, since a
 * timer on the main thread waits for its event loop, which a main thread busy in JavaScript
 * does not reach; the worker's session to the main thread runs `expire` there through the
 * inspector's interrupt, as our own messages do. Only where no worker can start (a
 * permission model) is it an unref'd timer on the main thread. The worker is started bare:
 * no preloads (`execArgv: []`, and `env: {}` so the app's NODE_OPTIONS do not load its
 * -r/--import modules into it), its stdio kept from the app's, a small heap; it is unref'd,
 * and ends once it has acted or been terminated. Nothing stays after `disarm` or `expire`.
 */
export function armExpression(expectedPid: number, reportDir: string): string {
  const worker = `
    const { workerData } = require('node:worker_threads');
    const { Session } = require('node:inspector');
    setTimeout(() => {
      const session = new Session();
      try {
        session.connectToMainThread();
        session.post('Runtime.evaluate', { expression: workerData.expire }, () => session.disconnect());
      } catch {
        try { session.disconnect(); } catch {}
      }
    }, Math.max(0, workerData.at - Date.now()));`;
  const key = `Symbol.for(${JSON.stringify(DEADLINE_KEY)})`;
  return `(() => {
    if (process.pid !== ${expectedPid}) return process.pid;
    const KEY = ${key};
    // One of an earlier attach still armed would watch the inspector it opened, not this one.
    if (globalThis[KEY]) globalThis[KEY].disarm();
    const load = require;
    const inspector = load('node:inspector');
    // The inspector we opened: the deadline closes that one only.
    const url = inspector.url();
    const state = {
      disarm() {
        if (globalThis[KEY] !== state) return;
        delete globalThis[KEY];
        if (state.timer) clearTimeout(state.timer);
        if (state.worker) state.worker.terminate().catch(() => {});
      },
      expire() {
        if (globalThis[KEY] !== state) return;
        delete globalThis[KEY];
        if (state.timer) clearTimeout(state.timer);
        // The worker that called this ends by itself once answered.
        try {
          if (inspector.url() === url) (${CLOSE_FUNCTION})(load);
        } catch {}
        // ispy gone too: its report folder (0700, ours) would stay behind.
        try {
          process.kill(${process.pid}, 0);
        } catch (e) {
          if (e && e.code === 'ESRCH') try { load('node:fs').rmSync(${JSON.stringify(reportDir)}, { recursive: true, force: true }); } catch {}
        }
      },
    };
    Object.defineProperty(globalThis, KEY, { value: state, configurable: true, writable: true, enumerable: false });
    try {
      const { Worker } = load('node:worker_threads');
      const w = new Worker(${JSON.stringify(worker)}, {
        eval: true,
        workerData: { at: Date.now() + ${DEADLINE_MS}, expire: 'globalThis[' + ${JSON.stringify(key)} + ']?.expire()' },
        execArgv: [],
        env: {},
        stdout: true,
        stderr: true,
        resourceLimits: { maxOldGenerationSizeMb: 16, maxYoungGenerationSizeMb: 2 },
        name: 'ispy-attach-deadline',
      });
      w.on('error', () => {});
      w.unref();
      state.worker = w;
    } catch {
      state.timer = setTimeout(() => state.expire(), ${DEADLINE_MS});
      state.timer.unref();
    }
    return process.pid;
  })()`;
}

/** The files through which we and the target agree on the agent's start (a 0700 folder of ours). */
interface StartFiles {
  /** The outcome, written by the target. */
  out: string;
  /** Ours until the close runs in the target, which renames it to `ready`. */
  go: string;
  /** The target's until it comes back to its event loop and unlinks it to start the agent. */
  ready: string;
}

/**
 * Runs in the target, in one evaluation: closes the inspector and takes the deadline off,
 * then (next tick, once the port is gone) starts the agent, unless one is already there.
 * The outcome goes to `files.out`, since the close ends our session before any answer: so
 * the port is open for the signal and two round trips, never for the agent's start-up.
 *
 * Should we give up first (a main thread busy in JavaScript takes the close from an
 * interrupt but may not come back to its event loop for long), nothing starts later: each
 * side claims the next step by an atomic rename or unlink of a file of ours, and we remove
 * what the target has not claimed.
 */
function goExpression(agentModule: string, options: Record<string, unknown>, files: StartFiles): string {
  return `(() => {
    const fs = require('node:fs');
    // The console's require exists only during this evaluation: keep the function itself.
    const load = require;
    const out = ${JSON.stringify(files.out)};
    const report = (r) => {
      try {
        fs.writeFileSync(out + '.part', JSON.stringify(r), { mode: 0o600 });
        fs.renameSync(out + '.part', out);
      } catch {}
    };
    const message = (e) => (e && e.message ? e.message : String(e));
    let closed;
    let reopened = false;
    try {
      (${CLOSE_FUNCTION})(load, () => (reopened = true));
    } catch (e) {
      closed = e;
    }
    try {
      const deadline = globalThis[Symbol.for(${JSON.stringify(DEADLINE_KEY)})];
      if (deadline) deadline.disarm();
    } catch {}
    if (closed) return report({ error: 'inspector.close() failed: ' + message(closed) });
    const existing = globalThis[Symbol.for('ispy.agent')];
    if (existing) return report({ existing: String(existing.socket) });
    try {
      fs.renameSync(${JSON.stringify(files.go)}, ${JSON.stringify(files.ready)});
    } catch {
      return; // ispy gave up: load nothing
    }
    load('node:timers').setImmediate(() => {
      try {
        fs.unlinkSync(${JSON.stringify(files.ready)});
      } catch {
        return; // ispy gave up waiting for this thread: load nothing
      }
      try {
        load(${JSON.stringify(agentModule)}).startAgent(${JSON.stringify(options)}).then(
          (a) => report({ socket: a.socket, plugins: a.plugins, failed: a.failedPlugins.map((f) => ({ name: f.name, message: f.error && f.error.message ? f.error.message : String(f.error) })), reopened }),
          (e) => report({ error: message(e) }),
        );
      } catch (e) {
        report({ error: message(e) });
      }
    });
  })()`;
}

interface StartOutcome {
  /** Node reopened the inspector when the main thread came back to its loop, and it was closed again then. */
  reopened?: boolean;
  existing?: string;
  socket?: string;
  plugins?: string[];
  failed?: { name: string; message: string }[];
  error?: string;
}

function tryUnlink(file: string): boolean {
  try {
    unlinkSync(file);
    return true;
  } catch {
    return false;
  }
}

/**
 * Waits for the agent's outcome. The main thread must come back to its event loop within
 * `turnMs` of the close (it then claims `ready`), and the agent gets `startMs` from there.
 * 'busy': it did not come back, and we removed `ready` (nothing will start); 'not-run': our
 * close never ran there (the inspector closed otherwise), and we removed `go`; undefined:
 * the claimed start did not finish in time.
 */
async function waitForOutcome(files: StartFiles, turnMs: number, startMs: number, signal?: AbortSignal): Promise<StartOutcome | 'busy' | 'not-run' | undefined> {
  const turnBy = Date.now() + turnMs;
  let startBy: number | undefined;
  for (;; await sleep(10, signal)) {
    let text: string | undefined;
    try {
      text = readFileSync(files.out, 'utf8');
    } catch {
      // not yet
    }
    if (text !== undefined) {
      try {
        return JSON.parse(text) as StartOutcome;
      } catch {
        return { error: 'its start-up report was unreadable' };
      }
    }
    if (startBy === undefined) {
      // The target renames go to ready, then unlinks ready: neither there means it claimed the start.
      if (!existsSync(files.go) && !existsSync(files.ready)) startBy = Date.now() + startMs;
      else if (Date.now() > turnBy) {
        // Whichever of us acts first on a file wins; the loser's call fails.
        if (tryUnlink(files.go)) return 'not-run';
        if (tryUnlink(files.ready)) return 'busy';
        startBy = Date.now() + startMs;
      }
    } else if (Date.now() > startBy) return undefined;
  }
}

/** With ISPY_VERBOSE=1, one line per step on stderr, in milliseconds from the signal: where the time goes. */
function stepLogger(pid: number, since: () => number): (what: string) => void {
  if (process.env.ISPY_VERBOSE !== '1') return () => {};
  return (what) => process.stderr.write(`ispy attach ${pid}: +${since().toFixed(1)} ms ${what}\n`);
}

export async function attach(pid: number, opts: AttachOptions = {}): Promise<AttachResult> {
  const timeoutMs = opts.timeoutMs ?? 5000;
  const startMs = Math.max(timeoutMs, 15_000);
  const signal = opts.signal;
  const target = await checkTarget(pid, opts.socket ? { socket: path.resolve(opts.socket) } : {});
  if (signal?.aborted) throw interrupted();
  const options: Record<string, unknown> = {};
  if (opts.config) options.config = path.resolve(opts.config);
  if (opts.socket) options.socket = path.resolve(opts.socket);
  // For the agent's audit log: who loaded it.
  options.attachedBy = { pid: process.pid, host: os.hostname(), ...userName() };
  const agentModule = opts.agentModule ?? defaultAgentModule();
  if (!existsSync(agentModule)) throw new IspyError('ISPY_ERR_UNAVAILABLE', `the agent module ${agentModule} is missing (is ispy built?)`);
  // mkdtemp makes it 0700: only our uid (the target's too) can write the report there.
  const reportDir = mkdtempSync(path.join(os.tmpdir(), 'ispy-attach-'));
  const files: StartFiles = { out: path.join(reportDir, 'started.json'), go: path.join(reportDir, 'go'), ready: path.join(reportDir, 'ready') };

  const before = new Set(listeningPorts(pid));
  const watcher = await startWatcher(pid, target.innerPid, before, timeoutMs, reportDir);
  let released = false;
  const signalled = performance.now();
  let found: FoundInspector | undefined;
  let conn: InspectorConnection | undefined;
  let openMs: number;
  const timings = { portOpen: 0, session: 0, closed: 0, agentReady: 0 };
  const since = () => Math.round((performance.now() - signalled) * 10) / 10;
  const step = stepLogger(pid, since);
  // Until the port has been seen, nothing is open: the window's bounds count from then.
  let closeBy = Infinity;
  try {
    process.kill(pid, 'SIGUSR1');
    step('SIGUSR1 sent');
    try {
      found = await findNewInspector(pid, before, timeoutMs, signal);
      if (!found) {
        throw refuse(`process ${pid} did not open its inspector within ${timeoutMs} ms: its main thread may be blocked in native code (try again later, or with a longer --timeout), or the app handles SIGUSR1 itself`);
      }
      timings.portOpen = since();
      const sessionBy = found.seenAt + SESSION_MS;
      closeBy = found.seenAt + WINDOW_MS;
      const left = (by: number) => Math.max(0, by - performance.now());
      step(`port ${found.host}:${found.port} open (seen ${(found.seenAt - signalled).toFixed(1)} ms after the signal)`);
      conn = await openSession(found.host, found.port, left(sessionBy));
      step('session open');
      try {
        await verifyPid(conn, pid, target.innerPid, `${found.host}:${found.port}`, left(sessionBy), signal, armExpression(target.innerPid, reportDir), () =>
          step('first evaluation sent (pid check, deadline armed in the target)'),
        );
      } catch (err) {
        if (!(err instanceof NoAnswerError)) conn = undefined; // verifyPid closed it
        throw err instanceof NoAnswerError ? blocked(pid, 'answer', SESSION_MS, err) : err;
      }
      timings.session = since();
      step('pid checked');
      if (conn.closed) throw new Error('the inspector closed the connection');
      writeFileSync(files.go, '', { mode: 0o600 });
      const c = conn;
      conn = undefined;
      c.requestClose(goExpression(agentModule, options, files));
      step('close sent');
      const closed = await waitPortClosed(pid, found.port, left(closeBy));
      c.close();
      // Not closed: the close waits behind whatever holds the main thread; taking `go` away
      // makes it close the port and load nothing when it runs. Should `go` be gone already,
      // the close ran at the last moment (it renames `go` right after closing): go on.
      if (!closed && tryUnlink(files.go)) throw blocked(pid, "run ispy's close", WINDOW_MS);
      timings.closed = since();
      step('port closed');
      openMs = Math.round(timings.closed);
      watcher.release();
      released = true;
    } catch (err) {
      // Every error path closes the inspector too, or leaves a watcher that will.
      const mismatch = isIspyError(err) && err.details?.otherProcess !== undefined;
      const wasBlocked = isIspyError(err) && err.details?.blocked === true;
      const state = await closeAfterFailure(pid, target.innerPid, found, conn, closeBy, mismatch);
      let note = '';
      if (state === 'closed') {
        watcher.release();
        released = true;
        if (wasBlocked) note = '; its inspector is closed again: try again later';
      } else {
        watcher.handOver();
        if (state === 'not-open') note = watcherNote(pid, watcher);
        else if (state === 'unreachable') note = `; WARNING: process ${pid}'s inspector is open on port ${found!.port} and ispy cannot reach it: restart process ${pid}, or close it from a debugger`;
        else note = wasBlocked ? blockedNote(watcher, found!.port) : watcherNote(pid, watcher, found!.port);
      }
      step(released ? 'gave up; port closed' : 'gave up; port left open to the watcher');
      throw withNote(err, note);
    }
    // The inspector is closed; the agent finishes starting on its own.
    let outcome: StartOutcome | 'busy' | 'not-run' | undefined;
    try {
      outcome = await waitForOutcome(files, timeoutMs, startMs, signal);
    } catch (err) {
      throw withNote(err, `; the inspector is closed, and the agent may still be starting in process ${pid} (see \`ispy ps\`)`);
    }
    timings.agentReady = since();
    step('agent outcome read');
    if (outcome === 'busy') {
      throw new IspyError(
        'ISPY_ERR_UNAVAILABLE',
        `process ${pid}'s main thread is busy: it ran ispy's close between its own work (its inspector was open for ${openMs} ms and is closed) but has not come back to its event loop within ${timeoutMs} ms, so ispy loaded nothing and left nothing in it; try again when it is less busy, or with a longer --timeout`,
      );
    }
    if (outcome === 'not-run') {
      throw new IspyError(
        'ISPY_ERR_UNAVAILABLE',
        `process ${pid}'s inspector closed before ispy's close ran there (its own deadline, ${DEADLINE_MS} ms after ispy's first evaluation, or the app itself closed it); ispy loaded nothing; try again`,
      );
    }
    if (!outcome) {
      throw new IspyError('ISPY_ERR_UNAVAILABLE', `the agent in process ${pid} did not finish starting within ${startMs} ms (its inspector is closed; ${processAlive(pid) ? 'try `ispy ps` in a moment' : 'the process has exited'})`);
    }
    if (outcome.existing !== undefined) throw refuse(`process ${pid} already has an ispy agent (socket ${outcome.existing}); connect with \`ispy connect ${outcome.existing}\` (its inspector is closed)`);
    if (outcome.error !== undefined || typeof outcome.socket !== 'string') throw new IspyError('ISPY_ERR_UNAVAILABLE', `the agent did not start in process ${pid}: ${outcome.error ?? 'no socket'} (its inspector is closed)`);
    return {
      pid,
      socket: outcome.socket,
      inspectorHost: found.host,
      inspectorPort: found.port,
      inspectorOpenMs: openMs,
      inspectorReopened: outcome.reopened === true,
      timings,
      plugins: outcome.plugins ?? [],
      failedPlugins: outcome.failed ?? [],
    };
  } finally {
    // Anything unforeseen: the watcher keeps watching.
    if (!released) watcher.handOver();
    // Also what cancels a start the target has not claimed.
    rmSync(reportDir, { recursive: true, force: true });
  }
}

/**
 * Closes the port after a failure, by `closeBy` (the window's end): through our session if
 * it is still up, else a new one, with a close that checks the pid itself. 'closed' once the
 * port is seen closed (or the process is gone); 'not-open' when it has not opened (yet: a
 * blocked main thread opens it when it returns); 'unreachable' when /proc says the port is
 * the target's yet another process answered on it (we will not act on that one); 'open'.
 */
async function closeAfterFailure(
  pid: number,
  expectedPid: number,
  found: ListeningSocket | undefined,
  conn: InspectorConnection | undefined,
  closeBy: number,
  mismatch: boolean,
): Promise<'closed' | 'not-open' | 'unreachable' | 'open'> {
  if (!processAlive(pid) || (found && !listeningPorts(pid).includes(found.port))) {
    conn?.close();
    return 'closed';
  }
  if (!found) return 'not-open';
  if (!conn && mismatch) return 'unreachable';
  const left = closeBy - performance.now();
  let closed = false;
  if (conn && !conn.closed) closed = await closeInspector(pid, found.port, conn, Math.max(0, left), closeExpression(expectedPid));
  else {
    conn?.close();
    if (left > 0) closed = await closeWithNewSession(pid, expectedPid, found, left);
  }
  return closed || !processAlive(pid) ? 'closed' : 'open';
}

export interface AttachCommandFlags {
  socket?: string;
  config?: string;
  timeout: number;
  json?: boolean;
}

/** `ispy attach <pid>` as the CLI runs it: prints what happened, returns the exit status. */
export async function attachCommand(pidText: string, flags: AttachCommandFlags, io: { output: NodeJS.WritableStream }): Promise<number> {
  if (!/^\d+$/.test(pidText.trim())) throw new IspyError('ISPY_ERR_USAGE', `"${pidText}" is not a process id (expected a number, such as 4242)`);
  const pid = Number(pidText.trim());
  if (flags.config !== undefined && !existsSync(flags.config)) throw new IspyError('ISPY_ERR_USAGE', `--config ${flags.config}: file not found`);
  // Ctrl-C (or SIGTERM) while the inspector is open: stop, close it, then exit.
  const ctl = new AbortController();
  const onSignal = () => ctl.abort();
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  process.once('SIGHUP', onSignal);
  let r: AttachResult;
  try {
    r = await attach(pid, {
      timeoutMs: flags.timeout,
      signal: ctl.signal,
      ...(flags.socket !== undefined ? { socket: flags.socket } : {}),
      ...(flags.config !== undefined ? { config: flags.config } : {}),
    });
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    process.off('SIGHUP', onSignal);
  }
  const connectLine = `ispy connect ${r.socket}`;
  if (flags.json) {
    const out = {
      pid: r.pid,
      socket: r.socket,
      inspector: { host: r.inspectorHost, port: r.inspectorPort, openMs: r.inspectorOpenMs, closed: true, reopened: r.inspectorReopened },
      // Milliseconds from the signal: port seen, session checked, port closed, agent ready.
      timings: r.timings,
      plugins: r.plugins,
      failedPlugins: r.failedPlugins,
      connect: connectLine,
    };
    io.output.write(`${JSON.stringify(out)}\n`);
    return 0;
  }
  const lines = [
    `attached to process ${r.pid}: agent listening on ${r.socket}`,
    `inspector was open on ${r.inspectorHost}:${r.inspectorPort} for ${r.inspectorOpenMs} ms (open to local users for that window), now closed`,
    ...(r.inspectorReopened ? [`Node reopened it when process ${r.pid}'s main thread, busy when signalled, came back to its event loop; it was closed again in that same loop turn`] : []),
    `plugins: ${r.plugins.join(', ') || '(none)'}`,
    ...r.failedPlugins.map((f) => `failed plugin ${f.name}: ${f.message}`),
    `connect with: ${connectLine}`,
  ];
  io.output.write(`${lines.join('\n')}\n`);
  return 0;
}
