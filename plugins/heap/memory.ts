// How much memory this process could still use: the smaller of what the kernel says is
// available and what the cgroup (a container's memory limit) leaves. A heap snapshot that
// needs more than this is how a production process gets OOM-killed.

import { readFileSync } from 'node:fs';

function readNumber(file: string): number | undefined {
  try {
    const text = readFileSync(file, 'utf8').trim();
    if (text === 'max') return undefined;
    const n = Number(text);
    return Number.isFinite(n) ? n : undefined;
  } catch {
    return undefined;
  }
}

function memAvailable(): number | undefined {
  try {
    const m = /^MemAvailable:\s+(\d+) kB$/m.exec(readFileSync('/proc/meminfo', 'utf8'));
    return m ? Number(m[1]) * 1024 : undefined;
  } catch {
    return undefined;
  }
}

export interface Available {
  bytes: number;
  /** What limited it. */
  source: string;
}

export function availableMemory(fallbackFree: () => number): Available {
  const candidates: Available[] = [];
  const sys = memAvailable();
  candidates.push(sys !== undefined ? { bytes: sys, source: 'MemAvailable in /proc/meminfo' } : { bytes: fallbackFree(), source: 'free memory (os.freemem)' });
  // cgroup v2, then v1 (whose "no limit" is a huge number).
  const v2max = readNumber('/sys/fs/cgroup/memory.max');
  const v2cur = readNumber('/sys/fs/cgroup/memory.current');
  if (v2max !== undefined && v2cur !== undefined) candidates.push({ bytes: Math.max(0, v2max - v2cur), source: `the cgroup limit (memory.max ${Math.round(v2max / 1048576)} MB)` });
  const v1max = readNumber('/sys/fs/cgroup/memory/memory.limit_in_bytes');
  const v1cur = readNumber('/sys/fs/cgroup/memory/memory.usage_in_bytes');
  if (v1max !== undefined && v1cur !== undefined && v1max < 2 ** 60) candidates.push({ bytes: Math.max(0, v1max - v1cur), source: `the cgroup limit (memory.limit_in_bytes ${Math.round(v1max / 1048576)} MB)` });
  return candidates.reduce((a, b) => (b.bytes < a.bytes ? b : a));
}

export function mb(bytes: number): number {
  return Math.round(bytes / 104857.6) / 10;
}
