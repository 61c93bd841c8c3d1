// `ispy attach <pid>`: load the agent into a running Node process that was started
// without it. Linux only (it reads /proc).
//
//   check the pid (procfs.ts): it exists, is ours (same uid), in our network and mount
//     namespaces, runs a Node binary that catches SIGUSR1, has no agent and no inspector
//     open, and the address its inspector would take is loopback and free
//   start the watcher (attach-watch.ts), the safety net should we die or give up
//   SIGUSR1 ─► the target opens its inspector (Node's documented signal)
//   find the port among the target's own listening sockets, never by guessing 9229
//   connect, check process.pid through the session: we talk to the target, nobody else
//   one evaluation in the target: inspector.close(), then (next tick) startAgent() unless
//     an agent is already there (globalThis[Symbol.for('ispy.agent')])
//   wait until the port is really closed; release the watcher
//   read the agent's start-up outcome from a file the target writes in a 0700 folder of ours
//
// Security note: while the inspector port is open, any local user who can connect to
// 127.0.0.1 can connect to it and run code in the target. It is open from the signal to
// the observed close (typically 40-130 ms, and reported), not during the agent's start-up.
// Every path closes it: on success and on errors through our session (a new one if ours is
// gone); if we die or give up (SIGKILL, a crash, a main thread blocked in native code that
// opens the inspector only after we have gone), through the watcher, which closes it as soon
// as it sees it (pid checked through the session too).

import { spawn } from 'node:child_process';
import { existsSync, lstatSync, mkdtempSync, readFileSync, readlinkSync, rmSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { finalSocketPath, processAlive } from '../protocol/socket-path';
import { connect } from '../client/index';
import { IspyError, isIspyError } from '../protocol/errors';
import { closeInspector, closeWithNewSession, interrupted, isInspector, openVerifiedSession, sleep, type InspectorConnection } from './inspector-client';
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
  /** Longest wait for each step (the agent's own start-up gets at least 15 s). */
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
  /** Milliseconds from the signal to each step: port seen, session checked, port closed, agent ready. */
  timings: { portOpen: number; session: number; closed: number; agentReady: number };
  plugins: string[];
  failedPlugins: { name: string; message: string }[];
}

/** How long a watcher keeps watching for an inspector that opens after we gave up. */
export const LATE_WATCH_MS = 5 * 60_000;
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

export interface TargetInfo {
  pid: number;
  /** The pid the target sees for itself (differs inside a pid namespace). */
  innerPid: number;
  exe: string;
  /** Where its inspector will listen once signalled. */
  inspect: { host: string; port: number };
}

/** Checks the target before anything is done to it; throws a refusal naming the reason. */
export async function checkTarget(pid: number): Promise<TargetInfo> {
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
  // Without Node's handler, SIGUSR1 would end the process (default) or do nothing (ignored).
  const caught = BigInt(`0x${statusField(pid, 'SigCgt') ?? '0'}`);
  const ignored = BigInt(`0x${statusField(pid, 'SigIgn') ?? '0'}`);
  if ((ignored & SIGUSR1_BIT) !== 0n) throw refuse(`process ${pid} ignores SIGUSR1, so its inspector cannot be opened`);
  if ((caught & SIGUSR1_BIT) === 0n) {
    throw refuse(`process ${pid} does not handle SIGUSR1 (started with --disable-sigusr1?); the signal would end it, so ispy does not send it`);
  }

  const cmdline = (readProc(pid, 'cmdline') ?? '').split('\0').filter((a, i, all) => a !== '' || i < all.length - 1);
  const env = environOf(pid);
  // An agent is found here without opening the inspector; one this misses is found
  // through the session (its marker on globalThis) and the inspector closed at once.
  const sockets = agentLikeSockets(pid);
  const answers = await Promise.all(sockets.map((socket) => agentAnswersAt(socket, pid)));
  const agentSocket = answers.find((a) => a !== undefined);
  if (agentSocket) throw refuse(`process ${pid} already has an ispy agent (socket ${agentSocket}); connect with \`ispy connect ${agentSocket}\``);
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

/** Polls the target's listening sockets for a new one that answers as an inspector. */
async function findNewInspector(pid: number, before: Set<number>, timeoutMs: number, signal?: AbortSignal): Promise<ListeningSocket | undefined> {
  const notInspector = new Set<number>();
  // Every moment between the bind and our seeing it is exposure: poll often.
  for (const deadline = Date.now() + timeoutMs; Date.now() < deadline; await sleep(2, signal)) {
    for (const s of listeningSockets(pid)) {
      if (before.has(s.port) || notInspector.has(s.port)) continue;
      if (await isInspector(s.host, s.port, Math.min(1000, timeoutMs))) return s;
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

/** An IspyError (a plain one, from a socket or the inspector, becomes ISPY_ERR_INSPECTOR) with the note appended. */
function withNote(err: unknown, note: string): IspyError {
  if (isIspyError(err) && !note) return err;
  const message = err instanceof Error ? err.message : String(err);
  const text = isIspyError(err) ? message : `talking to the inspector of the process: ${message}`;
  return new IspyError(isIspyError(err) ? err.code : 'ISPY_ERR_INSPECTOR', `${text}${note}`, { cause: err });
}

/**
 * Runs in the target, in one evaluation: closes the inspector, then (next tick, once the
 * port is gone) starts the agent, unless one is already there. The outcome goes to
 * `resultFile`, in a 0700 folder of ours, since the close ends our session before any
 * answer: so the port is open for the signal and two round trips, never for the agent's
 * start-up.
 */
function goExpression(agentModule: string, options: Record<string, unknown>, resultFile: string): string {
  return `(() => {
    const fs = require('node:fs');
    // The console's require exists only during this evaluation: keep the function itself.
    const load = require;
    const out = ${JSON.stringify(resultFile)};
    const report = (r) => {
      try {
        fs.writeFileSync(out + '.part', JSON.stringify(r), { mode: 0o600 });
        fs.renameSync(out + '.part', out);
      } catch {}
    };
    const message = (e) => (e && e.message ? e.message : String(e));
    try {
      load('node:inspector').close();
    } catch (e) {
      return report({ error: 'inspector.close() failed: ' + message(e) });
    }
    const existing = globalThis[Symbol.for('ispy.agent')];
    if (existing) return report({ existing: String(existing.socket) });
    setImmediate(() => {
      try {
        load(${JSON.stringify(agentModule)}).startAgent(${JSON.stringify(options)}).then(
          (a) => report({ socket: a.socket, plugins: a.plugins, failed: a.failedPlugins.map((f) => ({ name: f.name, message: f.error && f.error.message ? f.error.message : String(f.error) })) }),
          (e) => report({ error: message(e) }),
        );
      } catch (e) {
        report({ error: message(e) });
      }
    });
  })()`;
}

interface StartOutcome {
  existing?: string;
  socket?: string;
  plugins?: string[];
  failed?: { name: string; message: string }[];
  error?: string;
}

async function waitForOutcome(file: string, timeoutMs: number, signal?: AbortSignal): Promise<StartOutcome | undefined> {
  for (const deadline = Date.now() + timeoutMs; Date.now() < deadline; await sleep(10, signal)) {
    let text: string;
    try {
      text = readFileSync(file, 'utf8');
    } catch {
      continue;
    }
    try {
      return JSON.parse(text) as StartOutcome;
    } catch {
      return { error: 'its start-up report was unreadable' };
    }
  }
  return undefined;
}

export async function attach(pid: number, opts: AttachOptions = {}): Promise<AttachResult> {
  const timeoutMs = opts.timeoutMs ?? 5000;
  const startMs = Math.max(timeoutMs, 15_000);
  const signal = opts.signal;
  const target = await checkTarget(pid);
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
  const resultFile = path.join(reportDir, 'started.json');

  const before = new Set(listeningPorts(pid));
  const watcher = await startWatcher(pid, target.innerPid, before, timeoutMs, reportDir);
  let released = false;
  const signalled = performance.now();
  let found: ListeningSocket | undefined;
  let conn: InspectorConnection | undefined;
  let openMs: number;
  const timings = { portOpen: 0, session: 0, closed: 0, agentReady: 0 };
  const since = () => Math.round((performance.now() - signalled) * 10) / 10;
  try {
    process.kill(pid, 'SIGUSR1');
    try {
      found = await findNewInspector(pid, before, timeoutMs, signal);
      if (!found) {
        throw refuse(`process ${pid} did not open its inspector within ${timeoutMs} ms: its main thread may be blocked in native code (try again later, or with a longer --timeout), or the app handles SIGUSR1 itself`);
      }
      timings.portOpen = since();
      conn = await openVerifiedSession(pid, target.innerPid, found.host, found.port, timeoutMs, signal);
      timings.session = since();
      const c = conn;
      conn = undefined;
      if (!(await closeInspector(pid, found.port, c, timeoutMs, goExpression(agentModule, options, resultFile)))) {
        watcher.handOver();
        throw new IspyError(
          'ISPY_ERR_INSPECTOR',
          `the inspector of process ${pid} did not close within ${timeoutMs} ms (its main thread is busy or blocked; the agent starts when it is free)${watcherNote(pid, watcher, found.port)}`,
        );
      }
      timings.closed = since();
      openMs = Math.round(timings.closed);
      watcher.release();
      released = true;
    } catch (err) {
      // Every error path closes the inspector too, or leaves a watcher that will.
      const mismatch = isIspyError(err) && err.details?.otherProcess !== undefined;
      const note = await closeAfterFailure(pid, target.innerPid, found, conn, timeoutMs, mismatch, watcher);
      released = note === '';
      if (released) watcher.release();
      throw withNote(err, note);
    }
    // The inspector is closed; the agent finishes starting on its own.
    let outcome: StartOutcome | undefined;
    try {
      outcome = await waitForOutcome(resultFile, startMs, signal);
    } catch (err) {
      throw withNote(err, `; the inspector is closed, and the agent may still be starting in process ${pid} (see \`ispy ps\`)`);
    }
    timings.agentReady = since();
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
      timings,
      plugins: outcome.plugins ?? [],
      failedPlugins: outcome.failed ?? [],
    };
  } finally {
    // Anything unforeseen: the watcher keeps watching.
    if (!released) watcher.handOver();
    rmSync(reportDir, { recursive: true, force: true });
  }
}

/** Returns '' once the inspector is seen closed; else hands over to the watcher and returns a note for the error message. */
async function closeAfterFailure(
  pid: number,
  expectedPid: number,
  found: ListeningSocket | undefined,
  conn: InspectorConnection | undefined,
  timeoutMs: number,
  mismatch: boolean,
  watcher: Watcher,
): Promise<string> {
  if (!processAlive(pid)) {
    conn?.close();
    return '';
  }
  if (!found) {
    // Not open (yet): with a blocked main thread it opens when the thread returns.
    watcher.handOver();
    return watcherNote(pid, watcher);
  }
  if (!listeningPorts(pid).includes(found.port)) {
    conn?.close();
    return '';
  }
  if (!conn && mismatch) {
    // /proc says the port is the target's, yet another process answered on it: we cannot
    // reach the target's inspector, and will not act on the other process.
    watcher.handOver();
    return `; WARNING: process ${pid}'s inspector is open on port ${found.port} and ispy cannot reach it: restart process ${pid}, or close it from a debugger`;
  }
  const closed = conn ? await closeInspector(pid, found.port, conn, timeoutMs) : await closeWithNewSession(pid, expectedPid, found, timeoutMs);
  if (closed || !processAlive(pid)) return '';
  watcher.handOver();
  return watcherNote(pid, watcher, found.port);
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
      inspector: { host: r.inspectorHost, port: r.inspectorPort, openMs: r.inspectorOpenMs, closed: true },
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
    `plugins: ${r.plugins.join(', ') || '(none)'}`,
    ...r.failedPlugins.map((f) => `failed plugin ${f.name}: ${f.message}`),
    `connect with: ${connectLine}`,
  ];
  io.output.write(`${lines.join('\n')}\n`);
  return 0;
}
