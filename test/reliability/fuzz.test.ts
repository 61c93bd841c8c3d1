// The protocol fuzzer, CI form: 10k frames over a few hundred connections with a fixed seed
// (printed; ISPY_FUZZ_SEED=<n> replays another), against a real app with the agent. What is
// sent and how each frame is judged: bench/reliability-fuzz.js, which also runs it long.

import { afterAll, describe, expect, it } from 'vitest';
import { existsSync, readFileSync } from 'node:fs';
import { createConnection } from 'node:net';
import * as path from 'node:path';
import WebSocket from 'ws';
import { cleanup, tempDir, waitFor } from '../helpers';
import { connect } from '../../dist/src/client/index.js';
import { engineApp, needsProc, NO_PROC, startReliabApp } from './harness';
import { fuzzConfig, runFuzz } from '../../bench/reliability-fuzz.js';
import { seedFrom } from '../../bench/reliability-lib.js';

afterAll(cleanup);

const SEED = seedFrom('ISPY_FUZZ_SEED', 20261122);

describe.skipIf(NO_PROC !== undefined)(needsProc('protocol fuzzing'), () => {
  it('10k fuzzed frames: the app serves throughout, every bad frame gets an error or a close, nothing is left behind', async () => {
    const dir = tempDir('ispy-r-');
    const app = await startReliabApp(fuzzConfig(dir), { dir });
    console.log(`fuzz seed ${SEED} (replay with ISPY_FUZZ_SEED=${SEED})`);
    const result = await runFuzz(engineApp(app), { frames: 10_000, concurrency: 8, seed: SEED });
    const { problems, kinds: _k, errorCodes: _e, ...figures } = result;
    console.log(`fuzz: ${JSON.stringify(figures)}`);
    expect(problems).toEqual([]);
    expect(result.frames).toBeGreaterThanOrEqual(10_000);
    expect(result.sessions).toBeGreaterThan(200);
    // Each kind of abuse was really sent, and really met (not just dropped on our side).
    expect(Object.keys(result.kinds).length).toBeGreaterThanOrEqual(20);
    expect(result.errorCodes).toMatchObject({ ISPY_ERR_BAD_FRAME: expect.any(Number), ISPY_ERR_FRAME_TOO_LARGE: expect.any(Number), ISPY_ERR_BAD_ARGS: expect.any(Number) });
    expect(Object.keys(result.closeCodes)).toEqual(expect.arrayContaining(['1002', '1007']));
    await app.kill();
  }, 150_000);

  it('a call whose arguments nest deeper than JSON.stringify can recurse leaves the agent running (audit log on)', async () => {
    const dir = tempDir('ispy-r-');
    const app = await startReliabApp(fuzzConfig(dir), { dir });
    // Frames go out as we write them: the client library would not encode such a value.
    const ws = new WebSocket('ws://localhost/ispy', { createConnection: () => createConnection(app.socket) } as never);
    const replies: { type: string; id?: number; code?: string }[] = [];
    ws.on('message', (d) => replies.push(JSON.parse(String(d))));
    await new Promise((resolve, reject) => (ws.once('open', resolve), ws.once('error', reject)));
    ws.send(JSON.stringify({ type: 'hello', protocol: 1, client: 'deep' }));
    const depth = 20_000;
    ws.send(`{"type":"call","id":1,"plugin":"process","command":"info","args":{"deep":${'['.repeat(depth)}${']'.repeat(depth)}}}`);
    await waitFor(() => replies.find((r) => r.id === 1), 10_000, 'the answer to the deep call');
    expect(replies.find((r) => r.id === 1)).toMatchObject({ type: 'error', code: 'ISPY_ERR_BAD_ARGS' });
    ws.close();
    // The call's audit line is written after its answer, from the arguments as sent.
    const audit = path.join(dir, 'audit.log');
    const died = () => /agent worker failed/.test(app.stderr());
    await waitFor(() => died() || (existsSync(audit) && readFileSync(audit, 'utf8').includes('"command":"info"')), 10_000, 'the audit line or the agent failing');
    expect(app.stderr()).not.toMatch(/agent worker failed/);
    const c = await connect(app.socket);
    expect(((await c.call('process', 'info')) as { pid: number }).pid).toBe(app.pid);
    await c.close();
    await app.kill();
  });
});
