// Runs in the agent worker. The plugin registry: which plugins are loaded, their
// catalogue, and the dispatch of one call to the thread its command runs on.
//
// The catalogue comes from the main thread, which loaded every plugin already. Here a
// plugin's module is imported only when it has a worker setup or when one of its worker
// commands is first called: an idle agent does not carry every plugin twice.

import { IspyError, toWireError } from '../protocol/errors';
import type { CommandInfo, FailedPlugin, PluginInfo } from '../protocol/index';
import type { AgentAccess, InspectorAccess, MainThreadAccess } from '../plugin/define';
import { ClientListeners, closest, findCommand, importPlugin, requirePlugin, runCall, setupPlugin, type LoadedPlugin, type RuntimeOptions } from './runtime';
import { coerceArgs, usageLine, type ArgValues } from '../protocol/args';
import type { MainBridge } from './main-bridge';
import type { MainThreadInspector } from './inspector';
import type { HeartbeatReader } from './heartbeat';
import type { ClientRef, PluginLocation } from './rpc';
import { agentLog } from './log';

/** Loaded by the first command that runs: an idle agent never writes a file. */
const artefacts = (): typeof import('./artefacts') => require('./artefacts');

export interface DispatchSink {
  data(item: unknown): void;
  progress(update: { done?: number; total?: number; message?: string }): void;
  /** A file the command wrote; resolves once it has been announced (and sent, if fetched). */
  artefact(info: { path: string; name: string; size: number }): Promise<void>;
}

/** What the main thread tells the worker about each plugin it loaded. */
export interface PluginEntry extends PluginLocation {
  name: string;
  info: PluginInfo;
  hasWorkerSetup: boolean;
}

interface Slot {
  entry: PluginEntry;
  loaded?: Promise<LoadedPlugin>;
}

/** A call whose command was found and whose arguments were checked. */
export interface PreparedCall {
  readonly slot: Slot;
  readonly info: CommandInfo;
  readonly args: ArgValues;
}

export class Registry {
  private readonly plugins = new Map<string, Slot>();
  readonly failed: FailedPlugin[] = [];
  private readonly clients = new ClientListeners();
  /** The agent's own state for worker commands (ctx.agent); set once the server exists. */
  agent: AgentAccess | undefined;

  constructor(
    private readonly opts: RuntimeOptions,
    private readonly bridge: MainBridge,
    private readonly inspector: MainThreadInspector,
    private readonly heartbeat: HeartbeatReader,
  ) {}

  /** Takes the main thread's plugins; those with a worker setup are set up now, and one that fails here is unloaded there too. */
  async load(entries: PluginEntry[], failedOnMain: FailedPlugin[]): Promise<void> {
    this.failed.push(...failedOnMain);
    for (const entry of entries) this.plugins.set(entry.name, { entry });
    for (const entry of entries) {
      if (!entry.hasWorkerSetup) continue;
      try {
        await this.module(this.plugins.get(entry.name)!);
      } catch (err) {
        this.plugins.delete(entry.name);
        const error = toWireError(err, `loading ${entry.name}`);
        if (error.code === 'ISPY_ERR_PLUGIN_FAILED') error.code = 'ISPY_ERR_PLUGIN_LOAD';
        this.failed.push({ name: entry.name, source: entry.source, error });
        this.bridge.unloadPlugin(entry.name);
        agentLog(`plugin ${entry.name} not loaded: ${error.message}`);
      }
    }
  }

  /** The plugin's module in this thread, imported (and its worker setup run) on first need. */
  private module(slot: Slot): Promise<LoadedPlugin> {
    // A CommonJS plugin (every built-in) is required, as the main thread loads it: import()
    // would start Node's ES module loader in this thread, ~20 ms of a first visit's CPU.
    slot.loaded ??= Promise.resolve()
      .then(() => requirePlugin(slot.entry.location) ?? importPlugin(slot.entry.location))
      .then((plugin) => setupPlugin(plugin, slot.entry.source, this.opts));
    return slot.loaded;
  }

  catalogue(): PluginInfo[] {
    return [...this.plugins.values()].map((s) => s.entry.info);
  }

  private lookup(name: string): Slot {
    const loaded = this.plugins.get(name);
    if (loaded) return loaded;
    const names = [...this.plugins.keys()];
    const failed = this.failed.find((f) => f.name === name);
    if (failed) throw new IspyError('ISPY_ERR_UNKNOWN_PLUGIN', `plugin "${name}" failed to load: ${failed.error.message}`);
    const near = closest(name, names);
    throw new IspyError(
      'ISPY_ERR_UNKNOWN_PLUGIN',
      `no plugin "${name}"${near ? `; did you mean "${near}"?` : ''} (loaded: ${names.join(', ') || 'none'})`,
    );
  }

  private mainThreadFor(pluginName: string, client: ClientRef): MainThreadAccess {
    return {
      heartbeatAgeMs: () => this.heartbeat.ageMs(),
      stuck: () => this.heartbeat.stale(),
      captureStack: () => this.inspector.captureStack(),
      evaluate: (expression, o) => this.inspector.evaluate(expression, o),
      call: (command, args = {}) => this.bridge.call(pluginName, command, args, { data() {}, progress() {}, artefact() {} }, client),
    };
  }

  /** A client went away: run what plugins tied to it, on both threads. */
  clientClosed(id: number): void {
    this.clients.closed(id);
    this.bridge.clientClosed(id);
  }

  /** Finds the command and checks the arguments against the catalogue; throws before anything runs. */
  prepare(pluginName: string, commandName: string, rawArgs: Record<string, unknown>): PreparedCall {
    const slot = this.lookup(pluginName);
    const info = findCommandInfo(slot.entry.info, commandName);
    // Checked here against the catalogue, so a bad call never reaches the main thread.
    const args = coerceArgs(info.args, rawArgs, usageLine(`${pluginName} ${commandName}`, info.args));
    return { slot, info, args };
  }

  /** Runs one prepared call on the thread its command runs on. */
  async dispatch(call: PreparedCall, signal: AbortSignal, sink: DispatchSink, client: ClientRef): Promise<unknown> {
    const { slot, info, args } = call;
    const pluginName = slot.entry.name;
    const commandName = info.name;
    if (info.thread === 'main') {
      let announced: Promise<void> = Promise.resolve();
      let value: unknown;
      try {
        value = await this.bridge.call(
          pluginName,
          commandName,
          args as Record<string, unknown>,
          {
            data: sink.data,
            progress: sink.progress,
            artefact: (info) => {
              announced = announced.then(() => sink.artefact(info));
            },
          },
          client,
          signal,
        );
      } catch (err) {
        // The call failed (cancelled, say) while an artefact was still being sent: that send
        // fails too, and nobody else awaits it. Unhandled, it would end the agent's worker.
        await announced.catch(() => {});
        throw err;
      }
      await announced;
      return value;
    }
    const loaded = await this.module(slot);
    const cmd = findCommand(loaded.plugin, commandName);
    const inspector: InspectorAccess = this.inspector;
    return runCall(
      loaded,
      cmd,
      args,
      signal,
      sink,
      {
        client: this.clients.handle(client),
        artefacts: artefacts().artefactSink(this.opts.settings.outputDir, (written) => sink.artefact(written)),
        mainThread: this.mainThreadFor(pluginName, client),
        inspector,
        ...(this.agent ? { agent: this.agent } : {}),
      },
      this.opts,
    );
  }

  /** Undoes every plugin's worker-side setup. Idempotent. */
  async unload(): Promise<void> {
    this.clients.closeAll();
    const all = [...this.plugins.values()].reverse();
    this.plugins.clear();
    for (const slot of all) {
      const loaded = await slot.loaded?.catch(() => undefined);
      await loaded?.lifetime.close();
    }
  }
}

function findCommandInfo(plugin: PluginInfo, name: string): CommandInfo {
  const cmd = plugin.commands.find((c) => c.name === name);
  if (cmd) return cmd;
  const names = plugin.commands.map((c) => c.name);
  const near = closest(name, names);
  throw new IspyError('ISPY_ERR_UNKNOWN_COMMAND', `plugin "${plugin.name}" has no command "${name}"${near ? `; did you mean "${near}"?` : ''} (commands: ${names.join(', ')})`);
}
