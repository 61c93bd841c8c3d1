// Bad input over the real socket: every bad frame gets a clear error, the connection
// lives on where it can, and the app keeps serving throughout.

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as net from 'node:net';
import WebSocket from 'ws';
import { cleanup, startApp, waitFor, type App } from './helpers';
import { connect, type Client } from '../dist/src/client/index.js';
import { PROTOCOL_VERSION } from '../dist/src/protocol/index.js';

afterAll(cleanup);

/** A raw WebSocket to the agent, with a queue of the frames it sends back. */
async function raw(socket: string): Promise<{ ws: WebSocket; next(): Promise<any>; closed: Promise<{ code: number; reason: string }> }> {
  const ws = new WebSocket('ws://localhost/ispy', { createConnection: (() => net.connect(socket)) as never });
  const queue: any[] = [];
  const waiters: ((v: any) => void)[] = [];
  ws.on('message', (d) => {
    const msg = JSON.parse(d.toString());
    const w = waiters.shift();
    if (w) w(msg);
    else queue.push(msg);
  });
  const closed = new Promise<{ code: number; reason: string }>((resolve) => ws.on('close', (code, reason) => resolve({ code, reason: reason.toString() })));
  ws.on('error', () => {});
  await new Promise<void>((resolve, reject) => {
    ws.once('open', () => resolve());
    ws.once('error', reject);
  });
  const next = () =>
    new Promise<any>((resolve, reject) => {
      if (queue.length) return resolve(queue.shift());
      const t = setTimeout(() => reject(new Error('no frame within 3 s')), 3000);
      waiters.push((v) => {
        clearTimeout(t);
        resolve(v);
      });
    });
  return { ws, next, closed };
}

describe('protocol checks', () => {
  let app: App;
  let client: Client;

  beforeAll(async () => {
    app = await startApp({ script: 'http-app.cjs', config: { plugins: [require.resolve('./fixtures/plugins/misc.cjs')], limits: { maxFrameBytes: 4096 } } });
    await app.port();
    client = await connect(app.socket);
  });

  afterAll(async () => {
    await client?.close();
    await app?.kill();
  });

  it('answers malformed frames with an error frame and keeps the connection', async () => {
    const c = await raw(app.socket);
    c.ws.send('this is not json');
    expect(await c.next()).toMatchObject({ type: 'error', code: 'ISPY_ERR_BAD_FRAME', message: expect.stringMatching(/not valid JSON/) });
    c.ws.send('[1,2]');
    expect(await c.next()).toMatchObject({ code: 'ISPY_ERR_BAD_FRAME', message: expect.stringMatching(/JSON object/) });
    c.ws.send(JSON.stringify({ type: 'call', id: 1, plugin: 'process', command: 'info' }));
    expect(await c.next()).toMatchObject({ id: 1, code: 'ISPY_ERR_NOT_READY' });
    c.ws.send(JSON.stringify({ type: 'launch' }));
    expect(await c.next()).toMatchObject({ code: 'ISPY_ERR_BAD_FRAME', message: expect.stringMatching(/unknown message type "launch"; expected hello, call or cancel/) });
    c.ws.send(JSON.stringify({ type: 'call', id: -3, plugin: 'process', command: 'info' }));
    expect(await c.next()).toMatchObject({ code: 'ISPY_ERR_BAD_FRAME', message: expect.stringMatching(/positive integer/) });
    c.ws.send(Buffer.from([1, 2, 3]), { binary: true });
    expect(await c.next()).toMatchObject({ code: 'ISPY_ERR_BAD_FRAME', message: expect.stringMatching(/binary frames/) });
    // Still alive: the hello exchange and a call work on the same connection.
    c.ws.send(JSON.stringify({ type: 'hello', protocol: PROTOCOL_VERSION, client: 'test' }));
    expect(await c.next()).toMatchObject({ type: 'welcome', pid: app.pid });
    c.ws.send(JSON.stringify({ type: 'call', id: 2, plugin: 'misc', command: 'echo', args: { text: 'hi' } }));
    expect(await c.next()).toMatchObject({ type: 'result', id: 2, value: { text: 'hi' } });
    c.ws.send(JSON.stringify({ type: 'cancel', id: 99 }));
    expect(await c.next()).toMatchObject({ id: 99, code: 'ISPY_ERR_NOT_FOUND' });
    c.ws.close();
  });

  it('refuses oversized frames: an error frame past the limit, a closed connection far past it', async () => {
    const c = await raw(app.socket);
    c.ws.send(JSON.stringify({ type: 'hello', protocol: PROTOCOL_VERSION, client: 'test' }));
    await c.next();
    c.ws.send(JSON.stringify({ type: 'call', id: 1, plugin: 'misc', command: 'echo', args: { text: 'x'.repeat(5000) } }));
    expect(await c.next()).toMatchObject({ code: 'ISPY_ERR_FRAME_TOO_LARGE', message: expect.stringMatching(/exceeds the limit of 4096 bytes/) });
    c.ws.send(JSON.stringify({ type: 'call', id: 2, plugin: 'misc', command: 'echo', args: { text: 'fits' } }));
    expect(await c.next()).toMatchObject({ type: 'result', id: 2 });
    c.ws.send('y'.repeat(4096 * 8 + 10));
    expect((await c.closed).code).toBe(1009);
    expect((await app.get('/')).body).toBe('ok');
    expect(await client.call('misc', 'echo', { text: 'still here' })).toMatchObject({ text: 'still here' });
  });

  it('refuses a client of another protocol version, with a clear message on both sides', async () => {
    const c = await raw(app.socket);
    c.ws.send(JSON.stringify({ type: 'hello', protocol: PROTOCOL_VERSION + 1, client: 'future-client' }));
    const err = await c.next();
    expect(err).toMatchObject({ code: 'ISPY_ERR_PROTOCOL_VERSION' });
    expect(err.message).toContain(`speaks protocol ${PROTOCOL_VERSION}`);
    expect(err.message).toContain(`future-client`);
    expect((await c.closed).code).toBe(4000);
    expect(app.stderr()).toMatch(/refused client "future-client": it speaks protocol 2, this agent speaks 1/);
  });

  it('names unknown plugins and commands, with suggestions', async () => {
    await expect(client.call('proces', 'info')).rejects.toMatchObject({ code: 'ISPY_ERR_UNKNOWN_PLUGIN', message: expect.stringMatching(/no plugin "proces"; did you mean "process"\?/) });
    await expect(client.call('process', 'stak')).rejects.toMatchObject({ code: 'ISPY_ERR_UNKNOWN_COMMAND', message: expect.stringMatching(/did you mean "stack"\?.*commands: info, stack/) });
  });

  it('checks argument types and names against the declaration', async () => {
    await expect(client.call('misc', 'echo', {})).rejects.toMatchObject({ code: 'ISPY_ERR_BAD_ARGS', message: expect.stringMatching(/missing <text>/) });
    await expect(client.call('misc', 'echo', { text: 5 })).rejects.toMatchObject({ code: 'ISPY_ERR_BAD_ARGS', message: expect.stringMatching(/<text> expects text, got 5/) });
    await expect(client.call('misc', 'echo', { text: 'a', times: 'lots' })).rejects.toMatchObject({ message: expect.stringMatching(/--times expects an integer between 1 and 10, got "lots"/) });
    await expect(client.call('misc', 'echo', { text: 'a', times: 11 })).rejects.toMatchObject({ message: expect.stringMatching(/between 1 and 10, got 11/) });
    await expect(client.call('misc', 'echo', { text: 'a', wait: 'soon' })).rejects.toMatchObject({ message: expect.stringMatching(/--wait expects a duration such as 500ms, 2s or 1m/) });
    await expect(client.call('misc', 'echo', { text: 'a', colour: 'red' })).rejects.toMatchObject({ message: expect.stringMatching(/unknown argument "colour"; this command takes <text>, --times, --wait, --loud/) });
    expect(await client.call('misc', 'echo', { text: 'a', times: '2', wait: '10ms', loud: 'true' })).toMatchObject({ text: 'A A', args: { times: 2, wait: 10, loud: true } });
  });

  it('turns a plugin exception into ISPY_ERR_PLUGIN_FAILED with its stack; agent and app carry on', async () => {
    const err = await client.call('misc', 'boom').catch((e) => e);
    expect(err.code).toBe('ISPY_ERR_PLUGIN_FAILED');
    expect(err.message).toMatch(/misc boom: Cannot read properties of undefined/);
    expect(err.remoteStack).toMatch(/misc\.cjs/);
    expect((await app.get('/')).body).toBe('ok');
    expect(await client.call('process', 'info')).toHaveProperty('pid', app.pid);
  });

  it('streams data frames and cancels: the plugin sees the cancel and cleans up', async () => {
    const seen: unknown[] = [];
    for await (const item of client.stream('misc', 'ticks')) {
      seen.push(item);
      if (seen.length === 3) break;
    }
    expect(seen).toEqual([{ n: 0 }, { n: 1 }, { n: 2 }]);
    await waitFor(async () => ((await client.call('misc', 'state')) as any).streamsFinished === 1, 5000, 'the stream to end');
    expect(await client.call('misc', 'state')).toEqual({ streamsFinished: 1, timersLeft: 0 });
  });

  it('cancels the calls of a client that disconnects', async () => {
    const other = await connect(app.socket);
    let started!: () => void;
    const first = new Promise<void>((r) => (started = r));
    const running = other.call('misc', 'ticks', {}, { onData: () => started() }).catch((e) => e);
    await first;
    await other.close();
    expect((await running).code).toBe('ISPY_ERR_DISCONNECTED');
    await waitFor(async () => ((await client.call('misc', 'state')) as any).streamsFinished === 2, 5000, 'the stream to end');
    expect(await client.call('misc', 'state')).toEqual({ streamsFinished: 2, timersLeft: 0 });
  });

  it('multiplexes calls by id on one connection', async () => {
    const results = await Promise.all([
      client.call('misc', 'echo', { text: 'slow', wait: '150ms' }),
      client.call('misc', 'echo', { text: 'fast' }),
      client.call('process', 'info'),
    ]);
    expect(results[0]).toMatchObject({ text: 'slow' });
    expect(results[1]).toMatchObject({ text: 'fast' });
  });

  it('times out a call on the client side and cancels it on the agent', async () => {
    const err = await client.call('misc', 'ticks', {}, { timeoutMs: 100, onData: () => {} }).catch((e) => e);
    expect(err.code).toBe('ISPY_ERR_TIMEOUT');
    await waitFor(async () => ((await client.call('misc', 'state')) as any).streamsFinished === 3, 5000, 'the stream to end');
    expect(await client.call('misc', 'state')).toEqual({ streamsFinished: 3, timersLeft: 0 });
  });
});
