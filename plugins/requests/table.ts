// Runs on the app's main thread. The table of in-flight HTTP requests, fed by
// diagnostics_channel (no async_hooks on this path), the outbound calls in flight, and a
// bounded history of finished requests for `slow` and `watch`.
//
// The worker reads it through the inspector (Runtime.evaluate of the `api` object, which
// setup publishes under a global symbol), so `list` and `show` answer even while the
// main thread is stuck in a request handler.

import type { IncomingMessage, ServerResponse, ClientRequest } from 'node:http';
import type { Socket } from 'node:net';
import { executionAsyncId, triggerAsyncId } from 'node:async_hooks';
import { redactedValue, redactUrl, secretMatcher } from 'ispy/plugin';
import type { Owner, Tracker } from './tracker';
import type { FastifyApp, FastifyRoutes } from './fastify';

export interface LiveRequest {
  id: number;
  /** performance.now() at start. */
  start: number;
  req: IncomingMessage;
  res: ServerResponse;
  socket: TaggedSocket;
  /** The request before it on the same connection, still in flight (HTTP pipelining). */
  older: LiveRequest | undefined;
  /** The async context the handler started in: matches executionAsyncId() while it runs synchronously. */
  rootAsyncId: number;
  /**
   * Read when the request starts, while the request object is still Node's own: Express
   * later swaps its prototype and rewrites `url` while routing (this is its `originalUrl`),
   * and property reads on its objects are costlier.
   */
  method: string | undefined;
  url: string | undefined;
  route: string | undefined;
  /** Its record while `requests track` is armed. */
  track: Owner | undefined;
  /** Neighbours in the table's list, oldest to newest; `open` while the entry is in it. */
  prev: LiveRequest | undefined;
  next: LiveRequest | undefined;
  open: boolean;
}

export interface FinishedRequest {
  id: number;
  method: string;
  url: string;
  route?: string;
  status: number | null;
  durationMs: number;
  finishedAt: string;
  aborted: boolean;
}

export interface Outbound {
  id: number;
  kind: 'http' | 'fetch';
  method: string;
  url: string;
  start: number;
  /** The in-flight request that made the call, when the tracker knew it at once. */
  owner?: number;
  /**
   * Else, how to find it when the table is read: the async context the call was made in
   * (and the one that scheduled it), and the next request id then, so a request that
   * arrives later on the same keep-alive connection (same context) is not mistaken for it.
   */
  eid: number;
  tid: number;
  before: number;
}

type Watcher = (done: FinishedRequest) => void;

/**
 * The clock of the per-request paths. `performance` on globalThis is an accessor (Node
 * loads it lazily): each read of the global calls its getter (~100 instructions a read,
 * counted with callgrind), so it is read once, on the first request (not at preload,
 * where it would load node's perf internals before the app's first line).
 */
let perf: typeof performance | undefined;
export function now(): number {
  return (perf ??= performance).now();
}

/** The newest entry of a connection's requests, carried on its socket (see onServerStart). */
const ENTRY = Symbol('ispy.requests.entry');
// `server`: the server that accepted the connection (node:net sets it on every socket it accepts).
type TaggedSocket = Socket & { [ENTRY]?: LiveRequest; server?: object | null };

/** The entry of `res` among those of its connection: the newest, unless requests were pipelined. */
function entryOf(socket: TaggedSocket | null | undefined, res: ServerResponse | undefined): LiveRequest | undefined {
  let e = socket?.[ENTRY];
  while (e && e.res !== res) e = e.older;
  return e;
}

/** Bytes of URL text kept per slot of the history, on average (the arena is shared). */
const URL_BYTES_PER_SLOT = 256;

/**
 * The URLs of the history, as bytes in one preallocated buffer written round and round.
 * Kept as strings, the last N URLs would all be alive at every scavenge: copied each time,
 * promoted to the old generation at the second, and enough surviving bytes that V8 grew the
 * young generation (bench/gc-pattern.js --framework http --path <a 40-byte URL>: 30 KB
 * survived a scavenge, against 2 KB for the bare app, and half as many scavenges). A URL
 * from node:http's parser is Latin-1, one byte a character, so the copy is exact; any other
 * (or one longer than an eighth of the buffer) is kept as the string, rarely.
 */
class UrlArena {
  private readonly bytes: Uint8Array;
  /**
   * Bytes written, counting the ends skipped when a URL did not fit before the wrap, modulo
   * `lap` (a multiple of the buffer's size, kept a small integer so V8 never boxes it). A
   * history slot is read at most a few buffers after it was written, far less than a lap.
   */
  private written = 0;
  private readonly lap: number;

  constructor(slots: number) {
    const size = Math.max(1, slots) * URL_BYTES_PER_SLOT;
    this.bytes = new Uint8Array(size);
    this.lap = size * Math.max(64, Math.min(1024, Math.floor(2 ** 30 / size)));
  }

  /** Copies `url` in; returns where it starts (−1 when it is not kept here). */
  put(url: string): number {
    const size = this.bytes.length;
    const len = url.length;
    if (len > size >> 3) return -1;
    let off = this.written % size;
    if (off + len > size) {
      this.written = (this.written + size - off) % this.lap;
      off = 0;
    }
    const bytes = this.bytes;
    for (let k = 0; k < len; k++) {
      const c = url.charCodeAt(k);
      if (c > 255) return -1;
      bytes[off + k] = c;
    }
    const start = this.written;
    this.written = (start + len) % this.lap;
    return start;
  }

  /** The URL written at `start`, or undefined once newer ones wrote over it. */
  get(start: number, len: number): string | undefined {
    const size = this.bytes.length;
    if (start < 0 || (this.written - start + this.lap) % this.lap > size) return undefined;
    const off = start % size;
    let out = '';
    for (let k = 0; k < len; k += 4096) out += String.fromCharCode(...this.bytes.subarray(off + k, off + Math.min(len, k + 4096)));
    return out;
  }

  clear(): void {
    this.written = 0;
  }
}

/**
 * The history of finished requests, in columns: a finished request costs a few stores
 * into preallocated arrays, and objects are built only when `slow` or `watch` reads them.
 */
class History {
  private next = 0;
  private count = 0;
  private readonly ids: Float64Array;
  private readonly durations: Float64Array;
  private readonly ends: Float64Array;
  private readonly statuses: Int16Array;
  private readonly aborted: Uint8Array;
  private readonly methods: (string | undefined)[];
  /** URLs as bytes (urlStarts, urlLengths), or as strings where the arena does not keep them. */
  private readonly arena: UrlArena;
  private readonly urlStarts: Float64Array;
  private readonly urlLengths: Int32Array;
  private readonly urls: (string | undefined)[];
  private readonly routes: (string | undefined)[];
  /** The request's server, kept only in a Fastify app: its route is named when read. */
  private readonly servers: (object | undefined)[];

  constructor(readonly capacity: number) {
    this.ids = new Float64Array(capacity);
    this.durations = new Float64Array(capacity);
    this.ends = new Float64Array(capacity);
    this.statuses = new Int16Array(capacity);
    this.aborted = new Uint8Array(capacity);
    this.methods = new Array(capacity);
    this.arena = new UrlArena(capacity);
    this.urlStarts = new Float64Array(capacity);
    this.urlLengths = new Int32Array(capacity);
    this.urls = new Array(capacity);
    this.routes = new Array(capacity);
    this.servers = new Array(capacity);
  }

  /** Records `e` as finished now. The clock is read here: no double crosses a call (V8 would box it). */
  add(e: LiveRequest, route: string | undefined, server: object | undefined, status: number, aborted: boolean): number {
    const i = this.next;
    const end = now();
    this.ids[i] = e.id;
    this.methods[i] = e.method;
    const url = e.url;
    const start = url === undefined ? -1 : this.arena.put(url);
    this.urlStarts[i] = start;
    this.urlLengths[i] = start < 0 ? 0 : url!.length;
    this.urls[i] = start < 0 ? url : undefined;
    this.routes[i] = route;
    this.servers[i] = server;
    this.statuses[i] = status;
    this.durations[i] = end - e.start;
    this.ends[i] = end;
    this.aborted[i] = aborted ? 1 : 0;
    this.next = (i + 1) % this.capacity;
    if (this.count < this.capacity) this.count++;
    return i;
  }

  get size(): number {
    return this.count;
  }

  read(i: number, redact: (url: string) => string, fastify: FastifyRoutes | undefined): FinishedRequest {
    const url = this.urls[i] ?? this.arena.get(this.urlStarts[i]!, this.urlLengths[i]!);
    const out: FinishedRequest = {
      id: this.ids[i]!,
      method: this.methods[i] ?? '?',
      url: redact(url ?? '?'),
      status: this.statuses[i]! < 0 ? null : this.statuses[i]!,
      durationMs: round(this.durations[i]!),
      finishedAt: new Date(performance.timeOrigin + this.ends[i]!).toISOString(),
      aborted: this.aborted[i] === 1,
    };
    const route = this.routes[i] ?? fastify?.routeOf(this.servers[i], this.methods[i], url);
    if (route) out.route = route;
    return out;
  }

  /** Slot numbers, oldest first. */
  slots(): number[] {
    const out: number[] = [];
    const start = this.count < this.capacity ? 0 : this.next;
    for (let k = 0; k < this.count; k++) out.push((start + k) % this.capacity);
    return out;
  }

  clear(): void {
    this.count = 0;
    this.next = 0;
    this.methods.fill(undefined);
    this.urls.fill(undefined);
    this.arena.clear();
    this.routes.fill(undefined);
    this.servers.fill(undefined);
  }
}

const round = (n: number) => Math.round(n * 10) / 10;

function routeOf(entry: LiveRequest): string | undefined {
  if (entry.route) return entry.route;
  // Express sets req.route once a route matched; its path is relative to req.baseUrl.
  const route = (entry.req as IncomingMessage & { route?: { path?: unknown } }).route;
  if (!route || typeof route.path !== 'string') return undefined;
  return `${(entry.req as IncomingMessage & { baseUrl?: string }).baseUrl ?? ''}${route.path}`;
}

function remoteOf(s: Socket | undefined): string | undefined {
  if (!s?.remoteAddress) return undefined;
  return `${s.remoteAddress}:${s.remotePort}`;
}

export class RequestTable {
  private nextId = 1;
  private nextOutbound = 1;
  /**
   * In flight, a list linked through the entries, oldest first: a request costs a few
   * stores to join it and to leave it, where a Map grows and shrinks its hash table with
   * the load (a set and a delete cost ~100 ns on this path). Read only by walks.
   */
  private head: LiveRequest | undefined;
  private tail: LiveRequest | undefined;
  private count = 0;
  readonly outbound = new Map<object, Outbound>();
  private readonly history: History;
  private readonly watchers = new Set<Watcher>();
  /** Fastify instances, whose routes are named when the table is read (fastify.ts, loaded with the first). */
  private fastify: FastifyRoutes | undefined;
  tracker: Tracker | undefined;
  /**
   * Entries read by walks of the live table other than the once-a-second sweep (`list`,
   * `show`, arming the tracker), and by the sweep: a test reads them to prove that no
   * per-request path walks the table. Counted inside the walks only: a request pays nothing.
   */
  visited = 0;
  swept = 0;

  /** URLs as shown: a password in them, and secret-looking query parameters, hidden. */
  private readonly hideUrl: (url: string) => string;

  constructor(
    historySize: number,
    private readonly redact: (key: string) => boolean,
  ) {
    this.history = new History(historySize);
    this.hideUrl = (url) => redactUrl(url, redact);
  }

  get size(): number {
    return this.count;
  }

  /** Every request in flight, oldest first (a walk: never on a per-request path). */
  *inFlight(): IterableIterator<LiveRequest> {
    for (let e = this.head; e; e = e.next) {
      this.visited++;
      yield e;
    }
  }

  // ── feeding (channel subscribers; must be cheap, O(1), and never throw) ──────

  onServerStart(msg: { request: IncomingMessage; response: ServerResponse; socket: TaggedSocket }): void {
    const socket = msg.socket;
    const entry: LiveRequest = {
      id: this.nextId++,
      start: now(),
      req: msg.request,
      res: msg.response,
      socket,
      older: socket[ENTRY],
      rootAsyncId: executionAsyncId(),
      method: msg.request.method,
      url: msg.request.url,
      route: undefined,
      track: undefined,
      prev: this.tail,
      next: undefined,
      open: true,
    };
    if (this.tail) this.tail.next = entry;
    else this.head = entry;
    this.tail = entry;
    this.count++;
    // The entry rides on the socket, so the finish channel and Fastify's route find it
    // without a lookup (a Map keyed by objects would make V8 give each one an identity
    // hash). The socket, not the response: a keep-alive connection gets the field once,
    // where each response would get a new property (a map transition per request), and
    // Express swaps the response's prototype, which makes reads from it slow.
    socket[ENTRY] = entry;
    if (this.tracker) this.tracker.onRequestStart(entry);
  }

  /**
   * A response finished (http.server.response.finish): no listener attached per request.
   * Finished means its headers went out and it ended, so the status is all there is to read.
   */
  onServerFinish(msg: { response: ServerResponse; socket: TaggedSocket }): void {
    const res = msg.response;
    const entry = entryOf(msg.socket, res);
    if (entry && entry.open) this.onClose(entry, res.statusCode, false);
  }

  /**
   * Requests whose connection went away without a finished response (the client gave
   * up): found by a sweep, once a second, instead of a listener on every response.
   */
  sweep(): void {
    for (let e = this.head; e; ) {
      const next = e.next;
      this.swept++;
      const res = e.res;
      if (e.open && (res.destroyed || e.socket.destroyed)) this.onClose(e, res.headersSent ? res.statusCode : -1, !res.writableFinished);
      e = next;
    }
  }

  private unlink(e: LiveRequest): void {
    // Off its connection's chain, so an idle keep-alive socket holds no finished request.
    const socket = e.socket;
    if (socket[ENTRY] === e) socket[ENTRY] = e.older;
    else for (let n = socket[ENTRY]; n; n = n.older) if (n.older === e) n.older = e.older;
    e.older = undefined;
    if (e.prev) e.prev.next = e.next;
    else this.head = e.next;
    if (e.next) e.next.prev = e.prev;
    else this.tail = e.prev;
    e.prev = e.next = undefined;
    e.open = false;
    this.count--;
  }

  private onClose(entry: LiveRequest, status: number, aborted: boolean): void {
    this.unlink(entry);
    const slot = this.history.add(entry, routeOf(entry), this.fastify?.seen ? (entry.socket.server ?? undefined) : undefined, status, aborted);
    if (this.tracker) this.tracker.onRequestEnd(entry);
    if (this.watchers.size) {
      const done = this.history.read(slot, this.hideUrl, this.fastify);
      for (const w of this.watchers) w(done);
    }
  }

  /** A Fastify instance was created (fastify.initialization): its routes are named when read. */
  onFastifyInit(msg: { fastify?: FastifyApp }): void {
    this.fastify ??= new (require('./fastify') as typeof import('./fastify')).FastifyRoutes();
    this.fastify.add(msg?.fastify);
  }

  /**
   * Fastify (v5) names the matched route on its handler channel, subscribed only when the
   * agent arrived after Fastify was loaded (its instances were created unseen): its request
   * and reply carry the raw socket and response.
   */
  onFastifyRoute(msg: { request?: { raw?: IncomingMessage }; reply?: { raw?: ServerResponse }; route?: { url?: string } }): void {
    const entry = entryOf(msg.request?.raw?.socket, msg.reply?.raw);
    const url = msg.route?.url;
    if (entry && url) entry.route = url;
  }

  /** The route of a request in flight, as read now: the framework's, or Fastify's router's. */
  private routeNow(e: LiveRequest): string | undefined {
    return routeOf(e) ?? this.fastify?.routeOf(e.socket.server, e.method, e.url);
  }

  /** An outbound call starts: its request is named now if the tracker knows it, else when read. */
  private newOutbound(kind: Outbound['kind'], method: string, url: string): Outbound {
    const eid = executionAsyncId();
    const out: Outbound = { id: this.nextOutbound++, kind, method, url, start: now(), eid, tid: triggerAsyncId(), before: this.nextId };
    const owner = this.tracker?.currentOwner();
    if (owner !== undefined) out.owner = owner;
    return out;
  }

  onClientStart(msg: { request: ClientRequest }): void {
    const r = msg.request;
    const host = r.getHeader('host') ?? r.host;
    this.outbound.set(r, this.newOutbound('http', r.method, `${r.protocol ?? 'http:'}//${host}${r.path}`));
    r.once('close', () => this.outbound.delete(r));
  }

  onUndiciCreate(msg: { request: { method?: string; origin?: unknown; path?: string } }): void {
    const r = msg.request;
    this.outbound.set(r, this.newOutbound('fetch', r.method ?? 'GET', `${String(r.origin ?? '')}${r.path ?? ''}`));
  }

  onUndiciDone(msg: { request: object }): void {
    this.outbound.delete(msg.request);
  }

  watch(w: Watcher): () => void {
    this.watchers.add(w);
    return () => this.watchers.delete(w);
  }

  // ── reading (called through Runtime.evaluate from the agent worker) ──────────

  /**
   * One walk of the table, for a read: the requests in flight by id and by the async id
   * their handler started in (oldest first), which is how outbound calls and the running
   * code are tied to their request here rather than on every call.
   */
  private index(): { byId: Map<number, LiveRequest>; byRoot: Map<number, LiveRequest[]> } {
    const byId = new Map<number, LiveRequest>();
    const byRoot = new Map<number, LiveRequest[]>();
    for (const e of this.inFlight()) {
      byId.set(e.id, e);
      const same = byRoot.get(e.rootAsyncId);
      if (same) same.push(e);
      else byRoot.set(e.rootAsyncId, [e]);
    }
    return { byId, byRoot };
  }

  /** The newest request in flight that started in `asyncId` before request id `before`. */
  private static startedIn(byRoot: Map<number, LiveRequest[]>, asyncId: number, before: number): number | undefined {
    const same = byRoot.get(asyncId);
    if (!same) return undefined;
    for (let i = same.length - 1; i >= 0; i--) if (same[i]!.id < before) return same[i]!.id;
    return undefined;
  }

  /** The request an outbound call was made for: its handler's context, or a tick it scheduled. */
  private ownerOf(o: Outbound, byRoot: Map<number, LiveRequest[]>): number | undefined {
    if (o.owner !== undefined) return o.owner;
    return RequestTable.startedIn(byRoot, o.eid, o.before) ?? RequestTable.startedIn(byRoot, o.tid, o.before);
  }

  /**
   * The in-flight request whose code is running right now, if it can be told: with
   * tracking armed, from the async context; without, only while its handler runs
   * synchronously (async ids are counted even with no hook, so this costs nothing).
   */
  private executing(byRoot: Map<number, LiveRequest[]>): number | undefined {
    const eid = executionAsyncId();
    return this.tracker?.currentOwner() ?? RequestTable.startedIn(byRoot, eid, this.nextId) ?? RequestTable.startedIn(byRoot, triggerAsyncId(), this.nextId);
  }

  list(opts: { minAge?: number; limit?: number }): Record<string, unknown> {
    const now = performance.now();
    const minAge = opts.minAge ?? 0;
    const { byRoot } = this.index();
    const executing = this.executing(byRoot);
    const outboundOf = new Map<number, number>();
    for (const o of this.outbound.values()) {
      const owner = this.ownerOf(o, byRoot);
      if (owner !== undefined) outboundOf.set(owner, (outboundOf.get(owner) ?? 0) + 1);
    }
    const rows: Record<string, unknown>[] = [];
    let total = 0;
    for (const e of this.inFlight()) {
      const age = now - e.start;
      if (age < minAge) continue;
      total++;
      if (rows.length >= (opts.limit ?? 50)) continue;
      const row: Record<string, unknown> = {
        id: e.id,
        method: e.method,
        url: this.hideUrl(e.url ?? '?'),
        ageMs: round(age),
      };
      const route = this.routeNow(e);
      if (route) row.route = route;
      const remote = remoteOf(e.socket);
      if (remote) row.remote = remote;
      const outbound = outboundOf.get(e.id);
      if (outbound) row.outbound = outbound;
      if (this.tracker) row.waitingOn = this.tracker.pendingCount(e);
      if (executing === e.id) row.executing = true;
      rows.push(row);
    }
    return { total, shown: rows.length, tracking: this.trackingState(), requests: rows };
  }

  show(id: number): Record<string, unknown> | undefined {
    const { byId, byRoot } = this.index();
    const e = byId.get(id);
    if (!e) return undefined;
    const now = performance.now();
    const req = e.req;
    const headers: Record<string, string> = {};
    for (const [k, v] of Object.entries(req.headers ?? {})) {
      const value = Array.isArray(v) ? v.join(', ') : String(v ?? '');
      headers[k] = this.redact(k) ? redactedValue(value) : value;
    }
    const calls = [...this.outbound.values()].map((o) => ({ o, owner: this.ownerOf(o, byRoot) }));
    const outbound = calls
      .filter((c) => c.owner === id)
      .map(({ o }) => ({ kind: o.kind, method: o.method, url: this.hideUrl(o.url), ageMs: round(now - o.start) }));
    const out: Record<string, unknown> = {
      id,
      request: `${e.method} ${this.hideUrl(e.url ?? '?')} HTTP/${req.httpVersion}`,
      ageMs: round(now - e.start),
      startedAt: new Date(performance.timeOrigin + e.start).toISOString(),
    };
    const route = this.routeNow(e);
    if (route) out.route = route;
    const remote = remoteOf(e.socket);
    if (remote) out.remote = remote;
    out.executing = this.executing(byRoot) === id;
    out.responseStarted = e.res.headersSent;
    out.headers = headers;
    out.outbound = outbound;
    const unattributed = calls.filter((c) => c.owner === undefined).length;
    if (unattributed && !this.tracker) out.outboundUnattributed = unattributed;
    if (this.tracker) out.waitingOn = this.tracker.pending(e, now);
    out.tracking = this.trackingState();
    return out;
  }

  slow(limit: number): Record<string, unknown> {
    const rows = this.history
      .slots()
      .map((i) => this.history.read(i, this.hideUrl, this.fastify))
      .sort((a, b) => b.durationMs - a.durationMs)
      .slice(0, limit);
    return { kept: this.history.size, capacity: this.history.capacity, requests: rows };
  }

  private trackingState(): string {
    if (!this.tracker) return 'off (run `requests track` to see what each request waits on)';
    return `armed, ${Math.max(0, Math.round(this.tracker.remainingMs() / 1000))}s left`;
  }

  clear(): void {
    for (let e = this.head; e; ) {
      const next = e.next;
      // Nothing of ours stays on the app's sockets (an entry holds its request and response).
      e.socket[ENTRY] = undefined;
      e.older = undefined;
      e.prev = e.next = undefined;
      e.open = false;
      e = next;
    }
    this.head = this.tail = undefined;
    this.count = 0;
    this.outbound.clear();
    this.history.clear();
    this.watchers.clear();
  }
}

export function makeRedactor(patterns: readonly string[]): (key: string) => boolean {
  return secretMatcher(patterns);
}
