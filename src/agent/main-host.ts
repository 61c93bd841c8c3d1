// Runs on the app's main thread. Loads each plugin here first (its `setup.main` is where
// instrumentation of the app lives) and runs the commands declared `thread: "main"` when
// the worker forwards them. Nothing here may throw into the app or keep it alive.

import type { MessagePort } from 'node:worker_threads';
import path from 'node:path';
import { IspyError, toWireError } from '../protocol/errors';
import type { FailedPlugin } from '../protocol/index';
import { toJsonSafe } from '../protocol/index';
import { ClientListeners, describePlugin, findCommand, importPlugin, requirePlugin, runCall, setupPluginNow, validateArgs, type LoadedPlugin, type RuntimeOptions } from './runtime';
import type { PluginEntry } from './registry';
import type { Plugin } from '../plugin/define';
import type { Claims, FromMain, PluginLocation, ToMain } from './rpc';
import type { ResolvedConfig } from './config';
import { agentLog } from './log';
import { NodeModule } from './loader';
import { packageRoot } from './paths';

/** Loaded by the first command that runs: an idle agent never writes a file. */
const artefacts = (): typeof import('./artefacts') => require('./artefacts');

/** Built-in plugins, loaded unless the config lists them under "disable". */
export const BUILTIN_PLUGINS = ['process', 'requests', 'profile', 'heap', 'trace', 'eval'] as const;

/**
 * Built-ins whose main-thread setup instruments nothing the app does as it starts (a GC
 * observer that starts a tick later anyway, a global for the worker to call, nothing at
 * all): the agent loads them after the app's first line, which the preload then holds back
 * for less code (test/preload-footprint.test.ts keeps the list of what comes before).
 * `trace` joins them when the config has no traces for it to wrap from the first call.
 */
const LATE_BUILTINS: ReadonlySet<string> = new Set(['process', 'profile', 'heap', 'eval']);

export function isLateBuiltin(loc: PluginLocation, config: Pick<ResolvedConfig, 'traces'>): boolean {
  if (loc.source !== 'builtin' || loc.name === undefined) return false;
  return LATE_BUILTINS.has(loc.name) || (loc.name === 'trace' && config.traces.length === 0);
}

export function builtinLocation(name: string): string {
  return path.join(packageRoot(), 'dist', 'plugins', name, 'index.js');
}

/** Where each plugin's module is. A spec that cannot be resolved is reported as a failed plugin. */
export function locatePlugins(config: ResolvedConfig): { found: PluginLocation[]; failed: FailedPlugin[] } {
  const found: PluginLocation[] = [];
  const failed: FailedPlugin[] = [];
  for (const name of BUILTIN_PLUGINS) {
    if (!config.disable.includes(name)) found.push({ name, source: 'builtin', location: builtinLocation(name) });
  }
  const req = NodeModule.createRequire(path.join(config.baseDir, 'ispy.config.json'));
  for (const spec of config.plugins) {
    try {
      const location = spec.startsWith('.') || path.isAbsolute(spec) ? path.resolve(config.baseDir, spec) : req.resolve(spec);
      found.push({ source: spec, location: req.resolve(location) });
    } catch (err) {
      failed.push({
        name: spec,
        source: spec,
        error: { code: 'ISPY_ERR_PLUGIN_LOAD', message: `cannot find plugin module "${spec}" from ${config.baseDir} (${(err as Error).message.split('\n')[0]})` },
      });
    }
  }
  return { found, failed };
}

export class MainHost {
  readonly loaded = new Map<string, LoadedPlugin>();
  private readonly starting = new Map<string, string>();
  /** Built-ins that load after the app's first line: their names are theirs from the start. */
  private readonly reserved = new Set<string>();

  /** Holds these built-ins' names, so a plugin loaded before them cannot take one. */
  reserve(builtins: readonly string[]): void {
    for (const name of builtins) this.reserved.add(name);
  }
  private readonly calls = new Map<number, AbortController>();
  private readonly clients = new ClientListeners();
  private port: MessagePort | undefined;
  private claims: Claims | undefined;
  private stopped = false;

  constructor(private readonly opts: RuntimeOptions) {}

  /**
   * Loads and sets up each plugin; a failure is reported and the rest still load.
   * CommonJS plugins with a synchronous setup are in place before this returns its
   * promise: called from the preload, that is before the app's first line runs, so
   * instrumentation sees the first request and the first call.
   */
  load(locations: PluginLocation[]): Promise<{ ok: PluginEntry[]; failed: FailedPlugin[] }> {
    const pending = locations.map((loc) => {
      const name = { value: loc.name ?? loc.source };
      let result: LoadedPlugin | Promise<LoadedPlugin>;
      try {
        const plugin = requirePlugin(loc.location);
        result = plugin ? this.begin(plugin, loc, name) : importPlugin(loc.location).then((p) => this.begin(p, loc, name));
      } catch (err) {
        result = Promise.reject(err);
      }
      // Awaited in order below: a plugin that fails while an earlier one is still setting up
      // must not count as an unhandled rejection meanwhile (which ends the app by default).
      if (result instanceof Promise) result.catch(() => {});
      return { loc, name, result };
    });
    return (async () => {
      const ok: PluginEntry[] = [];
      const failed: FailedPlugin[] = [];
      for (const { loc, name, result } of pending) {
        try {
          const loaded = await result;
          this.loaded.set(loaded.plugin.name, loaded);
          ok.push({ ...loc, name: loaded.plugin.name, info: describePlugin(loaded), hasWorkerSetup: typeof loaded.plugin.setup?.worker === 'function' });
        } catch (err) {
          const error = toWireError(err, `loading ${loc.source === 'builtin' ? name.value : loc.source}`);
          if (error.code === 'ISPY_ERR_PLUGIN_FAILED') error.code = 'ISPY_ERR_PLUGIN_LOAD';
          failed.push({ name: name.value, source: loc.source, error });
          agentLog(`plugin ${name.value} not loaded: ${error.message}`);
        }
      }
      return { ok, failed };
    })();
  }

  private begin(plugin: Plugin, loc: PluginLocation, name: { value: string }): LoadedPlugin | Promise<LoadedPlugin> {
    name.value = plugin.name;
    if (this.loaded.has(plugin.name) || this.starting.has(plugin.name) || (this.reserved.has(plugin.name) && loc.source !== 'builtin')) {
      const from = this.loaded.get(plugin.name)?.source ?? this.starting.get(plugin.name) ?? 'builtin';
      throw new IspyError('ISPY_ERR_PLUGIN_LOAD', `a plugin named "${plugin.name}" is already loaded (from ${from})`);
    }
    if (loc.source === 'builtin') this.reserved.delete(plugin.name);
    this.starting.set(plugin.name, loc.source);
    const result = setupPluginNow(plugin, loc.source, this.opts);
    // Visible to the main thread's commands at once, even before the worker is up.
    if (!(result instanceof Promise)) this.loaded.set(plugin.name, result);
    return result;
  }

  attach(port: MessagePort, claims: SharedArrayBuffer): void {
    this.port = port;
    // Loaded here, once the app has started (not on the preload's path).
    this.claims = new (require('./rpc') as typeof import('./rpc')).Claims(claims);
    port.on('message', (msg: ToMain) => this.onMessage(msg));
    // A 'message' listener refs the port again; the agent must never keep the app alive.
    port.unref();
  }

  private send(msg: FromMain): void {
    try {
      this.port?.postMessage(msg);
    } catch (err) {
      // A value that cannot be cloned: report it as the call's error instead.
      if ('id' in msg && msg.t !== 'error') {
        this.port?.postMessage({ t: 'error', id: msg.id, error: toWireError(err, 'result could not be sent') } satisfies FromMain);
      }
    }
  }

  private onMessage(msg: ToMain): void {
    if (msg.t === 'cancel') {
      this.calls.get(msg.id)?.abort();
      return;
    }
    if (msg.t === 'client-closed') {
      this.clients.closed(msg.client);
      return;
    }
    if (msg.t === 'unload-plugin') {
      const p = this.loaded.get(msg.name);
      this.loaded.delete(msg.name);
      void p?.lifetime.close();
      return;
    }
    if (msg.t === 'call') {
      // The worker stopped waiting (the thread was busy past the limit): do not run it late.
      if (!this.claims?.take(msg.id)) return;
      this.send({ t: 'ack', id: msg.id });
      void this.run(msg);
    }
  }

  private async run(msg: Extract<ToMain, { t: 'call' }>): Promise<void> {
    const controller = new AbortController();
    this.calls.set(msg.id, controller);
    try {
      if (this.stopped) throw new IspyError('ISPY_ERR_AGENT_STOPPED', 'the agent is stopping');
      const loaded = this.loaded.get(msg.plugin);
      if (!loaded) throw new IspyError('ISPY_ERR_UNKNOWN_PLUGIN', `plugin "${msg.plugin}" is not loaded on the main thread`);
      const cmd = findCommand(loaded.plugin, msg.command);
      const args = validateArgs(msg.plugin, msg.command, cmd, msg.args);
      const value = await runCall(
        loaded,
        cmd,
        args,
        controller.signal,
        {
          data: (data) => this.send({ t: 'data', id: msg.id, data: toJsonSafe(data) }),
          progress: (u) => this.send({ t: 'progress', id: msg.id, ...u }),
        },
        {
          client: this.clients.handle(msg.client),
          artefacts: artefacts().artefactSink(this.opts.settings.outputDir, (written) => this.send({ t: 'artefact', id: msg.id, ...written })),
        },
        this.opts,
      );
      this.send({ t: 'result', id: msg.id, value: toJsonSafe(value) });
    } catch (err) {
      this.send({ t: 'error', id: msg.id, error: toWireError(err, `${msg.plugin} ${msg.command}`) });
    } finally {
      this.calls.delete(msg.id);
    }
  }

  /** Cancels running calls and undoes every plugin's main-thread instrumentation. Idempotent. */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    for (const c of this.calls.values()) c.abort();
    this.calls.clear();
    this.clients.closeAll();
    for (const p of [...this.loaded.values()].reverse()) await p.lifetime.close();
    this.loaded.clear();
    this.port?.close();
    this.port = undefined;
  }
}
