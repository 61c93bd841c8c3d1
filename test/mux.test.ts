// The mux transport: its frame codec on its own, then both of its ends (MuxSession, the
// client's; bridgeMux, the remote bridge's) joined by in-memory pipes, in front of real
// UNIX socket servers in a temp folder. The ssh path is proven in cli-ssh.test.ts.

import { afterAll, describe, expect, it } from 'vitest';
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { PassThrough } from 'node:stream';
import { bridgeMux } from '../src/cli/bridge';
import { FrameDecoder, FrameType, HEADER_BYTES, MAX_PAYLOAD_BYTES, MUX_HELLO, MuxSession, dataFrames, encodeFrame, type MuxStream } from '../src/cli/mux';
import { cleanup, tempDir, waitFor } from './helpers';

afterAll(cleanup);

describe('mux frames', () => {
  it('round-trips every type, with and without payload', () => {
    const frames = [
      encodeFrame(1, FrameType.open, Buffer.from('/tmp/a.sock')),
      encodeFrame(1, FrameType.data, Buffer.from('hello')),
      encodeFrame(0xffffffff, FrameType.end),
      encodeFrame(7, FrameType.close),
      encodeFrame(2, FrameType.error, Buffer.from('stale socket /tmp/b.sock')),
    ];
    const out = new FrameDecoder().push(Buffer.concat(frames));
    expect(out.map((f) => [f.id, f.type, f.payload.toString()])).toEqual([
      [1, FrameType.open, '/tmp/a.sock'],
      [1, FrameType.data, 'hello'],
      [0xffffffff, FrameType.end, ''],
      [7, FrameType.close, ''],
      [2, FrameType.error, 'stale socket /tmp/b.sock'],
    ]);
  });

  it('reassembles frames cut at every byte', () => {
    const bytes = Buffer.concat([encodeFrame(3, FrameType.data, Buffer.from('abcdef')), encodeFrame(4, FrameType.end), encodeFrame(3, FrameType.data, Buffer.from('gh'))]);
    const d = new FrameDecoder();
    const got: string[] = [];
    for (let i = 0; i < bytes.length; i++) for (const f of d.push(bytes.subarray(i, i + 1))) got.push(`${f.id}:${f.type}:${f.payload}`);
    expect(got).toEqual(['3:2:abcdef', '4:3:', '3:2:gh']);
  });

  it('splits data longer than a frame may carry', () => {
    const big = Buffer.alloc(MAX_PAYLOAD_BYTES * 2 + 10, 7);
    const out = new FrameDecoder().push(dataFrames(9, big));
    expect(out.map((f) => f.payload.length)).toEqual([MAX_PAYLOAD_BYTES, MAX_PAYLOAD_BYTES, 10]);
    expect(Buffer.concat(out.map((f) => f.payload)).equals(big)).toBe(true);
    expect(() => encodeFrame(1, FrameType.data, big)).toThrow(/over the limit of 65536/);
  });

  it('refuses an oversized frame from its header alone, and an unknown type', () => {
    const header = Buffer.alloc(HEADER_BYTES);
    header.writeUInt32BE(5, 0);
    header.writeUInt8(FrameType.data, 4);
    header.writeUInt32BE(MAX_PAYLOAD_BYTES + 1, 5);
    expect(() => new FrameDecoder().push(header)).toThrow('mux frame on stream 5 is 65537 bytes, over the limit of 65536');
    const unknown = Buffer.from(encodeFrame(6, FrameType.end));
    unknown.writeUInt8(9, 4);
    expect(() => new FrameDecoder().push(unknown)).toThrow('unknown mux frame type 9 on stream 6 (expected 1-5: open, data, end, close, error)');
  });
});

/** An echo server on a UNIX socket that says `hi` first and closes when the client half-closes. */
async function echoServer(file: string): Promise<net.Server> {
  const server = net.createServer({ allowHalfOpen: true }, (s) => {
    s.write('hi:');
    s.pipe(s);
  });
  await new Promise<void>((r) => server.listen(file, () => r()));
  return server;
}

function pair() {
  const up = new PassThrough(); // client → bridge (the bridge's stdin)
  const down = new PassThrough(); // bridge → client (its stdout)
  const errors: string[] = [];
  const error = new PassThrough();
  error.on('data', (d) => errors.push(String(d)));
  const status = bridgeMux({ input: up, output: down, error });
  const session = new MuxSession(down, up, 2000);
  return { up, down, status, session, errors };
}

function readAll(stream: MuxStream): Promise<{ text: string; error?: Error }> {
  return new Promise((resolve) => {
    let text = '';
    stream.on('data', (d) => (text += d));
    stream.once('end', () => resolve({ text }));
    stream.once('error', (error) => resolve({ text, error }));
  });
}

describe('mux bridge and session', () => {
  it('greets, carries many sockets at once, half-closes each, and exits 0 when its stdin ends', async () => {
    const dir = tempDir('ispy-mux-');
    const servers = await Promise.all([0, 1, 2].map((i) => echoServer(path.join(dir, `s${i}.sock`))));
    const { up, status, session } = pair();
    expect(await session.ready).toBe(true);
    const streams = [0, 1, 2].map((i) => session.open(path.join(dir, `s${i}.sock`)));
    const read = streams.map(readAll);
    streams.forEach((s, i) => s.end(`msg${i}`));
    expect((await Promise.all(read)).map((r) => r.text)).toEqual(['hi:msg0', 'hi:msg1', 'hi:msg2']);
    up.end();
    expect(await status).toBe(0);
    for (const s of servers) s.close();
  });

  it('fails a missing or stale socket alone, in the single bridge\'s words, and the others carry on', async () => {
    const dir = tempDir('ispy-mux-');
    const live = await echoServer(path.join(dir, 'live.sock'));
    const stale = path.join(dir, 'stale.sock');
    // A process that listens and is killed leaves its socket file behind, nobody listening.
    const holder = spawn(process.execPath, ['-e', `require('net').createServer().listen(${JSON.stringify(stale)}, () => console.log('up'))`], { stdio: ['ignore', 'pipe', 'ignore'] });
    await new Promise<void>((resolve, reject) => {
      const t = setTimeout(() => reject(new Error('the socket holder did not start within 5 s')), 5000);
      holder.stdout!.once('data', () => {
        clearTimeout(t);
        resolve();
      });
    });
    const gone = new Promise((r) => holder.once('exit', r));
    holder.kill('SIGKILL');
    await gone;
    expect(fs.statSync(stale).isSocket()).toBe(true);

    const { up, status, session } = pair();
    const missing = readAll(session.open(path.join(dir, 'nope.sock')));
    const staleRead = readAll(session.open(stale));
    const ok = session.open(path.join(dir, 'live.sock'));
    const okRead = readAll(ok);
    ok.end('still here');
    expect((await missing).error?.message).toBe(`no agent socket at ${path.join(dir, 'nope.sock')} (no such file); \`ispy ps\` lists live agents`);
    expect((await staleRead).error?.message).toBe(`stale socket ${stale}: nothing is listening on it (the process that created it is gone)`);
    expect((await okRead).text).toBe('hi:still here');
    up.end();
    expect(await status).toBe(0);
    live.close();
  });

  it('ends every stream with one reason when the channel goes, and refuses later opens with it', async () => {
    const dir = tempDir('ispy-mux-');
    const server = await echoServer(path.join(dir, 'a.sock'));
    const { up, status, session } = pair();
    const stream = session.open(path.join(dir, 'a.sock'));
    const read = readAll(stream);
    let greeted = false;
    stream.once('data', () => (greeted = true));
    await waitFor(() => greeted, 2000, 'the agent socket to answer');
    session.fail('the mux bridge on web1 ended: exit status 1');
    expect((await read).error?.message).toBe('the mux bridge on web1 ended: exit status 1');
    expect((await readAll(session.open(path.join(dir, 'a.sock')))).error?.message).toBe('the mux bridge on web1 ended: exit status 1');
    up.end();
    expect(await status).toBe(0);
    server.close();
  });

  it('stops with status 1 and a line on stderr on a frame it cannot read', async () => {
    const { up, status, errors } = pair();
    const bad = Buffer.from(encodeFrame(1, FrameType.close));
    bad.writeUInt8(42, 4);
    up.write(bad);
    expect(await status).toBe(1);
    expect(errors.join('')).toBe('ispy bridge: unknown mux frame type 42 on stream 1 (expected 1-5: open, data, end, close, error); closing every socket\n');
  });

  it('says no when the far end does not greet with the hello, within the wait', async () => {
    const silent = new MuxSession(new PassThrough(), new PassThrough(), 100);
    expect(await silent.ready).toBe(false);
    const wrong = new PassThrough();
    const other = new MuxSession(wrong, new PassThrough(), 2000);
    wrong.write("error: unknown option '--mux'\n");
    expect(await other.ready).toBe(false);
    expect(other.closedWith).toContain('not "ispy-mux 1\\n"');
    const split = new PassThrough();
    const ok = new MuxSession(split, new PassThrough(), 2000);
    split.write(MUX_HELLO.slice(0, 4));
    split.write(MUX_HELLO.slice(4));
    expect(await ok.ready).toBe(true);
  });

  it('carries more than the pipes hold, with backpressure both ways, byte for byte', async () => {
    const dir = tempDir('ispy-mux-');
    const server = await echoServer(path.join(dir, 'big.sock'));
    const { up, down, status, session } = pair();
    const stream = session.open(path.join(dir, 'big.sock'));
    const big = Buffer.alloc(8 * 1024 * 1024);
    for (let i = 0; i < big.length; i++) big[i] = i % 251;
    const chunks: Buffer[] = [];
    // A slow reader: the bridge's stdout fills, and it must pause the socket, not buffer it all.
    stream.pause();
    const done = new Promise<void>((resolve) => stream.once('end', () => resolve()));
    stream.end(big);
    let mostBuffered = 0;
    const t = setInterval(() => {
      mostBuffered = Math.max(mostBuffered, down.writableLength + down.readableLength);
      let c: Buffer | null;
      while ((c = stream.read() as Buffer | null) !== null) chunks.push(c);
    }, 5);
    await Promise.race([done, new Promise((_, reject) => setTimeout(() => reject(new Error('8 MiB echo took over 20 s')), 20_000))]);
    clearInterval(t);
    let c: Buffer | null;
    while ((c = stream.read() as Buffer | null) !== null) chunks.push(c);
    const got = Buffer.concat(chunks);
    expect(got.subarray(0, 3).toString()).toBe('hi:');
    expect(got.subarray(3).equals(big)).toBe(true);
    // Paused at the source: the channel never held more than a few socket reads' worth.
    expect(mostBuffered).toBeLessThan(1024 * 1024);
    up.end();
    expect(await status).toBe(0);
    server.close();
  }, 30_000);
});
