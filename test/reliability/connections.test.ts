// The agent's connections never take the app's file descriptors: every socket counts
// against one limit from accept, upgraded or not; one that never finishes its handshake is
// cut; at the limit a socket stuck before its hello, or a connection idle for a while,
// gives its place to a newcomer (a script between two commands is not idle), and when none
// can, the refusal names who holds the places; the limit is held to a share of RLIMIT_NOFILE.

import { afterAll, describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import * as net from 'node:net';
import { connect } from '../../src/client/index';
import { cleanup, startApp, waitFor, type App } from '../helpers';

afterAll(cleanup);

const fds = (pid: number) => readdirSync(`/proc/${pid}/fd`).length;

/** A raw socket to the agent that sends nothing: a client stuck before its handshake. */
function silent(socket: string): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.connect(socket);
    // Reads (and drops) whatever comes, so it sees the agent close it.
    s.resume();
    s.once('connect', () => resolve(s));
    s.once('error', reject);
  });
}

const closed = (s: net.Socket) => s.destroyed || s.readyState === 'closed';

async function fdsSettle(app: App, expected: number): Promise<void> {
  await waitFor(() => fds(app.pid) === expected, 15_000, `the app's fd count to return to ${expected} (now ${fds(app.pid)})`);
}

describe('agent connections', () => {
  it('counts sockets that never finish their handshake against the limit, and cuts them', async () => {
    const app = await startApp({ script: 'http-app.cjs', config: { limits: { maxConnections: 4 } } });
    await app.port();
    // Let the agent's first visit load what it loads (the HTTP and WebSocket layers), and
    // take the fd count once that visit's socket is gone.
    const warm = await connect(app.socket);
    const before = fds(app.pid);
    await warm.close();
    await waitFor(() => fds(app.pid) < before, 10_000, 'the first visit to let go of its socket');
    const base = fds(app.pid);
    const socks: net.Socket[] = [];
    for (let i = 0; i < 12; i++) socks.push(await silent(app.socket));
    // The sockets past the limit were refused (and let go once they read why); the others
    // are still "connecting" for their first two seconds, so they keep their places.
    await waitFor(() => socks.filter((s) => !closed(s)).length <= 4, 10_000, 'the sockets past the limit to be refused');
    await waitFor(() => fds(app.pid) - base <= 4, 10_000, 'the agent to hold no more than its limit');
    // An operator arriving once they have been stuck a while takes the place of one.
    const c = await waitFor(() => connect(app.socket).catch(() => undefined), 10_000, 'a place for the operator');
    const info = (await c.call('process', 'info')) as { agent: { connections: number; connectionLimit: number; limitedBy: string } };
    expect(info.agent).toMatchObject({ connectionLimit: 4, limitedBy: 'limits.maxConnections' });
    expect(info.agent.connections).toBeLessThanOrEqual(4);
    await c.close();
    // The rest are cut at the handshake deadline (5 s), without any help from their side.
    await waitFor(() => socks.every(closed), 15_000, 'every silent socket to be cut by the agent');
    await fdsSettle(app, base);
    await app.kill();
  });

  it('gives an idle connection\'s place to a newcomer at the limit', async () => {
    const app = await startApp({ script: 'http-app.cjs', config: { limits: { maxConnections: 2, idleBeforeEviction: '300ms' } } });
    const first = await connect(app.socket, { clientName: 'first' });
    const second = await connect(app.socket, { clientName: 'second' });
    await second.call('process', 'info'); // `first` is now the one idle longest
    // Refused until one of them has been idle for 300 ms; then `first` gives way.
    const third = await waitFor(() => connect(app.socket, { clientName: 'third' }).catch(() => undefined), 10_000, 'a place for the third client');
    expect(((await third.call('process', 'info')) as { pid: number }).pid).toBe(app.pid);
    await waitFor(() => !first.isOpen, 5000, 'the idle client to be closed');
    expect(first.closeReason).toBe('idle connection closed for a new client');
    expect(second.isOpen).toBe(true);
    expect(app.stderr()).toMatch(/closed idle client first \(pid \d+\), idle for \d+s, to make room for a new client \(limit 2: limits.maxConnections\)/);
    await second.close();
    await third.close();
    await app.kill();
  });

  it('when none can give way (a command running, or active a moment ago), refuses a newcomer naming who holds them', async () => {
    const app = await startApp({ script: 'http-app.cjs', config: { limits: { maxConnections: 2 } } });
    const stop = new AbortController();
    const a = await connect(app.socket, { clientName: 'holder-a' });
    const stream = a.call('requests', 'watch', {}, { signal: stop.signal }).catch(() => undefined);
    // A script between two of its commands: idle for a moment only, so it keeps its place.
    const b = await connect(app.socket, { clientName: 'holder-b' });
    await b.call('process', 'info');
    await waitFor(async () => {
      const r = await connect(app.socket).then(
        (c) => c.close().then(() => 'in'),
        (err: Error) => err.message,
      );
      return r !== 'in' ? r : undefined;
    }, 5000, 'the busy refusal').then((message) => {
      expect(message).toMatch(/refused the connection: ispy agent \(pid \d+\) is at its limit of 2 connections \(limits.maxConnections\) and none can give way \(each is running a command, was active in the last 30s, or is still connecting\): /);
      expect(message).toMatch(new RegExp(`holder-a \\(\\S+@\\S+, pid ${process.pid}\\) connected \\d+s, 1 call running; holder-b \\(\\S+@\\S+, pid ${process.pid}\\) connected \\d+s, active \\d+s ago`));
      expect(message).toMatch(/raise limits.maxConnections/);
    });
    expect(a.isOpen && b.isOpen).toBe(true);
    stop.abort();
    await stream;
    await a.close();
    await b.close();
    await app.kill();
  });

  it.skipIf(!existsSync('/usr/bin/prlimit'))('holds the limit to a share of the process\'s file descriptors', async () => {
    const app = await startApp({ script: 'http-app.cjs' });
    await app.port();
    // Lower the running app's RLIMIT_NOFILE: an eighth of 48 is 6 connections.
    execFileSync('/usr/bin/prlimit', [`--pid=${app.pid}`, '--nofile=48:48']);
    const c = await connect(app.socket);
    const info = (await c.call('process', 'info')) as { agent: Record<string, unknown> };
    expect(info.agent).toMatchObject({ connectionLimit: 6, fdLimit: 48, limitedBy: expect.stringContaining('RLIMIT_NOFILE 48') });
    const base = fds(app.pid);
    const socks: net.Socket[] = [];
    let most = 0;
    for (let i = 0; i < 8; i++) {
      socks.push(await silent(app.socket));
      most = Math.max(most, fds(app.pid) - base);
    }
    // Its whole share, refused sockets letting go included, stays within an eighth of 48 (the
    // operator's connection is already one of the six), but for the one just accepted to be
    // refused: a socket is accepted before it can be turned away.
    expect(most).toBeLessThanOrEqual(5 + 1);
    // Six slots: the operator's (ready, kept) and the five oldest silent ones.
    await waitFor(() => socks.filter((s) => !closed(s)).length <= 5, 10_000, 'the agent to keep at most 6 connections');
    expect(c.isOpen).toBe(true);
    expect((await app.get('/')).status).toBe(200);
    for (const s of socks) s.destroy();
    await c.close();
    await app.kill();
  });
});
