// The safety net of `ispy attach`, run detached (its own session, so the terminal's Ctrl-C
// does not reach it) just before the target is signalled. It idles while `ispy attach`
// holds its stdin open, then:
//
//   stdin says "closed"             ispy saw the inspector port closed: exit
//   stdin says "late", or just ends  ispy gave up, or died (SIGKILL, a crash): close any
//                                    inspector the target has open or opens, after checking
//                                    its pid through the session, then exit
//
// The second case covers a target whose main thread was blocked in native code when
// SIGUSR1 came: Node opens the inspector only when the thread returns, after ispy has gone;
// and one whose main thread blocked while the port was open: the close waits in its queue.
// Bounded: it exits after <watch ms>, or when the target exits (or its pid is reused). Its
// only output is `ready` on stdout once it is listening; stderr is ignored.
//
// If ispy died, the watcher also removes ispy's private report folder (<tmpdir>/ispy-attach-*).
//
//   node attach-watch.js <pid> <pid as the target sees itself> <start time> <watch ms> <ports to ignore,…> [report folder]

import { rmSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { isIspyError } from '../protocol/errors';
import { closeExpression, isInspector, openSession, sleep, waitPortClosed } from './inspector-client';
import { processAlive } from '../protocol/socket-path';
import { listeningSockets, startTimeOf } from './procfs';

/**
 * The watcher's active loop (attach-watch.ts): until `untilMs` (epoch ms), or until the
 * process is gone or is no longer the one we signalled (pid reused), close any inspector it
 * has open on a port not in `before`. Returns once it closed one.
 *
 * The close goes right behind the pid check, not after its answer: it acts only in the
 * target (it checks the pid itself), and a main thread blocked in native code then runs
 * both the moment it returns. The answer only tells whether to keep waiting for this port.
 */
async function watchLateInspector(pid: number, expectedPid: number, startTime: string, untilMs: number, before: Set<number>): Promise<'closed' | 'gone' | 'expired'> {
  const ignored = new Set(before);
  const gone = () => !processAlive(pid) || (startTime !== '' && startTimeOf(pid) !== startTime);
  while (Date.now() < untilMs) {
    if (gone()) return 'gone';
    for (const s of listeningSockets(pid)) {
      if (ignored.has(s.port)) continue;
      if (!(await isInspector(s.host, s.port, 1000))) {
        ignored.add(s.port);
        continue;
      }
      let conn;
      try {
        conn = await openSession(s.host, s.port, 5000);
      } catch (err) {
        // A URL pointing elsewhere: never act on it. Anything else: try again.
        if (isIspyError(err)) ignored.add(s.port);
        continue;
      }
      let otherProcess = false;
      conn.evaluate('process.pid', untilMs - Date.now()).then(
        (seen) => (otherProcess = seen !== expectedPid),
        () => {},
      );
      conn.requestClose(closeExpression(expectedPid));
      // Minutes, should the thread stay blocked: poll gently.
      const closed = await waitPortClosed(pid, s.port, untilMs - Date.now(), () => otherProcess || gone(), 20);
      conn.close();
      if (closed) return 'closed';
      if (otherProcess) ignored.add(s.port);
    }
    await sleep(50);
  }
  return 'expired';
}

const [pid, innerPid, startTime, watchMs, before, reportDir] = process.argv.slice(2);

/** ispy's report folder, left behind if ispy died; only ever one of ours under the temp dir. */
function removeReportDir(): void {
  if (!reportDir || path.dirname(reportDir) !== os.tmpdir() || !path.basename(reportDir).startsWith('ispy-attach-')) return;
  try {
    rmSync(reportDir, { recursive: true, force: true });
  } catch {
    // best effort
  }
}

let said = '';
// Loaded and listening: ispy attach waits for this before it signals the target.
process.stdout.on('error', () => {});
process.stdout.write('ready\n');
process.stdin.setEncoding('utf8');
process.stdin.on('data', (d: string) => (said += d));
process.stdin.on('error', () => {});
process.stdin.on('close', () => {
  const words = said.split('\n');
  if (words.includes('closed')) return;
  // "late": ispy is alive and removes its folder itself; nothing at all: ispy died.
  if (!words.includes('late')) removeReportDir();
  void watchLateInspector(
    Number(pid),
    Number(innerPid),
    startTime ?? '',
    Date.now() + Number(watchMs),
    new Set((before ?? '').split(',').filter(Boolean).map(Number)),
  ).catch(() => {
    // nothing to report to: ispy attach has already exited
  });
});
