// Runs in the agent worker. The WebSocket endpoint on the UNIX socket: one Connection per
// client, each checking every frame, multiplexing calls by id and cancelling them all
// when the client goes away. A bad frame gets an error frame and the connection lives on;
// nothing a client sends can take the agent (let alone the app) down. Which sockets it
// holds at all (the limit, the handshake deadline, who gives way) is admission.ts; a
// connection must say hello within HELLO_TIMEOUT_MS of its upgrade.

import * as fs from 'node:fs';
import * as net from 'node:net';
import {
  EVICTED_CLOSE,
  HARD_MAX_FRAME_BYTES,
  MAX_CALLS_PER_CONNECTION,
  PROTOCOL_VERSION,
  VIA_HEADER,
  WS_PATH,
  encodeBinaryFrame,
  parseClientMessage,
  toJsonSafe,
  type AgentMessage,
  type CallMessage,
  type HelloMessage,
  type WelcomeMessage,
} from '../protocol/index';
import { IspyError, isIspyError, toWireError } from '../protocol/errors';
import type { Registry } from './registry';
import type { AgentAccess, AgentConnections } from '../plugin/define';
import { auditEnd, auditStart, type AuditLog, type AuditedCall, type ClientIdentity } from './audit';
import { agentLogThrottled } from './log';
import { Admission, EVICT_GRACE_MS, type AdmissionOptions, type AdmittedConnection } from './admission';
import { acceptUpgrade, checkUpgrade, httpAnswer, readHead, wantsUpgrade, WebSocketConnection, type RequestHead } from './websocket';

export interface ServerOptions extends AdmissionOptions {
  maxFrameBytes: number;
  /** The operator audit log; undefined when the config turned it off. */
  audit?: AuditLog;
  /** Told when the first client socket arrives (busy) and when the last one has gone (idle). */
  onActivity?(state: 'busy' | 'idle'): void;
  welcome(): Omit<WelcomeMessage, 'type' | 'protocol' | 'maxFrameBytes' | 'plugins' | 'failedPlugins'>;
}

const ARTEFACT_CHUNK = 256 * 1024;
/** From the upgrade to the client's hello. */
export const HELLO_TIMEOUT_MS = 10_000;

export class AgentServer implements AgentAccess {
  /** What listens on the socket: a plain net server; the WebSocket layer is websocket.ts (why not ws: there). */
  readonly listener: net.Server;
  /** Which sockets the agent holds: the limit, the deadlines, who gives way. */
  private readonly admission: Admission;
  /** Open client sockets, evicted ones included until they close: for the busy/idle signal. */
  private sockets = 0;
  private closed = false;

  constructor(
    readonly registry: Registry,
    readonly opts: ServerOptions,
  ) {
    this.admission = new Admission(opts);
    this.listener = net.createServer((socket) => this.onSocket(socket));
  }

  private onSocket(socket: net.Socket): void {
    if (this.closed) return void socket.destroy();
    const slot = this.admission.admit(socket);
    if (!slot) return;
    if (this.sockets++ === 0) this.opts.onActivity?.('busy');
    socket.once('close', () => {
      if (--this.sockets === 0 && !this.closed) this.opts.onActivity?.('idle');
    });
    readHead(socket, (head, rest) => this.onHead(socket, head, rest));
  }

  /** ctx.agent.connections(): what `process info` shows of the agent's connections. */
  connections(): AgentConnections {
    return this.admission.connections();
  }

  private onHead(socket: net.Socket, head: RequestHead, rest: Buffer): void {
    const refuse = (status: number, text: string, headers?: string) => void socket.end(httpAnswer(status, text, headers));
    if (!wantsUpgrade(head)) return refuse(426, 'This is an ispy agent socket: connect with `ispy connect <socket>`.');
    if (this.closed) return refuse(503, 'ispy agent is stopping');
    if (head.url.split('?')[0] !== WS_PATH) return refuse(404, `ispy agent answers on ${WS_PATH}`);
    const slot = this.admission.slotOf(socket);
    // Evicted (or timed out) while its request was on the way.
    if (!slot) return void socket.destroy();
    const bad = checkUpgrade(head);
    if (bad) return refuse(bad.status, bad.text, bad.headers);
    const via = head.headers[VIA_HEADER];
    const ws = acceptUpgrade(socket, head, rest, {
      // Frames a little over the limit get an error frame; far over it, the connection closes (1009).
      maxPayload: Math.min(HARD_MAX_FRAME_BYTES, this.opts.maxFrameBytes * 8),
    });
    slot.upgraded(new Connection(ws, this, slot.id, via !== undefined ? via.slice(0, 200) : undefined));
  }

  /** Closes every connection (cancelling its calls) and the listener. Idempotent. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.admission.closeAll();
    await new Promise<void>((resolve) => this.listener.close(() => resolve()));
  }
}

class Connection implements AdmittedConnection {
  private ready = false;
  /** Who is behind it, as its hello and its bridge said. */
  readonly identity: ClientIdentity;
  private readonly calls = new Map<number, AbortController>();
  private readonly helloTimer: NodeJS.Timeout;
  /** Its last frame or finished call, ms since the epoch: who is idle longest gives way first. */
  lastActive = Date.now();

  constructor(
    private readonly ws: WebSocketConnection,
    private readonly server: AgentServer,
    private readonly id: number,
    via: string | undefined,
  ) {
    this.identity = { id, name: 'unknown', ...(via !== undefined ? { via } : {}) };
    this.helloTimer = setTimeout(() => {
      this.sendError(new IspyError('ISPY_ERR_NOT_READY', `no hello within ${HELLO_TIMEOUT_MS} ms; closing`));
      ws.close(4001, 'no hello');
      this.cutAfterGrace();
    }, HELLO_TIMEOUT_MS);
    ws.on('message', (data, isBinary) => this.onFrame(data, isBinary));
    ws.on('close', () => {
      clearTimeout(this.helloTimer);
      this.abortAll();
      if (this.ready) this.server.registry.clientClosed(this.id);
    });
    ws.on('error', (err) => {
      // A frame over the hard limit ends up here; ws closes the connection with 1009.
      agentLogThrottled('connection-error', `client connection: ${err.message}`);
    });
  }

  private send(msg: AgentMessage): void {
    if (this.ws.readyState !== WebSocketConnection.OPEN) return;
    let text = JSON.stringify(msg);
    // The client would close the connection on a frame past the hard limit: say why instead.
    if (text.length > HARD_MAX_FRAME_BYTES / 4 && Buffer.byteLength(text) > HARD_MAX_FRAME_BYTES) {
      const what = 'id' in msg && msg.id !== undefined ? msg.id : undefined;
      const error: AgentMessage = {
        type: 'error',
        code: 'ISPY_ERR_FRAME_TOO_LARGE',
        message: `the ${msg.type} is ${Buffer.byteLength(text)} bytes, over the ${HARD_MAX_FRAME_BYTES}-byte frame limit; narrow it (e.g. --limit) or use a command that writes an artefact`,
      };
      if (what !== undefined) error.id = what;
      text = JSON.stringify(error);
    }
    this.ws.send(text);
  }

  private sendBinary(chunk: Buffer): Promise<void> {
    return new Promise((resolve, reject) => {
      if (this.ws.readyState !== WebSocketConnection.OPEN) return reject(new IspyError('ISPY_ERR_DISCONNECTED', 'client went away'));
      this.ws.send(chunk, (err) => (err ? reject(err) : resolve()));
    });
  }

  private sendError(err: unknown, id?: number): void {
    const wire = toWireError(err);
    const msg: AgentMessage = { type: 'error', ...wire };
    if (id !== undefined) msg.id = id;
    this.send(msg);
  }

  get isReady(): boolean {
    return this.ready;
  }

  /** Calls (streams included) running now. */
  get running(): number {
    return this.calls.size;
  }

  close(code: number, reason: string): void {
    this.abortAll();
    this.ws.close(code, reason);
  }

  /** Gives this idle connection's slot to a newcomer: says why, closes, and cuts it if it lingers. */
  evict(limit: number): void {
    this.sendError(new IspyError('ISPY_ERR_DISCONNECTED', `closing this connection: it was idle, and the agent is at its limit of ${limit} connections with a new client waiting`));
    this.close(EVICTED_CLOSE.code, EVICTED_CLOSE.reason);
    this.cutAfterGrace();
  }

  /** A peer that does not answer a close frame still lets go of its file descriptor. */
  private cutAfterGrace(): void {
    setTimeout(() => this.ws.terminate(), EVICT_GRACE_MS).unref();
  }

  private abortAll(): void {
    for (const c of this.calls.values()) c.abort();
    this.calls.clear();
  }

  private onFrame(data: Buffer, isBinary: boolean): void {
    this.lastActive = Date.now();
    const size = data.byteLength;
    if (size > this.server.opts.maxFrameBytes) {
      this.sendError(
        new IspyError('ISPY_ERR_FRAME_TOO_LARGE', `frame of ${size} bytes exceeds the limit of ${this.server.opts.maxFrameBytes} bytes (limits.maxFrameBytes)`),
      );
      return;
    }
    if (isBinary) {
      this.sendError(new IspyError('ISPY_ERR_BAD_FRAME', 'binary frames are only sent by the agent; send JSON text frames'));
      return;
    }
    const text = data.toString('utf8');
    let msg;
    try {
      msg = parseClientMessage(text);
    } catch (err) {
      const id = isIspyError(err) ? (err.details?.id as number | undefined) : undefined;
      this.sendError(err, id);
      return;
    }
    switch (msg.type) {
      case 'hello':
        return this.onHello(msg);
      case 'cancel': {
        const c = this.calls.get(msg.id);
        if (!c) this.sendError(new IspyError('ISPY_ERR_NOT_FOUND', `no running call with id ${msg.id} to cancel`), msg.id);
        else c.abort();
        return;
      }
      case 'call':
        return this.onCall(msg);
    }
  }

  private onHello(hello: HelloMessage): void {
    const { protocol, client } = hello;
    if (this.ready) {
      this.sendError(new IspyError('ISPY_ERR_BAD_FRAME', 'hello was already exchanged on this connection'));
      return;
    }
    const w = this.server.opts.welcome();
    if (protocol !== PROTOCOL_VERSION) {
      agentLogThrottled('protocol', `refused client "${client}": it speaks protocol ${protocol}, this agent speaks ${PROTOCOL_VERSION}`);
      this.sendError(
        new IspyError(
          'ISPY_ERR_PROTOCOL_VERSION',
          `this agent (ispy ${w.ispy}, pid ${w.pid}) speaks protocol ${PROTOCOL_VERSION}; the client (${client}) speaks protocol ${protocol}. Use an ispy client that speaks protocol ${PROTOCOL_VERSION}.`,
          { details: { agentProtocol: PROTOCOL_VERSION, clientProtocol: protocol } },
        ),
      );
      this.ws.close(4000, 'protocol version mismatch');
      return;
    }
    this.ready = true;
    this.identity.name = client;
    if (hello.user !== undefined) this.identity.user = hello.user;
    if (hello.host !== undefined) this.identity.host = hello.host;
    if (hello.pid !== undefined) this.identity.pid = hello.pid;
    clearTimeout(this.helloTimer);
    this.send({
      type: 'welcome',
      protocol: PROTOCOL_VERSION,
      maxFrameBytes: this.server.opts.maxFrameBytes,
      ...w,
      plugins: this.server.registry.catalogue(),
      failedPlugins: this.server.registry.failed,
    });
  }

  private onCall(msg: CallMessage): void {
    if (!this.ready) {
      this.sendError(new IspyError('ISPY_ERR_NOT_READY', 'send hello before calling commands'), msg.id);
      return;
    }
    if (this.calls.has(msg.id)) {
      this.sendError(new IspyError('ISPY_ERR_DUPLICATE_ID', `call id ${msg.id} is already running on this connection`), msg.id);
      return;
    }
    if (this.calls.size >= MAX_CALLS_PER_CONNECTION) {
      this.sendError(new IspyError('ISPY_ERR_TOO_MANY_CALLS', `at most ${MAX_CALLS_PER_CONNECTION} calls may run at once on one connection`), msg.id);
      return;
    }
    const controller = new AbortController();
    this.calls.set(msg.id, controller);
    // Date.now(), not performance.now(): the global `performance` loads Node's perf_hooks
    // internals in this thread on first use, a cost of a first visit for a rounded ms.
    const started = Date.now();
    const id = msg.id;
    const audit = this.server.opts.audit;
    const audited: AuditedCall = { client: this.identity, call: `${this.id}.${id}`, plugin: msg.plugin, command: msg.command, args: msg.args, changes: false };
    // A failed send of an artefact's bytes, said as the call's outcome once the command has
    // returned, never thrown into the announcement: a plugin may announce from work nobody
    // awaits, and a rejection there would end the agent's worker (the fuzz test, beside two
    // CPU burners, saw it).
    let artefactError: unknown;
    const run = async (): Promise<unknown> => {
      const call = this.server.registry.prepare(msg.plugin, msg.command, msg.args);
      audited.changes = call.info.changes === true;
      // Written, and on disk, before the change is made; if it cannot be, the change is not made.
      if (audited.changes && audit) auditStart(audit, audited);
      if (controller.signal.aborted) throw new IspyError('ISPY_ERR_CANCELLED', 'cancelled');
      const value = await this.server.registry.dispatch(call, controller.signal, {
        data: (data) => this.send({ type: 'data', id, data: toJsonSafe(data) }),
        progress: (u) => this.send({ type: 'progress', id, ...u }),
        artefact: async (info) => {
          this.send({ type: 'artefact', id, name: info.name, path: info.path, size: info.size, inline: msg.fetch === true });
          if (!msg.fetch) return;
          try {
            await this.streamFile(id, info.path, controller.signal);
          } catch (err) {
            // The client asked for the bytes and will never have them: the agent's copy holds
            // the app's secrets and nobody knows of it, so it goes.
            await fs.promises.unlink(info.path).catch(() => {});
            artefactError ??= err;
          }
        },
      }, { id: this.id, name: this.identity.name });
      if (artefactError !== undefined) throw artefactError;
      return value;
    };
    run()
      .then(
        (value) => {
          this.send({ type: 'result', id, value: toJsonSafe(value) ?? null });
          return undefined;
        },
        (err: unknown) => {
          const wire = controller.signal.aborted && !isIspyError(err) ? toWireError(new IspyError('ISPY_ERR_CANCELLED', 'cancelled')) : toWireError(err, `${msg.plugin} ${msg.command}`);
          this.send({ type: 'error', id, ...wire });
          return wire.code;
        },
      )
      .then((errorCode) => {
        this.calls.delete(id);
        this.lastActive = Date.now();
        if (audit) auditEnd(audit, audited, { ...(errorCode ? { error: errorCode } : {}), ms: Date.now() - started });
      });
  }

  private async streamFile(id: number, file: string, signal: AbortSignal): Promise<void> {
    const stream = fs.createReadStream(file, { highWaterMark: ARTEFACT_CHUNK });
    try {
      for await (const chunk of stream) {
        if (signal.aborted) throw new IspyError('ISPY_ERR_CANCELLED', 'cancelled while sending the artefact');
        // Waiting for each send keeps memory bounded (backpressure over the socket).
        await this.sendBinary(encodeBinaryFrame(id, chunk as Buffer));
      }
    } finally {
      stream.destroy();
    }
  }
}
