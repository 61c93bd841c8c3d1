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
