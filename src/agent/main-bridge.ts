// Runs in the agent worker: forwards `thread: "main"` commands to the main thread and
// waits for it to pick them up within a limit, so a busy main thread yields "main thread
// busy for N ms" instead of a hung call. A main thread that is only waiting for a CPU (the
// host's cores all busy) gets longer (sched.ts), and the claim table (rpc.ts) settles, once,
// whether a call picked up late runs or was given up.

import type { MessagePort } from 'node:worker_threads';
import { IspyError, fromWireError } from '../protocol/errors';
import { CLAIM_SLOTS, Claims, type ClientRef, type FromMain, type ToMain } from './rpc';
import type { HeartbeatReader } from './heartbeat';
import { mainThreadTimeout } from './sched';

export interface MainCallSink {
  data(item: unknown): void;
  progress(update: { done?: number; total?: number; message?: string }): void;
  artefact(info: { path: string; name: string; size: number }): void;
}

interface Pending {
  sink: MainCallSink;
  resolve(value: unknown): void;
  reject(err: Error): void;
  /** Stops the wait for the main thread to pick the call up. */
  stopWaiting: (() => void) | undefined;
}

export class MainBridge {
  private nextId = 1;
  private readonly pending = new Map<number, Pending>();
  private readonly claims: Claims;
  private closed = false;

  constructor(
    private readonly port: MessagePort,
    private readonly heartbeat: HeartbeatReader,
    private readonly timeoutMs: number,
    claims: SharedArrayBuffer,
  ) {
    this.claims = new Claims(claims);
    port.on('message', (msg: FromMain) => this.onMessage(msg));
    port.unref();
  }

  call(plugin: string, command: string, args: Record<string, unknown>, sink: MainCallSink, client: ClientRef, signal?: AbortSignal): Promise<unknown> {
    if (this.closed) return Promise.reject(new IspyError('ISPY_ERR_AGENT_STOPPED', 'the agent is stopping'));
    const id = this.nextId;
    this.nextId = this.nextId >= 0x7fffffff ? 1 : this.nextId + 1;
    if (!this.claims.offer(id)) {
      return Promise.reject(new IspyError('ISPY_ERR_MAIN_BUSY', `the main thread has ${CLAIM_SLOTS} commands in flight already: "${plugin} ${command}" was not sent (try again once some have finished)`));
    }
    return new Promise((resolve, reject) => {
      const entry: Pending = { sink, resolve, reject, stopWaiting: undefined };
      entry.stopWaiting = mainThreadTimeout(this.timeoutMs, (starved, waitedMs) => {
        // The main thread took it meanwhile: its ack is on the way, and the call runs.
        if (!this.claims.withdraw(id)) return;
        this.pending.delete(id);
        const age = this.heartbeat.ageMs();
        // Starved to the end: runnable throughout but given under half a CPU (the host's cores
        // busy, the app at its CPU quota), whether it was running JavaScript or only queued.
        const cpu = starved ? '; it was runnable all along but got under half a CPU (the host\'s CPUs are busy, or the app is at its CPU quota)' : '';
        reject(
          new IspyError(
            'ISPY_ERR_MAIN_BUSY',
            `main thread busy for ${age} ms: "${plugin} ${command}" runs on the main thread and it did not pick it up within ${waitedMs} ms${cpu} (worker commands such as "process stack" still answer)`,
            { details: { busyForMs: age, ...(starved ? { starved: true } : {}) } },
          ),
        );
      });
      this.pending.set(id, entry);
      signal?.addEventListener('abort', () => this.post({ t: 'cancel', id }), { once: true });
      this.post({ t: 'call', id, plugin, command, args, client });
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
        entry.stopWaiting?.();
        entry.stopWaiting = undefined;
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
        this.settled(msg.id, entry);
        entry.resolve(msg.value);
        break;
      case 'error':
        this.settled(msg.id, entry);
        entry.reject(fromWireError(msg.error));
        break;
    }
  }

  private settled(id: number, entry: Pending): void {
    this.pending.delete(id);
    entry.stopWaiting?.();
    this.claims.release(id);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const [id, entry] of this.pending) {
      this.settled(id, entry);
      entry.reject(new IspyError('ISPY_ERR_AGENT_STOPPED', 'the agent stopped'));
    }
    this.pending.clear();
    this.port.close();
  }
}
