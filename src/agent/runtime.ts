// The per-thread plugin runtime: loading a plugin module, running its setup under a
// timeout inside a Lifetime that records every undo, and running one call of a command
// with its context. Used by the main-thread host, the agent worker and the in-process
// test harness alike, so a plugin behaves the same in all three.

import dc from 'node:diagnostics_channel';
import { pathToFileURL } from 'node:url';
import { IspyError, isIspyError } from '../protocol/errors';
import { coerceArgs, usageLine, type ArgValues } from '../protocol/args';
import type { CommandInfo, PluginInfo } from '../protocol/index';
import {
  argInfos,
  definePlugin,
  type AgentAccess,
  type AgentSettings,
  type AppFacts,
  type ClientHandle,
  type ArtefactSink,
  type Command,
  type ArgDefs,
  type CommandContext,
  type InspectorAccess,
  type Lifetime as LifetimeApi,
  type MainThreadAccess,
  type Plugin,
  type SetupContext,
  type Thread,
} from '../plugin/define';
import { agentLog, agentLogThrottled } from './log';
import { isOwnModule, loadOwn, NodeModule } from './loader';
import { earlyMessages } from './early';
import type { Interceptor, WrapHandle } from '../plugin/wrap';

/** Node loads esm.js itself (it says why): only when a plugin is an ES module, never at start for the built-ins. */
const esm = (): typeof import('./esm') => require('./esm');

type Undo = () => void | Promise<void>;

/** Records undos; close() runs them newest first, once, logging (never throwing) failures. */
export class Lifetime implements LifetimeApi {
  private undos: Undo[] = [];
  private closed = false;

  constructor(private readonly label: string) {}

  onUnload(undo: Undo): void {
    if (this.closed) {
      // Registered after close: undo at once so nothing outlives the plugin.
      void this.runOne(undo);
      return;
    }
    this.undos.push(undo);
  }

  private remove(undo: Undo): void {
    const i = this.undos.lastIndexOf(undo);
    if (i !== -1) this.undos.splice(i, 1);
  }

  setInterval(fn: () => void, ms: number): { clear(): void } {
    let timer: NodeJS.Timeout | undefined;
    let cleared = false;
    // Started a microtask later: from the preload, that is after the app's first line, which
    // the process's first timer would hold back (Node compiles its timer code then: ~1.3 M
    // instructions, bench/startup-instructions.js); a microtask is nothing to an interval.
    void Promise.resolve().then(() => {
      if (cleared) return;
      timer = setInterval(() => this.guard(fn), ms);
      timer.unref();
    });
    const undo = () => {
      cleared = true;
      clearInterval(timer);
    };
    this.onUnload(undo);
    return {
      clear: () => {
        undo();
        this.remove(undo);
      },
    };
  }

  setTimeout(fn: () => void, ms: number): { clear(): void } {
    let undo: Undo = () => {};
    const timer = setTimeout(() => {
      this.remove(undo);
      this.guard(fn);
    }, ms);
    timer.unref();
    undo = () => clearTimeout(timer);
    this.onUnload(undo);
    return {
      clear: () => {
        clearTimeout(timer);
        this.remove(undo);
      },
    };
  }

  subscribe(channel: string, listener: (message: unknown, name: string | symbol) => void): () => void {
    // On the app's hot paths (a request publishes twice): the try/catch inline, no closure per message.
    const safe = (message: unknown, name: string | symbol) => {
      try {
        listener(message, name);
      } catch (err) {
        this.report(err);
      }
    };
    dc.subscribe(channel, safe);
    // What the app published on it while it started, before the agent's setup (src/agent/early.ts).
    for (const message of earlyMessages(channel)) safe(message, channel);
    let done = false;
    const undo = () => {
      if (done) return;
      done = true;
      dc.unsubscribe(channel, safe);
    };
    this.onUnload(undo);
    return () => {
      undo();
      this.remove(undo);
    };
  }

  wrap(owner: object, key: PropertyKey, interceptor: Interceptor): WrapHandle {
    // Loaded on first use: most apps never have a function wrapped.
    const { wrapFunction } = require('../plugin/wrap') as typeof import('../plugin/wrap');
    const handle = wrapFunction(owner, key, interceptor);
    const undo = () => handle.unwrap();
    this.onUnload(undo);
    return {
      original: handle.original,
      unwrap: () => {
        handle.unwrap();
        this.remove(undo);
      },
    };
  }

  /** Runs every undo, newest first. Idempotent. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    const undos = this.undos.reverse();
    this.undos = [];
    for (const undo of undos) await this.runOne(undo);
  }

  private async runOne(undo: Undo): Promise<void> {
    try {
      await undo();
    } catch (err) {
      agentLog(`${this.label}: an undo failed: ${(err as Error)?.stack ?? err}`);
    }
  }

  /** Plugin code called from a timer or channel must never throw into the app. */
  private guard(fn: () => void): void {
    try {
      fn();
    } catch (err) {
      this.report(err);
    }
  }

  /**
   * One line on stderr, throttled per plugin: a listener that throws on every request must
   * not write a line into the app's output per request.
   */
  private report(err: unknown): void {
    agentLogThrottled(`plugin-throw:${this.label}`, `${this.label}: ${(err as Error)?.stack ?? err}`);
  }
}

/** Resolves `p` or rejects with ISPY_ERR_SETUP_TIMEOUT naming the culprit. */
export function withTimeout<T>(p: Promise<T>, ms: number, what: string, code: 'ISPY_ERR_SETUP_TIMEOUT' | 'ISPY_ERR_INSPECTOR' | 'ISPY_ERR_MAIN_BUSY' = 'ISPY_ERR_SETUP_TIMEOUT'): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new IspyError(code, `${what} did not finish within ${ms} ms`)), ms);
    timer.unref();
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}

/** Imports a plugin module (ESM or CJS) by absolute path or file URL and checks its declaration. */
export async function importPlugin(location: string): Promise<Plugin> {
  const url = location.startsWith('file:') ? location : pathToFileURL(location).href;
  return pluginFrom((await esm().importModule(url)) as Record<string, unknown>, location);
}

/**
 * Loads a CommonJS plugin synchronously, so its setup can run before the app's own
 * modules load. Returns undefined for an ES module (the caller imports it instead).
 */
export function requirePlugin(location: string): Plugin | undefined {
  if (location.startsWith('file:') || location.endsWith('.mjs')) return undefined;
  let mod: unknown;
  try {
    // The built-in plugins are ispy's own modules: loaded like the rest of the agent.
    mod = isOwnModule(location) ? loadOwn(location) : NodeModule.createRequire(__filename)(location);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ERR_REQUIRE_ESM') return undefined;
    throw err;
  }
  // A CommonJS module.exports = plugin is the default export when imported; match that.
  return pluginFrom({ default: mod, ...(typeof mod === 'object' && mod ? (mod as Record<string, unknown>) : {}) }, location);
}

function pluginFrom(mod: Record<string, unknown>, location: string): Plugin {
  // `export default` compiled to CJS arrives as { default: { default: plugin } }.
  let candidate: unknown = mod.default ?? mod.plugin;
  if (candidate && typeof candidate === 'object' && 'default' in candidate && !('commands' in candidate)) {
    candidate = (candidate as { default: unknown }).default;
  }
  if (!candidate || typeof candidate !== 'object') {
    throw new IspyError('ISPY_ERR_PLUGIN_LOAD', `${location} has no default export (or export "plugin") made with definePlugin()`);
  }
  try {
    return definePlugin(candidate as Plugin);
  } catch (err) {
    throw new IspyError('ISPY_ERR_PLUGIN_LOAD', `${location}: ${(err as Error).message}`);
  }
}

export interface LoadedPlugin {
  plugin: Plugin;
  source: string;
  lifetime: Lifetime;
}

export interface RuntimeOptions {
  thread: Thread;
  app: AppFacts;
  settings: AgentSettings;
  pluginOptions: Record<string, unknown>;
  setupTimeoutMs: number;
}

function log(plugin: string) {
  return (message: string) => agentLog(`[${plugin}] ${message}`);
}

/** Runs the plugin's setup for this thread under the timeout. On failure, undoes what it did and throws. */
export async function setupPlugin(plugin: Plugin, source: string, opts: RuntimeOptions): Promise<LoadedPlugin> {
  return setupPluginNow(plugin, source, opts);
}

/**
 * The same, but a setup that does not return a promise completes before this returns:
 * loaded from the preload, such a plugin is in place before the app's first line runs.
 */
export function setupPluginNow(plugin: Plugin, source: string, opts: RuntimeOptions): LoadedPlugin | Promise<LoadedPlugin> {
  const lifetime = new Lifetime(`plugin ${plugin.name}`);
  const setup = opts.thread === 'main' ? plugin.setup?.main : plugin.setup?.worker;
  if (setup) {
    const ctx: SetupContext = {
      thread: opts.thread,
      app: opts.app,
      options: opts.pluginOptions[plugin.name],
      settings: opts.settings,
      log: log(plugin.name),
      onUnload: (u) => lifetime.onUnload(u),
      setInterval: (f, ms) => lifetime.setInterval(f, ms),
      setTimeout: (f, ms) => lifetime.setTimeout(f, ms),
      subscribe: (c, l) => lifetime.subscribe(c, l),
      wrap: (o, k, i) => lifetime.wrap(o, k, i),
    };
    const failed = async (err: unknown): Promise<never> => {
      await lifetime.close();
      if (isIspyError(err)) throw err;
      throw new IspyError('ISPY_ERR_PLUGIN_LOAD', `setup of plugin "${plugin.name}" failed: ${(err as Error)?.message ?? err}`, { cause: err });
    };
    let result: unknown;
    try {
      result = setup(ctx);
    } catch (err) {
      return failed(err);
    }
    if (result && typeof (result as Promise<unknown>).then === 'function') {
      return withTimeout(Promise.resolve(result), opts.setupTimeoutMs, `setup of plugin "${plugin.name}" on the ${opts.thread} thread`).then(
        () => ({ plugin, source, lifetime }),
        failed,
      );
    }
  }
  return { plugin, source, lifetime };
}

export function describePlugin(loaded: LoadedPlugin): PluginInfo {
  const { plugin, source } = loaded;
  const info: PluginInfo = {
    name: plugin.name,
    summary: plugin.summary,
    source,
    commands: Object.entries(plugin.commands).map(([name, cmd]) => describeCommand(name, cmd)),
  };
  if (plugin.version) info.version = plugin.version;
  return info;
}

export function describeCommand(name: string, cmd: Command<ArgDefs>): CommandInfo {
  return {
    name,
    summary: cmd.summary,
    thread: cmd.thread,
    stream: typeof cmd.stream === 'function',
    artefact: cmd.artefact === true,
    changes: cmd.changes === true,
    args: argInfos(cmd),
  };
}

export function findCommand(plugin: Plugin, name: string): Command<ArgDefs> {
  const cmd = Object.prototype.hasOwnProperty.call(plugin.commands, name) ? plugin.commands[name] : undefined;
  if (!cmd) {
    const names = Object.keys(plugin.commands);
    const near = closest(name, names);
    throw new IspyError(
      'ISPY_ERR_UNKNOWN_COMMAND',
      `plugin "${plugin.name}" has no command "${name}"${near ? `; did you mean "${near}"?` : ''} (commands: ${names.join(', ')})`,
    );
  }
  return cmd;
}

/** The nearest name by edit distance, when it is near enough to be a typo. */
export function closest(word: string, candidates: readonly string[]): string | undefined {
  let best: string | undefined;
  let bestD = Infinity;
  for (const c of candidates) {
    const d = editDistance(word, c);
    if (d < bestD) {
      bestD = d;
      best = c;
    }
  }
  return best !== undefined && (bestD <= 2 || (best.startsWith(word) && word.length >= 2)) ? best : undefined;
}

function editDistance(a: string, b: string): number {
  const row = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    let prev = row[0]!;
    row[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const tmp = row[j]!;
      row[j] = Math.min(row[j]! + 1, row[j - 1]! + 1, prev + (a[i - 1] === b[j - 1] ? 0 : 1));
      prev = tmp;
    }
  }
  return row[b.length]!;
}

export function validateArgs(pluginName: string, commandName: string, cmd: Command<ArgDefs>, raw: unknown): ArgValues {
  const infos = argInfos(cmd);
  return coerceArgs(infos, raw, usageLine(`${pluginName} ${commandName}`, infos));
}

export interface CallSink {
  data(item: unknown): void;
  progress(update: { done?: number; total?: number; message?: string }): void;
}

/** Per-thread registry of what to run when a client disconnects. */
export class ClientListeners {
  private readonly byClient = new Map<number, Set<() => void>>();

  handle(ref: { id: number; name: string }): ClientHandle {
    return {
      id: ref.id,
      name: ref.name,
      onDisconnect: (fn) => {
        let set = this.byClient.get(ref.id);
        if (!set) this.byClient.set(ref.id, (set = new Set()));
        set.add(fn);
        return () => set!.delete(fn);
      },
    };
  }

  /** Runs and forgets the client's listeners; each is guarded. */
  closed(id: number): void {
    const set = this.byClient.get(id);
    this.byClient.delete(id);
    for (const fn of set ?? []) {
      try {
        fn();
      } catch (err) {
        agentLog(`a disconnect handler failed: ${(err as Error)?.stack ?? err}`);
      }
    }
  }

  closeAll(): void {
    for (const id of [...this.byClient.keys()]) this.closed(id);
  }
}

export interface CallServices {
  client: ClientHandle;
  artefacts: ArtefactSink;
  mainThread?: MainThreadAccess;
  inspector?: InspectorAccess;
  agent?: AgentAccess;
}

function unavailable(what: string): never {
  throw new IspyError('ISPY_ERR_UNAVAILABLE', `${what} is only available to commands declared with thread: "worker"`);
}

/**
 * Runs one call: builds the context, runs the handler, and for a stream pulls items into
 * the sink until it ends or the signal fires (then returns the iterator so the plugin's
 * finally blocks run). Resolves with the value (undefined for a stream).
 */
export async function runCall(
  loaded: LoadedPlugin,
  cmd: Command<ArgDefs>,
  args: ArgValues,
  signal: AbortSignal,
  sink: CallSink,
  services: CallServices,
  opts: RuntimeOptions,
): Promise<unknown> {
  const { plugin, lifetime } = loaded;
  const ctx: CommandContext = {
    thread: opts.thread,
    app: opts.app,
    client: services.client,
    signal,
    progress: (u) => sink.progress(u),
    options: opts.pluginOptions[plugin.name],
    settings: opts.settings,
    log: log(plugin.name),
    artefacts: services.artefacts,
    get mainThread(): MainThreadAccess {
      return services.mainThread ?? unavailable('ctx.mainThread');
    },
    get inspector(): InspectorAccess {
      return services.inspector ?? unavailable('ctx.inspector');
    },
    get agent(): AgentAccess {
      return services.agent ?? unavailable('ctx.agent');
    },
    onUnload: (u) => lifetime.onUnload(u),
    setInterval: (f, ms) => lifetime.setInterval(f, ms),
    setTimeout: (f, ms) => lifetime.setTimeout(f, ms),
    subscribe: (c, l) => lifetime.subscribe(c, l),
    wrap: (o, k, i) => lifetime.wrap(o, k, i),
  };
  const cancelled = () => new IspyError('ISPY_ERR_CANCELLED', 'cancelled');
  if (signal.aborted) throw cancelled();
  if (typeof cmd.run === 'function') {
    return await cmd.run(args as never, ctx);
  }
  const iterable = cmd.stream!(args as never, ctx);
  const iterator = iterable[Symbol.asyncIterator]();
  // Abort ends the wait for the next item at once; return() lets the generator clean up.
  let onAbort: (() => void) | undefined;
  const aborted = new Promise<'aborted'>((resolve) => {
    onAbort = () => resolve('aborted');
    signal.addEventListener('abort', onAbort, { once: true });
  });
  try {
    for (;;) {
      const next = await Promise.race([iterator.next(), aborted]);
      if (next === 'aborted') break;
      if (next.done) return next.value;
      sink.data(next.value);
    }
    void Promise.resolve(iterator.return?.()).catch(() => {});
    throw cancelled();
  } finally {
    signal.removeEventListener('abort', onAbort!);
  }
}
