// What /proc says about a process, for `ispy attach` (Linux only): who owns it, what it
// runs, its namespaces and signal masks, the TCP and UNIX sockets it listens on, and the
// Node options that decide where SIGUSR1 opens its inspector. Nothing here acts on it.

import { readdirSync, readFileSync, readlinkSync, realpathSync } from 'node:fs';
import * as path from 'node:path';

export function readProc(pid: number | 'self', file: string): string | undefined {
  try {
    return readFileSync(`/proc/${pid}/${file}`, 'utf8');
  } catch {
    return undefined;
  }
}

export function statusField(pid: number, name: string): string | undefined {
  return new RegExp(`^${name}:\\s*(.*)$`, 'm').exec(readProc(pid, 'status') ?? '')?.[1]?.trim();
}

/** Real uid of a process, from /proc/<pid>/status. */
export function uidOf(pid: number): number | undefined {
  const v = statusField(pid, 'Uid');
  return v === undefined ? undefined : Number(v.split(/\s+/)[0]);
}

/** The pid the process sees for itself (innermost pid namespace), from NSpid. */
export function innerPid(pid: number): number {
  const ns = statusField(pid, 'NSpid');
  return ns ? Number(ns.split(/\s+/).pop()) : pid;
}

/** The process's start time (clock ticks since boot): tells a pid from its reuse. */
export function startTimeOf(pid: number): string | undefined {
  const stat = readProc(pid, 'stat');
  // Fields after the command name (which may hold spaces and parentheses).
  return stat?.slice(stat.lastIndexOf(')') + 2).split(' ')[19];
}

export interface ListeningSocket {
  /** The address it is bound to, as /proc has it: 127.0.0.1, 0.0.0.0, ::, ::1, … */
  host: string;
  port: number;
}

function procAddress(hex: string): string {
  if (hex.length === 8) return [3, 2, 1, 0].map((i) => parseInt(hex.slice(i * 2, i * 2 + 2), 16)).join('.');
  // IPv6: four 32-bit words, each in host (little-endian) byte order.
  const bytes: number[] = [];
  for (let w = 0; w < 4; w++) for (const i of [3, 2, 1, 0]) bytes.push(parseInt(hex.slice(w * 8 + i * 2, w * 8 + i * 2 + 2), 16));
  if (bytes.slice(0, 10).every((b) => b === 0) && bytes[10] === 0xff && bytes[11] === 0xff) return `::ffff:${bytes.slice(12).join('.')}`;
  const groups: string[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(((bytes[i]! << 8) | bytes[i + 1]!).toString(16));
  const full = groups.join(':');
  if (full === '0:0:0:0:0:0:0:0') return '::';
  if (full === '0:0:0:0:0:0:0:1') return '::1';
  return full;
}

export function socketInodes(pid: number): Set<string> | undefined {
  let fds: string[];
  try {
    fds = readdirSync(`/proc/${pid}/fd`);
  } catch {
    return undefined;
  }
  const inodes = new Set<string>();
  for (const fd of fds) {
    try {
      const m = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/${pid}/fd/${fd}`));
      if (m) inodes.add(m[1]!);
    } catch {
      // closed meanwhile
    }
  }
  return inodes;
}

export interface TcpListener extends ListeningSocket {
  inode: string;
}

/** Every listening TCP socket in a process's network namespace ('self': ours). */
export function tcpListeners(pid: number | 'self'): TcpListener[] {
  const out: TcpListener[] = [];
  for (const table of ['net/tcp', 'net/tcp6']) {
    for (const line of (readProc(pid, table) ?? '').split('\n').slice(1)) {
      const cols = line.trim().split(/\s+/);
      // sl local_address rem_address st … inode (column 9); st 0A = LISTEN
      if (cols.length <= 9 || cols[3] !== '0A') continue;
      const [addr, port] = cols[1]!.split(':');
      out.push({ host: procAddress(addr!), port: parseInt(port!, 16), inode: cols[9]! });
    }
  }
  return out;
}

/** TCP sockets a process is listening on: its socket inodes matched against /proc/<pid>/net/tcp{,6}. */
export function listeningSockets(pid: number): ListeningSocket[] {
  const inodes = socketInodes(pid);
  if (!inodes) return [];
  const seen = new Set<string>();
  const out: ListeningSocket[] = [];
  for (const l of tcpListeners(pid)) {
    const key = `${l.host} ${l.port}`;
    if (inodes.has(l.inode) && !seen.has(key)) {
      seen.add(key);
      out.push({ host: l.host, port: l.port });
    }
  }
  return out.sort((a, b) => a.port - b.port);
}

/** TCP ports a process is listening on. */
export function listeningPorts(pid: number): number[] {
  return [...new Set(listeningSockets(pid).map((s) => s.port))].sort((a, b) => a - b);
}

export function isLoopback(host: string): boolean {
  const h = host.replace(/^\[|\]$/g, '').toLowerCase();
  return h === 'localhost' || h === '::1' || /^(::ffff:)?127\.\d+\.\d+\.\d+$/.test(h);
}

export const isWildcard = (host: string) => host === '0.0.0.0' || host === '::';

/** Node options that take their value as the next word (the ones that matter for finding the script). */
const VALUE_OPTIONS = new Set(['-r', '--require', '--import', '--loader', '--experimental-loader', '-C', '--conditions', '--inspect-port', '--debug-port', '--title', '--env-file', '--input-type', '--redirect-warnings', '--openssl-config', '--icu-data-dir', '--disable-warning']);

/** The Node options of a process: NODE_OPTIONS first, then those on its command line before the script. */
export function nodeOptionsOf(cmdline: string[], nodeOptionsEnv: string | undefined): string[] {
  const out = (nodeOptionsEnv ?? '').split(/\s+/).filter(Boolean);
  for (let i = 1; i < cmdline.length; i++) {
    const a = cmdline[i]!;
    if (a === '--' || !a.startsWith('-') || a === '-') break;
    out.push(a);
    if (VALUE_OPTIONS.has(a) && i + 1 < cmdline.length) out.push(cmdline[++i]!);
    if (a === '-e' || a === '--eval' || a === '-p' || a === '--print') break;
  }
  return out;
}

/**
 * Where SIGUSR1 makes Node's inspector listen: the last `--inspect-port`/`--debug-port`
 * or `--inspect[-brk|-wait]=` address among the options, else 127.0.0.1:9229.
 */
export function inspectAddress(options: string[]): { host: string; port: number } {
  let host = '127.0.0.1';
  let port = 9229;
  const apply = (value: string) => {
    const v = value.trim();
    let m: RegExpExecArray | null;
    if (/^\d+$/.test(v)) port = Number(v);
    else if ((m = /^\[([^\]]+)\](?::(\d+))?$/.exec(v))) {
      host = m[1]!;
      if (m[2] !== undefined) port = Number(m[2]);
    } else if ((m = /^(.*):(\d+)$/.exec(v))) {
      host = m[1]!;
      port = Number(m[2]);
    } else if (v) host = v;
  };
  for (let i = 0; i < options.length; i++) {
    const a = options[i]!;
    const m = /^--(inspect-port|debug-port|inspect|inspect-brk|inspect-wait)(?:=(.*))?$/.exec(a);
    if (!m) continue;
    if (m[2] !== undefined) apply(m[2]);
    else if ((m[1] === 'inspect-port' || m[1] === 'debug-port') && i + 1 < options.length) apply(options[++i]!);
  }
  return { host, port };
}

export function sameNamespace(pid: number, ns: string): boolean {
  try {
    return readlinkSync(`/proc/${pid}/ns/${ns}`) === readlinkSync(`/proc/self/ns/${ns}`);
  } catch {
    return true; // cannot tell; the pid check through the session still guards us
  }
}

export function isNodeExecutable(exe: string): boolean {
  const clean = exe.replace(/ \(deleted\)$/, '');
  if (/^(node|nodejs)(-?v?\d+(\.\d+)*)?$/.test(path.basename(clean))) return true;
  try {
    return realpathSync(clean) === realpathSync(process.execPath);
  } catch {
    return false;
  }
}

export function environOf(pid: number): Record<string, string> {
  const env: Record<string, string> = {};
  for (const kv of (readProc(pid, 'environ') ?? '').split('\0')) {
    const i = kv.indexOf('=');
    if (i > 0) env[kv.slice(0, i)] = kv.slice(i + 1);
  }
  return env;
}

/** Who holds a listening socket, best effort: scans /proc/*\/fd (bounded). */
export function ownerOfInode(inode: string, budgetMs = 2000): number | undefined {
  const until = Date.now() + budgetMs;
  let pids: string[] = [];
  try {
    pids = readdirSync('/proc').filter((n) => /^\d+$/.test(n));
  } catch {
    return undefined;
  }
  for (const p of pids) {
    if (Date.now() > until) return undefined;
    let fds: string[];
    try {
      fds = readdirSync(`/proc/${p}/fd`);
    } catch {
      continue;
    }
    for (const fd of fds) {
      try {
        if (readlinkSync(`/proc/${p}/fd/${fd}`) === `socket:[${inode}]`) return Number(p);
      } catch {
        // gone
      }
    }
  }
  return undefined;
}

export function commOf(pid: number): string {
  return (readProc(pid, 'comm') ?? '?').trim();
}

/** Paths of the UNIX sockets the process listens on (abstract ones left out). */
export function listeningUnixSockets(pid: number): string[] {
  const inodes = socketInodes(pid);
  if (!inodes) return [];
  const out: string[] = [];
  for (const line of (readProc(pid, 'net/unix') ?? '').split('\n').slice(1)) {
    // Num RefCount Protocol Flags Type St Inode Path; Flags 00010000 = listening
    const cols = line.trim().split(/\s+/);
    if (cols.length < 8 || cols[3] !== '00010000' || !inodes.has(cols[6]!)) continue;
    const file = cols.slice(7).join(' ');
    if (file.startsWith('/')) out.push(file);
  }
  return out;
}
