// The load hook of config traces on ES modules. For each ES module named by a config trace,
// appends code that hands the export to the trace registry on the main thread and takes
// back the wrapper. Every other module passes through untouched.
//
// Where Node has module.registerHooks() (in-thread and synchronous), config-traces.ts calls
// appendTraces() from its own hook on the main thread. Elsewhere this file is loaded on
// Node's module loader thread by module.register(), through initialize() and load().

interface HookTarget {
  spec: string;
  exportPath: string[];
}

let targets = new Map<string, HookTarget[]>();

export function initialize(data: { targets: { url: string; targets: HookTarget[] }[] }): void {
  targets = new Map(data.targets.map((t) => [t.url, t.targets]));
}

/** A name the appended code can assign to: an identifier, not a reserved word (`default`). */
export function assignableName(name: string): boolean {
  return /^[A-Za-z_$][\w$]*$/.test(name) && !RESERVED.has(name);
}

const RESERVED = new Set(
  'await break case catch class const continue debugger default delete do else enum export extends false finally for function if implements import in instanceof interface let new null package private protected public return static super switch this throw true try typeof var void while with yield arguments eval'.split(' '),
);

function appended(t: HookTarget): string {
  const name = t.exportPath[0]!;
  if (!assignableName(name)) return '';
  const spec = JSON.stringify(t.spec);
  const api = 'globalThis[Symbol.for("ispy.trace")]';
  const take = t.exportPath.length === 1 ? `${name} = __ispy.configTrace(${spec}, ${name}, (v) => { ${name} = v; });` : `__ispy.configTrace(${spec}, ${name});`;
  return `\n;try { const __ispy = ${api}; if (__ispy) { ${take} } } catch (e) { try { ${api}?.configTraceFailed(${spec}, e); } catch {} }\n`;
}

/** The source to run for `url`: the loaded source, with the traces' code appended if it is a target. */
export function appendTraces<R extends { format?: string | null; source?: unknown }>(
  url: string,
  result: R,
  list: HookTarget[] | undefined = targets.get(url.split('?')[0]!),
): R {
  if (!list || result.format !== 'module' || result.source === undefined || result.source === null) return result;
  const source = typeof result.source === 'string' ? result.source : Buffer.from(result.source as Uint8Array).toString('utf8');
  return { ...result, source: source + list.map(appended).join('') };
}

export async function load(
  url: string,
  context: { format?: string },
  nextLoad: (url: string, context: unknown) => Promise<{ format: string; source?: string | ArrayBuffer | Uint8Array; shortCircuit?: boolean }>,
): Promise<{ format: string; source?: string | ArrayBuffer | Uint8Array; shortCircuit?: boolean }> {
  return appendTraces(url, await nextLoad(url, context));
}
