// Runs on the app's main thread. Fastify's route names, found when the table is read rather
// than on every request.
//
// Fastify publishes the matched route only on its request-handler tracing channel, and with
// any subscriber there it builds a context object, a route object and a runStores closure
// for every request (~450 bytes a request on its hello-world, bench/gc-pattern.js). Instead
// the agent keeps each instance from `fastify.initialization` (published once, when the app
// calls fastify()), and names a request's route when `list`, `show`, `slow` or `watch` reads
// it: the instance's own router matches the URL (findRoute), and the pattern is rebuilt from
// the parameters it found, confirmed by hasRoute.

/** What is read of a Fastify instance: its server, and its router's two lookups (findRoute, hasRoute). */
export interface FastifyApp {
  server?: object;
  findRoute?(opts: { method: string; url: string }): { params?: Record<string, unknown> } | null | undefined;
  hasRoute?(opts: { method: string; url: string }): boolean;
}

/** Patterns tried per lookup at most, when a parameter's value occurs more than once in the path. */
const MAX_CANDIDATES = 64;

export class FastifyRoutes {
  /** Instances by their HTTP server (a request's socket names its server): held weakly. */
  private readonly byServer = new WeakMap<object, FastifyApp>();
  /** The last instance seen, for a socket that does not name its server. */
  private last: WeakRef<FastifyApp> | undefined;
  /** Whether any instance was seen: until then nothing is recorded per request. */
  seen = false;

  add(app: FastifyApp | undefined): void {
    if (!app || typeof app.findRoute !== 'function' || typeof app.hasRoute !== 'function') return;
    if (app.server && typeof app.server === 'object') this.byServer.set(app.server, app);
    this.last = new WeakRef(app);
    this.seen = true;
  }

  /** The route pattern a request to `url` on `server` matched, e.g. `/users/:id`; undefined when unknown. */
  routeOf(server: object | null | undefined, method: string | undefined, url: string | undefined): string | undefined {
    if (!this.seen || !method || !url) return undefined;
    const app = (server && this.byServer.get(server)) || this.last?.deref();
    if (!app) return undefined;
    try {
      const found = app.findRoute!({ method, url });
      if (!found) return undefined;
      return patternOf(app, method, pathOf(url), Object.entries(found.params ?? {}));
    } catch {
      // A lookup must never fail a read of the table.
      return undefined;
    }
  }
}

function pathOf(url: string): string {
  const q = url.search(/[?#;]/);
  const path = q < 0 ? url : url.slice(0, q);
  try {
    return decodeURIComponent(path);
  } catch {
    return path;
  }
}

/**
 * The pattern: each parameter's value in the path (in order) put back as `:name` (`*` for
 * the wildcard), the first candidate the router confirms as a registered route. A value may
 * occur more than once (`/v1/1`), so each occurrence is tried. With none confirmed (a
 * parameter with a regular expression is registered as `:id(^\d+)`), the only candidate if
 * there was one, else none.
 */
function patternOf(app: FastifyApp, method: string, path: string, params: [string, unknown][]): string | undefined {
  if (params.length === 0) return path;
  const candidates: string[] = [];
  const walk = (i: number, from: number, built: string): void => {
    if (candidates.length >= MAX_CANDIDATES) return;
    if (i === params.length) {
      candidates.push(built + path.slice(from));
      return;
    }
    const [name, raw] = params[i]!;
    const value = String(raw ?? '');
    if (name === '*') {
      // The wildcard takes the rest of the path.
      if (path.endsWith(value) && path.length - value.length >= from) walk(params.length, path.length, built + path.slice(from, path.length - value.length) + '*');
      return;
    }
    if (value === '') return;
    for (let at = path.indexOf(value, from); at >= 0; at = path.indexOf(value, at + 1)) {
      walk(i + 1, at + value.length, `${built}${path.slice(from, at)}:${name}`);
    }
  };
  walk(0, 0, '');
  for (const c of candidates) if (app.hasRoute!({ method, url: c })) return c;
  return candidates.length === 1 ? candidates[0] : undefined;
}
