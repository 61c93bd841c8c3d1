// Runs on the app's main thread. The table of in-flight HTTP requests, fed by
// diagnostics_channel (no async_hooks on this path), the outbound calls in flight, and a
// bounded history of finished requests for `slow` and `watch`.
//
// The worker reads it through the inspector (Runtime.evaluate of the `api` object, which
// setup publishes under a global symbol), so `list` and `show` answer even while the
// main thread is stuck in a request handler.

import type { IncomingMessage, ServerResponse, ClientRequest } from 'node:http';
import { executionAsyncId, triggerAsyncId } from 'node:async_hooks';
import { redactedValue, redactUrl, secretMatcher } from 'ispy/plugin';
import type { Tracker } from './tracker';

export interface LiveRequest {
  id: number;
  /** performance.now() at start. */
  start: number;
  req: IncomingMessage;
  res: ServerResponse;
  /** The async context the handler started in: matches executionAsyncId() while it runs synchronously. */
  rootAsyncId: number;
  route?: string;
  server?: string;
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
  /** The in-flight request that made the call, when known. */
  owner?: number;
}

type Watcher = (done: FinishedRequest) => void;

/** A response's entry in the live table, carried on the response itself (see onServerStart). */
const ENTRY = Symbol('ispy.requests.entry');
type TaggedResponse = ServerResponse & { [ENTRY]?: LiveRequest };


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
  private readonly urls: (string | undefined)[];
  private readonly routes: (string | undefined)[];

  constructor(readonly capacity: number) {
    this.ids = new Float64Array(capacity);
    this.durations = new Float64Array(capacity);
    this.ends = new Float64Array(capacity);
    this.statuses = new Int16Array(capacity);
    this.aborted = new Uint8Array(capacity);
    this.methods = new Array(capacity);
    this.urls = new Array(capacity);
    this.routes = new Array(capacity);
  }

  add(id: number, method: string | undefined, url: string | undefined, route: string | undefined, status: number, durationMs: number, end: number, aborted: boolean): number {
    const i = this.next;
    this.ids[i] = id;
    this.methods[i] = method;
    this.urls[i] = url;
    this.routes[i] = route;
    this.statuses[i] = status;
    this.durations[i] = durationMs;
    this.ends[i] = end;
    this.aborted[i] = aborted ? 1 : 0;
    this.next = (i + 1) % this.capacity;
    if (this.count < this.capacity) this.count++;
    return i;
  }

  get size(): number {
    return this.count;
  }

  read(i: number, redact: (url: string) => string): FinishedRequest {
    const out: FinishedRequest = {
      id: this.ids[i]!,
      method: this.methods[i] ?? '?',
      url: redact(this.urls[i] ?? '?'),
      status: this.statuses[i]! < 0 ? null : this.statuses[i]!,
      durationMs: round(this.durations[i]!),
      finishedAt: new Date(performance.timeOrigin + this.ends[i]!).toISOString(),
      aborted: this.aborted[i] === 1,
    };
    const route = this.routes[i];
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
    this.routes.fill(undefined);
  }
}

const round = (n: number) => Math.round(n * 10) / 10;

function routeOf(entry: LiveRequest): string | undefined {
  if (entry.route) return entry.route;
  // Express sets req.route once a route matched; its path is relative to req.baseUrl.
  const r = entry.req as IncomingMessage & { route?: { path?: unknown }; baseUrl?: string };
  if (r.route && typeof r.route.path === 'string') return `${r.baseUrl ?? ''}${r.route.path}`;
  return undefined;
}

/** Express rewrites req.url while routing; originalUrl keeps what the client sent. */
function urlOf(req: IncomingMessage): string | undefined {
  return (req as IncomingMessage & { originalUrl?: string }).originalUrl ?? req.url;
}

function remoteOf(req: IncomingMessage): string | undefined {
  const s = req.socket;
  if (!s?.remoteAddress) return undefined;
  return `${s.remoteAddress}:${s.remotePort}`;
}

export class RequestTable {
  private nextId = 1;
  private nextOutbound = 1;
  /** In flight, by id; a Map keeps insertion order, so iteration is oldest first. */
  private readonly live = new Map<number, LiveRequest>();
  /**
   * In flight, by the async id their handler started in, so an outbound call finds its
   * request in one lookup. Requests on one keep-alive connection share that id: the
   * newest wins, as only the newest can be running its handler.
   */
  private readonly byRootAsyncId = new Map<number, LiveRequest>();
  readonly outbound = new Map<object, Outbound>();
  private readonly history: History;
  private readonly watchers = new Set<Watcher>();
  tracker: Tracker | undefined;
  /**
   * Entries read by walks of the live table other than the once-a-second sweep (`list`,
   * arming the tracker), and by the sweep: a test reads them to prove that no per-request
   * path walks the table. Counted inside the walks only, so a request pays nothing for it.
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
    return this.live.size;
  }

  /** Every request in flight, oldest first (a walk: never on a per-request path). */
  *inFlight(): IterableIterator<LiveRequest> {
    for (const e of this.live.values()) {
      this.visited++;
      yield e;
    }
  }

  // ── feeding (channel subscribers; must be cheap, O(1), and never throw) ──────

  onServerStart(msg: { request: IncomingMessage; response: ServerResponse; server?: { address?: () => unknown } }): void {
    const entry: LiveRequest = {
      id: this.nextId++,
      start: performance.now(),
      req: msg.request,
      res: msg.response,
      rootAsyncId: executionAsyncId(),
    };
    this.live.set(entry.id, entry);
    this.byRootAsyncId.set(entry.rootAsyncId, entry);
    // The entry rides on the response (every response gets the same field, one shape for
    // all), so the finish channel and Fastify's route find it without a lookup, and without
    // a Map keyed by objects, which would make V8 give each response an identity hash.
    (msg.response as TaggedResponse)[ENTRY] = entry;
    if (this.tracker) this.tracker.onRequestStart(entry);
  }

  /** A response finished (http.server.response.finish): no listener attached per request. */
  onServerFinish(msg: { response: TaggedResponse }): void {
    const entry = msg.response[ENTRY];
    if (entry) this.onClose(entry);
  }

  /**
   * Requests whose connection went away without a finished response (the client gave
   * up): found by a sweep, once a second, instead of a listener on every response.
   */
  sweep(): void {
    for (const entry of this.live.values()) {
      this.swept++;
      if (entry.res.destroyed || entry.req.socket?.destroyed) this.onClose(entry);
    }
  }

  private onClose(entry: LiveRequest): void {
    if (!this.live.delete(entry.id)) return;
    if (this.byRootAsyncId.get(entry.rootAsyncId) === entry) this.byRootAsyncId.delete(entry.rootAsyncId);
    const res = entry.res;
    const end = performance.now();
    const slot = this.history.add(entry.id, entry.req.method, urlOf(entry.req), routeOf(entry), res.headersSent ? res.statusCode : -1, end - entry.start, end, !res.writableFinished);
    if (this.tracker) this.tracker.onRequestEnd(entry.id);
    if (this.watchers.size) {
      const done = this.history.read(slot, this.hideUrl);
      for (const w of this.watchers) w(done);
    }
  }

  /** Fastify (v5) names the matched route: its reply carries the response we tagged. */
  onFastifyRoute(msg: { reply?: { raw?: TaggedResponse }; route?: { url?: string } }): void {
    const entry = msg.reply?.raw?.[ENTRY];
    const url = msg.route?.url;
    if (entry && url) entry.route = url;
  }

  /**
   * The in-flight request whose code is running right now, if it can be told: with
   * tracking armed, from the async context; without, only while its handler runs
   * synchronously or in a tick it scheduled (async ids are counted even with no hook, so
   * this costs nothing). The HTTP client publishes its start from such a tick.
   */
  private currentOwner(): number | undefined {
    const eid = executionAsyncId();
    const tracked = this.tracker?.ownerOf(eid);
    if (tracked !== undefined) return tracked;
    return (this.byRootAsyncId.get(eid) ?? this.byRootAsyncId.get(triggerAsyncId()))?.id;
  }

  onClientStart(msg: { request: ClientRequest }): void {
    const r = msg.request;
    const host = r.getHeader('host') ?? r.host;
    const out: Outbound = { id: this.nextOutbound++, kind: 'http', method: r.method, url: `${r.protocol ?? 'http:'}//${host}${r.path}`, start: performance.now() };
    const owner = this.currentOwner();
    if (owner !== undefined) out.owner = owner;
    this.outbound.set(r, out);
    r.once('close', () => this.outbound.delete(r));
  }

  onUndiciCreate(msg: { request: { method?: string; origin?: unknown; path?: string } }): void {
    const r = msg.request;
    const out: Outbound = { id: this.nextOutbound++, kind: 'fetch', method: r.method ?? 'GET', url: `${String(r.origin ?? '')}${r.path ?? ''}`, start: performance.now() };
    const owner = this.currentOwner();
    if (owner !== undefined) out.owner = owner;
    this.outbound.set(r, out);
  }

  onUndiciDone(msg: { request: object }): void {
    this.outbound.delete(msg.request);
  }

  watch(w: Watcher): () => void {
    this.watchers.add(w);
    return () => this.watchers.delete(w);
  }

  // ── reading (called through Runtime.evaluate from the agent worker) ──────────

  list(opts: { minAge?: number; limit?: number }): Record<string, unknown> {
    const now = performance.now();
    const minAge = opts.minAge ?? 0;
    const executing = this.currentOwner();
    const rows: Record<string, unknown>[] = [];
    let total = 0;
    for (const e of this.inFlight()) {
      const age = now - e.start;
      if (age < minAge) continue;
      total++;
      if (rows.length >= (opts.limit ?? 50)) continue;
      const row: Record<string, unknown> = {
        id: e.id,
        method: e.req?.method,
        url: e.req ? this.hideUrl(urlOf(e.req) ?? '?') : undefined,
        ageMs: round(age),
      };
      const route = routeOf(e);
      if (route) row.route = route;
      const remote = e.req ? remoteOf(e.req) : undefined;
      if (remote) row.remote = remote;
      let outbound = 0;
      for (const o of this.outbound.values()) if (o.owner === e.id) outbound++;
      if (outbound) row.outbound = outbound;
      if (this.tracker) row.waitingOn = this.tracker.pendingCount(e.id);
      if (executing === e.id) row.executing = true;
      rows.push(row);
    }
    return { total, shown: rows.length, tracking: this.trackingState(), requests: rows };
  }

  show(id: number): Record<string, unknown> | undefined {
    const e = this.live.get(id);
    if (!e) return undefined;
    const now = performance.now();
    const req = e.req;
    const headers: Record<string, string> = {};
    for (const [k, v] of Object.entries(req.headers ?? {})) {
      const value = Array.isArray(v) ? v.join(', ') : String(v ?? '');
      headers[k] = this.redact(k) ? redactedValue(value) : value;
    }
    const outbound = [...this.outbound.values()]
      .filter((o) => o.owner === id)
      .map((o) => ({ kind: o.kind, method: o.method, url: this.hideUrl(o.url), ageMs: round(now - o.start) }));
    const out: Record<string, unknown> = {
      id,
      request: `${req.method} ${this.hideUrl(urlOf(req) ?? '?')} HTTP/${req.httpVersion}`,
      ageMs: round(now - e.start),
      startedAt: new Date(performance.timeOrigin + e.start).toISOString(),
    };
    const route = routeOf(e);
    if (route) out.route = route;
    const remote = remoteOf(req);
    if (remote) out.remote = remote;
    out.executing = this.currentOwner() === id;
    out.responseStarted = e.res.headersSent;
    out.headers = headers;
    out.outbound = outbound;
    const unattributed = [...this.outbound.values()].filter((o) => o.owner === undefined).length;
    if (unattributed && !this.tracker) out.outboundUnattributed = unattributed;
    if (this.tracker) out.waitingOn = this.tracker.pending(id, now);
    out.tracking = this.trackingState();
    return out;
  }

  slow(limit: number): Record<string, unknown> {
    const rows = this.history
      .slots()
      .map((i) => this.history.read(i, this.hideUrl))
      .sort((a, b) => b.durationMs - a.durationMs)
      .slice(0, limit);
    return { kept: this.history.size, capacity: this.history.capacity, requests: rows };
  }

  private trackingState(): string {
    if (!this.tracker) return 'off (run `requests track` to see what each request waits on)';
    return `armed, ${Math.max(0, Math.round(this.tracker.remainingMs() / 1000))}s left`;
  }

  clear(): void {
    this.live.clear();
    this.byRootAsyncId.clear();
    this.outbound.clear();
    this.history.clear();
    this.watchers.clear();
  }
}

export function makeRedactor(patterns: readonly string[]): (key: string) => boolean {
  return secretMatcher(patterns);
}
