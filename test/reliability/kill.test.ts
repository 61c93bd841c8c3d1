// kill -9 in the middle of a command. Of the client (the real `ispy` binary, killed by pid
// while its command runs): nothing it started may stay running in the app, and no artefact
// of its call may stay in the agent's folder. Of the app, mid heap snapshot: the `.partial`
// it leaves is swept by the next agent that starts with the same output folder.

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdirSync, statSync, symlinkSync, unlinkSync, writeFileSync, existsSync } from 'node:fs';
import * as path from 'node:path';
import { cleanup, tempDir, waitFor } from '../helpers';
import { connect, type Client } from '../../dist/src/client/index.js';
import { filesIn, spawnCli, startReliabApp, threadNames, whenRunning, type ReliabApp } from './harness';
import { getJson } from '../../bench/reliability-lib.js';

afterAll(cleanup);

const TICK = './reliab-lib.cjs:tick';

type Handles = { byType: { type: string; count: number }[] };

describe('kill -9 of the client mid-command', () => {
  let app: ReliabApp;
  let probe: Client;
  let handlesBefore: Handles['byType'];

  const handles = async () => ((await probe.call('process', 'handles')) as Handles).byType;
  const originals = async () => Object.values(await getJson(app.httpPort, '/identity')).every(Boolean);

  beforeAll(async () => {
    app = await startReliabApp();
    // A heap worth walking, so a snapshot lasts long enough to be killed in.
    await app.get('/grow?n=400000');
    probe = await connect(app.socket, { clientName: 'kill-probe' });
    handlesBefore = await handles();
  });

  afterAll(async () => {
    await probe?.close();
    await app?.kill();
  });

  /** What must hold after each kill: nothing on, the functions back, the app's handles as before, the agent's folder empty. */
  async function nothingLeft(): Promise<void> {
    await waitFor(async () => {
      const traces = ((await probe.call('trace', 'list')) as { traces: { state: string }[] }).traces.filter((t) => t.state !== 'removed');
      const gates = ((await probe.call('profile', 'gates')) as { gates: { state: string }[] }).gates.filter((g) => g.state === 'armed');
      return traces.length === 0 && gates.length === 0;
    }, 10_000, 'no trace and no gate on');
    expect(await originals()).toBe(true);
    await waitFor(async () => JSON.stringify(await handles()) === JSON.stringify(handlesBefore), 10_000, `the app's handles to be as before (${JSON.stringify(handlesBefore)})`);
    expect(filesIn(app.outputDir)).toEqual([]);
  }

  /** Whether V8's CPU profiler runs in the app: it has a thread of its own only then. */
  const profilerThread = async () => threadNames(app.pid).includes('v8:ProfEvntProc');

  async function startAndKill(lines: string[], running: () => Promise<boolean>, what: string): Promise<void> {
    const cli = spawnCli(['run', app.socket, ...lines.flatMap((l) => ['-c', l])]);
    await whenRunning(cli, running, what);
    await cli.kill9();
  }

  it('mid `profile cpu --duration 10s`: the profiler stops, a new profile works, and no profile is written', async () => {
    await startAndKill(['profile cpu --duration 10s'], profilerThread, "V8's profiler thread to start");
    await waitFor(async () => !(await profilerThread()), 10_000, "V8's profiler thread to end");
    // A new profile works, which it would not while the killed one still ran.
    const next = (await probe.call('profile', 'cpu', { duration: '100ms' })) as { file: string; cancelled: boolean };
    expect(next.cancelled).toBe(false);
    // By now the killed call is over: its profile would have been written.
    expect(filesIn(app.outputDir)).toEqual([path.basename(next.file)]);
    unlinkSync(next.file);
    await nothingLeft();
  });

  it('mid `heap snapshot`: the snapshot it was writing is deleted', async () => {
    const partial = () => filesIn(app.outputDir).find((f) => f.endsWith('.heapsnapshot.partial'));
    await startAndKill(['heap snapshot'], async () => {
      const f = partial();
      return f !== undefined && statSync(path.join(app.outputDir, f)).size > 0;
    }, 'the snapshot to be written');
    // V8 cannot be stopped mid-walk: the file goes once the write is over.
    await waitFor(() => filesIn(app.outputDir).length === 0, 30_000, `the agent's folder to be empty (it holds ${filesIn(app.outputDir).join(', ')})`);
    expect(((await probe.call('heap', 'stats')) as { usedMB: number }).usedMB).toBeGreaterThan(0);
    await nothingLeft();
  });

  it('mid `trace add <target>` then `trace watch`: the trace comes off and the function is the original again', async () => {
    const activeTrace = async () => ((await probe.call('trace', 'list')) as { traces: { state: string; calls: number }[] }).traces.some((t) => t.state === 'active' && t.calls > 0);
    // The trace belongs to the CLI's connection, which `trace watch` keeps open.
    await startAndKill([`trace add ${TICK} --limit 1000000 --duration 5m`, 'trace watch'], activeTrace, 'the trace to see calls');
    await nothingLeft();
  });

  it('mid `profile gate <target>` with calls already profiled: the gate comes off and writes no merged profile', async () => {
    const gateWithSamples = async () => ((await probe.call('profile', 'gates')) as { gates: { state: string; taken: number }[] }).gates.some((g) => g.state === 'armed' && g.taken >= 2);
    await startAndKill([`profile gate ${TICK} --every 20ms --samples 1000`], gateWithSamples, 'the gate to profile calls');
    await nothingLeft();
  });

  it('a cancelled `profile cpu` and `profile alloc` write no file, and say what they sampled', async () => {
    for (const command of ['cpu', 'alloc']) {
      const controller = new AbortController();
      const running = probe.call('profile', command, { duration: '30s' }, { signal: controller.signal, onProgress: () => controller.abort() });
      const result = (await running) as { cancelled: boolean; file?: string; note: string };
      expect(result).toMatchObject({ cancelled: true, note: expect.stringMatching(/no file was written/) });
      expect(result.file).toBeUndefined();
    }
    expect(filesIn(app.outputDir)).toEqual([]);
  });
});

describe('kill -9 of the app mid heap snapshot', () => {
  it('leaves a .partial, which the next agent with that output folder sweeps; live pids, other names and symlinks stay', async () => {
    const shared = tempDir('ispy-r-');
    const out = path.join(shared, 'out');
    const first = await startReliabApp({ outputDir: out });
    await first.get('/grow?n=400000');
    const c = await connect(first.socket);
    void c.call('heap', 'snapshot').catch(() => {});
    const partial = await waitFor(() => {
      const f = filesIn(out).find((n) => n.endsWith('.heapsnapshot.partial'));
      return f !== undefined && statSync(path.join(out, f)).size > 0 ? f : undefined;
    }, 20_000, 'the snapshot to be written');
    expect(partial).toMatch(new RegExp(`^heap-${first.pid}-\\d{8}T\\d{6}Z\\.heapsnapshot\\.partial$`));
    expect((await first.kill('SIGKILL')).signal).toBe('SIGKILL');
    expect(filesIn(out)).toContain(partial);

    // Beside it: what the sweep must leave alone.
    const dead = first.pid;
    const outside = path.join(shared, 'not-an-artefact.txt');
    writeFileSync(outside, 'keep me');
    const keep = [
      `heap-${process.pid}-20260101T000000Z.heapsnapshot.partial`, // a live pid (this test)
      'notes.partial', // not an artefact name
      `heap-${dead}-garbage.heapsnapshot.partial`, // no stamp
      `cpu-${dead}-20260101T000000Z.cpuprofile`, // finished
    ];
    for (const name of keep) writeFileSync(path.join(out, name), 'x');
    const link = `cpu-${dead}-20260101T000000Z.cpuprofile.partial`;
    symlinkSync(outside, path.join(out, link));
    const folder = `report-${dead}-20260101T000000Z.json.partial`;
    mkdirSync(path.join(out, folder));
    // Also swept: the other shapes artefactName gives (a second of the same second, two extensions).
    const alsoSwept = [`cpu-${dead}-20260101T000000Z.collapsed-2.txt.partial`, `gate-lib_tick-${dead}-20260101T000000Z-3.cpuprofile.partial`, `report-${dead}-20260101T000000Z.partial`];
    for (const name of alsoSwept) writeFileSync(path.join(out, name), 'x');

    const second = await startReliabApp({ outputDir: out });
    await waitFor(() => !existsSync(path.join(out, partial)) && alsoSwept.every((n) => !existsSync(path.join(out, n))), 10_000, `the sweep (folder: ${filesIn(out).join(', ')})`);
    expect(filesIn(out)).toEqual([...keep, link, folder].sort());
    expect(existsSync(outside)).toBe(true);
    await c.close();
    await second.kill();
  });

});
