// Runs in the agent worker. The plugin registry: which plugins are loaded, their
// catalogue, and the dispatch of one call to the thread its command runs on.

import { IspyError, toWireError } from '../protocol/errors';
import type { FailedPlugin, PluginInfo } from '../protocol/index';
import type { InspectorAccess, MainThreadAccess } from '../plugin/define';
import { ClientListeners, closest, describePlugin, findCommand, importPlugin, runCall, setupPlugin, validateArgs, type LoadedPlugin, type RuntimeOptions } from './runtime';
import type { MainBridge } from './main-bridge';
import type { MainThreadInspector } from './inspector';
import type { HeartbeatReader } from './heartbeat';
import type { ClientRef, PluginLocation } from './rpc';
import { artefactSink } from './artefacts';
import { agentLog } from './log';

export interface DispatchSink {
  data(item: unknown): void;
  progress(update: { done?: number; total?: number; message?: string }): void;
  /** A file the command wrote; resolves once it has been announced (and sent, if fetched). */
  artefact(info: { path: string; name: string; size: number }): Promise<void>;
}

export class Registry {
  private readonly plugins = new Map<string, LoadedPlugin>();
  readonly failed: FailedPlugin[] = [];
  private readonly clients = new ClientListeners();

  constructor(
    private readonly opts: RuntimeOptions,
    private readonly bridge: MainBridge,
    private readonly inspector: MainThreadInspector,
    private readonly heartbeat: HeartbeatReader,
  ) {}

  /** Loads the plugins the main thread loaded; one that fails here is unloaded there too. */
  async load(locations: (PluginLocation & { name: string })[], failedOnMain: FailedPlugin[]): Promise<void> {
    this.failed.push(...failedOnMain);
    for (const loc of locations) {
      try {
        const plugin = await importPlugin(loc.location);
        this.plugins.set(plugin.name, await setupPlugin(plugin, loc.source, this.opts));
      } catch (err) {
        const error = toWireError(err, `loading ${loc.name}`);
        if (error.code === 'ISPY_ERR_PLUGIN_FAILED') error.code = 'ISPY_ERR_PLUGIN_LOAD';
        this.failed.push({ name: loc.name, source: loc.source, error });
        this.bridge.unloadPlugin(loc.name);
        agentLog(`plugin ${loc.name} not loaded: ${error.message}`);
      }
    }
  }

  catalogue(): PluginInfo[] {
    return [...this.plugins.values()].map(describePlugin);
  }

  private lookup(name: string): LoadedPlugin {
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

  /** Runs one call. Argument errors are thrown before anything runs. */
  async dispatch(pluginName: string, commandName: string, rawArgs: Record<string, unknown>, signal: AbortSignal, sink: DispatchSink, client: ClientRef): Promise<unknown> {
    const loaded = this.lookup(pluginName);
    const cmd = findCommand(loaded.plugin, commandName);
    const args = validateArgs(pluginName, commandName, cmd, rawArgs);
    if (cmd.thread === 'main') {
      let announced: Promise<void> = Promise.resolve();
      const value = await this.bridge.call(
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
      await announced;
      return value;
    }
    const inspector: InspectorAccess = this.inspector;
    return runCall(
      loaded,
      cmd,
      args,
      signal,
      sink,
      {
        client: this.clients.handle(client),
        artefacts: artefactSink(this.opts.settings.outputDir, (written) => sink.artefact(written)),
        mainThread: this.mainThreadFor(pluginName, client),
        inspector,
      },
      this.opts,
    );
  }

  /** Undoes every plugin's worker-side setup. Idempotent. */
  async unload(): Promise<void> {
    this.clients.closeAll();
    const all = [...this.plugins.values()].reverse();
    this.plugins.clear();
    for (const p of all) await p.lifetime.close();
  }
}
