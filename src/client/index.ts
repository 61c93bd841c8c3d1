// The programmatic client (`ispy/client`): connect to an agent's socket, read its
// catalogue, call commands (values, streams, artefacts), cancel, close. The CLI is built
// on this and nothing else.
//
//   const c = await connect('/tmp/ispy-1000/4242.sock');
//   const info = await c.call('process', 'info');
//   for await (const ev of c.stream('requests', 'watch')) { … }
//   await c.close();

import * as net from 'node:net';
import * as os from 'node:os';
import type { Duplex } from 'node:stream';
import { EventEmitter } from 'node:events';
import WebSocket from 'ws';
import {
  HARD_MAX_FRAME_BYTES,
  MAX_HELLO_TEXT,
  PROTOCOL_VERSION,
  WS_PATH,
  decodeBinaryFrame,
  parseAgentMessage,
  type AgentMessage,
  type ArtefactMessage,
  type CallMessage,
  type ClientMessage,
  type HelloMessage,
  type PluginInfo,
  type CommandInfo,
  type WelcomeMessage,
} from '../protocol/index';
import { IspyError, fromWireError } from '../protocol/errors';

export type { WelcomeMessage, PluginInfo, CommandInfo, ArtefactMessage } from '../protocol/index';
export { IspyError, isIspyError } from '../protocol/errors';

export interface ConnectOptions {
  /** Longest wait for the connection and the welcome. Default 5 s. */
  timeoutMs?: number;
  /** Names this client in the agent's log and audit trail. */
  clientName?: string;
  /** Supplies the byte stream instead of connecting to the socket (ssh, `ispy bridge`). */
  createConnection?: () => Duplex;
}

export interface ArtefactWriter {
  write(chunk: Buffer): void;
  end(): Promise<void>;
  /** Called when the transfer fails part-way: remove what was written. */
  abort(): Promise<void>;
}

export interface CallOptions {
  signal?: AbortSignal;
  /** Client-side limit; on expiry the call is cancelled and rejects with ISPY_ERR_TIMEOUT. */
  timeoutMs?: number;
  onData?(data: unknown): void;
  onProgress?(update: { done?: number; total?: number; message?: string }): void;
  /** Called when the command produced a file. Return a writer to receive its bytes (they are then sent). */
  onArtefact?(info: ArtefactMessage): ArtefactWriter | undefined | void;
  /** Ask the agent to send artefact bytes (set automatically when onArtefact is given). */
  fetch?: boolean;
}

interface PendingCall {
  opts: CallOptions;
  resolve(value: unknown): void;
  reject(err: Error): void;
  writers: ArtefactWriter[];
  current?: ArtefactWriter;
}

function connectError(target: string, err: NodeJS.ErrnoException): IspyError {
  switch (err.code) {
    case 'ENOENT':
      return new IspyError('ISPY_ERR_CONNECT', `no agent socket at ${target} (no such file); list live agents with \`ispy ps\``);
    case 'ECONNREFUSED':
      return new IspyError('ISPY_ERR_CONNECT', `stale socket ${target}: nothing is listening on it (the process that created it is gone)`);
    case 'EACCES':
    case 'EPERM':
      return new IspyError('ISPY_ERR_CONNECT', `permission denied for ${target}: the socket belongs to another user; run ispy as that user`);
    case 'ENOTSOCK':
      return new IspyError('ISPY_ERR_CONNECT', `${target} is not a socket`);
    case 'EPIPE':
    case 'ECONNRESET':
      return new IspyError('ISPY_ERR_CONNECT', `the agent at ${target} closed the connection during the handshake (it may be at its connection limit with many clients arriving, or stopping); try again in a moment`);
    default:
      return new IspyError('ISPY_ERR_CONNECT', `cannot connect to ${target}: ${err.message}`);
  }
}

export class Client extends EventEmitter {
  private nextId = 1;
  private readonly pending = new Map<number, PendingCall>();
  private closed = false;
  /** Why the connection ended, once it has. */
  closeReason: string | undefined;

  constructor(
    private readonly ws: WebSocket,
    readonly welcome: WelcomeMessage,
    readonly target: string,
  ) {
    super();
    ws.on('message', (data, isBinary) => this.onFrame(data as Buffer, isBinary));
    ws.on('close', (code, reason) => this.onClose(code, reason.toString()));
    ws.on('error', () => {});
  }

  get plugins(): PluginInfo[] {
    return this.welcome.plugins;
  }

  findCommand(plugin: string, command: string): CommandInfo | undefined {
    return this.plugins.find((p) => p.name === plugin)?.commands.find((c) => c.name === command);
  }

  get isOpen(): boolean {
    return !this.closed;
  }

  /** Calls a command and resolves with its result (stream items go to opts.onData). */
  call(plugin: string, command: string, args: Record<string, unknown> = {}, opts: CallOptions = {}): Promise<unknown> {
    if (this.closed) return Promise.reject(new IspyError('ISPY_ERR_DISCONNECTED', `connection to ${this.target} is closed${this.closeReason ? ` (${this.closeReason})` : ''}`));
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      let timer: NodeJS.Timeout | undefined;
      const cleanup = () => {
        clearTimeout(timer);
        opts.signal?.removeEventListener('abort', onAbort);
      };
      const onAbort = () => this.cancel(id);
      this.pending.set(id, {
        opts,
        writers: [],
        resolve: (v) => {
          cleanup();
          resolve(v);
        },
        reject: (e) => {
          cleanup();
          reject(e);
        },
      });
      if (opts.signal?.aborted) {
        this.pending.delete(id);
        return reject(new IspyError('ISPY_ERR_CANCELLED', 'cancelled before it started'));
      }
      opts.signal?.addEventListener('abort', onAbort, { once: true });
      if (opts.timeoutMs !== undefined) {
        timer = setTimeout(() => {
          const p = this.pending.get(id);
          this.cancel(id);
          this.pending.delete(id);
          void this.abortWriters(p);
          p?.reject(new IspyError('ISPY_ERR_TIMEOUT', `${plugin} ${command} did not finish within ${opts.timeoutMs} ms`));
        }, opts.timeoutMs);
      }
      const msg: CallMessage = { type: 'call', id, plugin, command, args };
      if (opts.fetch ?? opts.onArtefact !== undefined) msg.fetch = true;
      this.send(msg);
    });
  }

  /** Iterates a streaming command's data; breaking out of the loop cancels it. */
  async *stream(plugin: string, command: string, args: Record<string, unknown> = {}, opts: Omit<CallOptions, 'onData'> = {}): AsyncGenerator<unknown, unknown> {
    const queue: unknown[] = [];
    let wake: (() => void) | undefined;
    let done = false;
    let failure: Error | undefined;
    let result: unknown;
    const controller = new AbortController();
    opts.signal?.addEventListener('abort', () => controller.abort(), { once: true });
    this.call(plugin, command, args, {
      ...opts,
      signal: controller.signal,
      onData: (d) => {
        queue.push(d);
        wake?.();
      },
    }).then(
      (v) => {
        result = v;
        done = true;
        wake?.();
      },
      (e: Error) => {
        failure = e;
        done = true;
        wake?.();
      },
    );
    try {
      for (;;) {
        if (queue.length) {
          yield queue.shift();
          continue;
        }
        if (done) break;
        await new Promise<void>((r) => (wake = r));
        wake = undefined;
      }
      if (failure) throw failure;
      return result;
    } finally {
      if (!done) controller.abort();
    }
  }

  cancel(id: number): void {
    if (this.pending.has(id)) this.send({ type: 'cancel', id });
  }

  private send(msg: ClientMessage): void {
    if (this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(msg));
  }

  private onFrame(data: Buffer, isBinary: boolean): void {
    if (isBinary) {
      let frame;
      try {
        frame = decodeBinaryFrame(data);
      } catch {
        return;
      }
      this.pending.get(frame.id)?.current?.write(frame.chunk);
      return;
    }
    let msg: AgentMessage;
    try {
      msg = parseAgentMessage(data.toString('utf8'));
    } catch (err) {
      this.emit('protocol-error', err);
      return;
    }
    if (msg.type === 'welcome') return;
    if (msg.type === 'error' && msg.id === undefined) {
      this.emit('agent-error', fromWireError(msg));
      return;
    }
    const p = this.pending.get(msg.id!);
    if (!p) return;
    switch (msg.type) {
      case 'data':
        p.opts.onData?.(msg.data);
        break;
      case 'progress': {
        const { type: _t, id: _i, ...u } = msg;
        p.opts.onProgress?.(u);
        break;
      }
      case 'artefact': {
        const writer = p.opts.onArtefact?.(msg) ?? undefined;
        if (writer && msg.inline) {
          p.writers.push(writer);
          p.current = writer;
        } else p.current = undefined;
        break;
      }
      case 'result':
        this.pending.delete(msg.id);
        Promise.all(p.writers.map((w) => w.end())).then(
          () => p.resolve(msg.value),
          (err: Error) => p.reject(err),
        );
        break;
      case 'error':
        this.pending.delete(msg.id!);
        void this.abortWriters(p).then(() => p.reject(fromWireError(msg)));
        break;
    }
  }

  private async abortWriters(p: PendingCall | undefined): Promise<void> {
    if (!p) return;
    for (const w of p.writers.splice(0)) await w.abort().catch(() => {});
  }

  private onClose(code: number, reason: string): void {
    if (this.closed) return;
    this.closed = true;
    this.closeReason = reason || (code === 1006 ? 'the agent went away' : `closed with code ${code}`);
    const err = new IspyError('ISPY_ERR_DISCONNECTED', `connection to ${this.target} closed: ${this.closeReason}`);
    for (const p of this.pending.values()) void this.abortWriters(p).then(() => p.reject(err));
    this.pending.clear();
    this.emit('close', this.closeReason);
  }

  /** Closes the connection; running calls reject with ISPY_ERR_DISCONNECTED. Idempotent. */
  close(): Promise<void> {
    if (this.ws.readyState === WebSocket.CLOSED) return Promise.resolve();
    return new Promise((resolve) => {
      this.ws.once('close', () => resolve());
      const t = setTimeout(() => this.ws.terminate(), 1000);
      t.unref();
      this.ws.close(1000, 'client closed');
    });
  }
}

let me: Pick<HelloMessage, 'user' | 'host' | 'pid'> | undefined;

/** Who runs this client, for the agent's audit log: user, host and pid, as far as they can be read (once: `ispy run` says hello to hundreds of agents). */
function whoAmI(): Pick<HelloMessage, 'user' | 'host' | 'pid'> {
  if (me) return me;
  me = { host: os.hostname().slice(0, MAX_HELLO_TEXT), pid: process.pid };
  try {
    me.user = os.userInfo().username.slice(0, MAX_HELLO_TEXT);
  } catch {
    // a uid with no passwd entry (a container): the agent knows the uid anyway
  }
  return me;
}

/** Connects to an agent socket (or a supplied stream) and completes the hello/welcome exchange. */
export function connect(target: string, opts: ConnectOptions = {}): Promise<Client> {
  const timeoutMs = opts.timeoutMs ?? 5000;
  return new Promise((resolve, reject) => {
    let settled = false;
    let ws: WebSocket;
    const fail = (err: Error) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      try {
        ws?.terminate();
      } catch {
        // not open
      }
      reject(err);
    };
    const timer = setTimeout(() => fail(new IspyError('ISPY_ERR_CONNECT', `agent at ${target} did not answer within ${timeoutMs} ms`)), timeoutMs);
    try {
      ws = new WebSocket(`ws://localhost${WS_PATH}`, {
        createConnection: (opts.createConnection ?? (() => net.connect(target))) as never,
        maxPayload: HARD_MAX_FRAME_BYTES,
        perMessageDeflate: false,
        handshakeTimeout: timeoutMs,
      });
    } catch (err) {
      return fail(new IspyError('ISPY_ERR_CONNECT', `cannot connect to ${target}: ${(err as Error).message}`));
    }
    ws.on('error', (err: NodeJS.ErrnoException) => fail(err.code ? connectError(target, err) : new IspyError('ISPY_ERR_CONNECT', `cannot connect to ${target}: ${err.message}`)));
    ws.on('unexpected-response', (_req, res) => {
      // The agent refuses with a one-line text body (too many clients, stopping); pass it on.
      let body = '';
      // Bounded: the agent's refusal (which names who holds its connections) fits well within it.
      res.on('data', (d: Buffer) => {
        if (body.length < 4000) body += d.toString('utf8');
      });
      res.on('end', () => {
        const refused = res.statusCode === 503 || res.statusCode === 404;
        fail(new IspyError('ISPY_ERR_CONNECT', refused ? `agent at ${target} refused the connection: ${body.slice(0, 4000).trim() || `HTTP ${res.statusCode}`}` : `${target} is not an ispy agent socket (HTTP ${res.statusCode})`));
      });
    });
    ws.on('close', (code, reason) => fail(new IspyError('ISPY_ERR_CONNECT', `agent at ${target} closed the connection (${reason.toString() || code})`)));
    ws.on('open', () => {
      const hello: HelloMessage = { type: 'hello', protocol: PROTOCOL_VERSION, client: opts.clientName ?? `ispy-client/${process.pid}`, ...whoAmI() };
      ws.send(JSON.stringify(hello));
    });
    const onFirst = (data: Buffer, isBinary: boolean) => {
      if (isBinary) return;
      let msg: AgentMessage;
      try {
        msg = parseAgentMessage(data.toString('utf8'));
      } catch (err) {
        return fail(err as Error);
      }
      if (msg.type === 'error') return fail(fromWireError(msg));
      if (msg.type !== 'welcome') return;
      if (msg.protocol !== PROTOCOL_VERSION) {
        return fail(new IspyError('ISPY_ERR_PROTOCOL_VERSION', `agent at ${target} speaks protocol ${msg.protocol} (ispy ${msg.ispy}); this client speaks ${PROTOCOL_VERSION}`));
      }
      settled = true;
      clearTimeout(timer);
      ws.off('message', onFirst);
      ws.removeAllListeners('error');
      ws.removeAllListeners('close');
      ws.removeAllListeners('unexpected-response');
      resolve(new Client(ws, msg, target));
    };
    ws.on('message', onFirst);
  });
}
