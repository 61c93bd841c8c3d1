// A minimal client of a Node inspector reached over loopback TCP, for `ispy attach` and
// its watcher: is this port an inspector, open a session whose process is checked to be
// the one we mean, evaluate in it, and close the inspector from inside (which is the only
// way to close it) while watching the port go.
//
// What runs where in the target (Node's src/inspector_io.cc, inspector_agent.cc): the port,
// the HTTP answers (/json/list, /json/version) and the WebSocket belong to the inspector's
// own thread and answer whatever the main thread does. Every protocol message is handed to
// the main thread through a V8 interrupt, which JavaScript takes at its next function call
// or loop iteration, even mid-busy-loop: an evaluation there is answered at once. What
// cannot be interrupted (native code: a synchronous child process or file read; and long
// built-ins such as JSON.parse of a huge string or sorting a huge array) holds every message
// until it returns. `inspector.close()` (process._debugEnd) stops the listener of the
// thread that calls it, so only an evaluation on the main thread closes the port.

import * as http from 'node:http';
import WebSocket from 'ws';
import { IspyError } from '../protocol/errors';
import { isLoopback, listeningPorts, type ListeningSocket } from './procfs';

function refuse(message: string): IspyError {
  return new IspyError('ISPY_ERR_UNAVAILABLE', message);
}

/** The loopback address to reach a listener bound to `host` (only ever loopback). */
function dialHost(host: string): string {
  if (host === '0.0.0.0') return '127.0.0.1';
  if (host === '::') return '::1';
  return host.replace(/^::ffff:/, '');
}

function getJson(host: string, port: number, pathname: string, timeoutMs: number): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const req = http.get({ host, port, path: pathname, timeout: timeoutMs, agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => {
        body += d;
        if (body.length > 1 << 20) req.destroy(new Error('answer too large'));
      });
      res.on('end', () => {
        try {
          resolve(JSON.parse(body));
        } catch (err) {
          reject(err);
        }
      });
    });
    req.on('timeout', () => req.destroy(new Error(`no answer from ${host}:${port} within ${timeoutMs} ms`)));
    req.on('error', reject);
  });
}

/** True when the port answers like a Node inspector. */
export async function isInspector(host: string, port: number, timeoutMs = 500): Promise<boolean> {
  try {
    const v = (await getJson(dialHost(host), port, '/json/version', timeoutMs)) as { Browser?: string } | null;
    return typeof v?.Browser === 'string' && v.Browser.startsWith('node.js');
  } catch {
    return false;
  }
}

export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(interrupted());
    const t = setTimeout(done, ms);
    function done() {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }
    function onAbort() {
      clearTimeout(t);
      reject(interrupted());
    }
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

export function interrupted(): IspyError {
  return new IspyError('ISPY_ERR_CANCELLED', 'interrupted');
}

/** A message the target's main thread did not answer in time (the inspector's own thread had taken it). */
export class NoAnswerError extends Error {
  constructor(method: string, timeoutMs: number) {
    super(`${method} did not answer within ${timeoutMs} ms`);
    this.name = 'NoAnswerError';
  }
}

/** Where `ispy attach`'s first evaluation keeps the deadline it arms in the target (attach.ts). */
export const DEADLINE_KEY = 'ispy.attach.deadline';

/**
 * A function, as JavaScript source for the target, called as `(CLOSE_FUNCTION)(require,
 * onReopened?)`: closes the inspector (and every session on it, ours included), and closes
 * it again should it reopen within the next two turns of the event loop. Why: SIGUSR1 makes
 * Node ask for the inspector twice (Agent::RequestIoThreadStart), by an interrupt, which a
 * main thread busy in JavaScript takes at once, and by waking the event loop. When the
 * interrupt opened it and we closed it before the loop came round, the wake-up, handled
 * when the loop next polls, opens it again. That poll comes before a setImmediate callback
 * of the same turn, or of the next one when we ran in the middle of a poll.
 */
export const CLOSE_FUNCTION = `(load, onReopened) => {
  const inspector = load('node:inspector');
  const { setImmediate } = load('node:timers');
  inspector.close();
  const again = (turns) => setImmediate(() => {
    if (inspector.url() !== undefined) {
      inspector.close();
      if (onReopened) onReopened();
    }
    if (turns > 1) again(turns - 1);
  });
  again(2);
}`;

/**
 * Runs in the target: closes its inspector (CLOSE_FUNCTION), and takes off the deadline
 * `ispy attach` armed there, if any. It acts only in the process whose pid is
 * `expectedPid`, so it may be sent before the pid check has answered: queued behind it, it
 * runs the moment a blocked main thread returns, whoever is still there.
 */
export function closeExpression(expectedPid: number): string {
  return `(() => {
    if (process.pid !== ${expectedPid}) return process.pid;
    const deadline = globalThis[Symbol.for(${JSON.stringify(DEADLINE_KEY)})];
    if (deadline) deadline.disarm();
    (${CLOSE_FUNCTION})(require);
    return process.pid;
  })()`;
}

/** A minimal inspector protocol client over the WebSocket the target's inspector offers. */
export class InspectorConnection {
  private nextId = 1;
  private readonly pending = new Map<number, (m: { result?: any; error?: { message: string } }) => void>();
  private closedReason: string | undefined;

  private constructor(private readonly ws: WebSocket) {
    ws.on('message', (data) => {
      let msg: { id?: number; result?: unknown; error?: { message: string } };
      try {
        msg = JSON.parse(data.toString()) as typeof msg;
      } catch {
        return;
      }
      if (typeof msg?.id === 'number') {
        const settle = this.pending.get(msg.id);
        this.pending.delete(msg.id);
        settle?.(msg);
      }
    });
    ws.on('error', () => {
      // 'close' follows and fails what is pending
    });
    ws.on('close', () => {
      this.closedReason ??= 'the inspector closed the connection';
      for (const [id, settle] of this.pending) {
        this.pending.delete(id);
        settle({ error: { message: this.closedReason } });
      }
    });
  }

  static open(url: string, timeoutMs: number): Promise<InspectorConnection> {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(url, { handshakeTimeout: timeoutMs, perMessageDeflate: false, maxPayload: 16 << 20 });
      ws.once('open', () => {
        ws.off('error', reject);
        resolve(new InspectorConnection(ws));
      });
      ws.once('error', reject);
    });
  }

  /** True once the connection has ended (closed by either side). */
  get closed(): boolean {
    return this.closedReason !== undefined;
  }

  /** Sends a request; `onSent` runs once it has left for the target (handed to the kernel). */
  send(method: string, params: Record<string, unknown>, timeoutMs: number, signal?: AbortSignal, onSent?: () => void): Promise<any> {
    if (this.closedReason) return Promise.reject(new Error(this.closedReason));
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      const onAbort = () => settle({ error: { message: 'interrupted' } });
      const timer = setTimeout(() => settle({ error: { message: '' } }, true), Math.max(0, timeoutMs));
      const settle = (m: { result?: unknown; error?: { message: string } }, late = false) => {
        clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
        this.pending.delete(id);
        if (signal?.aborted) reject(interrupted());
        else if (late) reject(new NoAnswerError(method, timeoutMs));
        else if (m.error) reject(new Error(m.error.message));
        else resolve(m.result);
      };
      this.pending.set(id, settle);
      signal?.addEventListener('abort', onAbort, { once: true });
      this.ws.send(JSON.stringify({ id, method, params }), () => onSent?.());
    });
  }

  /**
   * Evaluates in the target with the console's `require`; returns the JSON value or throws
   * its exception. Never with awaitPromise: the answer to that waits for a microtask
   * checkpoint, which a main thread busy in JavaScript does not reach until it is done (an
   * attach to a spinning process used to wait for the whole spin), while a plain evaluation
   * is answered from the interrupt.
   */
  async evaluate(expression: string, timeoutMs: number, signal?: AbortSignal, onSent?: () => void): Promise<unknown> {
    const r = (await this.send('Runtime.evaluate', { expression, includeCommandLineAPI: true, returnByValue: true }, timeoutMs, signal, onSent)) as {
      result: { value?: unknown };
      exceptionDetails?: { exception?: { description?: string }; text: string };
    };
    if (r.exceptionDetails) throw new Error(r.exceptionDetails.exception?.description ?? r.exceptionDetails.text);
    return r.result.value;
  }

  /**
   * Runs an expression that closes the target's inspector; its answer never comes (the
   * close ends our connection too). Should the main thread be stuck, the request waits in
   * its queue and runs when the thread is free, even after this connection has ended (the
   * inspector's thread hands each message to the main thread as it arrives).
   */
  requestClose(expression: string, onSent?: () => void): void {
    try {
      this.ws.send(JSON.stringify({ id: this.nextId++, method: 'Runtime.evaluate', params: { expression, includeCommandLineAPI: true } }), () => onSent?.());
    } catch {
      // already closed
    }
  }

  close(): void {
    this.closedReason ??= 'closed by ispy';
    this.ws.terminate();
  }
}

/**
 * Connects to the inspector at host:port (the inspector's own thread answers this part,
 * whatever the main thread does). Refuses, touching nothing, a debugger URL that points
 * anywhere but back to the same loopback port.
 */
export async function openSession(host: string, port: number, timeoutMs: number): Promise<InspectorConnection> {
  const dial = dialHost(host);
  const targets = (await getJson(dial, port, '/json/list', Math.max(1, timeoutMs))) as { webSocketDebuggerUrl?: string }[] | null;
  const url = Array.isArray(targets) ? targets[0]?.webSocketDebuggerUrl : undefined;
  if (typeof url !== 'string') throw refuse(`the inspector on ${dial}:${port} offers no debugger target; not touching it`);
  // The URL must point where we asked, never elsewhere.
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw refuse(`the inspector on ${dial}:${port} offers a malformed debugger URL; not touching it`);
  }
  if (u.protocol !== 'ws:' || Number(u.port || 80) !== port || !isLoopback(u.hostname)) {
    throw refuse(`the inspector on ${dial}:${port} points elsewhere (${url}); not touching it`);
  }
  return InspectorConnection.open(url, Math.max(1, timeoutMs));
}

/**
 * Checks through the session that the process behind it is `pid` (as it sees itself:
 * `expectedPid`), with `expression`, which must evaluate to the process's pid and act only
 * when that is `expectedPid`. Closes the connection and refuses when it is another process;
 * a NoAnswerError (connection kept) when the main thread did not answer in time.
 */
export async function verifyPid(
  conn: InspectorConnection,
  pid: number,
  expectedPid: number,
  where: string,
  timeoutMs: number,
  signal?: AbortSignal,
  expression = 'process.pid',
  onSent?: () => void,
): Promise<void> {
  let seen: unknown;
  try {
    seen = await conn.evaluate(expression, timeoutMs, signal, onSent);
  } catch (err) {
    if (!(err instanceof NoAnswerError)) conn.close();
    throw err;
  }
  if (seen !== expectedPid) {
    conn.close();
    throw new IspyError('ISPY_ERR_UNAVAILABLE', `the inspector on ${where} belongs to process ${String(seen)}, not ${pid}; ispy did not touch it`, {
      details: { otherProcess: seen },
    });
  }
}

/**
 * Connects to the inspector at host:port and checks, through the session, that the
 * process behind it is `pid` (as it sees itself: `expectedPid`). Refuses, touching
 * nothing, when it is another process.
 */
export async function openVerifiedSession(pid: number, expectedPid: number, host: string, port: number, timeoutMs: number, signal?: AbortSignal): Promise<InspectorConnection> {
  const deadline = performance.now() + timeoutMs;
  const conn = await openSession(host, port, timeoutMs);
  try {
    await verifyPid(conn, pid, expectedPid, `${dialHost(host)}:${port}`, deadline - performance.now(), signal);
  } catch (err) {
    conn.close();
    throw err;
  }
  return conn;
}

/**
 * Waits until the target no longer listens on `port` (or `stop()` says to give up); false
 * when it still does. Polls every `everyMs`: often while the window is ours to bound.
 */
export async function waitPortClosed(pid: number, port: number, timeoutMs: number, stop?: () => boolean, everyMs = 2): Promise<boolean> {
  for (const deadline = performance.now() + timeoutMs; performance.now() < deadline; await sleep(everyMs)) {
    if (!listeningPorts(pid).includes(port)) return true;
    if (stop?.()) break;
  }
  return !listeningPorts(pid).includes(port);
}

/** Closes the target's inspector through `conn` and waits until the port is gone. False when it did not close in time. */
export async function closeInspector(pid: number, port: number, conn: InspectorConnection, timeoutMs: number, expression: string): Promise<boolean> {
  conn.requestClose(expression);
  try {
    return await waitPortClosed(pid, port, timeoutMs);
  } finally {
    conn.close();
  }
}

/**
 * Closes an inspector of `pid` through a session of our own. The close checks the pid
 * itself, so it is sent without waiting for the pid check (which a blocked main thread
 * would not answer): it runs when that thread can.
 */
export async function closeWithNewSession(pid: number, expectedPid: number, at: ListeningSocket, timeoutMs: number): Promise<boolean> {
  const deadline = performance.now() + timeoutMs;
  let conn: InspectorConnection;
  try {
    conn = await openSession(at.host, at.port, timeoutMs);
  } catch {
    return false;
  }
  return closeInspector(pid, at.port, conn, deadline - performance.now(), closeExpression(expectedPid));
}
