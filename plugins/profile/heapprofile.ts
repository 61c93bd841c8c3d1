// The sampling heap profile (.heapprofile, opened by Chrome DevTools' Memory tab): where
// the sampled bytes were allocated, summed per function.

export interface SamplingHeapProfileNode {
  callFrame: { functionName: string; url: string; lineNumber: number; columnNumber: number };
  selfSize: number;
  id: number;
  children: SamplingHeapProfileNode[];
}

export interface SamplingHeapProfile {
  head: SamplingHeapProfileNode;
  samples?: { size: number; nodeId: number; ordinal: number }[];
}

export interface AllocationSite {
  function: string;
  file: string;
  line: number;
  selfKB: number;
  percent: number;
}

export function topAllocations(profile: SamplingHeapProfile, limit: number): { totalKB: number; sites: AllocationSite[] } {
  const bySite = new Map<string, { f: SamplingHeapProfileNode['callFrame']; bytes: number }>();
  let total = 0;
  const stack = [profile.head];
  while (stack.length) {
    const n = stack.pop()!;
    stack.push(...(n.children ?? []));
    if (!n.selfSize) continue;
    total += n.selfSize;
    const k = `${n.callFrame.functionName}\u0000${n.callFrame.url}\u0000${n.callFrame.lineNumber}`;
    const entry = bySite.get(k) ?? { f: n.callFrame, bytes: 0 };
    entry.bytes += n.selfSize;
    bySite.set(k, entry);
  }
  const file = (url: string) => (url.startsWith('file://') ? decodeURIComponent(new URL(url).pathname) : url);
  const sites = [...bySite.values()]
    .sort((a, b) => b.bytes - a.bytes)
    .slice(0, limit)
    .map(({ f, bytes }) => ({
      function: f.functionName || '(anonymous)',
      file: file(f.url),
      line: f.lineNumber + 1,
      selfKB: Math.round(bytes / 102.4) / 10,
      percent: total ? Math.round((bytes / total) * 1000) / 10 : 0,
    }));
  return { totalKB: Math.round(total / 102.4) / 10, sites };
}
