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
  port: MessagePort;
  ispyVersion: string;
  startedAt: number;
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
  const bridge = new MainBridge(data.port, heartbeat, data.config.limits.mainThreadTimeoutMs);
  const inspector = new MainThreadInspector(data.config.limits.inspectorTimeoutMs, heartbeat);
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
  });
  parent.unref();

  try {
    await registry.load(data.plugins, data.failedPlugins);
    server = new AgentServer(registry, {
      maxFrameBytes: data.config.limits.maxFrameBytes,
      maxConnections: data.config.limits.maxConnections,
      ...(data.config.audit ? { audit: data.config.audit } : {}),
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
    if (data.config.socket === undefined) {
      // Our own folder: tidy the sockets of agents that died without removing theirs.
      void sweepStaleSockets(defaultSocketDir()).catch(() => {});
    }
    // The listener keeps this worker's own loop alive; the Worker object is unref'd on the
    // main thread, so none of this keeps the app's process alive.
    bound = await bindSocket(server.listener, data.socketPath);
    if (stopping) return;
    status({ t: 'ready', socket: bound, failedPlugins: registry.failed });
    sweepPartialArtefacts(data.runtime.settings.outputDir);
    compactor.schedule();
  } catch (err) {
    status({ t: 'failed', error: toWireError(err) });
    await stop();
  }
}

void main();
