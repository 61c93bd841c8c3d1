// `ispy attach <pid>`: load the agent into a running Node process that was started
// without it. Linux only (it reads /proc).
//
//   check the pid: ours (same uid), a Node binary, no inspector already open, no agent
//   SIGUSR1 ─► the target opens its inspector on 127.0.0.1 (Node's documented signal)
//   find the port in the target's own listening sockets (/proc), never by guessing 9229
//   connect, check process.pid through the session, check for an agent already there
//   Runtime.evaluate: require(<this ispy>/dist/src/index.js).startAgent({ config, socket })
//   inspector.close() in the target, and wait until the port is really closed
//
// Security note: while the inspector port is open (typically tens of milliseconds, and
// reported), any local user who can reach 127.0.0.1 could connect to it and run code in
// the target. Every path out of here, error paths included, closes it again.

import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, readlinkSync } from 'node:fs';
import * as http from 'node:http';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import WebSocket from 'ws';
import { IspyError } from '../protocol/errors';

export interface AttachOptions {
  /** Config file for the agent, resolved here and passed as an absolute path. */
  config?: string;
  /** Socket path for the agent ({pid} allowed). */
  socket?: string;
  /** Longest wait for each step. */
  timeoutMs?: number;
  /** The agent entry point to load; default: this ispy's own build. */
  agentModule?: string;
}

export interface AttachResult {
  pid: number;
  socket: string;
  inspectorPort: number;
  /** How long the inspector port was open, from the signal to the observed close. */
  inspectorOpenMs: number;
  failedPlugins: { name: string; message: string }[];
}

function refuse(message: string): IspyError {
  return new IspyError('ISPY_ERR_UNAVAILABLE', message);
}

function readProc(pid: number, file: string): string | undefined {
  try {
    return readFileSync(`/proc/${pid}/${file}`, 'utf8');
  } catch {
    return undefined;
  }
}

/** Real uid of a process, from /proc/<pid>/status. */
export function uidOf(pid: number): number | undefined {
  const m = /^Uid:\s+(\d+)/m.exec(readProc(pid, 'status') ?? '');
  return m ? Number(m[1]) : undefined;
}

/** TCP ports a process is listening on: its socket inodes matched against /proc/<pid>/net/tcp{,6}. */
export function listeningPorts(pid: number): number[] {
  const inodes = new Set<string>();
  let fds: string[] = [];
  try {
    fds = readdirSync(`/proc/${pid}/fd`);
  } catch {
    return [];
  }
  for (const fd of fds) {
    try {
      const m = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/${pid}/fd/${fd}`));
      if (m) inodes.add(m[1]!);
    } catch {
      // closed meanwhile
    }
  }
  const ports = new Set<number>();
  for (const table of ['net/tcp', 'net/tcp6']) {
    for (const line of (readProc(pid, table) ?? '').split('\n').slice(1)) {
      const cols = line.trim().split(/\s+/);
      // local_address rem_address st ... inode (column 9); st 0A = LISTEN
      if (cols.length > 9 && cols[3] === '0A' && inodes.has(cols[9]!)) ports.add(parseInt(cols[1]!.split(':')[1]!, 16));
    }
  }
  return [...ports].sort((a, b) => a - b);
}

function getJson(port: number, pathname: string, timeoutMs: number): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port, path: pathname, timeout: timeoutMs, agent: false }, (res) => {
      let body = '';
      res.on('data', (d) => (body += d));
      res.on('end', () => {
        try {
          resolve(JSON.parse(body));
        } catch (err) {
          reject(err);
        }
      });
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', reject);
  });
}

/** True when the port answers like a Node inspector. */
async function isInspector(port: number): Promise<boolean> {
  try {
    const v = (await getJson(port, '/json/version', 500)) as { Browser?: string };
    return typeof v?.Browser === 'string' && v.Browser.startsWith('node.js');
  } catch {
    return false;
  }
}

function portOpen(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect({ host: '127.0.0.1', port });
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A minimal inspector protocol client over the WebSocket the target's inspector offers. */
class InspectorConnection {
  private nextId = 1;
  private readonly pending = new Map<number, (m: { result?: any; error?: { message: string } }) => void>();

  private constructor(private readonly ws: WebSocket) {
    ws.on('message', (data) => {
      const msg = JSON.parse(data.toString()) as { id?: number; result?: unknown; error?: { message: string } };
      if (msg.id !== undefined) {
        this.pending.get(msg.id)?.(msg);
        this.pending.delete(msg.id);
      }
    });
  }

  static open(url: string, timeoutMs: number): Promise<InspectorConnection> {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(url, { handshakeTimeout: timeoutMs, perMessageDeflate: false });
      ws.once('open', () => resolve(new InspectorConnection(ws)));
      ws.once('error', reject);
    });
  }

  send(method: string, params: Record<string, unknown>, timeoutMs: number): Promise<any> {
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new Error(`${method} did not answer within ${timeoutMs} ms`));
      }, timeoutMs);
      this.pending.set(id, (m) => {
        clearTimeout(timer);
        if (m.error) reject(new Error(m.error.message));
        else resolve(m.result);
      });
      this.ws.send(JSON.stringify({ id, method, params }));
    });
  }

  /** Evaluates in the target with the console's `require`; returns the JSON value or throws its exception. */
  async evaluate(expression: string, timeoutMs: number): Promise<unknown> {
    const r = (await this.send('Runtime.evaluate', { expression, includeCommandLineAPI: true, returnByValue: true, awaitPromise: true }, timeoutMs)) as {
      result: { value?: unknown };
      exceptionDetails?: { exception?: { description?: string }; text: string };
    };
    if (r.exceptionDetails) throw new Error(r.exceptionDetails.exception?.description ?? r.exceptionDetails.text);
    return r.result.value;
  }

  /** Asks the target to close its inspector; the answer never comes (it closes us too). */
  requestClose(): void {
    try {
      this.ws.send(JSON.stringify({ id: this.nextId++, method: 'Runtime.evaluate', params: { expression: "require('node:inspector').close()", includeCommandLineAPI: true } }));
    } catch {
      // already closed
    }
  }

  close(): void {
    this.ws.terminate();
  }
}

function defaultAgentModule(): string {
  // dist/src/cli/attach.js → dist/src/index.js
  return path.resolve(__dirname, '..', 'index.js');
}

/** Checks the target before anything is done to it; throws a refusal naming the reason. */
export async function checkTarget(pid: number): Promise<void> {
  if (!Number.isSafeInteger(pid) || pid <= 0) throw new IspyError('ISPY_ERR_USAGE', `"${pid}" is not a process id`);
  if (process.platform !== 'linux') throw refuse('ispy attach reads /proc and works on Linux only');
  try {
    process.kill(pid, 0);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ESRCH') throw new IspyError('ISPY_ERR_NOT_FOUND', `no process ${pid}`);
    if ((err as NodeJS.ErrnoException).code === 'EPERM') throw refuse(`process ${pid} belongs to another user; run ispy attach as that user`);
    throw err;
  }
  const uid = uidOf(pid);
  const me = process.getuid?.();
  if (uid !== undefined && me !== undefined && uid !== me) throw refuse(`process ${pid} belongs to uid ${uid}, not to you (uid ${me}); run ispy attach as that user`);
  let exe = '';
  try {
    exe = readlinkSync(`/proc/${pid}/exe`);
  } catch {
    throw refuse(`cannot read /proc/${pid}/exe to check that process ${pid} is Node.js`);
  }
  if (!/^(node|nodejs)(\d+)?$/.test(path.basename(exe).replace(/ \(deleted\)$/, ''))) throw refuse(`process ${pid} is not Node.js (its program is ${exe})`);
  const sock = path.join(os.tmpdir(), `ispy-${me ?? 0}`, `${pid}.sock`);
  if (existsSync(sock)) {
    const live = await new Promise<boolean>((resolve) => {
      const s = net.connect(sock);
      s.once('connect', () => {
        s.destroy();
        resolve(true);
      });
      s.once('error', () => resolve(false));
    });
    if (live) throw refuse(`process ${pid} already has an ispy agent (socket ${sock}); connect with \`ispy connect ${sock}\``);
  }
  for (const port of listeningPorts(pid)) {
    if (await isInspector(port)) {
      throw refuse(`process ${pid} already has its inspector open on 127.0.0.1:${port} (someone else's debugging session); ispy will neither use nor close it`);
    }
  }
}

export async function attach(pid: number, opts: AttachOptions = {}): Promise<AttachResult> {
  const timeoutMs = opts.timeoutMs ?? 5000;
  await checkTarget(pid);
  const before = new Set(listeningPorts(pid));
  const signalled = performance.now();
  process.kill(pid, 'SIGUSR1');
  let port: number | undefined;
  let conn: InspectorConnection | undefined;
  try {
    // The port the target opened: a new listening socket of *that* process.
    for (const deadline = Date.now() + timeoutMs; port === undefined && Date.now() < deadline; await sleep(10)) {
      port = listeningPorts(pid).find((p) => !before.has(p));
    }
    if (port === undefined) {
      const held = (await portOpen(9229)) ? ' (127.0.0.1:9229 is held by another process, so the inspector could not bind)' : '';
      throw refuse(`process ${pid} did not open its inspector within ${timeoutMs} ms${held}; it may have been started with --disable-sigusr1 or have a SIGUSR1 handler of its own`);
    }
    const targets = (await getJson(port, '/json/list', timeoutMs)) as { webSocketDebuggerUrl?: string }[];
    const url = targets[0]?.webSocketDebuggerUrl;
    if (!url) throw refuse(`the inspector of process ${pid} on port ${port} offers no debugger target`);
    conn = await InspectorConnection.open(url, timeoutMs);
    const seenPid = await conn.evaluate('process.pid', timeoutMs);
    if (seenPid !== pid) throw refuse(`the inspector on 127.0.0.1:${port} belongs to process ${String(seenPid)}, not ${pid}; not touching it`);
    const existing = (await conn.evaluate(`globalThis[Symbol.for('ispy.agent')]?.socket ?? null`, timeoutMs)) as string | null;
    if (existing) throw refuse(`process ${pid} already has an ispy agent (socket ${existing}); connect with \`ispy connect ${existing}\``);
    const options: Record<string, unknown> = {};
    if (opts.config) options.config = path.resolve(opts.config);
    if (opts.socket) options.socket = path.resolve(opts.socket);
    const agentModule = opts.agentModule ?? defaultAgentModule();
    const started = (await conn.evaluate(
      `require(${JSON.stringify(agentModule)}).startAgent(${JSON.stringify(options)}).then(
         (a) => ({ socket: a.socket, failed: a.failedPlugins.map((f) => ({ name: f.name, message: f.error.message })) }),
         (e) => ({ error: e && e.message ? e.message : String(e) }))`,
      Math.max(timeoutMs, 15_000),
    )) as { socket?: string; failed?: { name: string; message: string }[]; error?: string };
    if (started.error) throw new IspyError('ISPY_ERR_UNAVAILABLE', `the agent did not start in process ${pid}: ${started.error}`);
    const openMs = await closeInspector(pid, port, conn, signalled, timeoutMs);
    conn = undefined;
    return { pid, socket: started.socket!, inspectorPort: port, inspectorOpenMs: openMs, failedPlugins: started.failed ?? [] };
  } finally {
    // Every error path closes the inspector too.
    if (port !== undefined && conn) await closeInspector(pid, port, conn, signalled, timeoutMs).catch(() => {});
    else if (port !== undefined && (await portOpen(port))) await closeWithNewSession(pid, port, timeoutMs);
  }
}

/** Closes the target's inspector and waits until the port refuses connections. Returns how long it was open. */
async function closeInspector(pid: number, port: number, conn: InspectorConnection, signalled: number, timeoutMs: number): Promise<number> {
  conn.requestClose();
  for (const deadline = Date.now() + timeoutMs; Date.now() < deadline; await sleep(5)) {
    if (!listeningPorts(pid).includes(port)) {
      conn.close();
      return Math.round(performance.now() - signalled);
    }
  }
  conn.close();
  throw new IspyError('ISPY_ERR_INSPECTOR', `the inspector of process ${pid} is still open on 127.0.0.1:${port}; close it with: kill -USR1 is not enough, run \`node -e "process._debugEnd?.(${pid})"\` or restart the process`);
}

async function closeWithNewSession(pid: number, port: number, timeoutMs: number): Promise<void> {
  try {
    const targets = (await getJson(port, '/json/list', timeoutMs)) as { webSocketDebuggerUrl?: string }[];
    if (!targets[0]?.webSocketDebuggerUrl) return;
    const conn = await InspectorConnection.open(targets[0].webSocketDebuggerUrl, timeoutMs);
    await closeInspector(pid, port, conn, performance.now(), timeoutMs);
  } catch {
    // reported by the caller's error
  }
}

/** Used by tests and the bench: is a process listening on this port right now? */
export function processListening(pid: number, port: number): boolean {
  return listeningPorts(pid).includes(port);
}

/** A quick check that `ss` agrees (for debugging on odd kernels); not used on the main path. */
export function ssListening(port: number): boolean {
  try {
    return execFileSync('ss', ['-ltnH', `sport = :${port}`], { encoding: 'utf8' }).trim().length > 0;
  } catch {
    return false;
  }
}
