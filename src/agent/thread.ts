// Whether this is the process's main thread, answered before the app's first line without
// loading node:worker_threads: that module pulls in node:stream, ~3 ms of every start with
// the preload (measured with --cpu-prof on `-e 0`). Node replaces the process-wide functions
// a worker may not call (process.chdir among them) with stand-ins that throw, marked
// `disabled = true`; on the main thread they are the real ones. That mark is not a
// documented API, so it is only the first answer: the agent asks worker_threads itself
// before it starts its worker (after the first line) and takes the main-side setup off
// again if the two disagree (src/agent/start.ts).

export function likelyMainThread(): boolean {
  return (process.chdir as { disabled?: boolean }).disabled !== true;
}
