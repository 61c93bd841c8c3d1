// 200 clients at once on one agent while the app serves HTTP (bench/reliability-clients.js
// runs the same for a minute): with limits.maxConnections raised to fit them, all are
// served; with the default limit, the excess are refused with a message naming the limit
// and the rest are served. Either way, no HTTP request fails and, once they have gone, the
// app holds exactly the file descriptors it held before.

import { afterAll, describe, expect, it } from 'vitest';
import { cleanup } from '../helpers';
import { engineApp, ensureFdLimit, needsProc, NO_PROC, startReliabApp } from './harness';
import { runClients } from '../../bench/reliability-clients.js';

afterAll(cleanup);

describe.skipIf(NO_PROC !== undefined)(needsProc('200 concurrent clients'), () => {
  it('with room for them: every command of every client answers, no request fails, no connection is left', async () => {
    const app = await startReliabApp({ limits: { maxConnections: 210 } });
    // The agent holds its connections to an eighth of the fd limit: make room for 210.
    const short = ensureFdLimit(app.pid, 210 * 8);
    if (short) {
      console.log(`skipped: ${short}`);
      await app.kill();
      return;
    }
    const result = await runClients(engineApp(app), { clients: 200, rounds: 3 });
    const { problems, ...figures } = result;
    console.log(`200 clients: ${JSON.stringify(figures)}`);
    expect(problems).toEqual([]);
    expect(result.connected).toBe(200);
    expect(result.calls).toBe(1800);
    // They were all connected at once: the app held a socket for each.
    expect(result.fdPeak).toBeGreaterThanOrEqual(result.fdBaseline + 200);
    await app.kill();
  }, 90_000);

  it('with the default limit (32): the excess are refused naming the limit, the rest are served, nothing breaks', async () => {
    const app = await startReliabApp();
    // Every refusal is read (not reset) while the agent's sockets stay within an eighth of the fds.
    const short = ensureFdLimit(app.pid, 210 * 8);
    if (short) {
      console.log(`skipped: ${short}`);
      await app.kill();
      return;
    }
    const result = await runClients(engineApp(app), { clients: 200, rounds: 1, limit: 32 });
    const { problems, ...figures } = result;
    console.log(`200 clients, default limit: ${JSON.stringify(figures)}`);
    expect(problems).toEqual([]);
    expect(result).toMatchObject({ connected: 32, refused: 168, calls: 96 });
    expect(result.refusal).toMatch(/refused the connection: ispy agent \(pid \d+\) is at its limit of 32 connections \(limits\.maxConnections\) and none can give way/);
    await app.kill();
  }, 90_000);
});
