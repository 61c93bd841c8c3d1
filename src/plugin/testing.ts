// Running a plugin's commands in-process, for the plugin author's unit tests: no socket,
// no worker, the same argument validation, setup, lifetime and context as in the agent.
//
//   const h = await loadForTest(myPlugin);
//   expect(await h.run('greet', { name: 'Ada' })).toEqual({ greeting: 'hello, Ada' });
//   await h.close();   // runs every undo the plugin registered
//
// Both setups (main and worker) run in the calling thread. Worker commands get an
// inspector session on this same thread, which is enough for Runtime/Profiler/HeapProfiler
// calls; pausing this thread (a main-thread stack capture) is not possible in-process, so
// captureStack() reports the thread as idle.

import { Session } from 'node:inspector';
import * as os from 'node:os';
import * as path from 'node:path';
import { mkdtempSync, rmdirSync } from 'node:fs';
import { IspyError } from '../protocol/errors';
import { toJsonSafe } from '../protocol/index';
import type { AgentSettings, InspectorAccess, MainThreadAccess, Plugin } from './define';
import { definePlugin } from './define';
import { ClientListeners, findCommand, runCall, setupPlugin, validateArgs, type LoadedPlugin, type RuntimeOptions } from '../agent/runtime';

/** Every call in a harness comes from this one pretend client. */
const TEST_CLIENT = { id: 1, name: 'test' };
import { artefactSink } from '../agent/artefacts';
import { setQuiet } from '../agent/log';

export interface TestHarnessOptions {
  /** The plugin's options, as `pluginOptions.<name>` in the config would give them. */
  options?: unknown;
  settings?: Partial<AgentSettings>;
  /** Show the plugin's log lines (default: silent). */
  verbose?: boolean;
}

export interface TestHarness {
  /** Runs a command with JSON args (validated like the agent does); a stream's items come back as an array. */
  run(command: string, args?: Record<string, unknown>, opts?: { signal?: AbortSignal; maxItems?: number }): Promise<unknown>;
  /** Progress updates and artefact paths the last run reported. */
  readonly progress: { done?: number; total?: number; message?: string }[];
  readonly artefacts: string[];
  /** Pretends the client disconnected: runs what the plugin tied to ctx.client.onDisconnect. */
  disconnect(): void;
  /** Runs every undo the plugin registered, as agent stop would. Idempotent. */
  close(): Promise<void>;
}

function sameThreadInspector(timeoutMs: number): InspectorAccess & { close(): void } {
  const session = new Session();
  session.connect();
  const post = <T>(method: string, params: Record<string, unknown> = {}, opts: { timeoutMs?: number } = {}) =>
    new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => reject(new IspyError('ISPY_ERR_INSPECTOR', `inspector ${method} timed out`)), opts.timeoutMs ?? timeoutMs);
      timer.unref();
      session.post(method, params, (err, res) => {
        clearTimeout(timer);
        if (err) reject(new IspyError('ISPY_ERR_INSPECTOR', `inspector ${method} failed: ${err.message}`));
        else resolve(res as T);
      });
    });
  return {
    post,
    on(event, listener) {
      const wrapped = (m: { params: unknown }) => listener(m.params);
      session.on(event, wrapped);
      return () => session.off(event, wrapped);
    },
    async withDomains(domains, fn) {
      for (const d of domains) await post(`${d}.enable`);
      try {
        return await fn();
      } finally {
        for (const d of domains) session.post(`${d}.disable`, () => {});
      }
    },
    close: () => session.disconnect(),
  };
}

export async function loadForTest(plugin: Plugin, opts: TestHarnessOptions = {}): Promise<TestHarness> {
  definePlugin(plugin);
  setQuiet(!opts.verbose);
  // A folder of its own for artefacts unless the test names one; close() removes it if the
  // test left nothing in it.
  const madeOutputDir = opts.settings?.outputDir === undefined;
  const outputDir = opts.settings?.outputDir ?? mkdtempSync(path.join(os.tmpdir(), 'ispy-test-'));
  const removeOwnOutputDir = () => {
    if (!madeOutputDir) return;
    try {
      rmdirSync(outputDir);
    } catch {
      // artefacts the test made are left for it to read
    }
  };
  const settings: AgentSettings = {
    traces: opts.settings?.traces ?? [],
    outputDir,
    redact: opts.settings?.redact ?? [],
    limits: opts.settings?.limits ?? {},
    eval: opts.settings?.eval ?? false,
    // The harness runs no server, so it keeps no audit log.
    audit: opts.settings?.audit ?? false,
  };
  const app = { pid: process.pid, argv: [...process.argv], execArgv: [...process.execArgv], execPath: process.execPath, agentStartedAt: Date.now() };
  const base = { app, settings, pluginOptions: { [plugin.name]: opts.options }, setupTimeoutMs: 5000 };
  const mainOpts: RuntimeOptions = { ...base, thread: 'main' };
  const workerOpts: RuntimeOptions = { ...base, thread: 'worker' };
  const main: LoadedPlugin = await setupPlugin(plugin, 'test', mainOpts).catch((err: unknown) => {
    removeOwnOutputDir();
    throw err;
  });
  let worker: LoadedPlugin;
  try {
    worker = await setupPlugin(plugin, 'test', workerOpts);
  } catch (err) {
    await main.lifetime.close();
    removeOwnOutputDir();
    throw err;
  }
  let inspector: (InspectorAccess & { close(): void }) | undefined;
  const progress: { done?: number; total?: number; message?: string }[] = [];
  const artefacts: string[] = [];
  const running = new Set<AbortController>();
  const clients = new ClientListeners();
  let closed = false;

  const run = async (name: string, args: Record<string, unknown> = {}, o: { signal?: AbortSignal; maxItems?: number } = {}): Promise<unknown> => {
    if (closed) throw new IspyError('ISPY_ERR_AGENT_STOPPED', 'the test harness is closed');
    const cmd = findCommand(plugin, name);
    const values = validateArgs(plugin.name, name, cmd, args);
    const onMain = cmd.thread === 'main';
    const controller = new AbortController();
    o.signal?.addEventListener('abort', () => controller.abort(), { once: true });
    running.add(controller);
    const items: unknown[] = [];
    progress.length = 0;
    const mainThread: MainThreadAccess = {
      heartbeatAgeMs: () => 0,
      stuck: () => false,
      captureStack: async () => ({ state: 'idle', heartbeatAgeMs: 0 }),
      evaluate: async (expression) => {
        inspector ??= sameThreadInspector(2000);
        const res = await inspector.post<{ result: { value?: unknown } }>('Runtime.evaluate', { expression, returnByValue: true });
        return res.result.value;
      },
      call: (command, a) => run(command, a),
    };
    const value = await runCall(
      onMain ? main : worker,
      cmd,
      values,
      controller.signal,
      {
        data: (item) => {
          items.push(toJsonSafe(item));
          if (o.maxItems !== undefined && items.length >= o.maxItems) controller.abort();
        },
        progress: (u) => progress.push(u),
      },
      {
        client: clients.handle(TEST_CLIENT),
        artefacts: artefactSink(settings.outputDir, (written) => void artefacts.push(written.path)),
        ...(onMain
          ? {}
          : {
              mainThread,
              get inspector() {
                inspector ??= sameThreadInspector(2000);
                return inspector;
              },
            }),
      },
      onMain ? mainOpts : workerOpts,
    )
      .catch((err) => {
        // A stream stopped by maxItems is a normal end in a test.
        if (err instanceof IspyError && err.code === 'ISPY_ERR_CANCELLED' && o.maxItems !== undefined && items.length >= o.maxItems) return undefined;
        throw err;
      })
      .finally(() => running.delete(controller));
    return typeof cmd.stream === 'function' ? items : toJsonSafe(value);
  };

  return {
    run,
    progress,
    artefacts,
    disconnect: () => {
      for (const c of running) c.abort();
      clients.closed(TEST_CLIENT.id);
    },
    async close() {
      if (closed) return;
      closed = true;
      // As agent stop does: running calls are cancelled before anything is undone.
      for (const c of running) c.abort();
      clients.closeAll();
      await worker.lifetime.close();
      await main.lifetime.close();
      inspector?.close();
      removeOwnOutputDir();
    },
  };
}

/** Loads the plugin, runs one command, and unloads it again. */
export async function runCommand(plugin: Plugin, command: string, args: Record<string, unknown> = {}, opts: TestHarnessOptions = {}): Promise<unknown> {
  const h = await loadForTest(plugin, opts);
  try {
    return await h.run(command, args);
  } finally {
    await h.close();
  }
}
