// The agent's own log. It writes straight to file descriptor 2 with writeSync: a worker's
// console.log is relayed through the main thread and would stall while the app's event
// loop is blocked, which is exactly when the agent has most to say. A write that fails
// (a closed or full pipe) is dropped: the app comes first.

import { writeSync } from 'node:fs';

let quiet = false;

/** Silences the agent log (for the in-process test harness). */
export function setQuiet(value: boolean): void {
  quiet = value;
}

export function agentLog(message: string): void {
  if (quiet) return;
  try {
    writeSync(2, `ispy: ${message}\n`);
  } catch {
    // Nowhere left to report it.
  }
}

const THROTTLE_MS = 60_000;
const throttled = new Map<string, { at: number; held: number }>();

/**
 * The same, at most once a minute per `kind`: for lines a client can cause at will (each
 * connection closed to make room, each refusal, each broken connection), so that no client
 * can fill the app's stderr. The next line said counts the ones held back.
 */
export function agentLogThrottled(kind: string, message: string): void {
  const now = Date.now();
  const last = throttled.get(kind);
  if (last && now - last.at < THROTTLE_MS) {
    last.held++;
    return;
  }
  const held = last?.held ?? 0;
  throttled.set(kind, { at: now, held: 0 });
  agentLog(held ? `${message} (and ${held} more like it in the last ${Math.round((now - last!.at) / 1000)}s)` : message);
}
