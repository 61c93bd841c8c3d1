// `ispy ps [dir]`: the live agents on this host. Every *.sock in the folder is asked for
// its welcome (concurrently, each bounded), which names the process: pid, title, Node
// version, when its agent started. A socket nobody listens on (ECONNREFUSED) is stale:
// left over by a process that died without cleaning up. Stale sockets are hidden unless
// --all, and removed only with --clean, and only if they are still the very socket that
// refused (same inode, ours, still a socket): ps never unlinks anything else.

import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { stagingPid } from '../protocol/socket-path';
import { connect } from '../client/index';
import { IspyError } from '../protocol/index';
import { formatTable, formatUptime } from './format';
import { mapLimit } from './pool';
import { EXIT_OK } from './report';
import { styleFor } from './style';
import { currentUid, defaultSocketDir } from './targets';

/** Sockets asked at once; each is bounded by --timeout, so a hung agent costs one slot. */
const PS_CONCURRENCY = 64;

export type AgentStatus = 'live' | 'stale' | 'unreachable';

export interface AgentEntry {
  socket: string;
  status: AgentStatus;
  pid?: number;
  title?: string;
  hostname?: string;
  node?: string;
  ispy?: string;
  startedAt?: number;
  uptimeSeconds?: number;
  plugins?: string[];
  /** Why a socket that is not live could not be used. */
  reason?: string;
  /** Identity of the socket file when it was looked at, so --clean removes only that one. */
  ino?: number;
}

/** Asks one socket for its welcome; classifies it by what the connection did. */
export async function inspectSocket(file: string, timeoutMs: number): Promise<AgentEntry> {
  let errno: string | undefined;
  try {
    const client = await connect(file, {
      timeoutMs,
      clientName: `ispy-ps/${process.pid}`,
      // Our own stream, so the errno behind a failure is known exactly (ECONNREFUSED = stale).
      createConnection: () => {
        const sock = net.connect(file);
        sock.once('error', (err: NodeJS.ErrnoException) => (errno = err.code));
        return sock;
      },
    });
    const w = client.welcome;
    await client.close();
    return {
      socket: file,
      status: 'live',
      pid: w.pid,
      title: w.title,
      hostname: w.hostname,
      node: w.node,
      ispy: w.ispy,
      startedAt: w.startedAt,
      uptimeSeconds: Math.max(0, Math.round((Date.now() - w.startedAt) / 1000)),
      plugins: w.plugins.map((p) => p.name),
    };
  } catch (err) {
    const stale = errno === 'ECONNREFUSED';
    return { socket: file, status: stale ? 'stale' : 'unreachable', reason: stale ? 'nothing is listening (its process is gone)' : (err as Error).message };
  }
}

/** The sockets in a folder (non-sockets are never touched), each inspected concurrently. */
export async function listAgents(dir: string, timeoutMs: number): Promise<AgentEntry[]> {
  const names = fs.readdirSync(dir).filter((n) => n.endsWith('.sock') && stagingPid(n) === undefined);
  const files: { file: string; ino: number }[] = [];
  for (const name of names) {
    const file = path.join(dir, name);
    try {
      const st = fs.lstatSync(file);
      if (st.isSocket()) files.push({ file, ino: st.ino });
    } catch {
      // gone since readdir
    }
  }
  const entries = await mapLimit(files, PS_CONCURRENCY, async ({ file, ino }) => ({ ...(await inspectSocket(file, timeoutMs)), ino }));
  return entries.sort((a, b) => (a.pid ?? Infinity) - (b.pid ?? Infinity) || a.socket.localeCompare(b.socket));
}

/** Removes a stale socket if it is still the same inode, a socket, and ours. */
export function removeStale(entry: AgentEntry): boolean {
  if (entry.status !== 'stale') return false;
  try {
    const st = fs.lstatSync(entry.socket);
    if (!st.isSocket() || st.ino !== entry.ino || st.uid !== currentUid()) return false;
    fs.unlinkSync(entry.socket);
    return true;
  } catch {
    return false;
  }
}

export interface PsOptions {
  dir?: string;
  all: boolean;
  clean: boolean;
  json: boolean;
  timeoutMs: number;
  output: NodeJS.WriteStream;
  error: NodeJS.WriteStream;
  env: NodeJS.ProcessEnv;
}

export async function ps(opts: PsOptions): Promise<number> {
  const dir = opts.dir ?? defaultSocketDir();
  const s = styleFor(opts.output, opts.env);
  const es = styleFor(opts.error, opts.env);
  let entries: AgentEntry[];
  try {
    entries = await listAgents(dir, opts.timeoutMs);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' && opts.dir === undefined) {
      opts.error.write(`no live agents (${dir} does not exist yet: no agent has started as this user)\n`);
      return EXIT_OK;
    }
    throw new IspyError('ISPY_ERR_USAGE', code === 'ENOENT' ? `folder ${dir} does not exist` : code === 'ENOTDIR' ? `${dir} is not a folder` : `cannot read ${dir}: ${(err as Error).message}`);
  }
  if (opts.clean) {
    entries = entries.filter((e) => {
      if (!removeStale(e)) return true;
      opts.error.write(`${es.dim('removed stale socket')} ${e.socket}\n`);
      return false;
    });
  }
  const shown = opts.all ? entries : entries.filter((e) => e.status === 'live');
  if (opts.json) {
    for (const { ino: _ino, ...e } of shown) opts.output.write(`${JSON.stringify(e)}\n`);
  } else if (shown.length) {
    const rows = shown.map((e) => {
      const row: Record<string, unknown> = {
        pid: e.pid ?? null,
        title: e.title ?? '',
        uptime: e.uptimeSeconds !== undefined ? formatUptime(e.uptimeSeconds) : '',
        node: e.node ?? '',
        socket: e.socket,
      };
      if (opts.all) row.status = e.status === 'live' ? e.status : `${e.status}: ${e.reason}`;
      return row;
    });
    opts.output.write(`${formatTable(rows, { color: s.enabled })}\n`);
  }
  const live = entries.filter((e) => e.status === 'live').length;
  const stale = entries.filter((e) => e.status === 'stale').length;
  const unreachable = entries.length - live - stale;
  if (!opts.json) {
    const hidden = opts.all ? [] : [stale && `${stale} stale`, unreachable && `${unreachable} unreachable`].filter(Boolean);
    if (live === 0) opts.error.write(`no live agents in ${dir}\n`);
    if (hidden.length) opts.error.write(es.dim(`(${hidden.join(', ')} not shown: --all lists them${stale && !opts.clean ? ', --clean removes the stale ones' : ''})\n`));
  }
  return EXIT_OK;
}
