// A minimal client of a Node inspector reached over loopback TCP, for `ispy attach` and
// its watcher: is this port an inspector, open a session whose process is checked to be
// the one we mean, evaluate in it, and close the inspector from inside (which is the only
// way to close it) while watching the port go.

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

/** Runs in the target: closes its inspector (and every session on it, ours included). */
const CLOSE_EXPRESSION = "require('node:inspector').close()";

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

  send(method: string, params: Record<string, unknown>, timeoutMs: number, signal?: AbortSignal): Promise<any> {
    if (this.closedReason) return Promise.reject(new Error(this.closedReason));
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      const onAbort = () => settle({ error: { message: 'interrupted' } });
      const timer = setTimeout(() => settle({ error: { message: `${method} did not answer within ${timeoutMs} ms` } }), timeoutMs);
      const settle = (m: { result?: unknown; error?: { message: string } }) => {
        clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
        this.pending.delete(id);
        if (signal?.aborted) reject(interrupted());
        else if (m.error) reject(new Error(m.error.message));
        else resolve(m.result);
      };
      this.pending.set(id, settle);
      signal?.addEventListener('abort', onAbort, { once: true });
      this.ws.send(JSON.stringify({ id, method, params }));
    });
  }

  /** Evaluates in the target with the console's `require`; returns the JSON value or throws its exception. */
  async evaluate(expression: string, timeoutMs: number, signal?: AbortSignal): Promise<unknown> {
    const r = (await this.send('Runtime.evaluate', { expression, includeCommandLineAPI: true, returnByValue: true, awaitPromise: true }, timeoutMs, signal)) as {
      result: { value?: unknown };
      exceptionDetails?: { exception?: { description?: string }; text: string };
    };
    if (r.exceptionDetails) throw new Error(r.exceptionDetails.exception?.description ?? r.exceptionDetails.text);
    return r.result.value;
  }

  /**
   * Runs an expression that closes the target's inspector; its answer never comes (the
   * close ends our connection too). Should the main thread be stuck, the request waits in
   * its queue and runs when the thread is free.
   */
  requestClose(expression = CLOSE_EXPRESSION): void {
    try {
      this.ws.send(JSON.stringify({ id: this.nextId++, method: 'Runtime.evaluate', params: { expression, includeCommandLineAPI: true } }));
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
 * Connects to the inspector at host:port and checks, through the session, that the
 * process behind it is `pid` (as it sees itself: `expectedPid`). Refuses, touching
 * nothing, when it is another process.
 */
export async function openVerifiedSession(pid: number, expectedPid: number, host: string, port: number, timeoutMs: number, signal?: AbortSignal): Promise<InspectorConnection> {
  const dial = dialHost(host);
  const targets = (await getJson(dial, port, '/json/list', timeoutMs)) as { webSocketDebuggerUrl?: string }[] | null;
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
  const conn = await InspectorConnection.open(url, timeoutMs);
  let seen: unknown;
  try {
    seen = await conn.evaluate('process.pid', timeoutMs, signal);
  } catch (err) {
    conn.close();
    throw err;
  }
  if (seen !== expectedPid) {
    conn.close();
    throw new IspyError('ISPY_ERR_UNAVAILABLE', `the inspector on ${dial}:${port} belongs to process ${String(seen)}, not ${pid}; ispy did not touch it`, {
      details: { otherProcess: seen },
    });
  }
  return conn;
}

/** Closes the target's inspector and waits until the port refuses connections. False when it did not close in time. */
export async function closeInspector(pid: number, port: number, conn: InspectorConnection, timeoutMs: number, expression?: string): Promise<boolean> {
  conn.requestClose(expression);
  try {
    for (const deadline = Date.now() + timeoutMs; Date.now() < deadline; await sleep(2)) {
      if (!listeningPorts(pid).includes(port)) return true;
    }
    return !listeningPorts(pid).includes(port);
  } finally {
    conn.close();
  }
}

/** Closes an inspector of `pid` through a session of our own, after checking whose it is. */
export async function closeWithNewSession(pid: number, expectedPid: number, at: ListeningSocket, timeoutMs: number): Promise<boolean> {
  let conn: InspectorConnection;
  try {
    conn = await openVerifiedSession(pid, expectedPid, at.host, at.port, timeoutMs);
  } catch {
    return false;
  }
  return closeInspector(pid, at.port, conn, timeoutMs);
}
