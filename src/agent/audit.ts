// Runs in the agent worker. The operator audit log: one JSON line per call, and for a
// command that changes the app (declared `changes: true`: a trace, a gate, a snapshot, a
// forced GC, eval…) one more line written *before* it runs. A change whose line cannot be
// written is refused: nothing changes the app unaudited while the log is on.
//
// Several agents of one user may share the file (the default sits in the per-user
// folder), so each line is one append (O_APPEND) and rotation renames the file to a name
// of its own (`audit.jsonl.<time>-<pid>`), never onto another agent's rotation. The file
// is opened without following a symbolic link and must be a regular file of ours.

import * as fs from 'node:fs';
import * as path from 'node:path';
import { IspyError } from '../protocol/errors';
import { toJsonSafe } from '../protocol/index';
import { agentLogThrottled } from './log';
import { makeFolder } from './dirs';

/** Who is behind a connection, as the client stated it (and the bridge that carried it). */
export interface ClientIdentity {
  /** The connection's number within this agent. */
  id: number;
  name: string;
  user?: string;
  host?: string;
  pid?: number;
  /** The ssh origin (or other bridge) the connection came through, as the bridge stated it. */
  via?: string;
}

export interface AuditOptions {
  file: string;
  /** Rotate once the file would grow past this many bytes. */
  maxBytes: number;
  keep: number;
}

/** Rotated files kept beside the current one. */
export const AUDIT_KEEP = 4;
/** Strings in logged arguments are cut here: enough to tell what ran, not a copy of a payload. */
const MAX_ARG_CHARS = 2000;
const MAX_ARG_DEPTH = 8;

/** Arguments as they can be logged: strings cut, depth bounded (a client may send args nested 15k deep). */
function clip(args: Record<string, unknown>): unknown {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(args)) out[k] = typeof v === 'string' && v.length > MAX_ARG_CHARS ? `${v.slice(0, MAX_ARG_CHARS)}…` : v;
  return toJsonSafe(out, MAX_ARG_DEPTH);
}

/** Sorts in time order, to the millisecond. */
function stamp(d = new Date()): string {
  return d.toISOString().replace(/[-:]/g, '');
}

let rotations = 0;

export class AuditLog {
  constructor(readonly opts: AuditOptions) {}

  /**
   * Appends one line. Throws ISPY_ERR_AUDIT naming the file and the reason. Synchronous, on
   * purpose: the line is on disk before the caller goes on, and the agent starts no libuv
   * thread pool in an app that has none (async fs calls would, for the process's lifetime).
   */
  write(entry: Record<string, unknown>): void {
    const line = `${JSON.stringify({ time: new Date().toISOString(), pid: process.pid, ...entry })}\n`;
    const { file } = this.opts;
    try {
      makeFolder(path.dirname(file));
      let fd = this.open();
      try {
        const size = fs.fstatSync(fd).size;
        if (size > 0 && size + Buffer.byteLength(line) > this.opts.maxBytes) {
          fs.closeSync(fd);
          fd = -1;
          this.rotate();
          fd = this.open();
        }
        fs.writeSync(fd, line);
      } finally {
        if (fd !== -1) fs.closeSync(fd);
      }
    } catch (err) {
      if (err instanceof IspyError) throw err;
      throw new IspyError('ISPY_ERR_AUDIT', `cannot write the audit log ${file}: ${(err as Error).message}`);
    }
  }

  /** The same, for lines nobody waits on: a failure is said in the agent's log. */
  note(entry: Record<string, unknown>): void {
    try {
      this.write(entry);
    } catch (err) {
      agentLogThrottled('audit', (err as Error).message);
    }
  }

  private open(): number {
    const { file } = this.opts;
    const flags = fs.constants.O_WRONLY | fs.constants.O_APPEND | fs.constants.O_CREAT | fs.constants.O_NOFOLLOW;
    let fd: number;
    try {
      fd = fs.openSync(file, flags, 0o600);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ELOOP') throw new IspyError('ISPY_ERR_AUDIT', `the audit log ${file} is a symbolic link; ispy never follows one`);
      throw err;
    }
    const st = fs.fstatSync(fd);
    const uid = process.getuid?.();
    if (!st.isFile() || (uid !== undefined && st.uid !== uid)) {
      fs.closeSync(fd);
      throw new IspyError('ISPY_ERR_AUDIT', `the audit log ${file} is ${st.isFile() ? `owned by uid ${st.uid}, not by this process (uid ${uid})` : 'not a regular file'}`);
    }
    if ((st.mode & 0o077) !== 0) fs.fchmodSync(fd, 0o600);
    return fd;
  }

  /** Moves the full file aside under a name of its own and drops the oldest beyond `keep`. */
  private rotate(): void {
    const { file, keep } = this.opts;
    const dir = path.dirname(file);
    const base = path.basename(file);
    try {
      // A name no other rotation takes (rename would replace it): time, pid, and a count.
      fs.renameSync(file, path.join(dir, `${base}.${stamp()}-${process.pid}-${++rotations}`));
    } catch (err) {
      // Another agent sharing the file rotated it first.
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
    const rotated = fs.readdirSync(dir).filter((n) => n.startsWith(`${base}.`)).sort();
    for (const old of rotated.slice(0, Math.max(0, rotated.length - keep))) {
      try {
        fs.unlinkSync(path.join(dir, old));
      } catch {
        // another agent removed it
      }
    }
  }
}

/** One call as the audit log records it. */
export interface AuditedCall {
  client: ClientIdentity;
  /** `<connection>.<call id>`: ties a call's start line to its end line. */
  call: string;
  plugin: string;
  command: string;
  args: Record<string, unknown>;
  changes: boolean;
}

function who(c: ClientIdentity): Record<string, unknown> {
  const out: Record<string, unknown> = { name: c.name };
  if (c.user !== undefined) out.user = c.user;
  if (c.host !== undefined) out.host = c.host;
  if (c.pid !== undefined) out.pid = c.pid;
  if (c.via !== undefined) out.via = c.via;
  return out;
}

/** The line written before a change runs. Throws (ISPY_ERR_AUDIT) when it cannot be written. */
export function auditStart(log: AuditLog, call: AuditedCall): void {
  log.write({ event: 'call', phase: 'start', call: call.call, client: who(call.client), plugin: call.plugin, command: call.command, args: clip(call.args), changes: true });
}

/** The line written when a call ends, whatever its outcome. */
export function auditEnd(log: AuditLog, call: AuditedCall, outcome: { error?: string; ms: number }): void {
  log.note({
    event: 'call',
    phase: 'end',
    call: call.call,
    client: who(call.client),
    plugin: call.plugin,
    command: call.command,
    args: clip(call.args),
    changes: call.changes,
    ok: outcome.error === undefined,
    ...(outcome.error !== undefined ? { error: outcome.error } : {}),
    ms: outcome.ms,
  });
}
