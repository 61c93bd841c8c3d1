// The agent's own WebSocket server side (src/agent/websocket.ts), over the real socket of a
// real app: what a visit loads in the worker, the HTTP answers to requests that are not a
// valid upgrade, and the frames a client may send (ping, fragments, close).

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as crypto from 'node:crypto';
import * as net from 'node:net';
import { cleanup, startApp, waitFor, type App } from './helpers';
import { connect } from '../dist/src/client/index.js';
import { acceptKey } from '../dist/src/agent/websocket.js';
import { PROTOCOL_VERSION } from '../dist/src/protocol/index.js';

afterAll(cleanup);

/** A raw connection to the agent's socket: everything it sent, and whether it closed. */
function rawConn(socket: string): { sock: net.Socket; bytes: () => Buffer; closed: () => boolean } {
  const sock = net.connect(socket);
  const chunks: Buffer[] = [];
  let closed = false;
  sock.on('data', (d) => chunks.push(d));
  sock.on('error', () => {});
  sock.on('close', () => (closed = true));
  return { sock, bytes: () => Buffer.concat(chunks), closed: () => closed };
}

function upgrade(path = '/ispy', { method = 'GET', key = crypto.randomBytes(16).toString('base64'), version = '13' } = {}): string {
  return `${method} ${path} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: ${version}\r\n\r\n`;
}

/** A client frame (masked, as RFC 6455 requires of clients). */
function frame(opcode: number, payload: Buffer, fin = true): Buffer {
  const mask = crypto.randomBytes(4);
  const masked = Buffer.from(payload.map((b, i) => b ^ mask[i & 3]!));
  const len = payload.length;
  const head = len < 126 ? Buffer.from([(fin ? 0x80 : 0) | opcode, 0x80 | len]) : Buffer.from([(fin ? 0x80 : 0) | opcode, 0x80 | 126, len >> 8, len & 0xff]);
  return Buffer.concat([head, mask, masked]);
}

/** The frames the agent sent after its 101 answer: opcode and payload each. */
function serverFrames(all: Buffer): { opcode: number; payload: Buffer }[] {
  let at = all.indexOf('\r\n\r\n') + 4;
  const out: { opcode: number; payload: Buffer }[] = [];
  while (at + 2 <= all.length) {
    const opcode = all[at]! & 0x0f;
    let len = all[at + 1]! & 0x7f;
    let head = 2;
    if (len === 126) {
      len = all.readUInt16BE(at + 2);
      head = 4;
    } else if (len === 127) {
      len = Number(all.readBigUInt64BE(at + 2));
      head = 10;
    }
    if (at + head + len > all.length) break;
    out.push({ opcode, payload: all.subarray(at + head, at + head + len) });
    at += head + len;
  }
  return out;
}

describe('what a visit costs the agent worker', () => {
  it('a first visit loads neither ws nor node:http, https, tls or zlib in the worker', async () => {
    // NODE_DEBUG=module names every module a thread requires through Node's loader (the
    // worker shares the app's environment); the agent's own files load through its loader.
    const app = await startApp({ script: 'http-app.cjs', env: { NODE_DEBUG: 'module' } });
    try {
      await app.port();
      const before = app.stderr().length;
      const c = await connect(app.socket);
      expect(await c.call('process', 'info')).toHaveProperty('pid', app.pid);
      await c.close();
      const visit = () => app.stderr().slice(before);
      // What the worker required for the visit is listed (the process plugin's worker side
      // requires node:os): the check below can see a module load when there is one.
      await waitFor(() => /Module\._load REQUEST node:os /.test(visit()), 30_000, 'the worker to load the process plugin');
      const heavy = visit().match(/Module\._load REQUEST (?:node:)?(?:ws|http|https|tls|zlib|_http_\w+)(?= )/g) ?? [];
      expect(heavy).toEqual([]);
    } finally {
      await app.kill();
    }
  });
});

describe('the WebSocket layer', () => {
  let app: App;
  beforeAll(async () => {
    app = await startApp({ script: 'http-app.cjs', config: { plugins: [require.resolve('./fixtures/plugins/misc.cjs')] } });
    await app.port();
  });
  afterAll(async () => {
    await app?.kill();
  });

  it('computes Sec-WebSocket-Accept as RFC 6455 says', () => {
    // The RFC's own example.
    expect(acceptKey('dGhlIHNhbXBsZSBub25jZQ==')).toBe('s3pPLMBiTxaQ9kYGzzhZRbK+xOo=');
  });

  it('answers requests that are not a valid upgrade as ws did, and closes', async () => {
    const cases: [string, RegExp][] = [
      ['GET / HTTP/1.1\r\nHost: localhost\r\n\r\n', /^HTTP\/1\.1 426 [^]*connect with `ispy connect <socket>`/],
      [upgrade('/elsewhere'), /^HTTP\/1\.1 404 [^]*answers on \/ispy/],
      [upgrade('/ispy', { method: 'POST' }), /^HTTP\/1\.1 405 [^]*Invalid HTTP method/],
      [upgrade('/ispy', { key: 'short' }), /^HTTP\/1\.1 400 [^]*Missing or invalid Sec-WebSocket-Key header/],
      [upgrade('/ispy', { version: '12' }), /^HTTP\/1\.1 400 [^]*sec-websocket-version: 13, 8[^]*Missing or invalid Sec-WebSocket-Version header/],
    ];
    for (const [request, answer] of cases) {
      const c = rawConn(app.socket);
      c.sock.write(request);
      await waitFor(() => c.closed(), 30_000, `the agent to answer and close: ${request.split('\r\n')[0]}`);
      expect(c.bytes().toString('latin1')).toMatch(answer);
    }
    // Not HTTP at all: cut without an answer.
    const junk = rawConn(app.socket);
    junk.sock.write(Buffer.from([0x16, 0x03, 0x01, 0x00, 0x05]));
    await waitFor(() => junk.closed(), 30_000, 'the agent to cut a socket that does not speak HTTP');
    expect(junk.bytes().length).toBe(0);
  });

  it('answers a ping with its payload, assembles a fragmented message, and echoes a close', async () => {
    const c = rawConn(app.socket);
    // The upgrade and the first frames in one write: the bytes after the head are frames.
    c.sock.write(Buffer.concat([Buffer.from(upgrade()), frame(0x9, Buffer.from('are you there'))]));
    await waitFor(() => serverFrames(c.bytes()).length === 1, 30_000, 'the pong');
    expect(c.bytes().toString('latin1')).toMatch(/^HTTP\/1\.1 101 Switching Protocols\r\n/);
    expect(serverFrames(c.bytes())[0]).toMatchObject({ opcode: 0xa, payload: Buffer.from('are you there') });
    const hello = Buffer.from(JSON.stringify({ type: 'hello', protocol: PROTOCOL_VERSION, client: 'fragments' }));
    // Three fragments with a ping between them (control frames may interleave).
    c.sock.write(Buffer.concat([frame(0x1, hello.subarray(0, 10), false), frame(0x9, Buffer.alloc(0)), frame(0x0, hello.subarray(10, 20), false), frame(0x0, hello.subarray(20))]));
    await waitFor(() => serverFrames(c.bytes()).some((f) => f.opcode === 0x1), 30_000, 'the welcome');
    const welcome = JSON.parse(serverFrames(c.bytes()).find((f) => f.opcode === 0x1)!.payload.toString());
    expect(welcome).toMatchObject({ type: 'welcome', pid: app.pid });
    const close = Buffer.from([0x03, 0xe8, ...Buffer.from('bye')]);
    c.sock.write(frame(0x8, close));
    await waitFor(() => c.closed(), 30_000, 'the agent to finish the closing handshake');
    const last = serverFrames(c.bytes()).at(-1)!;
    expect(last.opcode).toBe(0x8);
    expect(last.payload.readUInt16BE(0)).toBe(1000);
  });

  it('streams an artefact\'s bytes to a ws client intact (binary frames over 64 KiB)', async () => {
    const client = await connect(app.socket);
    try {
      const chunks: Buffer[] = [];
      await client.call('process', 'report', {}, {
        onArtefact: () => ({
          write: (b: Buffer) => void chunks.push(b),
          end: async () => {},
          abort: async () => {},
        }),
      });
      const report = JSON.parse(Buffer.concat(chunks).toString('utf8'));
      expect(report.header.processId).toBe(app.pid);
    } finally {
      await client.close();
    }
  });
});
