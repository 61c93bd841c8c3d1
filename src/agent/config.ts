// Reading and checking ispy.config.json. Runs on the main thread at start-up; the result
// is plain data handed to the worker. A config problem is one line naming the file, the
// key and what was expected, and the agent does not start.

import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { IspyError } from '../protocol/errors';
import { parseDuration } from '../protocol/args';
import { DEFAULT_MAX_FRAME_BYTES } from '../protocol/index';
import { checkSchema, parseBytes, type Schema } from './schema';
import { packageRoot } from './paths';
import { defaultConfigFile } from './early';
import type { ConfigTrace } from '../plugin/define';

/** Options of startAgent(); each one overrides the config file's key of the same name. */
export interface AgentOptions {
  /** Config file to read; false reads none. Default: $ISPY_CONFIG, else ./ispy.config.json when present. */
  config?: string | false;
  /** Socket path ({pid} placeholder). $ISPY_SOCKET overrides the config file, this overrides both. */
  socket?: string;
  plugins?: string[];
  disable?: string[];
  eval?: boolean;
  outputDir?: string;
  redact?: string[];
  audit?: string | boolean;
  pluginOptions?: Record<string, unknown>;
  limits?: Partial<Record<'maxFrameBytes' | 'maxConnections' | 'traceEventsPerSecond', number> & Record<'mainThreadTimeout' | 'inspectorTimeout' | 'setupTimeout' | 'trackMaxDuration' | 'traceMaxDuration' | 'snapshotMemory' | 'auditMaxSize' | 'idleBeforeEviction', string | number>>;
  traces?: ConfigTraceInput[];
  /** Folder relative paths are resolved from when no config file is read. Default: process.cwd(). */
  cwd?: string;
  /** Set by `ispy attach`: who loaded the agent into this process (written to the audit log). */
  attachedBy?: { pid: number; user?: string; host?: string };
}

/** A trace as written in the file: its duration may still be a string like "5m". */
export type ConfigTraceInput = Omit<ConfigTrace, 'duration'> & { duration?: number | string };

export interface Limits {
  maxFrameBytes: number;
  maxConnections: number;
  idleBeforeEvictionMs: number;
  mainThreadTimeoutMs: number;
  inspectorTimeoutMs: number;
  setupTimeoutMs: number;
  trackMaxDurationMs: number;
  traceEventsPerSecond: number;
  traceMaxDurationMs: number;
  auditMaxBytes: number;
  /** Set only when the config names it. */
  snapshotMemoryBytes?: number;
}

export interface ResolvedConfig {
  /** The file read, if any. */
  file?: string;
  /** Folder that relative paths in the config are resolved from. */
  baseDir: string;
  /** Socket path template, absolute; undefined for the default per-user folder. */
  socket?: string;
  plugins: string[];
  disable: string[];
  eval: boolean;
  outputDir?: string;
  redact: string[];
  /** The audit log's path; undefined for the default (`<outputDir>/audit.jsonl`); false for none. */
  audit?: string | false;
  pluginOptions: Record<string, unknown>;
  limits: Limits;
  traces: ConfigTrace[];
}

/** The audit log's name in the output folder unless the config names another file. */
export const DEFAULT_AUDIT_NAME = 'audit.jsonl';

export const DEFAULT_LIMITS: Limits = {
  maxFrameBytes: DEFAULT_MAX_FRAME_BYTES,
  maxConnections: 32,
  idleBeforeEvictionMs: 30_000,
  mainThreadTimeoutMs: 2000,
  inspectorTimeoutMs: 1000,
  setupTimeoutMs: 5000,
  trackMaxDurationMs: 5 * 60_000,
  traceEventsPerSecond: 100,
  traceMaxDurationMs: 10 * 60_000,
  auditMaxBytes: 10 * 1024 * 1024,
};

export function schemaPath(): string {
  return path.join(packageRoot(), 'ispy.config.schema.json');
}

let cachedSchema: Schema | undefined;
function loadSchema(): Schema {
  cachedSchema ??= JSON.parse(readFileSync(schemaPath(), 'utf8')) as Schema;
  return cachedSchema;
}

function configError(file: string, message: string): IspyError {
  return new IspyError('ISPY_ERR_CONFIG', `config ${file}: ${message}`);
}

function show(v: unknown): string {
  const text = JSON.stringify(v);
  return text === undefined ? String(v) : text.length > 60 ? `${text.slice(0, 57)}...` : text;
}

function bytes(v: string | number | undefined, fallback: number): number {
  if (v === undefined) return fallback;
  return typeof v === 'number' ? v : (parseBytes(v) ?? fallback);
}

function ms(v: string | number | undefined, fallback: number): number {
  if (v === undefined) return fallback;
  return typeof v === 'number' ? v : (parseDuration(v) ?? fallback);
}

/**
 * The config file loadConfig() reads: the one named (startAgent({config}), else
 * $ISPY_CONFIG), else ./ispy.config.json, read only when it exists; undefined for none.
 */
export function configCandidate(options: AgentOptions = {}, env: NodeJS.ProcessEnv = process.env): string | undefined {
  const cwd = options.cwd ?? process.cwd();
  if (options.config === false) return undefined;
  if (typeof options.config === 'string') return path.resolve(cwd, options.config);
  return defaultConfigFile(env, cwd);
}

/** Reads, checks and resolves the configuration. Throws ISPY_ERR_CONFIG with a one-line message. */
export function loadConfig(options: AgentOptions = {}, env: NodeJS.ProcessEnv = process.env): ResolvedConfig {
  const cwd = options.cwd ?? process.cwd();
  const candidate = configCandidate(options, env);
  const named = candidate !== undefined && (typeof options.config === 'string' || !!env.ISPY_CONFIG);
  const file = candidate !== undefined && (named || existsSync(candidate)) ? candidate : undefined;

  let raw: Record<string, unknown> = {};
  if (file) {
    let text: string;
    try {
      text = readFileSync(file, 'utf8');
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      const why = code === 'ENOENT' ? 'file not found' : code === 'EACCES' ? 'permission denied' : (err as Error).message;
      throw configError(file, `${why}${named ? ` (named by ${typeof options.config === 'string' ? 'startAgent({config})' : 'ISPY_CONFIG'})` : ''}`);
    }
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch (err) {
      throw configError(file, `not valid JSON (${(err as Error).message})`);
    }
    const problem = checkSchema(loadSchema(), parsed);
    if (problem) {
      const where = problem.key ? `key "${problem.key}"` : 'the top level';
      const got = problem.got === undefined ? '' : ` (got ${show(problem.got)})`;
      throw configError(file, problem.expected.startsWith('not ') || problem.expected.startsWith('to ')
        ? `${where} ought ${problem.expected}${got}`
        : `${where} must be ${problem.expected}${got}`);
    }
    raw = parsed as Record<string, unknown>;
  }

  // Options given in code win over the file; they are checked against the same schema.
  const { config: _c, cwd: _w, attachedBy: _a, ...overrides } = options;
  const merged: Record<string, unknown> = { ...raw };
  for (const [k, v] of Object.entries(overrides)) if (v !== undefined) merged[k] = v;
  if (Object.keys(overrides).length) {
    const problem = checkSchema(loadSchema(), merged);
    if (problem) throw new IspyError('ISPY_ERR_CONFIG', `startAgent option "${problem.key}" must be ${problem.expected} (got ${show(problem.got)})`);
  }

  const baseDir = file ? path.dirname(file) : cwd;
  const limitsRaw = (merged.limits ?? {}) as Record<string, string | number | undefined>;
  const socket = env.ISPY_SOCKET && options.socket === undefined ? env.ISPY_SOCKET : (merged.socket as string | undefined);
  const resolved: ResolvedConfig = {
    baseDir,
    plugins: (merged.plugins as string[] | undefined) ?? [],
    disable: (merged.disable as string[] | undefined) ?? [],
    eval: merged.eval === true,
    redact: (merged.redact as string[] | undefined) ?? [],
    pluginOptions: (merged.pluginOptions as Record<string, unknown> | undefined) ?? {},
    limits: {
      maxFrameBytes: (limitsRaw.maxFrameBytes as number | undefined) ?? DEFAULT_LIMITS.maxFrameBytes,
      maxConnections: (limitsRaw.maxConnections as number | undefined) ?? DEFAULT_LIMITS.maxConnections,
      idleBeforeEvictionMs: ms(limitsRaw.idleBeforeEviction, DEFAULT_LIMITS.idleBeforeEvictionMs),
      mainThreadTimeoutMs: ms(limitsRaw.mainThreadTimeout, DEFAULT_LIMITS.mainThreadTimeoutMs),
      inspectorTimeoutMs: ms(limitsRaw.inspectorTimeout, DEFAULT_LIMITS.inspectorTimeoutMs),
      setupTimeoutMs: ms(limitsRaw.setupTimeout, DEFAULT_LIMITS.setupTimeoutMs),
      trackMaxDurationMs: ms(limitsRaw.trackMaxDuration, DEFAULT_LIMITS.trackMaxDurationMs),
      traceEventsPerSecond: (limitsRaw.traceEventsPerSecond as number | undefined) ?? DEFAULT_LIMITS.traceEventsPerSecond,
      traceMaxDurationMs: ms(limitsRaw.traceMaxDuration, DEFAULT_LIMITS.traceMaxDurationMs),
      auditMaxBytes: bytes(limitsRaw.auditMaxSize, DEFAULT_LIMITS.auditMaxBytes),
    },
    traces: ((merged.traces as ConfigTraceInput[] | undefined) ?? []).map((t) => (t.duration === undefined ? { ...t, duration: undefined } : { ...t, duration: ms(t.duration, 60_000) })) as ConfigTrace[],
  };
  if (limitsRaw.snapshotMemory !== undefined) resolved.limits.snapshotMemoryBytes = bytes(limitsRaw.snapshotMemory, 0);
  if (file) resolved.file = file;
  if (socket) resolved.socket = path.resolve(baseDir, socket);
  if (typeof merged.outputDir === 'string') resolved.outputDir = path.resolve(baseDir, merged.outputDir);
  if (typeof merged.audit === 'string') resolved.audit = path.resolve(baseDir, merged.audit);
  else if (merged.audit === false) resolved.audit = false;
  return resolved;
}
