// Runs on the app's main thread: startAgent()/stopAgent(). Reads the config, loads the
// plugins' main-thread side, starts the heartbeat and the agent worker, and removes the
// socket when the process exits. Everything is unref'd: the agent never keeps the app
// alive, and it never changes how the app exits.

import type { Worker } from 'node:worker_threads';
import { readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { IspyError, fromWireError } from '../protocol/errors';
import type { FailedPlugin } from '../protocol/index';
import { DEFAULT_AUDIT_NAME, configCandidate, loadConfig, type AgentOptions, type ResolvedConfig } from './config';
import type { PermissionApi } from './permission';
import { MainHost, isLateBuiltin, locatePlugins } from './main-host';
import type { HeartbeatWriter } from './heartbeat';
import { defaultSocketDir } from '../protocol/socket-path';
import type { BoundSocket } from './socket';
import type { RuntimeOptions } from './runtime';
import type { AgentWorkerData } from './worker';
import type { WorkerControl, WorkerStatus } from './rpc';
import { agentLog } from './log';
import { packageRoot } from './paths';
import { likelyMainThread } from './thread';
import { recordedFromStart, stopRecording } from './early';

// Loaded once the plugins' main-thread setup is done (after the app's first line; only that
// setup must see the app start), since these (node:net among them) add milliseconds to every
// start.
const sockets = (): typeof import('./socket') => require('./socket');
const dirs = (): typeof import('./dirs') => require('./dirs');
const heartbeats = (): typeof import('./heartbeat') => require('./heartbeat');
// node:worker_threads loads node:stream: kept off the first line too (src/agent/thread.ts).
const workerThreads = (): typeof import('node:worker_threads') => require('node:worker_threads');
const rpc = (): typeof import('./rpc') => require('./rpc');
// Only under Node's permission model.
const permissions = (): typeof import('./permission') => require('./permission');

export interface AgentHandle {
  /** The socket clients connect to. */
  socket: string;
  pid: number;
  /** Names of the plugins that loaded. */
  plugins: string[];
  failedPlugins: FailedPlugin[];
  /** Stops the agent and undoes everything it did. Idempotent. */
  stop(): Promise<void>;
}

const STOP_TIMEOUT_MS = 3000;
/** How long an exiting app waits for the worker to close its inspector session (measured: ~1 ms). */
const EXIT_SESSION_WAIT_MS = 200;

/**
 * Set on globalThis while an agent is running: `ispy attach` reads it through the
 * inspector to refuse a process that already has one, whichever copy of ispy started it
 * (hence Symbol.for).
 */
const AGENT_MARKER = Symbol.for('ispy.agent');

export function ispyVersion(): string {
  try {
    return (JSON.parse(readFileSync(path.join(packageRoot(), 'package.json'), 'utf8')) as { version: string }).version;
  } catch {
    return 'unknown';
  }
}

class Agent implements AgentHandle {
  socket = '';
  readonly pid = process.pid;
  plugins: string[] = [];
  failedPlugins: FailedPlugin[] = [];
  private worker: Worker | undefined;
  private host: MainHost | undefined;
  /** Made with the worker, after the app's first line. */
  private heartbeat: HeartbeatWriter | undefined;
  private bound: BoundSocket | undefined;
  private stopping: Promise<void> | undefined;
  private workerGone: Promise<void> = Promise.resolve();
  /** What globalThis[AGENT_MARKER] holds while this agent runs. */
  private marker: { socket: string; version: string; pid: number } | undefined;
  /**
   * The socket goes on 'exit': a normal end, process.exit(), and an app's own SIGINT or
   * SIGTERM handler that exits. No signal listener of ours: a JavaScript listener only
   * runs when the event loop turns, so it would make a stuck process (the one ispy is for)
   * ignore SIGTERM until SIGKILL. An app that dies of a signal leaves a stale socket,
   * which clients report as stale, the next agent sweeps from the default folder, and
   * `ispy ps --clean` removes.
   */
  private readonly onExit = () => {
    this.releaseMainSession();
    this.removeSocketNow();
  };

  /**
   * An inspector session of the worker's still connected to this thread when the process
   * exits (a `profile cpu` running, a `process stack` in flight) makes Node print "Waiting
   * for the debugger to disconnect..." into the app's stderr. The worker's loop still turns
   * while this thread runs its 'exit' listeners: ask it to close the session and wait for
   * that, at most EXIT_SESSION_WAIT_MS (the exit is held only when a session is open).
   */
  private releaseMainSession(): void {
    if (!this.worker || !this.heartbeat?.sessionOpen()) return;
    try {
      this.worker.postMessage({ t: 'exit' } satisfies WorkerControl);
    } catch {
      return;
    }
    this.heartbeat?.waitSessionClosed(EXIT_SESSION_WAIT_MS);
  }

  async start(options: AgentOptions): Promise<void> {
    // Until the first await, this runs in one go from the preload: before the app's first
    // line when the config has traces or plugins, else at the end of the app's synchronous
    // start (src/agent/early.ts). Only what the plugins' main-thread setup needs happens here.
    // process.permission exists only while the model is on (src/agent/permission.ts).
    const model = typeof (process as { permission?: { has?: unknown } }).permission?.has === 'function' ? permissions().permissionModel() : undefined;
    // Under the permission model even looking for the config file needs a grant (existsSync
    // throws): without it, the folders are the ones the agent would use with no config.
    const configFile = model ? configCandidate(options) : undefined;
    const configUnreadable = model !== undefined && configFile !== undefined && !model.has('fs.read', configFile);
    const config = loadConfig(configUnreadable ? { ...options, config: false } : options);
    const outputDir = config.outputDir ?? defaultSocketDir();
    const auditFile = config.audit === false ? false : (config.audit ?? path.join(outputDir, DEFAULT_AUDIT_NAME));
    // Asked before anything is started, made or loaded: a refusal leaves the app untouched.
    if (model) {
      const refusal = permissionRefusal(model, config, outputDir, auditFile, configFile);
      if (refusal) throw refusal;
    }
    const runtime: RuntimeOptions = {
      thread: 'main',
      app: { pid: process.pid, argv: [...process.argv], execArgv: [...process.execArgv], execPath: process.execPath, agentStartedAt: Date.now(), sinceStart: recordedFromStart() },
      settings: {
        ...(config.file ? { configFile: config.file } : {}),
        traces: config.traces,
        outputDir,
        redact: config.redact,
        eval: config.eval,
        audit: auditFile,
        limits: { ...config.limits },
      },
      pluginOptions: config.pluginOptions,
      setupTimeoutMs: config.limits.setupTimeoutMs,
    };

    const located = locatePlugins(config);
    // Said once here, as a plugin that fails its setup is: a missing module is as silent otherwise.
    for (const f of located.failed) agentLog(`plugin ${f.name} not loaded: ${f.error.message}`);
    this.host = new MainHost(runtime);
    // Only the plugins whose main-thread setup must see the app from its first line load
    // now; the other built-ins (and their modules) wait until the app has started.
    const early = located.found.filter((l) => !isLateBuiltin(l, config));
    // A plugin of the config named like a late built-in is the duplicate, as if all loaded at once.
    this.host.reserve(located.found.filter((l) => isLateBuiltin(l, config)).map((l) => l.name!));
    const loadedEarly = await this.host.load(early);

    // From here on the app has started (a CommonJS app has run its first synchronous part).
    const loadedLate = await this.host.load(located.found.filter((l) => isLateBuiltin(l, config)));
    // Every plugin's main-thread setup has subscribed: what the app published while it
    // started has been handed over (src/agent/early.ts).
    stopRecording();
    // In the config's order, as if loaded together.
    const rank = (e: { location: string; source: string }) => located.found.findIndex((l) => l.location === e.location && l.source === e.source);
    const loaded = {
      ok: [...loadedEarly.ok, ...loadedLate.ok].sort((a, b) => rank(a) - rank(b)),
      failed: [...loadedEarly.failed, ...loadedLate.failed],
    };
    const failedOnMain = [...located.failed, ...loaded.failed];

    const { MessageChannel, Worker, isMainThread } = workerThreads();
    try {
      if (!isMainThread) throw new IspyError('ISPY_ERR_UNAVAILABLE', 'startAgent() must be called on the main thread');
      const { ensurePrivateDir, socketPathFor } = sockets();
      if (config.socket === undefined || config.outputDir === undefined) ensurePrivateDir(defaultSocketDir());
      this.socket = socketPathFor(config.socket, process.pid);
      // Checked now, not at the first artefact: a folder that can never be written (under
      // /proc, below a file) is a config mistake, said in one line while the app starts.
      for (const [key, dir] of [['outputDir', outputDir], ['audit', auditFile === false ? undefined : path.dirname(auditFile)]] as const) {
        const problem = dir === undefined ? undefined : dirs().folderProblem(dir);
        if (problem) throw new IspyError('ISPY_ERR_CONFIG', `${config.file ? `config ${config.file}: ` : ''}${key}: ${problem}`);
      }
    } catch (err) {
      // The plugins' main side is in place already: take it off again.
      await this.host.stop();
      throw err;
    }

    const heartbeat = (this.heartbeat = new (heartbeats().HeartbeatWriter)());
    heartbeat.start();
    const channel = new MessageChannel();
    const claims = rpc().Claims.buffer();
    this.host.attach(channel.port1, claims);
    const withheld = model ? permissions().inspectorWithheld(model) : undefined;
    const data: AgentWorkerData = {
      config,
      runtime,
      socketPath: this.socket,
      plugins: loaded.ok,
      failedPlugins: failedOnMain,
      heartbeat: heartbeat.buffer,
      claims,
      port: channel.port2,
      ispyVersion: ispyVersion(),
      startedAt: runtime.app.agentStartedAt,
      // Answered here: a worker may not see process.permission (above), and connecting to
      // this thread's inspector where the model withholds it aborts the process.
      ...(withheld ? { inspectorWithheld: withheld } : {}),
      ...(options.attachedBy ? { attachedBy: options.attachedBy } : {}),
    };
    const startWorker = (execArgv: string[]) =>
      new Worker(path.join(__dirname, 'worker-boot.js'), {
        workerData: data,
        transferList: [channel.port2],
        // No preloads (-r/--import ispy/register would start an agent inside the agent),
        // but the app's permission model, whose flags the worker would otherwise drop.
        execArgv,
        // An agent bug that exhausts the worker's heap ends the worker, not the app.
        resourceLimits: { maxOldGenerationSizeMb: 256, maxYoungGenerationSizeMb: 4 },
        name: 'ispy-agent',
      });
    let worker: Worker;
    // --no-warnings: Node repeats the app's SecurityWarning for each grant in the worker it
    // starts with them, and the agent says nothing into the app's output.
    const modelArgs = model ? permissions().modelFlags() : [];
    const flags = modelArgs.length ? [...modelArgs, '--no-warnings'] : [];
    try {
      worker = startWorker(flags);
    } catch (err) {
      // A Node whose workers take no permission flags (20: ERR_WORKER_INVALID_EXEC_ARGV):
      // its workers escape the model whatever the agent does, as Node warns of --allow-worker.
      if (!flags.length || (err as NodeJS.ErrnoException).code !== 'ERR_WORKER_INVALID_EXEC_ARGV') throw err;
      worker = startWorker([]);
    }
    this.worker = worker;
    this.workerGone = new Promise((resolve) => worker.once('exit', () => resolve()));

    const ready = new Promise<void>((resolve, reject) => {
      worker.on('message', (msg: WorkerStatus) => {
        if (msg.t === 'ready') {
          this.bound = msg.socket;
          this.failedPlugins = msg.failedPlugins;
          resolve();
        } else if (msg.t === 'failed') {
          reject(fromWireError(msg.error));
        }
      });
      worker.once('error', (err) => {
        agentLog(`agent worker failed: ${err.stack ?? err.message}`);
        reject(new IspyError('ISPY_ERR_AGENT_STOPPED', `agent worker failed: ${err.message}`));
        void this.stop();
      });
      worker.once('exit', (code) => {
        reject(new IspyError('ISPY_ERR_AGENT_STOPPED', `agent worker exited (code ${code}) before it was ready`));
        if (!this.stopping) void this.stop();
      });
    });
    // Listeners ref the worker again; unref after adding them.
    worker.unref();
    process.on('exit', this.onExit);

    try {
      await ready;
    } catch (err) {
      await this.stop();
      throw err;
    }
    const failedNames = new Set(this.failedPlugins.map((f) => f.name));
    this.plugins = loaded.ok.map((p) => p.name).filter((n) => !failedNames.has(n));
    this.marker = { socket: this.socket, version: ispyVersion(), pid: process.pid };
    (globalThis as Record<symbol, unknown>)[AGENT_MARKER] = this.marker;
  }

  private removeSocketNow(): void {
    if (this.bound) sockets().removeSocket(this.bound);
  }

  private unhookProcess(): void {
    process.off('exit', this.onExit);
  }

  stop(): Promise<void> {
    this.stopping ??= (async () => {
      // Code that awaits stopAgent() is owed its answer: hold the event loop until the stop
      // is done (bounded by STOP_TIMEOUT_MS), as launch() does while starting. Otherwise a
      // script with nothing else to do would exit mid-stop (an ES module's top-level await
      // with exit code 13).
      const holder = setInterval(() => {}, 60_000);
      try {
        await this.doStop();
      } finally {
        clearInterval(holder);
      }
    })();
    return this.stopping;
  }

  private async doStop(): Promise<void> {
    const worker = this.worker;
    if (worker) {
      try {
        worker.postMessage({ t: 'stop' });
      } catch {
        // already gone
      }
      const timer = setTimeout(() => void worker.terminate(), STOP_TIMEOUT_MS);
      timer.unref();
      await Promise.race([
        new Promise<void>((resolve) => {
          const onMsg = (m: WorkerStatus) => m.t === 'stopped' && resolve();
          worker.on('message', onMsg);
          worker.unref();
        }),
        this.workerGone,
      ]);
      clearTimeout(timer);
      await worker.terminate();
      await this.workerGone;
    }
    this.worker = undefined;
    await this.host?.stop();
    this.heartbeat?.stop();
    this.removeSocketNow();
    this.unhookProcess();
    const g = globalThis as Record<symbol, unknown>;
    if (this.marker && g[AGENT_MARKER] === this.marker) delete g[AGENT_MARKER];
    if (current === this) current = undefined;
  }
}

/** Whether `dir` is a sticky folder others can write (such as /tmp): the socket is then bound in the default folder (socket.ts). */
function sharedFolder(model: PermissionApi, dir: string): boolean {
  if (!model.has('fs.read', dir)) return false;
  try {
    const st = statSync(dir);
    return (st.mode & 0o022) !== 0 && (st.mode & 0o1000) !== 0;
  } catch {
    return false;
  }
}

/**
 * The start-up refusal under the permission model, when it withholds a grant the agent
 * needs: its worker, its own files and config, the folders it writes (the socket's, the
 * default one the socket or artefacts go in, the artefacts', the audit log's), and on a
 * line that has the scope, the network (its socket's listen).
 */
function permissionRefusal(model: PermissionApi, config: ResolvedConfig, outputDir: string, auditFile: string | false, configFile: string | undefined): IspyError | undefined {
  const socketDir = path.dirname(sockets().socketPathFor(config.socket, process.pid));
  const readWrite = [socketDir, outputDir];
  if (auditFile !== false) readWrite.push(path.dirname(auditFile));
  if (config.socket === undefined || config.outputDir === undefined || sharedFolder(model, socketDir)) readWrite.push(defaultSocketDir());
  const own = { folder: packageRoot(), files: [path.join(packageRoot(), 'package.json'), path.join(__dirname, 'worker.js')] };
  const { missingGrants, refusalMessage } = permissions();
  const flags = missingGrants(model, { read: configFile ? [configFile] : [], readInside: [own], readWrite });
  return flags.length ? new IspyError('ISPY_ERR_UNAVAILABLE', refusalMessage(model, flags)) : undefined;
}

let current: Agent | undefined;
let starting: Promise<AgentHandle> | undefined;

/**
 * Starts the agent in this process. Resolves once the socket accepts connections. A
 * second call returns the running agent. Throws an IspyError (ISPY_ERR_CONFIG,
 * ISPY_ERR_SOCKET, …) with a one-line message when it cannot start; the app is untouched.
 */
export function startAgent(options: AgentOptions = {}): Promise<AgentHandle> {
  return launch(options, true);
}

/**
 * `hold`: keep the event loop alive until the agent is up or has failed. Code that awaits
 * startAgent() before doing anything else would otherwise see its process exit mid-start
 * (the agent's own handles are unref'd). The preload does not hold: it must never delay
 * the exit of a short script.
 */
export function launch(options: AgentOptions, hold: boolean): Promise<AgentHandle> {
  if (!likelyMainThread()) return Promise.reject(new IspyError('ISPY_ERR_UNAVAILABLE', 'startAgent() must be called on the main thread'));
  if (current) return Promise.resolve(current);
  starting ??= (async () => {
    const agent = new Agent();
    const holder = hold ? setInterval(() => {}, 60_000) : undefined;
    try {
      await agent.start(options);
      current = agent;
      return agent;
    } finally {
      // Also when the start failed: nothing the app publishes is held any longer.
      stopRecording();
      clearInterval(holder);
      starting = undefined;
    }
  })();
  return starting;
}

/** Stops the running agent, if any. Idempotent. */
export async function stopAgent(): Promise<void> {
  await current?.stop();
}

export function runningAgent(): AgentHandle | undefined {
  return current;
}
