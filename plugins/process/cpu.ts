// CPU time of one thread of this process, for `process info`'s split of the process total
// into the main thread and the agent worker.
//
// `process.threadCpuUsage()` (Node 22 and newer; feature-tested, never by version) measures
// the thread that calls it, so the main thread's figure is read ON the main thread (through
// the inspector) and the worker's in the worker. Where the line lacks it, or the main thread
// cannot be reached, Linux still tells any thread's time: /proc/self/task/<tid>/stat, read
// from the worker without disturbing the thread measured.

import { readFileSync } from 'node:fs';

export type ThreadCpuSource = 'threadCpuUsage' | '/proc';

export type ThreadCpu =
  | { userSeconds: number; systemSeconds: number; source: ThreadCpuSource }
  | { unavailable: string };

/**
 * Clock ticks per second of /proc's utime and stime. That unit is the kernel's USER_HZ,
 * which is 100 on every architecture Node ships for (x64, arm64, ppc64, s390x); sysconf
 * would say so too, but asking it means spawning `getconf` inside the app, which ispy never
 * does. So it is assumed, and /proc figures are only as fine as 10 ms.
 */
export const PROC_TICKS_PER_SECOND = 100;

const round = (n: number) => Math.round(n * 100) / 100;

/** A `{user, system}` in microseconds (process.threadCpuUsage()'s shape) as seconds. */
export function fromUsage(u: { user: number; system: number }): ThreadCpu {
  return { userSeconds: round(u.user / 1e6), systemSeconds: round(u.system / 1e6), source: 'threadCpuUsage' };
}

/**
 * utime and stime (fields 14 and 15) of a /proc stat line, in seconds. The command name
 * (field 2) is in parentheses and may itself hold spaces and parentheses: fields are
 * counted from the last `)`.
 */
export function parseProcStat(text: string): { userSeconds: number; systemSeconds: number } | undefined {
  const close = text.lastIndexOf(')');
  if (close === -1) return undefined;
  // After ") ": field 3 (state) is index 0, so utime (14) is index 11 and stime (15) index 12.
  const fields = text.slice(close + 2).trim().split(/\s+/);
  const user = Number(fields[11]);
  const system = Number(fields[12]);
  if (!Number.isFinite(user) || !Number.isFinite(system)) return undefined;
  return { userSeconds: round(user / PROC_TICKS_PER_SECOND), systemSeconds: round(system / PROC_TICKS_PER_SECOND) };
}

/** One thread's CPU time from /proc (Linux); `file` like /proc/self/task/<tid>/stat. */
export function fromProc(file: string): ThreadCpu {
  if (process.platform !== 'linux') return { unavailable: `no /proc on ${process.platform}` };
  try {
    const parsed = parseProcStat(readFileSync(file, 'utf8'));
    return parsed ? { ...parsed, source: '/proc' } : { unavailable: `${file} has no utime/stime fields` };
  } catch (err) {
    return { unavailable: `cannot read ${file}: ${(err as Error).message}` };
  }
}

/** Where the main thread's CPU is read on Linux: its thread id is the process id. */
export function mainThreadStatFile(): string {
  return `/proc/self/task/${process.pid}/stat`;
}

/** The calling thread's own CPU: threadCpuUsage() where the line has it, else /proc. */
export function ownThreadCpu(): ThreadCpu {
  const threadCpuUsage = (process as { threadCpuUsage?: () => { user: number; system: number } }).threadCpuUsage;
  if (typeof threadCpuUsage === 'function') {
    try {
      return fromUsage(threadCpuUsage.call(process));
    } catch {
      // fall through to /proc
    }
  }
  if (process.platform !== 'linux') return { unavailable: `this Node line has no process.threadCpuUsage(), and ${process.platform} has no /proc` };
  return fromProc('/proc/thread-self/stat');
}
