// kill -9 in the middle of a command (bench/reliability-kill.js, which also runs it many
// times with the kill landing anywhere in the command's life). Of the client, the real
// `ispy` binary killed by pid while its command runs: nothing it started may stay on in
// the app, and no artefact of its call may stay in the agent's folder. Of the app, mid heap
// snapshot: the `.partial` it leaves is swept by the next agent started with that folder.

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { existsSync, mkdirSync, symlinkSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { cleanup, tempDir, waitFor } from '../helpers';
import { connect, type Client } from '../../dist/src/client/index.js';
import { engineApp, filesIn, needsProc, NO_PROC, type ReliabApp, startReliabApp } from './harness';
import { killAppMidSnapshot, killClientMid } from '../../bench/reliability-kill.js';

afterAll(cleanup);

describe.skipIf(NO_PROC !== undefined)(needsProc('kill -9 of the client mid-command'), () => {
  let app: ReliabApp;
  let probe: Client;
  let handlesBefore: string;

  beforeAll(async () => {
    app = await startReliabApp();
    // A heap worth walking, so a snapshot lasts long enough to be killed in.
    await app.get('/grow?n=400000');
    probe = await connect(app.socket, { clientName: 'kill-probe' });
    handlesBefore = JSON.stringify(((await probe.call('process', 'handles')) as { byType: unknown }).byType);
  });

  afterAll(async () => {
    await probe?.close();
    await app?.kill();
  });

  // Each: nothing on, no profiler thread, a new profile works, the folder holds nothing of
  // the killed call, the functions are the originals, the app's handles are as before.
  it('mid `profile cpu --duration 10s`: the profiler stops and no profile is written', async () => {
    expect(await killClientMid(engineApp(app), probe, 'profile cpu', { handlesBefore })).toEqual([]);
  });

  // A snapshot's walk cannot be stopped: on a busy machine it outlasts the default timeout.
  it('mid `heap snapshot`: the snapshot it was writing is deleted', async () => {
    expect(await killClientMid(engineApp(app), probe, 'heap snapshot', { handlesBefore })).toEqual([]);
  }, 300_000);

  it('mid `trace add <target>` then `trace watch`: the trace comes off and the function is the original again', async () => {
    expect(await killClientMid(engineApp(app), probe, 'trace add + watch', { handlesBefore })).toEqual([]);
  });

  it('mid `profile gate <target>` with calls already profiled: the gate comes off and writes no merged profile', async () => {
    expect(await killClientMid(engineApp(app), probe, 'profile gate', { handlesBefore })).toEqual([]);
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

describe.skipIf(NO_PROC !== undefined)(needsProc('kill -9 of the app mid heap snapshot'), () => {
  it('leaves a .partial, which the next agent with that output folder sweeps; live pids, other names, symlinks and folders stay', async () => {
    const shared = tempDir('ispy-r-');
    const out = path.join(shared, 'out');
    const first = await startReliabApp({ outputDir: out });
    await first.get('/grow?n=400000');
    const dead = first.pid;
    // Beside it, planted before the next agent starts: what the sweep must leave alone…
    const outside = path.join(shared, 'not-an-artefact.txt');
    writeFileSync(outside, 'keep me');
    const keepFiles = [
      `heap-${process.pid}-20260101T000000Z.heapsnapshot.partial`, // a live pid (this test)
      'notes.partial', // not an artefact name
      `heap-${dead}-garbage.heapsnapshot.partial`, // no stamp
      `cpu-${dead}-20260101T000000Z.cpuprofile`, // finished
    ];
    const link = `cpu-${dead}-20260101T000000Z.cpuprofile.partial`; // a symbolic link, to a file outside
    const folder = `report-${dead}-20260101T000000Z.json.partial`;
    const keep = [...keepFiles, link, folder];
    // …and the other shapes of name an agent writes, which it must sweep.
    const alsoSwept = [`cpu-${dead}-20260101T000000Z.collapsed-2.txt.partial`, `gate-lib_tick-${dead}-20260101T000000Z-3.cpuprofile.partial`, `report-${dead}-20260101T000000Z.partial`];
    const plant = () => {
      for (const name of [...keepFiles, ...alsoSwept]) writeFileSync(path.join(out, name), 'x');
      symlinkSync(outside, path.join(out, link));
      mkdirSync(path.join(out, folder));
    };
    let partial = '';
    const { next, problems } = await killAppMidSnapshot(engineApp(first), async () => {
      partial = filesIn(out).find((n) => n.endsWith('.heapsnapshot.partial') && n.startsWith(`heap-${dead}-`)) ?? '';
      plant();
      return startReliabApp({ outputDir: out });
    });
    expect(problems).toEqual([]);
    expect(partial).toMatch(new RegExp(`^heap-${dead}-\\d{8}T\\d{6}Z\\.heapsnapshot\\.partial$`));
    await waitFor(() => alsoSwept.every((n) => !existsSync(path.join(out, n))), 10_000, `the sweep (folder: ${filesIn(out).join(', ')})`);
    expect(filesIn(out)).toEqual([...keep].sort());
    expect(existsSync(outside)).toBe(true);
    await next.kill();
  });
});
