// The declarations of the public plugin API (re-exported by ./index.ts as `ispy/plugin`).
//
// A plugin is plain data: a name, a one-line summary, optional setup for each thread, and
// commands. A command declares its arguments once; the declaration drives validation,
// help, completion and the TypeScript type of the handler's `args`.

import { parseDuration, type ArgInfo, type ArgType } from '../protocol/args';
import type { Interceptor, WrapHandle } from './wrap';


// ── arguments ──────────────────────────────────────────────────────────────────

/** One declared argument. `T` is the handler's value type; `P` whether it is always present. */
export interface ArgDef<T, P extends boolean = boolean> extends Omit<ArgInfo, 'name'> {
  /** Phantom field carrying the value type; never set at run time. */
  readonly __value?: T;
  readonly __present?: P;
}

interface ArgOptions<D> {
  summary: string;
  positional?: boolean;
  short?: string;
  default?: D;
  required?: boolean;
}

type Present<O> = O extends { required: true } ? true : O extends { default: unknown } ? true : false;

function def<T, O extends ArgOptions<unknown>>(type: ArgType, opts: O, extra?: Partial<ArgInfo>): ArgDef<T, Present<O>> {
  const out: ArgDef<T, Present<O>> = { type, summary: opts.summary, ...extra } as ArgDef<T, Present<O>>;
  const o = out as unknown as Record<string, unknown>;
  if (opts.positional) o.positional = true;
  if (opts.required) o.required = true;
  if (opts.short) o.short = opts.short;
  if (opts.default !== undefined) o.default = opts.default;
  return out;
}

/** Argument builders: `arg.duration({ summary: 'how long', default: '5s' })`. */
export const arg = {
  string<O extends ArgOptions<string>>(opts: O) {
    return def<string, O>('string', opts);
  },
  integer<O extends ArgOptions<number> & { min?: number; max?: number }>(opts: O) {
    return def<number, O>('integer', opts, range(opts));
  },
  number<O extends ArgOptions<number> & { min?: number; max?: number }>(opts: O) {
    return def<number, O>('number', opts, range(opts));
  },
  /** Always present: absent means false. */
  boolean<O extends Omit<ArgOptions<boolean>, 'positional'>>(opts: O) {
    return def<boolean, O & { default: boolean }>('boolean', { ...opts, default: opts.default ?? false });
  },
  /** Given as `500ms`, `2s`, `1m`; the handler receives milliseconds. */
  duration<O extends ArgOptions<string | number> & { min?: string | number; max?: string | number }>(opts: O) {
    return def<number, O>('duration', opts, durationRange(opts));
  },
  choice<const C extends readonly string[], O extends ArgOptions<C[number]>>(choices: C, opts: O) {
    return def<C[number], O>('enum', opts, { choices });
  },
};

function range(o: { min?: number; max?: number }): Partial<ArgInfo> {
  const r: Partial<ArgInfo> = {};
  if (o.min !== undefined) r.min = o.min;
  if (o.max !== undefined) r.max = o.max;
  return r;
}

function toMs(v: string | number, what: string): number {
  if (typeof v === 'number') return v;
  const ms = parseDuration(v);
  if (ms === undefined) throw new TypeError(`${what} is not a duration: ${v}`);
  return ms;
}

function durationRange(o: { min?: string | number; max?: string | number }): Partial<ArgInfo> {
  const r: Partial<ArgInfo> = {};
  if (o.min !== undefined) r.min = toMs(o.min, 'min');
  if (o.max !== undefined) r.max = toMs(o.max, 'max');
  return r;
}

export type ArgDefs = Record<string, ArgDef<unknown>>;

/** The handler's `args`, derived from the declaration. */
export type ArgsOf<A extends ArgDefs> = {
  [K in keyof A]: A[K] extends ArgDef<infer T, infer P> ? (P extends true ? T : T | undefined) : never;
};

// ── contexts ───────────────────────────────────────────────────────────────────

export type Thread = 'main' | 'worker';

/** What a plugin may hold: each registration is undone when the plugin unloads. */
export interface Lifetime {
  /** Runs when the plugin unloads (agent stop), in reverse order of registration. */
  onUnload(undo: () => void | Promise<void>): void;
  /** An unref'd interval, cleared on unload. */
  setInterval(fn: () => void, ms: number): { clear(): void };
  /** An unref'd timeout, cleared on unload. */
  setTimeout(fn: () => void, ms: number): { clear(): void };
  /**
   * Subscribes to a diagnostics_channel; unsubscribed on unload or when the returned function
   * is called. At the agent's start, the listener first gets what the app published while it
   * started on the channels the preload holds (`fastify.initialization`; see AppFacts.sinceStart).
   */
  subscribe(channel: string, listener: (message: unknown, name: string | symbol) => void): () => void;
  /** Wraps owner[key] (main thread); unwrapped on unload or by the handle. See wrapFunction. */
  wrap(owner: object, key: PropertyKey, interceptor: Interceptor): WrapHandle;
}

/** A trace listed in the config (`traces`), wrapped when its module loads. */
export interface ConfigTrace {
  target: string;
  args?: boolean;
  result?: boolean;
  stack?: boolean;
  limit?: number;
  /** Milliseconds. */
  duration?: number;
}

export interface AgentSettings {
  /** The config file the agent read, if any (for messages that say what to change). */
  configFile?: string;
  /** Traces listed in the config. */
  traces: ConfigTrace[];
  /** Where artefacts are written (0600). */
  outputDir: string;
  /** Regular expressions (source text, case-insensitive) naming secret keys. */
  redact: string[];
  limits: Record<string, number>;
  /** Whether the config enabled `eval`. */
  eval: boolean;
  /** The operator audit log's path, or false when the config turned it off. */
  audit: string | false;
}

/** Facts about the app process, captured on its main thread when the agent started. */
export interface AppFacts {
  pid: number;
  argv: string[];
  execArgv: string[];
  execPath: string;
  /** When the agent started, ms since the epoch. */
  agentStartedAt: number;
  /**
   * True when the agent came with the app (the preload): plugins' main-thread subscriptions
   * saw everything the app published since it started, messages of the channels the preload
   * holds (`fastify.initialization`) included, handed over as the plugin subscribes. False
   * when it came later (startAgent() mid-run, `ispy attach`): what happened before is unseen.
   */
  sinceStart?: boolean;
}

export interface SetupContext extends Lifetime {
  thread: Thread;
  app: AppFacts;
  /** This plugin's section of the config (`pluginOptions.<name>`), or undefined. */
  options: unknown;
  settings: AgentSettings;
  /** Writes one line to the agent's log (stderr), prefixed with the plugin name. */
  log(message: string): void;
}

export interface StackFrame {
  functionName: string;
  /** File path for file: URLs, else the script URL (`node:internal/…`). */
  file: string;
  /** 1-based. */
  line: number;
  /** 1-based. */
  column: number;
}

/** `fn (file:line:column)`, the way Node prints a stack frame. */
export function formatFrame(f: StackFrame): string {
  return `${f.functionName} (${f.file}:${f.line}:${f.column})`;
}

export type MainThreadStack =
  | { state: 'running'; frames: StackFrame[]; capturedInMs: number }
  | { state: 'idle'; heartbeatAgeMs: number }
  | { state: 'blocked'; blockedForMs: number };

/** The main thread as seen from the agent worker (available to worker commands). */
export interface MainThreadAccess {
  /** How long since the main thread's event loop last turned (its heartbeat), in ms. */
  heartbeatAgeMs(): number;
  /** True when the loop has missed its last beats: the main thread is busy or blocked right now. */
  stuck(): boolean;
  /** Its JavaScript stack right now, taken through the inspector; works while it spins. */
  captureStack(): Promise<MainThreadStack>;
  /** Evaluates an expression in the main thread's global scope via the inspector and returns its JSON value. */
  evaluate(expression: string, opts?: { timeoutMs?: number }): Promise<unknown>;
  /** Runs one of this plugin's main-thread commands and returns its value. */
  call(command: string, args?: Record<string, unknown>): Promise<unknown>;
}

/** A raw inspector session connected to the main thread (worker only). Every call has a timeout. */
export interface InspectorAccess {
  post<T = unknown>(method: string, params?: Record<string, unknown>, opts?: { timeoutMs?: number }): Promise<T>;
  /** Listens to an inspector event; returns the function that stops listening. */
  on(event: string, listener: (params: any) => void): () => void;
  /**
   * Runs `fn` with the given domains enabled and disables them after, whatever happens,
   * so a domain (e.g. Debugger, which slows async code) is never left on. Calls are
   * serialised across plugins.
   */
  withDomains<T>(domains: string[], fn: () => Promise<T>, opts?: { timeoutMs?: number }): Promise<T>;
}

/** One client connection of the agent, as `ctx.agent.connections()` lists it. */
export interface ConnectedClient {
  id: number;
  /** `handshake`: the socket is open, no WebSocket yet; `hello`: upgraded, no hello yet; `ready`: said hello. */
  state: 'handshake' | 'hello' | 'ready';
  /** What the client called itself, and who it says runs it (unset before its hello). */
  name?: string;
  user?: string;
  host?: string;
  pid?: number;
  /** The bridge it came through (`ssh from 10.0.0.7 port 51234`), as the bridge stated it. */
  via?: string;
  connectedForMs: number;
  /** Since its last frame or call. */
  idleForMs: number;
  /** Calls (streams included) running on it now. */
  calls: number;
}

export interface AgentConnections {
  open: number;
  /** The most connections the agent keeps open at once, and what set that number. */
  limit: number;
  limitedBy: string;
  /** The process's file-descriptor limit (RLIMIT_NOFILE, soft), when it could be read. */
  fdLimit?: number;
  clients: ConnectedClient[];
}

/** The agent itself, as a worker command sees it. */
export interface AgentAccess {
  connections(): AgentConnections;
}

export interface ArtefactWriter {
  /**
   * The file being written (`<final name>.partial`, 0600). For a writer that is not this
   * object, on another thread or in native code (`v8.writeHeapSnapshot(partialPath)` on the
   * main thread): what it writes there is what finish() puts in place.
   */
  readonly partialPath: string;
  /** Appends bytes; await it for backpressure. */
  write(chunk: string | Uint8Array): Promise<void>;
  /** Completes the file (renamed from .partial only now), announces it to the client, returns its path. */
  finish(): Promise<string>;
  /** Deletes what was written. Idempotent; call it on every failure or cancel path. */
  abort(): Promise<void>;
}

export interface ArtefactSink {
  /** Writes a file (0600) into the output folder and sends it to the client as an artefact. Returns its path. */
  writeFile(name: string, data: string | Uint8Array): Promise<string>;
  /** The same for a file written in pieces. `name` like `heap.heapsnapshot`: pid and time are added. */
  create(name: string): Promise<ArtefactWriter>;
}

/** The client connection a call came from. */
export interface ClientHandle {
  /** Unique per connection within this agent. */
  id: number;
  /** What the client called itself in its hello (e.g. `ispy-cli/1.2.3`). */
  name: string;
  /**
   * Runs `fn` when this client disconnects (or the agent stops), even after the call that
   * registered it has finished: how a plugin ties an instrumentation to the client that
   * asked for it. Returns the function that cancels the registration.
   */
  onDisconnect(fn: () => void): () => void;
}

export interface CommandContext extends Lifetime {
  thread: Thread;
  client: ClientHandle;
  app: AppFacts;
  /** Fires on cancel, on client disconnect and on agent stop. */
  signal: AbortSignal;
  /** Reports progress on long work; the client shows it. */
  progress(update: { done?: number; total?: number; message?: string }): void;
  options: unknown;
  settings: AgentSettings;
  log(message: string): void;
  artefacts: ArtefactSink;
  /** Worker commands only; throws ISPY_ERR_UNAVAILABLE on the main thread. */
  mainThread: MainThreadAccess;
  /** Worker commands only; throws ISPY_ERR_UNAVAILABLE on the main thread. */
  inspector: InspectorAccess;
  /** The agent's own state (its connections). Worker commands only. */
  agent: AgentAccess;
}

// ── commands and plugins ───────────────────────────────────────────────────────

interface CommandBase<A extends ArgDefs> {
  summary: string;
  /** Where the handler runs. `main` for app objects; `worker` to stay responsive while the app is blocked. */
  thread: Thread;
  args?: A;
  /** The command produces a file (sent to the client as an artefact). */
  artefact?: boolean;
  /**
   * The command changes the app or its behaviour (instruments a function, pauses it for a
   * snapshot, forces a GC, runs code): the agent writes an audit line before it runs and
   * refuses it when that line cannot be written.
   */
  changes?: boolean;
}

export interface ValueCommand<A extends ArgDefs = ArgDefs> extends CommandBase<A> {
  run(args: ArgsOf<A>, ctx: CommandContext): unknown | Promise<unknown>;
  stream?: never;
}

export interface StreamCommand<A extends ArgDefs = ArgDefs> extends CommandBase<A> {
  /** Yields data frames until done, cancelled or disconnected. */
  stream(args: ArgsOf<A>, ctx: CommandContext): AsyncIterable<unknown>;
  run?: never;
}

export type Command<A extends ArgDefs = ArgDefs> = ValueCommand<A> | StreamCommand<A>;

/** Declares a command; the generic ties the handler's `args` type to its declaration. */
export function command<A extends ArgDefs = {}>(spec: ValueCommand<A> | StreamCommand<A>): Command<ArgDefs> {
  return spec as unknown as Command<ArgDefs>;
}

export interface Plugin {
  name: string;
  summary: string;
  version?: string;
  setup?: {
    /** Runs on the app's main thread when the agent starts (instrumentation lives here). */
    main?(ctx: SetupContext): void | Promise<void>;
    /** Runs in the agent worker before the socket opens. */
    worker?(ctx: SetupContext): void | Promise<void>;
  };
  commands: Record<string, Command<ArgDefs>>;
}

const PLUGIN_NAME = /^[a-z][a-z0-9-]{0,39}$/;
const COMMAND_NAME = /^[a-z][a-z0-9-]{0,39}$/;

/** Declares a plugin. Checks the declaration so a mistake fails at load time with a clear message. */
export function definePlugin<P extends Plugin>(plugin: P): P {
  const where = `plugin ${JSON.stringify(plugin?.name)}`;
  if (!plugin || typeof plugin !== 'object') throw new TypeError('definePlugin needs a plugin object');
  if (typeof plugin.name !== 'string' || !PLUGIN_NAME.test(plugin.name)) {
    throw new TypeError(`${where}: name must match ${PLUGIN_NAME} (lower case, digits, dashes)`);
  }
  if (typeof plugin.summary !== 'string' || !plugin.summary) throw new TypeError(`${where}: needs a one-line summary`);
  if (!plugin.commands || typeof plugin.commands !== 'object') throw new TypeError(`${where}: needs commands`);
  for (const [name, cmd] of Object.entries(plugin.commands)) {
    const at = `${where} command ${JSON.stringify(name)}`;
    if (!COMMAND_NAME.test(name)) throw new TypeError(`${at}: name must match ${COMMAND_NAME}`);
    if (cmd.thread !== 'main' && cmd.thread !== 'worker') throw new TypeError(`${at}: thread must be "main" or "worker"`);
    if (typeof cmd.run !== 'function' && typeof cmd.stream !== 'function') throw new TypeError(`${at}: needs run() or stream()`);
    if (typeof cmd.summary !== 'string' || !cmd.summary) throw new TypeError(`${at}: needs a summary`);
    let seenOptional = false;
    for (const [argName, a] of Object.entries(cmd.args ?? {})) {
      if (!/^[a-z][a-zA-Z0-9]*$/.test(argName)) throw new TypeError(`${at}: argument name ${JSON.stringify(argName)} must be camelCase`);
      if (a.positional) {
        if (a.required && seenOptional) throw new TypeError(`${at}: required positional <${argName}> follows an optional one`);
        if (!a.required) seenOptional = true;
      }
    }
  }
  return plugin;
}

/** The catalogue form of a command's arguments. */
export function argInfos(cmd: Command<ArgDefs>): ArgInfo[] {
  return Object.entries(cmd.args ?? {}).map(([name, a]) => {
    const { __value: _v, __present: _p, ...rest } = a as ArgDef<unknown> & Record<string, unknown>;
    return { name, ...rest } as ArgInfo;
  });
}
