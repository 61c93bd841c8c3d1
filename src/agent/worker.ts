// Runs in the agent worker thread (this file is the worker's entry point).
//
//   main thread ──workerData──► load plugins ─► bind socket ─► 'ready' ─► serve
//        ▲   port (main-thread commands)  │ inspector session (stack, eval)
//        └────────────────────────────────┘
//
// Everything the agent does while the app's event loop is blocked happens here: the
// socket keeps accepting, worker commands keep answering, main-thread commands time out
// with "main thread busy for N ms".

import { parentPort, workerData, type MessagePort } from 'node:worker_threads';
import * as fs from 'node:fs';
import * as os from 'node:os';
import { toWireError } from '../protocol/errors';
import type { FailedPlugin } from '../protocol/index';
import { bindSocket, sweepStaleSockets, defaultSocketDir, type BoundSocket } from './socket';
import { HeartbeatReader } from './heartbeat';
import { MainThreadInspector } from './inspector';
import { MainBridge } from './main-bridge';
import { Registry, type PluginEntry } from './registry';
import { AgentServer } from './server';
import { readFdLimit } from './admission';
import { AuditLog, AUDIT_KEEP } from './audit';
import { WorkerHeapCompactor } from './compact';
import type { RuntimeOptions } from './runtime';
import type { ResolvedConfig } from './config';
import type { WorkerControl, WorkerStatus } from './rpc';
import { agentLog } from './log';

export interface AgentWorkerData {
  config: ResolvedConfig;
  runtime: RuntimeOptions;
  socketPath: string;
  plugins: PluginEntry[];
  failedPlugins: FailedPlugin[];
  heartbeat: SharedArrayBuffer;
  /** The claim table of main-thread calls (src/agent/rpc.ts). */
  claims: SharedArrayBuffer;
  port: MessagePort;
  ispyVersion: string;
  startedAt: number;
  /** Why the inspector is unavailable (Node's permission model withholds it), when it is. */
  inspectorWithheld?: string;
  /** Set when `ispy attach` loaded the agent: who did (for the audit log). */
  attachedBy?: { pid: number; user?: string; host?: string };
}

/**
 * Removes the partial artefacts agents killed mid-write left in the output folder, once
 * this agent is serving. Synchronous on purpose (one readdir, in this thread): an async one
 * would start libuv's thread pool in an app that may never use it. The sweep's code loads
 * only when the folder holds a `.partial` file at all: an idle agent does not carry it.
 */
function sweepPartialArtefacts(dir: string): void {
  try {
    const names = fs.readdirSync(dir);
    if (names.some((n) => n.endsWith('.partial'))) (require('./artefacts') as typeof import('./artefacts')).sweepPartialArtefacts(dir, names);
  } catch {
    // no folder yet, or not readable: nothing of ours to sweep
  }
}

async function main(): Promise<void> {
  const data = workerData as AgentWorkerData;
  const parent = parentPort!;
  const status = (msg: WorkerStatus) => parent.postMessage(msg);
  const heartbeat = new HeartbeatReader(data.heartbeat);
  const bridge = new MainBridge(data.port, heartbeat, data.config.limits.mainThreadTimeoutMs, data.claims);
  const inspector = new MainThreadInspector(data.config.limits.inspectorTimeoutMs, heartbeat, data.inspectorWithheld);
  const registry = new Registry({ ...data.runtime, thread: 'worker' }, bridge, inspector, heartbeat);
  const compactor = new WorkerHeapCompactor();
  let server: AgentServer | undefined;
  let bound: BoundSocket | undefined;
  let stopping = false;

  const stop = async () => {
    if (stopping) return;
    stopping = true;
    try {
      await server?.close();
      await registry.unload();
    } catch (err) {
      agentLog(`while stopping: ${(err as Error).message}`);
    }
    compactor.close();
    inspector.close();
    bridge.close();
    status({ t: 'stopped' });
    parent.close();
  };

  parent.on('message', (msg: WorkerControl) => {
    if (msg.t === 'stop') void stop();
    // The main thread is in its 'exit' listeners, waiting (bounded) for this.
    else if (msg.t === 'exit') inspector.close();
  });
  parent.unref();

  // Until the socket listens, nothing else keeps this thread's loop alive, and every timer
  // of the start-up (a plugin setup's timeout among them) is unref'd: a worker-side setup
  // that never settles would let the loop run dry and the worker exit, taking every plugin
  // with it. The Worker object is unref'd on the main thread, so this never holds the app.
  const starting = setInterval(() => {}, 60_000);
  try {
    await registry.load(data.plugins, data.failedPlugins);
    const auditFile = data.runtime.settings.audit;
    const audit = auditFile === false ? undefined : new AuditLog({ file: auditFile, maxBytes: data.config.limits.auditMaxBytes, keep: AUDIT_KEEP });
    server = new AgentServer(registry, {
      maxFrameBytes: data.config.limits.maxFrameBytes,
      maxConnections: data.config.limits.maxConnections,
      idleBeforeEvictionMs: data.config.limits.idleBeforeEvictionMs,
      fdLimit: readFdLimit,
      ...(audit ? { audit } : {}),
      // Start-up and each client visit leave garbage in this worker's heap: compact it
      // once nobody is connected, so an idle agent keeps no more memory than it needs.
      onActivity: (state) => (state === 'idle' ? compactor.schedule() : compactor.cancel()),
      welcome: () => ({
        pid: process.pid,
        title: process.title,
        hostname: os.hostname(),
        node: process.version,
        ispy: data.ispyVersion,
        startedAt: data.startedAt,
        socket: data.socketPath,
      }),
    });
    registry.agent = server;
    if (data.attachedBy) audit?.note({ event: 'attach', by: data.attachedBy, socket: data.socketPath });
    // Our own folder: tidy the sockets (and staging links) of agents that died without
    // removing theirs.
    const sweepOurFolder = () => void sweepStaleSockets(defaultSocketDir()).catch(() => {});
    if (data.config.socket === undefined) sweepOurFolder();
    // The listener keeps this worker's own loop alive; the Worker object is unref'd on the
    // main thread, so none of this keeps the app's process alive.
    bound = await bindSocket(server.listener, data.socketPath);
    // A socket in a folder others can write is bound in our folder too (its kept link).
    if (bound.staged !== undefined) sweepOurFolder();
    if (stopping) return;
    status({ t: 'ready', socket: bound, failedPlugins: registry.failed });
    sweepPartialArtefacts(data.runtime.settings.outputDir);
    compactor.schedule();
  } catch (err) {
    status({ t: 'failed', error: toWireError(err) });
    await stop();
  } finally {
    clearInterval(starting);
  }
}

void main();
