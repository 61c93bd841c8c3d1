// The .cpuprofile format (Chrome DevTools, VS Code) and what both sides compute from it:
// the top functions by self and total time, collapsed stacks for flame-graph tools, and
// the merge of several profiles into one (for gated profiling). Pure functions, shared by
// the profile plugin (through ispy/plugin) and the client's flame-graph renderer.

export interface CallFrame {
  functionName: string;
  scriptId?: string;
  url: string;
  lineNumber: number;
  columnNumber: number;
}

export interface ProfileNode {
  id: number;
  callFrame: CallFrame;
  hitCount?: number;
  children?: number[];
}

export interface CpuProfile {
  nodes: ProfileNode[];
  startTime: number;
  endTime: number;
  samples?: number[];
  timeDeltas?: number[];
}

export interface FunctionTime {
  function: string;
  file: string;
  /** 1-based. */
  line: number;
  selfMs: number;
  selfPercent: number;
  totalMs: number;
  totalPercent: number;
}

const META = new Set(['(root)', '(program)', '(idle)', '(garbage collector)']);

function fileOf(url: string): string {
  if (url.startsWith('file://')) {
    try {
      return decodeURIComponent(new URL(url).pathname);
    } catch {
      return url;
    }
  }
  return url;
}

function keyOf(f: CallFrame): string {
  return `${f.functionName}\u0000${f.url}\u0000${f.lineNumber}`;
}

/** One readable name per frame: `fn (file:line)`, or the V8 meta name such as `(garbage collector)`. */
export function frameLabel(f: CallFrame): string {
  if (META.has(f.functionName) || (!f.url && f.functionName.startsWith('('))) return f.functionName;
  return `${f.functionName || '(anonymous)'} (${fileOf(f.url) || 'native'}:${f.lineNumber + 1})`;
}

function parents(profile: CpuProfile): Map<number, number> {
  const parent = new Map<number, number>();
  for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  return parent;
}

/** Per-sample durations in ms: each sample lasts until the next one (the last gets the mean). */
function sampleDurations(profile: CpuProfile): number[] {
  const samples = profile.samples ?? [];
  const deltas = profile.timeDeltas ?? [];
  const out: number[] = [];
  const mean = samples.length ? (profile.endTime - profile.startTime) / samples.length / 1000 : 0;
  for (let i = 0; i < samples.length; i++) out.push(i + 1 < deltas.length ? Math.max(0, deltas[i + 1]!) / 1000 : mean);
  return out;
}

/** The functions where time went, by self time and by total (inclusive) time. Idle time is left out. */
export function topFunctions(profile: CpuProfile, limit = 15): { durationMs: number; samples: number; idlePercent: number; self: FunctionTime[]; total: FunctionTime[] } {
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const parent = parents(profile);
  const samples = profile.samples ?? [];
  const durations = sampleDurations(profile);
  const self = new Map<string, number>();
  const total = new Map<string, number>();
  const frames = new Map<string, CallFrame>();
  let busy = 0;
  let idle = 0;
  for (let i = 0; i < samples.length; i++) {
    const leaf = byId.get(samples[i]!);
    if (!leaf) continue;
    const ms = durations[i]!;
    if (leaf.callFrame.functionName === '(idle)') {
      idle += ms;
      continue;
    }
    busy += ms;
    const k = keyOf(leaf.callFrame);
    frames.set(k, leaf.callFrame);
    self.set(k, (self.get(k) ?? 0) + ms);
    // Count each function once per sample, however deep its recursion.
    const seen = new Set<string>();
    for (let id: number | undefined = leaf.id; id !== undefined; id = parent.get(id)) {
      const f = byId.get(id)!.callFrame;
      if (f.functionName === '(root)') continue;
      const fk = keyOf(f);
      if (seen.has(fk)) continue;
      seen.add(fk);
      frames.set(fk, f);
      total.set(fk, (total.get(fk) ?? 0) + ms);
    }
  }
  const round = (n: number) => Math.round(n * 100) / 100;
  const row = (k: string): FunctionTime => {
    const f = frames.get(k)!;
    const s = self.get(k) ?? 0;
    const t = total.get(k) ?? 0;
    return {
      function: f.functionName || '(anonymous)',
      file: fileOf(f.url),
      line: f.lineNumber + 1,
      selfMs: round(s),
      selfPercent: busy ? round((s / busy) * 100) : 0,
      totalMs: round(t),
      totalPercent: busy ? round((t / busy) * 100) : 0,
    };
  };
  const sorted = (m: Map<string, number>) => [...m].sort((a, b) => b[1] - a[1]).slice(0, limit).map(([k]) => row(k));
  const all = busy + idle;
  return {
    durationMs: round((profile.endTime - profile.startTime) / 1000),
    samples: samples.length,
    idlePercent: all ? round((idle / all) * 100) : 0,
    self: sorted(self),
    total: sorted(total),
  };
}

/** Collapsed stacks (`root;caller;callee count`), one line per distinct stack, for flamegraph.pl, speedscope, inferno. Idle is left out. */
export function collapse(profile: CpuProfile): string {
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const parent = parents(profile);
  const counts = new Map<number, number>();
  for (const s of profile.samples ?? []) counts.set(s, (counts.get(s) ?? 0) + 1);
  const lines: string[] = [];
  for (const [leafId, count] of counts) {
    const leaf = byId.get(leafId);
    if (!leaf || leaf.callFrame.functionName === '(idle)') continue;
    const names: string[] = [];
    for (let id: number | undefined = leafId; id !== undefined; id = parent.get(id)) {
      const f = byId.get(id)!.callFrame;
      if (f.functionName !== '(root)') names.push(frameLabel(f).replace(/;/g, ':'));
    }
    lines.push(`${names.reverse().join(';')} ${count}`);
  }
  return lines.sort().join('\n') + (lines.length ? '\n' : '');
}

/**
 * Keeps only the samples taken between `fromUs` and `toUs` (the profiler's clock, which
 * is process.hrtime in microseconds), e.g. exactly one call of a gated function.
 */
export function trimProfile(profile: CpuProfile, fromUs: number, toUs: number): CpuProfile {
  const samples: number[] = [];
  const timeDeltas: number[] = [];
  let t = profile.startTime;
  let last = fromUs;
  const src = profile.samples ?? [];
  const deltas = profile.timeDeltas ?? [];
  for (let i = 0; i < src.length; i++) {
    t += deltas[i] ?? 0;
    if (t < fromUs || t > toUs) continue;
    samples.push(src[i]!);
    timeDeltas.push(t - last);
    last = t;
  }
  return { nodes: profile.nodes, startTime: fromUs, endTime: toUs, samples, timeDeltas };
}

/**
 * Merges profiles into one: call trees united by call path, samples laid end to end.
 * Frames for which `drop` is true (the profiler's own wrapper, say) are left out, their
 * children attached to their parent.
 */
export function mergeProfiles(profiles: readonly CpuProfile[], drop: (f: CallFrame) => boolean = () => false): CpuProfile {
  const root: ProfileNode = { id: 1, callFrame: { functionName: '(root)', scriptId: '0', url: '', lineNumber: -1, columnNumber: -1 }, hitCount: 0, children: [] };
  const nodes: ProfileNode[] = [root];
  const childIndex = new Map<number, Map<string, number>>();
  const samples: number[] = [];
  const timeDeltas: number[] = [];
  let time = 0;
  for (const p of profiles) {
    const byId = new Map(p.nodes.map((n) => [n.id, n]));
    const mapped = new Map<number, number>();
    const pRoot = p.nodes.find((n) => n.callFrame.functionName === '(root)') ?? p.nodes[0];
    if (!pRoot) continue;
    mapped.set(pRoot.id, 1);
    const walk = (id: number, into: number) => {
      for (const c of byId.get(id)?.children ?? []) {
        const child = byId.get(c)!;
        if (drop(child.callFrame)) {
          mapped.set(c, into);
          walk(c, into);
          continue;
        }
        let index = childIndex.get(into);
        if (!index) childIndex.set(into, (index = new Map()));
        const k = `${keyOf(child.callFrame)}\u0000${child.callFrame.columnNumber}`;
        let target = index.get(k);
        if (target === undefined) {
          target = nodes.length + 1;
          nodes.push({ id: target, callFrame: { ...child.callFrame }, hitCount: 0, children: [] });
          nodes[into - 1]!.children!.push(target);
          index.set(k, target);
        }
        nodes[target - 1]!.hitCount! += child.hitCount ?? 0;
        mapped.set(c, target);
        walk(c, target);
      }
    };
    walk(pRoot.id, 1);
    const pSamples = p.samples ?? [];
    const pDeltas = p.timeDeltas ?? [];
    for (let i = 0; i < pSamples.length; i++) {
      samples.push(mapped.get(pSamples[i]!) ?? 1);
      const d = i === 0 ? 0 : (pDeltas[i] ?? 0);
      timeDeltas.push(d);
      time += d;
    }
    // Close the gap to this profile's end, so the next one starts after it.
    const last = pDeltas.reduce((a, b) => a + b, 0);
    time += Math.max(0, p.endTime - p.startTime - last);
  }
  return { nodes, startTime: 0, endTime: time, samples, timeDeltas };
}
