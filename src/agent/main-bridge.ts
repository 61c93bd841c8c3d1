// Runs in the agent worker: forwards `thread: "main"` commands to the main thread and
// waits for them with a deadline, so a busy main thread yields "main thread busy for N
// ms" instead of a hung call.

import type { MessagePort } from 'node:worker_threads';
import { IspyError, fromWireError } from '../protocol/errors';
import type { ClientRef, FromMain, ToMain } from './rpc';
import type { HeartbeatReader } from './heartbeat';

export interface MainCallSink {
  data(item: unknown): void;
  progress(update: { done?: number; total?: number; message?: string }): void;
  artefact(info: { path: string; name: string; size: number }): void;
}

interface Pending {
  sink: MainCallSink;
  resolve(value: unknown): void;
  reject(err: Error): void;
  timer: NodeJS.Timeout | undefined;
}

export class MainBridge {
  private nextId = 1;
  private readonly pending = new Map<number, Pending>();
  private closed = false;

  constructor(
    private readonly port: MessagePort,
    private readonly heartbeat: HeartbeatReader,
    private readonly timeoutMs: number,
  ) {
    port.on('message', (msg: FromMain) => this.onMessage(msg));
    port.unref();
  }

  call(plugin: string, command: string, args: Record<string, unknown>, sink: MainCallSink, client: ClientRef, signal?: AbortSignal): Promise<unknown> {
    if (this.closed) return Promise.reject(new IspyError('ISPY_ERR_AGENT_STOPPED', 'the agent is stopping'));
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      const entry: Pending = { sink, resolve, reject, timer: undefined };
      entry.timer = setTimeout(() => {
        this.pending.delete(id);
        const age = this.heartbeat.ageMs();
        reject(
          new IspyError(
            'ISPY_ERR_MAIN_BUSY',
            `main thread busy for ${age} ms: "${plugin} ${command}" runs on the main thread and it did not answer within ${this.timeoutMs} ms` +
              ` (worker commands such as "process stack" still answer)`,
            { details: { busyForMs: age } },
          ),
        );
      }, this.timeoutMs);
      entry.timer.unref();
      this.pending.set(id, entry);
      signal?.addEventListener('abort', () => this.post({ t: 'cancel', id }), { once: true });
      this.post({ t: 'call', id, plugin, command, args, deadline: Date.now() + this.timeoutMs, client });
    });
  }

  clientClosed(client: number): void {
    this.post({ t: 'client-closed', client });
  }

  unloadPlugin(name: string): void {
    this.post({ t: 'unload-plugin', name });
  }

  private post(msg: ToMain): void {
    if (this.closed) return;
    try {
      this.port.postMessage(msg);
    } catch {
      // port closed: the pending call will time out or be rejected on close
    }
  }

  private onMessage(msg: FromMain): void {
    const entry = this.pending.get(msg.id);
    if (!entry) return;
    switch (msg.t) {
      case 'ack':
        // The main thread picked the call up: from here it may take as long as it needs.
        clearTimeout(entry.timer);
        entry.timer = undefined;
        break;
      case 'data':
        entry.sink.data(msg.data);
        break;
      case 'progress': {
        const { t: _t, id: _id, ...update } = msg;
        entry.sink.progress(update);
        break;
      }
      case 'artefact':
        entry.sink.artefact({ path: msg.path, name: msg.name, size: msg.size });
        break;
      case 'result':
        this.pending.delete(msg.id);
        clearTimeout(entry.timer);
        entry.resolve(msg.value);
        break;
      case 'error':
        this.pending.delete(msg.id);
        clearTimeout(entry.timer);
        entry.reject(fromWireError(msg.error));
        break;
    }
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const [, entry] of this.pending) {
      clearTimeout(entry.timer);
      entry.reject(new IspyError('ISPY_ERR_AGENT_STOPPED', 'the agent stopped'));
    }
    this.pending.clear();
    this.port.close();
  }
}
