// Runs on the app's main thread, inside the preload: traces listed in the config are put
// on when their module loads, so they see the first call.
//
//   CommonJS: a wrapper around Module._load notices when the target's module has finished
//   loading and wraps the export before require() returns it to the app; it takes itself
//   off once every CommonJS target is in place.
//
//   ES modules: an export binding cannot be replaced from outside, so a load hook
//   (config-hooks.ts) appends a few lines to the target module that hand the binding to
//   the registry and take back the wrapper; the registry keeps a setter closure from the
//   module, to put the exact original back. The hook is module.registerHooks() where Node
//   has it (in-thread, synchronous, and it can be taken off: it is, once every target has
//   loaded); module.register() (on Node's loader thread) only where it does not, since
//   newer lines print a deprecation warning for it into the app's stderr.

import { createRequire, register } from 'node:module';
import * as nodeModule from 'node:module';
import Module from 'node:module';
import { existsSync, readFileSync } from 'node:fs';
import * as path from 'node:path';
import { pathToFileURL } from 'node:url';
import { parseTarget, type ConfigTrace, type SetupContext } from 'ispy/plugin';
import type { TraceRegistry } from './registry';
import { wrapBinding } from './registry';
import type { Trace, TraceOptions } from './tracer';
import { appendTraces, assignableName } from './config-hooks';

/** What the appended code of an ES module calls, under this global symbol. */
export const GLOBAL_KEY = 'ispy.trace';

interface Pending {
  spec: string;
  file: string;
  exportPath: string[];
  trace: Trace;
}

function isEsm(file: string): boolean {
  if (file.endsWith('.mjs')) return true;
  if (file.endsWith('.cjs') || !file.endsWith('.js')) return false;
  for (let dir = path.dirname(file); ; dir = path.dirname(dir)) {
    const pkg = path.join(dir, 'package.json');
    if (existsSync(pkg)) {
      try {
        return (JSON.parse(readFileSync(pkg, 'utf8')) as { type?: string }).type === 'module';
      } catch {
        return false;
      }
    }
    if (path.dirname(dir) === dir) return false;
  }
}

function resolveFile(module: string): string {
  const roots = [process.cwd(), ...(process.argv[1] ? [path.dirname(path.resolve(process.argv[1]))] : [])];
  for (const root of roots) {
    try {
      if (module.startsWith('.') || path.isAbsolute(module)) {
        const file = path.resolve(root, module);
        if (existsSync(file)) return file;
      } else return createRequire(path.join(root, 'noop.js')).resolve(module);
    } catch {
      // try the next root
    }
  }
  throw new Error(`cannot find module "${module}" from ${roots.join(' or ')}`);
}

type LoadResult = { format?: string | null; source?: unknown };
/** module.registerHooks() (Node 22.15+, 23.5+), typed here for Node lines whose types lack it. */
type RegisterHooks = (hooks: {
  load(url: string, context: unknown, nextLoad: (url: string, context: unknown) => LoadResult): LoadResult;
}) => { deregister(): void };

function walk(root: unknown, exportPath: string[]): { owner: object; key: string } | undefined {
  let owner = root as Record<string, unknown> | undefined;
  for (const part of exportPath.slice(0, -1)) owner = owner?.[part] as Record<string, unknown> | undefined;
  const key = exportPath[exportPath.length - 1]!;
  return owner && typeof owner[key] === 'function' ? { owner, key } : undefined;
}

export function installConfigTraces(ctx: SetupContext, registry: TraceRegistry, optionsFor: (t: ConfigTrace) => TraceOptions): void {
  const cjs: Pending[] = [];
  const esm: Pending[] = [];
  for (const t of ctx.settings.traces) {
    const trace = registry.create(t.target, optionsFor(t), 'config');
    try {
      const { module, exportPath } = parseTarget(t.target);
      const file = resolveFile(module);
      if (isEsm(file) && !assignableName(exportPath[0]!)) {
        throw new Error(`"${exportPath[0]}" cannot be traced from the config: the appended code reaches an export through its local name, and "${exportPath[0]}" is not one (a default export, or a reserved word); export the function under a name`);
      }
      (isEsm(file) ? esm : cjs).push({ spec: t.target, file, exportPath, trace });
    } catch (err) {
      trace.remove(`not installed: ${(err as Error).message}`);
      ctx.log(`config trace ${t.target} not installed: ${(err as Error).message}`);
    }
  }

  // ── CommonJS ────────────────────────────────────────────────────────────────
  const attach = (p: Pending, exportsObject: unknown): boolean => {
    const found = walk(exportsObject, p.exportPath);
    if (!found) {
      p.trace.remove(`not installed: ${p.file} has no function ${p.exportPath.join('.')}`);
      return true;
    }
    try {
      registry.attach(p.trace, found.owner, found.key);
    } catch (err) {
      p.trace.remove(`not installed: ${(err as Error).message}`);
    }
    return true;
  };
  const cache = (Module as unknown as { _cache: Record<string, { loaded: boolean; exports: unknown }> })._cache;
  const waiting = cjs.filter((p) => !(cache[p.file]?.loaded && attach(p, cache[p.file]!.exports)));
  if (waiting.length) {
    let attaching = false;
    const handle = ctx.wrap(Module, '_load', (_call, proceed) => {
      const exportsObject = proceed();
      // Attaching can itself load a module (ispy's own code loads lazily), which comes
      // back through here: that inner load must not attach the same trace a second time.
      if (attaching) return exportsObject;
      attaching = true;
      try {
        for (let i = waiting.length - 1; i >= 0; i--) {
          const p = waiting[i]!;
          const m = cache[p.file];
          if (m?.loaded && attach(p, m.exports)) waiting.splice(i, 1);
        }
      } finally {
        attaching = false;
      }
      if (!waiting.length) handle.unwrap();
      return exportsObject;
    });
  }

  // ── ES modules ──────────────────────────────────────────────────────────────
  const byUrl = new Map<string, Pending[]>();
  for (const p of esm) {
    const url = pathToFileURL(p.file).href;
    byUrl.set(url, [...(byUrl.get(url) ?? []), p]);
  }
  const api = {
    /** Called by the code appended to a traced ES module. */
    configTrace(spec: string, value: unknown, restore?: (original: unknown) => void): unknown {
      const p = esm.find((x) => x.spec === spec);
      if (!p || p.trace.state !== 'waiting') return value;
      if (p.exportPath.length === 1) return wrapBinding(p.trace, p.exportPath[0]!, value, restore ?? (() => {}));
      const found = walk({ [p.exportPath[0]!]: value }, p.exportPath);
      if (!found) p.trace.remove(`not installed: ${spec} is not a function`);
      else registry.attach(p.trace, found.owner, found.key);
      return value;
    },
    configTraceFailed(spec: string, err: unknown): void {
      const p = esm.find((x) => x.spec === spec);
      const why =
        err instanceof TypeError && /constant/.test(err.message)
          ? 'its export is a const binding (declare it with function, or trace a method on an object)'
          : err instanceof ReferenceError
            ? `${(err as Error).message}: the export's local name differs from its exported name (export { a as b }); list the local name`
            : (err as Error)?.message;
      p?.trace.remove(`not installed: ${why}`);
      ctx.log(`config trace ${spec} not installed: ${why}`);
    },
  };
  const key = Symbol.for(GLOBAL_KEY);
  Object.defineProperty(globalThis, key, { value: api, configurable: true, enumerable: false });
  ctx.onUnload(() => {
    delete (globalThis as Record<symbol, unknown>)[key];
  });
  if (!byUrl.size) return;
  const targetsOf = new Map([...byUrl].map(([url, list]) => [url, list.map((p) => ({ spec: p.spec, exportPath: p.exportPath }))]));
  const registerHooks = (nodeModule as { registerHooks?: RegisterHooks }).registerHooks;
  if (typeof registerHooks === 'function') {
    const hooks = registerHooks({
      load(url, context, nextLoad) {
        const result = nextLoad(url, context);
        const bare = url.split('?')[0]!;
        const list = targetsOf.get(bare);
        if (!list) return result;
        targetsOf.delete(bare);
        // Every target's code is in: nothing left for the hook to do, so it comes off.
        if (!targetsOf.size) queueMicrotask(off);
        return appendTraces(url, result, list);
      },
    });
    let on = true;
    const off = (): void => {
      if (on) hooks.deregister();
      on = false;
    };
    ctx.onUnload(off);
    return;
  }
  if (typeof register !== 'function') {
    for (const p of esm) p.trace.remove('not installed: ES module traces need module.register (Node 20.6 or newer)');
    return;
  }
  const targets = [...byUrl].map(([url, list]) => ({ url, targets: list.map((p) => ({ spec: p.spec, exportPath: p.exportPath })) }));
  // The hook cannot be unregistered; once the traces end it appends nothing (it only
  // touches the listed files, and appended code finds no pending trace).
  register(pathToFileURL(path.join(__dirname, 'config-hooks.js')).href, { data: { targets } });
}
