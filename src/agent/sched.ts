// Runs in the agent worker. Tells a main thread that is blocked or busy in native code from
// one that is only waiting for a CPU: on a host whose cores are all busy (a noisy neighbour, a
// CI runner, a container at its CPU quota) a runnable thread can wait a second or more before
// it runs, and the inspector interrupt meant for it waits as long. Linux tells, per thread,
// whether it is runnable (/proc/self/task/<tid>/stat, state R) and how long it has run
// (/proc/self/task/<tid>/schedstat, first field, in ns; kept current at each tick, whereas the
// time spent queued is only added when the thread next runs, so it cannot be read mid-wait).
// Elsewhere, or without those files, nothing is known and the caller decides as before.

import { readFileSync } from 'node:fs';

interface SchedSample {
  /** Nanoseconds the thread has spent on a CPU since it started. */
  ranNs: number;
}

/** The main thread's thread id is the process id. */
const TASK = `/proc/self/task/${process.pid}`;
let missing = process.platform !== 'linux';

/** The main thread's time on a CPU now, or undefined where Linux does not say. */
function mainThreadSched(): SchedSample | undefined {
  if (missing) return undefined;
  try {
    const ranNs = Number(readFileSync(`${TASK}/schedstat`, 'latin1').split(' ')[0]);
    if (Number.isFinite(ranNs)) return { ranNs };
  } catch {
    // no schedstat in this kernel: stop asking
  }
  missing = true;
  return undefined;
}

/** True when the main thread is runnable (running or queued for a CPU), from its stat line. */
function runnable(): boolean {
  try {
    const stat = readFileSync(`${TASK}/stat`, 'latin1');
    return stat[stat.lastIndexOf(')') + 2] === 'R';
  } catch {
    return false;
  }
}

/**
 * True when, since `from`, the main thread was runnable but ran for less than half of
 * `waitedMs`: it was queued for a CPU, so a late answer says nothing about the thread itself.
 * (A thread busy in native code runs the whole time; one blocked in a system call sleeps.)
 */
function starvedSince(from: SchedSample | undefined, waitedMs: number): boolean {
  if (!from) return false;
  const now = mainThreadSched();
  return now !== undefined && (now.ranNs - from.ranNs) / 1e6 < waitedMs / 2 && runnable();
}

/**
 * Like setTimeout(expire, limitMs), unref'd, but while the main thread is starved (above) the
 * verdict waits another `limitMs`, up to `stretch` times the limit in all: a thread queued for
 * a CPU is not blocked, the host is busy. `expire` learns whether it was starved to the end and
 * how long it waited. Returns what cancels it.
 */
export function mainThreadTimeout(limitMs: number, expire: (starved: boolean, waitedMs: number) => void, stretch = 5): () => void {
  const started = Date.now();
  const from = mainThreadSched();
  const check = () => {
    const waited = Date.now() - started;
    const starved = starvedSince(from, waited);
    if (starved && waited < limitMs * stretch) {
      timer = setTimeout(check, limitMs);
      timer.unref();
      return;
    }
    expire(starved, waited);
  };
  let timer = setTimeout(check, limitMs);
  timer.unref();
  return () => clearTimeout(timer);
}
