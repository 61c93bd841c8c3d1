// The wire between an `ispy` client and an agent, in one file: the version, the limits,
// every message type and the checks applied to each incoming frame. Both sides import it;
// it imports nothing else of ispy but the error table and the argument vocabulary.
//
//   client                                   agent
//     │ ── hello {protocol, client} ──────────► │
//     │ ◄────────────── welcome {pid, catalogue}│   (or error + close on version mismatch)
//     │ ── call {id, plugin, command, args} ──► │
//     │ ◄── progress {id, …} / data {id, data} ─│   zero or more
//     │ ◄── artefact {id, name, size?} ──────── │   then binary frames: [u32 id][bytes]
//     │ ◄── result {id, value} | error {id, …} ─│   exactly one ends the call
//     │ ── cancel {id} ──────────────────────► │
//
// Text frames are JSON objects with a `type`. Binary frames carry artefact bytes, each
// prefixed by the 4-byte big-endian call id, so several artefacts can interleave.

import type { ArgInfo } from './args';
import { IspyError, type WireError } from './errors';

export * from './errors';
export * from './args';

/** Bumped on any incompatible change to the messages below. */
export const PROTOCOL_VERSION = 1;

/** Default largest text frame either side accepts (the agent's is configurable). */
export const DEFAULT_MAX_FRAME_BYTES = 1024 * 1024;
/** Hard ceiling handed to the WebSocket layer; frames past it close the connection (1009). */
export const HARD_MAX_FRAME_BYTES = 64 * 1024 * 1024;
/** Calls one connection may have running at once. */
export const MAX_CALLS_PER_CONNECTION = 64;
/** Longest call id, plugin or command name accepted. */
export const MAX_NAME_LENGTH = 128;
/** The HTTP path the agent's WebSocket endpoint answers on. */
export const WS_PATH = '/ispy';
/**
 * A header `ispy bridge` adds to a client's upgrade request when it runs under sshd: where
 * the connection came from (`ssh from 10.0.0.7 port 51234`), for the agent's audit log.
 */
export const VIA_HEADER = 'x-ispy-via';
/** Close code and reason of a connection that gave its place to a newcomer at the agent's connection limit. */
export const EVICTED_CLOSE = { code: 4002, reason: 'idle connection closed for a new client' } as const;

export type CallId = number;

export interface CommandInfo {
  name: string;
  summary: string;
  /** Where the handler runs: on the app's main thread or in the agent worker. */
  thread: 'main' | 'worker';
  /** Streams data frames until it ends or is cancelled. */
  stream: boolean;
  /** Produces a file (profile, snapshot, report) sent as an artefact. */
  artefact: boolean;
  /** Changes the app or its behaviour (a trace, a gate, a snapshot's pause, eval): audited before it runs. Absent from older agents. */
  changes?: boolean;
  args: ArgInfo[];
}

export interface PluginInfo {
  name: string;
  summary: string;
  version?: string;
  /** Where it was loaded from: `builtin` or the specifier/path from the config. */
  source: string;
  commands: CommandInfo[];
}

export interface FailedPlugin {
  name: string;
  source: string;
  error: WireError;
}

// ── client → agent ─────────────────────────────────────────────────────────────

export interface HelloMessage {
  type: 'hello';
  protocol: number;
  client: string;
  /** Who runs the client, as it states it (for the agent's audit log); each optional. */
  user?: string;
  host?: string;
  pid?: number;
}

/** Longest `client`, `user` or `host` in a hello. */
export const MAX_HELLO_TEXT = 200;

export interface CallMessage {
  type: 'call';
  id: CallId;
  plugin: string;
  command: string;
  args: Record<string, unknown>;
  /** Send artefact bytes over the connection (the client saves them with -o). Default: only their path. */
  fetch?: boolean;
}

export interface CancelMessage {
  type: 'cancel';
  id: CallId;
}

export type ClientMessage = HelloMessage | CallMessage | CancelMessage;

// ── agent → client ─────────────────────────────────────────────────────────────

export interface WelcomeMessage {
  type: 'welcome';
  protocol: number;
  pid: number;
  title: string;
  hostname: string;
  node: string;
  ispy: string;
  /** When the agent started, ms since the epoch. */
  startedAt: number;
  socket: string;
  maxFrameBytes: number;
  plugins: PluginInfo[];
  failedPlugins: FailedPlugin[];
}

export interface DataMessage {
  type: 'data';
  id: CallId;
  data: unknown;
}

export interface ProgressMessage {
  type: 'progress';
  id: CallId;
  done?: number;
  total?: number;
  message?: string;
}

/** Announces an artefact whose bytes follow as binary frames for the same call id. */
export interface ArtefactMessage {
  type: 'artefact';
  id: CallId;
  /** Suggested file name, e.g. `report-1234-20261122T200102.json`. */
  name: string;
  /** Where the agent wrote it on its own host, when it did. */
  path?: string;
  size?: number;
  /** Bytes follow as binary frames (the call asked to fetch); the call's result comes after the last. */
  inline: boolean;
}

export interface ResultMessage {
  type: 'result';
  id: CallId;
  value: unknown;
}

export interface ErrorMessage extends WireError {
  type: 'error';
  /** Absent when the error is about the connection or a frame that had no usable id. */
  id?: CallId;
}

export type AgentMessage = WelcomeMessage | DataMessage | ProgressMessage | ArtefactMessage | ResultMessage | ErrorMessage;

// ── checks ─────────────────────────────────────────────────────────────────────

function bad(message: string, id?: CallId): IspyError {
  return new IspyError('ISPY_ERR_BAD_FRAME', message, id === undefined ? undefined : { details: { id } });
}

function isName(v: unknown): v is string {
  return typeof v === 'string' && v.length > 0 && v.length <= MAX_NAME_LENGTH;
}

/** Largest call id: ids travel as 4-byte unsigned integers in binary (artefact) frames. */
export const MAX_CALL_ID = 0xffff_ffff;

function isCallId(v: unknown): v is CallId {
  return typeof v === 'number' && Number.isInteger(v) && v > 0 && v <= MAX_CALL_ID;
}

function parseObject(text: string): Record<string, unknown> {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw bad(`frame is not valid JSON (${(err as Error).message})`);
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw bad('frame must be a JSON object with a "type"');
  }
  return value as Record<string, unknown>;
}

/** Checks a text frame from a client. Throws ISPY_ERR_BAD_FRAME naming what is wrong; `details.id` carries a usable id. */
export function parseClientMessage(text: string): ClientMessage {
  const m = parseObject(text);
  const id = isCallId(m.id) ? m.id : undefined;
  switch (m.type) {
    case 'hello': {
      if (typeof m.protocol !== 'number') throw bad('hello needs a numeric "protocol"');
      if (typeof m.client !== 'string' || m.client.length > MAX_HELLO_TEXT) throw bad(`hello needs a "client" string of at most ${MAX_HELLO_TEXT} characters`);
      const hello: HelloMessage = { type: 'hello', protocol: m.protocol, client: m.client };
      for (const key of ['user', 'host'] as const) {
        if (m[key] === undefined) continue;
        if (typeof m[key] !== 'string' || m[key].length > MAX_HELLO_TEXT) throw bad(`hello "${key}" must be a string of at most ${MAX_HELLO_TEXT} characters`);
        hello[key] = m[key];
      }
      if (m.pid !== undefined) {
        if (typeof m.pid !== 'number' || !Number.isSafeInteger(m.pid) || m.pid <= 0) throw bad('hello "pid" must be a positive integer');
        hello.pid = m.pid;
      }
      return hello;
    }
    case 'call':
      if (id === undefined) throw bad(`call needs an "id" that is a positive integer of at most ${MAX_CALL_ID}`);
      if (!isName(m.plugin)) throw bad(`call needs a "plugin" name (1–${MAX_NAME_LENGTH} characters)`, id);
      if (!isName(m.command)) throw bad(`call needs a "command" name (1–${MAX_NAME_LENGTH} characters)`, id);
      if (m.args !== undefined && (typeof m.args !== 'object' || m.args === null || Array.isArray(m.args))) {
        throw bad('call "args" must be an object of name → value', id);
      }
      if (m.fetch !== undefined && typeof m.fetch !== 'boolean') throw bad('call "fetch" must be true or false', id);
      return { type: 'call', id, plugin: m.plugin, command: m.command, args: (m.args as Record<string, unknown>) ?? {}, fetch: m.fetch === true };
    case 'cancel':
      if (id === undefined) throw bad('cancel needs the "id" of a running call');
      return { type: 'cancel', id };
    default:
      throw bad(
        typeof m.type === 'string'
          ? `unknown message type ${JSON.stringify(m.type.slice(0, 40))}; expected hello, call or cancel`
          : 'frame needs a "type": hello, call or cancel',
        id,
      );
  }
}

/** Checks a text frame from an agent. The client trusts the agent less than fully: a broken frame is an error, not a crash. */
export function parseAgentMessage(text: string): AgentMessage {
  const m = parseObject(text);
  switch (m.type) {
    case 'welcome':
      if (typeof m.protocol !== 'number' || typeof m.pid !== 'number' || !Array.isArray(m.plugins)) {
        throw bad('welcome is missing protocol, pid or plugins');
      }
      return m as unknown as WelcomeMessage;
    case 'data':
    case 'progress':
    case 'artefact':
    case 'result':
      if (!isCallId(m.id)) throw bad(`${m.type} frame without a call id`);
      return m as unknown as AgentMessage;
    case 'error':
      if (typeof m.code !== 'string' || typeof m.message !== 'string') throw bad('error frame without code and message');
      return m as unknown as ErrorMessage;
    default:
      throw bad(`unknown message type from agent: ${JSON.stringify(m.type)}`);
  }
}

/** Prefixes artefact bytes with their call id for a binary frame. */
export function encodeBinaryFrame(id: CallId, chunk: Uint8Array): Buffer {
  const head = Buffer.allocUnsafe(4);
  head.writeUInt32BE(id, 0);
  return Buffer.concat([head, chunk]);
}

export function decodeBinaryFrame(frame: Buffer): { id: CallId; chunk: Buffer } {
  if (frame.length < 4) throw bad('binary frame shorter than its 4-byte call id');
  return { id: frame.readUInt32BE(0), chunk: frame.subarray(4) };
}

/**
 * Makes a plugin's return value safe to JSON-encode: bigint → string, Map/Set → plain,
 * Error → {name, message}, cycles → "[Circular]", functions → "[Function name]",
 * depth bounded. Nothing a plugin returns can make the encoder throw.
 */
export function toJsonSafe(value: unknown, maxDepth = 12): unknown {
  const seen = new WeakSet<object>();
  const walk = (v: unknown, depth: number): unknown => {
    if (v === null || typeof v === 'string' || typeof v === 'boolean') return v;
    if (typeof v === 'number') return Number.isFinite(v) ? v : String(v);
    if (typeof v === 'bigint') return v.toString();
    if (typeof v === 'undefined') return undefined;
    if (typeof v === 'function') return `[Function ${v.name || 'anonymous'}]`;
    if (typeof v === 'symbol') return v.toString();
    if (typeof v !== 'object') return String(v);
    if (seen.has(v)) return '[Circular]';
    if (depth >= maxDepth) return Array.isArray(v) ? '[Array]' : '[Object]';
    seen.add(v);
    try {
      if (v instanceof Date) return v.toISOString();
      if (v instanceof Error) return { name: v.name, message: v.message };
      if (Buffer.isBuffer(v)) return `[Buffer ${v.length} bytes]`;
      if (Array.isArray(v)) return v.map((x) => walk(x, depth + 1));
      if (v instanceof Map) return Object.fromEntries([...v].map(([k, x]) => [String(k), walk(x, depth + 1)]));
      if (v instanceof Set) return [...v].map((x) => walk(x, depth + 1));
      const out: Record<string, unknown> = {};
      for (const [k, x] of Object.entries(v)) {
        const w = walk(x, depth + 1);
        if (w !== undefined) out[k] = w;
      }
      return out;
    } finally {
      seen.delete(v);
    }
  };
  return walk(value, 0);
}
