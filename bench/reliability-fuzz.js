'use strict';
// The protocol fuzzer. Many connections to a real agent, each speaking raw WebSocket (our own
// framing, so anything can be sent: bad opcodes, unmasked frames, invalid UTF-8, frames cut
// off mid-way) or no WebSocket at all (random bytes, plain HTTP). Every frame a session
// sends is judged from its bytes alone, never from what the agent's code does with it:
//
//   a text frame that is a call with a valid id   → one result or error for that id, eventually
//   a valid hello                                 → a welcome or an error
//   a WebSocket protocol violation                → the agent closes the connection
//   anything else (bad JSON, wrong types, binary,
//   over limits.maxFrameBytes, bad ids)           → an error frame, before the next frame's answer
//
// "Before the next frame's answer": after each frame the session sends a sentinel, a cancel
// of an id no call ever has, which the agent answers synchronously (ISPY_ERR_NOT_FOUND) in
// the order frames arrive. So a bad frame whose error has not come by the sentinel's answer
// got none: a silent drop. Meanwhile the app serves HTTP, a well-behaved client visits, and
// at the end nothing may be left running, no connection held, no byte written to stdout.
//
//   node bench/reliability-fuzz.js [--frames 100000] [--concurrency 12] [--seed N]
//   ISPY_FUZZ_SEED=N npx vitest run test/reliability/fuzz.test.ts   (replay a CI run)

const crypto = require('node:crypto');
const fs = require('node:fs');
const net = require('node:net');
const path = require('node:path');
const { performance } = require('node:perf_hooks');
const lib = require('./reliability-lib');

const SENTINEL_BASE = 0xf000_0000;
const MAX_CALL_ID = 0xffff_ffff;
const PROTOCOL = 1;
/** Every session (connection) must end within this, whatever it sent. */
const SESSION_BOUND_MS = 30_000;
/** An answer the agent owes right away (the sentinel's, a close after a violation). */
const ANSWER_BOUND_MS = 10_000;
/** After its cancel, a call must end within this (a heap snapshot cannot be interrupted). */
const CANCEL_BOUND_MS = 20_000;

/** Longest a trace or `requests track` may stay on in the fuzzed app (its config caps them; detached gates are given less). */
const INSTRUMENTATION_MAX_MS = 3000;

/** The config of the app the fuzzer runs against: limits low enough to hit, instrumentation bounded. */
function fuzzConfig(dir, { maxFrameBytes = 64 * 1024 } = {}) {
  return {
    outputDir: path.join(dir, 'out'),
    // Every call is logged: the audit line must survive whatever arguments a call carried.
    audit: path.join(dir, 'audit.log'),
    limits: { maxFrameBytes, maxConnections: 64, trackMaxDuration: INSTRUMENTATION_MAX_MS, traceMaxDuration: INSTRUMENTATION_MAX_MS },
  };
}

// ── raw WebSocket client ──────────────────────────────────────────────────────────

function encodeFrame({ fin = true, rsv = 0, opcode, payload = Buffer.alloc(0), mask = true, declaredLength }, maskKey) {
  const len = declaredLength ?? payload.length;
  const head = [((fin ? 0x80 : 0) | (rsv << 4) | opcode) & 0xff];
  const m = mask ? 0x80 : 0;
  if (len < 126) head.push(m | len);
  else if (len < 65536) head.push(m | 126, len >> 8, len & 0xff);
  else {
    const b = Buffer.alloc(8);
    b.writeBigUInt64BE(BigInt(len));
    head.push(m | 127, ...b);
  }
  if (!mask) return Buffer.concat([Buffer.from(head), payload]);
  const masked = Buffer.from(payload);
  for (let i = 0; i < masked.length; i++) masked[i] ^= maskKey[i & 3];
  return Buffer.concat([Buffer.from(head), maskKey, masked]);
}

/** One connection: HTTP upgrade by hand, then frames both ways, with waits on its state. */
class RawConn {
  constructor(socketPath) {
    this.sock = net.connect(socketPath);
    this.buf = Buffer.alloc(0);
    this.head = undefined;
    this.status = undefined;
    this.closed = false;
    this.closeCode = undefined;
    this.waiters = new Set();
    // What the agent sent, counted for the frame-by-frame judgement.
    this.errorsNoId = 0;
    this.errorsById = new Map();
    this.terminals = new Map();
    this.welcomes = 0;
    this.errorCodes = new Map();
    this.failures = [];
    this.sock.on('data', (d) => this.onData(d));
    this.sock.on('close', () => {
      this.closed = true;
      this.wake();
    });
    this.sock.on('error', () => {});
  }

  wake() {
    for (const w of [...this.waiters]) {
      if (w.check()) {
        this.waiters.delete(w);
        w.resolve(true);
      }
    }
  }

  /** Resolves true once check() holds (re-checked on every byte and on close), false after timeoutMs. */
  until(check, timeoutMs) {
    if (check()) return Promise.resolve(true);
    return new Promise((resolve) => {
      const w = {
        check,
        resolve: (v) => {
          clearTimeout(t);
          resolve(v);
        },
      };
      const t = setTimeout(() => {
        this.waiters.delete(w);
        resolve(false);
      }, timeoutMs);
      this.waiters.add(w);
    });
  }

  write(buf) {
    if (!this.closed && !this.sock.destroyed) this.sock.write(buf);
  }

  onData(d) {
    this.buf = Buffer.concat([this.buf, d]);
    if (this.head === undefined) {
      const end = this.buf.indexOf('\r\n\r\n');
      if (end < 0) {
        // Not an HTTP answer at all (or not yet): keep a bounded amount.
        if (this.buf.length > 64 * 1024) this.buf = this.buf.subarray(-1024);
        return this.wake();
      }
      this.head = this.buf.subarray(0, end).toString('latin1');
      this.status = Number(/^HTTP\/1\.1 (\d{3})/.exec(this.head)?.[1] ?? 0);
      this.buf = this.buf.subarray(end + 4);
      if (this.status !== 101) {
        this.buf = Buffer.alloc(0);
        return this.wake();
      }
    }
    if (this.status === 101) this.parseFrames();
    this.wake();
  }

  parseFrames() {
    for (;;) {
      if (this.buf.length < 2) return;
      const opcode = this.buf[0] & 0x0f;
      let len = this.buf[1] & 0x7f;
      let off = 2;
      if (len === 126) {
        if (this.buf.length < 4) return;
        len = this.buf.readUInt16BE(2);
        off = 4;
      } else if (len === 127) {
        if (this.buf.length < 10) return;
        len = Number(this.buf.readBigUInt64BE(2));
        off = 10;
      }
      if (this.buf.length < off + len) return;
      const payload = this.buf.subarray(off, off + len);
      this.buf = this.buf.subarray(off + len);
      this.onMessage(opcode, payload);
    }
  }

  onMessage(opcode, payload) {
    if (opcode === 0x8) {
      this.closeCode = payload.length >= 2 ? payload.readUInt16BE(0) : 1005;
      // Answer the close and let go: the agent then frees the connection at once.
      this.sock.destroy();
      return;
    }
    if (opcode !== 0x1) return; // binary (artefact bytes), pong: nothing to judge
    let msg;
    try {
      msg = JSON.parse(payload.toString('utf8'));
    } catch {
      return;
    }
    if (msg.type === 'welcome') this.welcomes++;
    if (msg.type === 'error') {
      this.errorCodes.set(msg.code, (this.errorCodes.get(msg.code) ?? 0) + 1);
      // A plugin that threw something other than an IspyError: a bug worth reading.
      if (msg.code === 'ISPY_ERR_PLUGIN_FAILED') this.failures.push(String(msg.message).slice(0, 300));
      if (msg.id === undefined) this.errorsNoId++;
      else this.errorsById.set(msg.id, (this.errorsById.get(msg.id) ?? 0) + 1);
    }
    if ((msg.type === 'result' || msg.type === 'error') && msg.id !== undefined) this.terminals.set(msg.id, (this.terminals.get(msg.id) ?? 0) + 1);
  }

  destroy() {
    this.sock.destroy();
  }
}

function upgradeRequest({ path: urlPath = '/ispy', key = crypto.randomBytes(16).toString('base64'), version = '13', extra = '' } = {}) {
  return `GET ${urlPath} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n${key === null ? '' : `Sec-WebSocket-Key: ${key}\r\n`}Sec-WebSocket-Version: ${version}\r\n${extra}\r\n`;
}

// ── what to send ─────────────────────────────────────────────────────────────────

const isCallId = (v) => typeof v === 'number' && Number.isInteger(v) && v > 0 && v <= MAX_CALL_ID;

/**
 * What the agent owes for a text or binary frame, from its bytes alone (see the top of
 * this file). `limits`: the agent's maxFrameBytes and the WebSocket layer's hard ceiling.
 */
function expectationOf(opcode, payload, limits) {
  if (opcode === 0x2) return payload.length > limits.hard ? { expect: 'close' } : { expect: 'answer' };
  if (payload.length > limits.hard) return { expect: 'close' };
  // A text frame must be UTF-8; the WebSocket layer closes the connection on one that is not.
  const text = payload.toString('utf8');
  if (!Buffer.from(text, 'utf8').equals(payload)) return { expect: 'close' };
  if (payload.length > limits.maxFrameBytes) return { expect: 'answer' };
  let m;
  try {
    m = JSON.parse(text);
  } catch {
    return { expect: 'answer' };
  }
  if (typeof m !== 'object' || m === null || Array.isArray(m)) return { expect: 'answer' };
  const id = isCallId(m.id) ? m.id : undefined;
  if (m.type === 'call' && id !== undefined) return { expect: 'call', id };
  if (m.type === 'cancel' && id !== undefined) return { expect: 'any', id };
  if (m.type === 'hello' && typeof m.protocol === 'number' && typeof m.client === 'string' && m.client.length <= 200) {
    return { expect: 'hello', closes: m.protocol !== PROTOCOL };
  }
  return { expect: 'answer', id };
}

const JUNK_STRINGS = ['', ' ', 'x', ':', 'all', 'nope:thing', './missing.cjs:f', 'node:fs:nope', 'global:', '\u0000', '../../../etc/passwd:x', '💥', '"quoted"', '%s%s%s', '{}', '-1'];
const BAD_VALUES = [null, true, false, [], {}, -1, 0, 1.5, 1e308, -1e308, 2 ** 53, '1x', 'abc', '', '-1s', 'NaN', [1, 2], { a: 1 }];

function deepValue(depth, rng) {
  let v = rng.chance(0.5) ? [] : {};
  for (let i = 0; i < depth; i++) v = rng.chance(0.5) ? [v] : { k: v };
  return v;
}

/** A value for one argument: mostly valid for its type, sometimes not. */
function argValue(plugin, command, info, rng) {
  if (info.name === 'target') return rng.chance(0.75) ? rng.pick(lib.TARGETS) : rng.chance(0.5) ? rng.pick(JUNK_STRINGS) : 'x'.repeat(rng.int(100, 5000));
  if (rng.chance(0.25)) return rng.pick([...BAD_VALUES, ...JUNK_STRINGS]);
  const lo = info.min ?? 0;
  switch (info.type) {
    case 'boolean':
      return rng.chance(0.5);
    case 'enum':
      return rng.pick(info.choices ?? ['x']);
    case 'integer':
      return rng.int(lo, Math.min(info.max ?? lo + 1000, lo + 1000));
    case 'number':
      return lo + rng.next() * 100;
    case 'duration': {
      // Mostly short; now and then the longest allowed (the call is cancelled when its session ends).
      const hi = Math.min(info.max ?? 3000, 3000);
      if (rng.chance(0.05) && info.max !== undefined) return info.max;
      const ms = Math.max(lo, rng.int(Math.min(lo, hi), hi));
      return rng.pick([ms, `${ms}ms`, `${ms / 1000}s`]);
    }
    default:
      return rng.chance(0.3) ? 'all' : rng.chance(0.5) ? String(rng.int(0, 20)) : rng.pick(JUNK_STRINGS);
  }
}

/**
 * Arguments for a call of a real command, from the catalogue's declaration. Shaped only
 * where a valid value would outlive the run: a detached gate gets a short --duration
 * (traces and `requests track` are capped by the app's config instead).
 */
function callArgs(plugin, command, rng) {
  const args = {};
  for (const info of command.args) {
    if (!info.required && rng.chance(0.4)) continue;
    if (info.required && rng.chance(0.05)) continue;
    args[info.name] = argValue(plugin.name, command.name, info, rng);
  }
  if (plugin.name === 'profile' && command.name === 'gate' && args.detach !== undefined && args.detach !== false) args.duration = rng.pick(['500ms', '2s', 1000]);
  if (rng.chance(0.08)) args[rng.pick(['bogus', 'limit2', 'constructor', 'toString', '__proto__', 'x'.repeat(200)])] = rng.pick(BAD_VALUES);
  return args;
}

/**
 * A command of the catalogue, or the one named by `forced`. The heavy ones (a heap
 * snapshot freezes the app; a report takes a while) are never picked at random: the run
 * hands each to a few sessions chosen in advance.
 */
function pickCommand(s, forced) {
  const { rng } = s;
  if (forced !== undefined) {
    const [p, c] = forced.split(' ');
    const plugin = s.run.catalogue.find((x) => x.name === p);
    const command = plugin?.commands.find((x) => x.name === c);
    if (plugin && command) return { plugin, command, key: forced };
  }
  for (;;) {
    const plugin = rng.pick(s.run.catalogue);
    const command = rng.pick(plugin.commands);
    const key = `${plugin.name} ${command.name}`;
    if (!s.run.heavyKeys.has(key)) return { plugin, command, key };
  }
}

const FRAME_KINDS = {
  call: 30,
  mutatedCall: 12,
  duplicateId: 2,
  cancelRandom: 4,
  cancelOwn: 3,
  hello: 3,
  badHello: 3,
  wrongTypes: 6,
  garbageText: 6,
  nearLimit: 3,
  deepJson: 2,
  binary: 4,
  ping: 2,
  pong: 1,
  fragmented: 3,
  emptyText: 1,
  // WebSocket protocol violations: each ends its session.
  invalidUtf8: 0.8,
  unmasked: 0.3,
  reservedOpcode: 0.3,
  rsvBits: 0.3,
  bigControl: 0.2,
  strayContinuation: 0.2,
  overHard: 0.1,
};

/**
 * Builds one fuzz frame (or a fragmented message) for a session. Returns the bytes to send,
 * a short description, and the expectation the session checks.
 */
function makeFrame(kind, s) {
  const { rng } = s;
  const { limits } = s.run;
  const text = (str) => ({ opcode: 0x1, payload: Buffer.from(str, 'utf8') });
  const judged = (frames, desc) => {
    const last = frames[frames.length - 1];
    const data = frames.length > 1 ? Buffer.concat(frames.map((f) => f.payload)) : last.payload;
    const opcode = frames[0].opcode;
    return { frames, desc, ...expectationOf(opcode, data, limits) };
  };
  const freshId = () => s.nextId++;
  const realCall = (forced) => {
    const { plugin, command, key } = pickCommand(s, forced);
    s.run.called.set(key, (s.run.called.get(key) ?? 0) + 1);
    const msg = { type: 'call', id: freshId(), plugin: plugin.name, command: command.name, args: callArgs(plugin, command, rng) };
    if (rng.chance(0.1)) msg.fetch = true;
    return msg;
  };
  switch (kind) {
    case 'call': {
      const msg = realCall(s.heavy.shift());
      return judged([text(JSON.stringify(msg))], `call ${msg.plugin} ${msg.command} ${JSON.stringify(msg.args).slice(0, 120)}`);
    }
    case 'mutatedCall': {
      const msg = realCall();
      const field = rng.pick(['id', 'plugin', 'command', 'args', 'fetch', 'type', 'delete', 'proto']);
      if (field === 'delete') delete msg[rng.pick(['id', 'plugin', 'command', 'type'])];
      else if (field === 'proto') {
        // JSON.parse makes "__proto__" an own key: it must not reach an object's prototype.
        const raw = JSON.stringify(msg).replace(/}$/, ',"__proto__":{"type":"hello","polluted":true},"constructor":{"prototype":{"polluted":true}}}');
        return judged([text(raw)], 'call with __proto__ and constructor keys');
      } else if (field === 'id') msg.id = rng.pick([0, -1, 1.5, '7', null, MAX_CALL_ID + 1, 2 ** 53, 1e300, [], {}, true]);
      else if (field === 'plugin' || field === 'command') msg[field] = rng.pick(['', 'x'.repeat(129), 5, null, [], 'process ', 'PROCESS', '\u0000', rng.bytes(8).toString('hex')]);
      else if (field === 'args') msg.args = rng.pick([[], 'str', 5, null, true, deepValue(rng.int(10, 2000), rng), { '': 1 }]);
      else if (field === 'fetch') msg.fetch = rng.pick(['yes', 1, null, {}]);
      else msg.type = rng.pick(['CALL', 'call ', 5, null, '']);
      let raw = JSON.stringify(msg);
      // Now and then break the text itself: cut it, flip a character, add one.
      if (rng.chance(0.3)) {
        const at = rng.int(0, raw.length);
        raw = rng.pick([raw.slice(0, at), `${raw.slice(0, at)}${rng.pick(['"', '{', ']', ',', '\\', 'é', '\u2028'])}${raw.slice(at + 1)}`, `${raw},`, `${raw}${raw}`]);
      }
      return judged([text(raw)], `mutated call (${field}): ${raw.slice(0, 120)}`);
    }
    case 'duplicateId': {
      const running = [...s.pending.keys()];
      const msg = realCall();
      // One draw whatever is running, so the rest of the session replays the same.
      const r = rng.next();
      if (running.length) msg.id = running[Math.floor(r * running.length)];
      return judged([text(JSON.stringify(msg))], `call reusing id ${msg.id}`);
    }
    case 'cancelRandom': {
      const id = rng.pick([freshId(), rng.int(1, 1000), 0, -5, 'x', null, MAX_CALL_ID + 1, 1.5]);
      return judged([text(JSON.stringify({ type: 'cancel', id }))], `cancel ${JSON.stringify(id)}`);
    }
    case 'cancelOwn': {
      const running = [...s.pending.keys()];
      const r = rng.next();
      const id = running.length ? running[Math.floor(r * running.length)] : freshId();
      return judged([text(JSON.stringify({ type: 'cancel', id }))], `cancel running ${id}`);
    }
    case 'hello':
      return judged([text(JSON.stringify({ type: 'hello', protocol: PROTOCOL, client: `fuzz-${rng.int(0, 999)}` }))], 'hello');
    case 'badHello': {
      const m = rng.pick([
        { type: 'hello', protocol: '1', client: 'x' },
        { type: 'hello', client: 'x' },
        { type: 'hello', protocol: 1, client: 'x'.repeat(201) },
        { type: 'hello', protocol: 1, client: 5 },
        { type: 'hello', protocol: 1 },
        { type: 'hello', protocol: null, client: 'x' },
        { type: 'hello', protocol: rng.pick([0, 2, 999, -1, 1.5]), client: 'fuzz' },
      ]);
      return judged([text(JSON.stringify(m))], `hello ${JSON.stringify(m).slice(0, 80)}`);
    }
    case 'wrongTypes': {
      const raw = rng.pick(['[]', '[1,2,3]', '5', '"call"', 'null', 'true', '{}', '{"type":5}', '{"type":null}', '{"type":"call"}', `{"type":"nope","id":${freshId()}}`, '{"type":"welcome","protocol":1}', '{"type":"result","id":1}', '{"type":["call"]}', `{"type":"cancel"}`, `{"type":"${'t'.repeat(500)}"}`]);
      return judged([text(raw)], `wrong types: ${raw.slice(0, 80)}`);
    }
    case 'garbageText': {
      const n = rng.int(1, 400);
      const raw = rng.chance(0.5)
        ? Array.from({ length: n }, () => String.fromCharCode(rng.int(32, 126))).join('')
        : rng.pick(['{', '{"type":', '{"type":"call","id":1,', '}{', '{"a":1}{"b":2}', '\u0000\u0001', '{"type":"call","id":1e999}', '{"type":"call","id":1,"plugin":"process","command":"info","args":{"a":NaN}}']);
      return judged([text(raw)], `garbage text: ${JSON.stringify(raw.slice(0, 60))}`);
    }
    case 'nearLimit': {
      // A call padded to just under or just over limits.maxFrameBytes.
      const target = limits.maxFrameBytes + rng.pick([-2, -1, 0, 1, 2, 64]);
      const base = JSON.stringify({ type: 'call', id: freshId(), plugin: 'process', command: 'info', args: { pad: '' } });
      const raw = base.replace('"pad":""', `"pad":"${'p'.repeat(Math.max(0, target - base.length))}"`);
      return judged([text(raw)], `call of ${Buffer.byteLength(raw)} bytes (limit ${limits.maxFrameBytes})`);
    }
    case 'deepJson': {
      const depth = rng.int(100, Math.floor(limits.maxFrameBytes / 2) - 100);
      // Built as text: deeper than JSON.stringify (and so any code that logs it) can recurse.
      const nested = `${'['.repeat(depth)}${']'.repeat(depth)}`;
      const raw = rng.chance(0.5) ? nested : `{"type":"call","id":${freshId()},"plugin":"process","command":"info","args":{"deep":${nested}}}`;
      return judged([text(raw)], `JSON nested ${depth} deep`);
    }
    case 'binary': {
      const payload = rng.chance(0.5) ? rng.bytes(rng.int(0, 512)) : Buffer.from(JSON.stringify(realCall()));
      return judged([{ opcode: 0x2, payload }], `binary frame of ${payload.length} bytes`);
    }
    case 'ping':
      return { frames: [{ opcode: 0x9, payload: rng.bytes(rng.int(0, 125)) }], desc: 'ping', expect: 'any' };
    case 'pong':
      return { frames: [{ opcode: 0xa, payload: rng.bytes(rng.int(0, 125)) }], desc: 'unsolicited pong', expect: 'any' };
    case 'fragmented': {
      // A valid message in 2–4 fragments: the agent must see one message.
      const raw = Buffer.from(JSON.stringify(realCall()));
      const cuts = [...new Set(Array.from({ length: rng.int(1, 3) }, () => rng.int(1, raw.length - 1)))].sort((a, b) => a - b);
      const parts = [0, ...cuts, raw.length].slice(1).map((end, i, ends) => raw.subarray(i === 0 ? 0 : ends[i - 1], end));
      const frames = parts.map((payload, i) => ({ opcode: i === 0 ? 0x1 : 0x0, fin: i === parts.length - 1, payload }));
      return judged(frames, `fragmented call in ${frames.length} frames`);
    }
    case 'emptyText':
      return judged([text('')], 'empty text frame');
    case 'invalidUtf8': {
      const payload = Buffer.concat([Buffer.from('{"type":"call","plugin":"'), rng.pick([Buffer.from([0xff]), Buffer.from([0xc3]), Buffer.from([0xed, 0xa0, 0x80]), Buffer.from([0xf8, 0x88, 0x80, 0x80, 0x80])]), Buffer.from('"}')]);
      return { frames: [{ opcode: 0x1, payload }], desc: 'text frame with invalid UTF-8', expect: 'close' };
    }
    case 'unmasked':
      return { frames: [{ opcode: 0x1, payload: Buffer.from('{"type":"cancel","id":1}'), mask: false }], desc: 'unmasked client frame', expect: 'close' };
    case 'reservedOpcode':
      return { frames: [{ opcode: rng.pick([0x3, 0x4, 0x5, 0x6, 0x7, 0xb, 0xc, 0xd, 0xe, 0xf]), payload: rng.bytes(10) }], desc: 'reserved opcode', expect: 'close' };
    case 'rsvBits':
      return { frames: [{ opcode: 0x1, rsv: rng.int(1, 7), payload: Buffer.from('{}') }], desc: 'RSV bits set without an extension', expect: 'close' };
    case 'bigControl':
      return { frames: [{ opcode: 0x9, payload: rng.bytes(rng.int(126, 300)) }], desc: 'ping with a payload over 125 bytes', expect: 'close' };
    case 'strayContinuation':
      return { frames: [{ opcode: 0x0, payload: Buffer.from('{}') }], desc: 'continuation frame with no message to continue', expect: 'close' };
    case 'overHard':
      return { frames: [{ opcode: 0x1, payload: Buffer.alloc(limits.hard + 1, 0x20) }], desc: `text frame of ${limits.hard + 1} bytes (over the hard ceiling)`, expect: 'close' };
    default:
      throw new Error(`unknown frame kind ${kind}`);
  }
}

// ── sessions ─────────────────────────────────────────────────────────────────────

/**
 * One WebSocket session: upgrade, maybe hello, `count` fuzz frames each followed by its
 * sentinel, then cancels of its running calls and an end (a close, a drop, or a drop in the
 * middle of a frame). Returns what it found wrong.
 */
async function wsSession(s, count) {
  const { rng } = s;
  const { run } = s;
  const conn = new RawConn(run.socket);
  const problems = [];
  const where = () => `session ${s.index} (seed ${run.seed})`;
  let expectClose = false;
  const closedOk = () => expectClose || conn.closeCode === 4001; // 4001: no hello within 10 s
  try {
    conn.write(upgradeRequest());
    if (!(await conn.until(() => conn.status !== undefined || conn.closed, ANSWER_BOUND_MS))) return [`${where()}: no answer to the WebSocket upgrade within ${ANSWER_BOUND_MS} ms`];
    if (conn.status !== 101) return [`${where()}: upgrade answered ${conn.status ?? 'nothing'} (${(conn.head ?? '').split('\r\n')[0]})`];
    const maskKey = () => rng.bytes(4);
    const send = (f) => conn.write(encodeFrame(f, maskKey()));
    const helloFirst = rng.chance(0.85);
    if (helloFirst) {
      send({ opcode: 0x1, payload: Buffer.from(JSON.stringify({ type: 'hello', protocol: PROTOCOL, client: `fuzz-session-${s.index}` })) });
      if (!(await conn.until(() => conn.welcomes > 0 || conn.closed, ANSWER_BOUND_MS))) problems.push(`${where()}: no welcome within ${ANSWER_BOUND_MS} ms of a valid hello`);
    }
    for (let i = 0; i < count && !conn.closed; i++) {
      const kind = rng.weighted(FRAME_KINDS);
      const f = makeFrame(kind, s);
      run.framesSent++;
      run.kinds.set(kind, (run.kinds.get(kind) ?? 0) + 1);
      const before = { noId: conn.errorsNoId, byId: f.id === undefined ? 0 : (conn.errorsById.get(f.id) ?? 0), welcomes: conn.welcomes };
      for (const frame of f.frames) send(frame);
      if (f.expect === 'close' || f.closes) expectClose = true;
      if (f.expect === 'close') {
        if (!(await conn.until(() => conn.closed, ANSWER_BOUND_MS))) problems.push(`${where()}: ${f.desc}: the connection was not closed within ${ANSWER_BOUND_MS} ms`);
        break;
      }
      if (f.expect === 'call') {
        const p = s.pending.get(f.id);
        s.pending.set(f.id, { desc: f.desc, expected: (p?.expected ?? (conn.terminals.get(f.id) ?? 0)) + 1 });
      }
      const sentinel = SENTINEL_BASE + run.sentinels++;
      send({ opcode: 0x1, payload: Buffer.from(`{"type":"cancel","id":${sentinel}}`) });
      const answered = await conn.until(() => conn.errorsById.has(sentinel) || conn.closed, ANSWER_BOUND_MS);
      if (!answered) {
        problems.push(`${where()}: the agent did not answer within ${ANSWER_BOUND_MS} ms after ${f.desc}`);
        break;
      }
      if (conn.closed && !closedOk()) {
        problems.push(`${where()}: the agent closed the connection (code ${conn.closeCode ?? 'none'}) after ${f.desc}`);
        break;
      }
      if (conn.closed) break;
      const gotError = conn.errorsNoId > before.noId || (f.id !== undefined && (conn.errorsById.get(f.id) ?? 0) > before.byId);
      if (f.expect === 'answer' && !gotError) problems.push(`${where()}: no error frame for ${f.desc}`);
      if (f.expect === 'hello' && !gotError && conn.welcomes === before.welcomes) problems.push(`${where()}: neither welcome nor error for ${f.desc}`);
      for (const [id, p] of s.pending) if ((conn.terminals.get(id) ?? 0) >= p.expected) s.pending.delete(id);
    }
    if (!conn.closed) {
      // Calls still running are cancelled; each must still end with a result or an error.
      for (const id of s.pending.keys()) send({ opcode: 0x1, payload: Buffer.from(JSON.stringify({ type: 'cancel', id })) });
      const ended = () => [...s.pending].every(([id, p]) => (conn.terminals.get(id) ?? 0) >= p.expected);
      if (!(await conn.until(() => ended() || conn.closed, CANCEL_BOUND_MS))) {
        for (const [id, p] of s.pending) if ((conn.terminals.get(id) ?? 0) < p.expected) problems.push(`${where()}: ${p.desc} (id ${id}) did not end within ${CANCEL_BOUND_MS} ms of its cancel`);
      }
      if (conn.closed && !closedOk()) problems.push(`${where()}: the agent closed the connection (code ${conn.closeCode ?? 'none'}) while its calls were being cancelled`);
    }
    if (!conn.closed) {
      const end = rng.weighted({ close: 6, drop: 3, midFrame: 1 });
      run.ends.set(end, (run.ends.get(end) ?? 0) + 1);
      if (end === 'close') {
        send({ opcode: 0x8, payload: Buffer.from([0x03, 0xe8]) });
        if (!(await conn.until(() => conn.closed, ANSWER_BOUND_MS))) problems.push(`${where()}: the agent did not finish the closing handshake within ${ANSWER_BOUND_MS} ms`);
      } else if (end === 'midFrame') {
        // A frame header promising 1000 bytes, then 10 of them, then gone.
        conn.write(encodeFrame({ opcode: 0x1, payload: Buffer.alloc(10, 0x7b), declaredLength: 1000 }, maskKey()).subarray(0, 2 + 2 + 4 + 10));
        conn.destroy();
      } else conn.destroy();
    }
  } finally {
    conn.destroy();
    for (const [code, n] of conn.errorCodes) run.errorCodes.set(code, (run.errorCodes.get(code) ?? 0) + n);
    run.pluginFailures.push(...conn.failures);
    if (conn.closeCode !== undefined) run.closeCodes.set(conn.closeCode, (run.closeCodes.get(conn.closeCode) ?? 0) + 1);
  }
  return problems;
}

/** A session that never speaks WebSocket: random bytes, plain HTTP, a bad upgrade, or a cut-off request. */
async function rawSession(s) {
  const { rng } = s;
  const kind = rng.weighted({ bytes: 3, plainHttp: 1, wrongPath: 1, noKey: 1, badVersion: 1, cutRequest: 1 });
  s.run.rawKinds.set(kind, (s.run.rawKinds.get(kind) ?? 0) + 1);
  const conn = new RawConn(s.run.socket);
  const where = `raw session ${s.index} (${kind}, seed ${s.run.seed})`;
  try {
    switch (kind) {
      case 'bytes': {
        // Not HTTP: the first byte is never a letter, so this is no method.
        const first = rng.pick([0x00, 0x16, 0x80, 0xff, 0x7b, 0x0d]);
        conn.write(Buffer.concat([Buffer.from([first]), rng.bytes(rng.int(0, 4000))]));
        break;
      }
      case 'plainHttp':
        conn.write('GET / HTTP/1.1\r\nHost: localhost\r\n\r\n');
        break;
      case 'wrongPath':
        conn.write(upgradeRequest({ path: rng.pick(['/', '/ispy2', '/../ispy', '/ispy/x', `/${'a'.repeat(3000)}`]) }));
        break;
      case 'noKey':
        conn.write(upgradeRequest({ key: null }));
        break;
      case 'badVersion':
        conn.write(upgradeRequest({ version: rng.pick(['8', '', 'abc', '13, 8']) }));
        break;
      case 'cutRequest': {
        const req = upgradeRequest();
        conn.write(req.slice(0, rng.int(1, req.length - 5)));
        conn.destroy();
        return [];
      }
    }
    // Our side says it is done; the agent must answer (or not) and close its side.
    conn.sock.end();
    if (!(await conn.until(() => conn.closed, ANSWER_BOUND_MS))) return [`${where}: the agent kept the connection open ${ANSWER_BOUND_MS} ms after the client finished`];
    if (kind !== 'bytes' && conn.status === undefined) return [`${where}: closed without an HTTP answer`];
    if (kind === 'plainHttp' && conn.status !== 426) return [`${where}: plain HTTP got ${conn.status}, expected 426`];
    return [];
  } finally {
    conn.destroy();
  }
}

// ── the run ──────────────────────────────────────────────────────────────────────

/**
 * Fuzzes the agent of `app` ({pid, socket, port, outputDir, stdout(), stderr()}) with about
 * `frames` frames over many connections, `concurrency` at a time, while the app serves HTTP
 * and a well-behaved client visits. Resolves with the figures and `problems` (empty when
 * every check held).
 */
async function runFuzz(app, { frames = 10_000, concurrency = 8, seed = 1, maxFramesPerSession = 60, heavy = { 'heap snapshot': 3, 'process report': 5 }, instrumentationMaxMs = INSTRUMENTATION_MAX_MS, log = () => {} } = {}) {
  const { connect } = lib.client();
  const t0 = performance.now();
  const rng = lib.prng(seed);
  const first = await connect(app.socket, { timeoutMs: 10_000, clientName: 'reliability-fuzz' });
  const welcome = first.welcome;
  const catalogue = welcome.plugins.filter((p) => p.name !== 'eval').map((p) => ({ name: p.name, commands: p.commands }));
  await first.close();
  const fdBaseline = await lib.settledFdCount(app.pid);
  const limits = { maxFrameBytes: welcome.maxFrameBytes, hard: Math.min(64 * 1024 * 1024, welcome.maxFrameBytes * 8) };

  const run = {
    socket: app.socket,
    seed,
    catalogue,
    limits,
    heavyKeys: new Set(Object.keys(heavy)),
    called: new Map(),
    kinds: new Map(),
    rawKinds: new Map(),
    ends: new Map(),
    errorCodes: new Map(),
    closeCodes: new Map(),
    pluginFailures: [],
    framesSent: 0,
    sentinels: 0,
  };
  // Sessions chosen for the heavy commands, spread over the run (about 20 frames a session).
  const heavySessions = new Map();
  for (const [key, n] of Object.entries(heavy)) {
    for (let k = 0; k < n; k++) {
      const i = rng.int(0, Math.max(0, Math.floor(frames / 20) - 1));
      heavySessions.set(i, [...(heavySessions.get(i) ?? []), key]);
    }
  }
  const problems = [];
  const load = lib.httpLoad(app.port, { connections: 2, gapMs: 20 });
  const visits = lib.visitor(app.socket, { everyMs: 500 });
  const aliveTimer = setInterval(() => {
    if (lib.processAlive(app.pid)) return;
    problems.push('the app process died during the fuzz run');
    clearInterval(aliveTimer);
  }, 200);
  let sessions = 0;
  let longestMs = 0;
  let index = 0;
  const worker = async () => {
    while (run.framesSent < frames && problems.length < 50) {
      const i = index++;
      // Each session draws from its own generator: what it sends depends on (seed, index) only.
      // `pending`: its calls still owed a result or an error (id → what, how many).
      const s = { run, index: i, rng: lib.prng((seed ^ Math.imul(i + 1, 0x9e3779b1)) >>> 0), pending: new Map(), nextId: 1, heavy: heavySessions.get(i) ?? [] };
      const t = performance.now();
      const raw = s.rng.chance(0.06);
      const count = s.rng.int(1, maxFramesPerSession);
      let found;
      try {
        found = raw ? await rawSession(s) : await wsSession(s, count);
      } catch (err) {
        found = [`session ${i} (seed ${seed}): the fuzzer itself failed: ${err.stack}`];
      }
      const ms = performance.now() - t;
      longestMs = Math.max(longestMs, ms);
      if (ms > SESSION_BOUND_MS) found.push(`session ${i} (seed ${seed}) took ${Math.round(ms)} ms, over the ${SESSION_BOUND_MS} ms bound`);
      problems.push(...found);
      sessions++;
      if (sessions % 100 === 0) log(`  ${sessions} sessions, ${run.framesSent} frames, ${Math.round((performance.now() - t0) / 1000)} s`);
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  clearInterval(aliveTimer);
  const fuzzEnded = performance.now();
  const fuzzMs = fuzzEnded - t0;
  const visited = await visits.stop();
  const http = await load.stop();

  if (!lib.processAlive(app.pid)) problems.push('the app process is gone after the fuzz run');
  if (http.failed) problems.push(`${http.failed} of ${http.ok + http.failed} HTTP requests to the app failed during the run: ${http.errors.join('; ')}`);
  if (visited.failed || !visited.ok) problems.push(`a well-behaved client failed ${visited.failed} of ${visited.ok + visited.failed} visits: ${visited.failures.join('; ')}`);
  for (const failure of new Set(run.pluginFailures)) problems.push(`a command failed with an unexpected error (ISPY_ERR_PLUGIN_FAILED): ${failure}`);
  const uncalled = catalogue.flatMap((p) => p.commands.map((c) => `${p.name} ${c.name}`)).filter((k) => !run.called.has(k));
  if (frames >= 2000 && uncalled.length) problems.push(`commands never called: ${uncalled.join(', ')}`);

  // Afterwards: still answering, nothing left on, no connection held, nothing written to stdout.
  let after;
  try {
    const c = await connect(app.socket, { timeoutMs: 10_000, clientName: 'reliability-after' });
    await c.call('process', 'info');
    await c.close();
    // A detached trace or gate, or `requests track`, may stay on for its (capped) duration:
    // once that has passed since the last session, nothing may be on any more.
    await lib.sleep(Math.max(0, fuzzEnded + instrumentationMaxMs + 2000 - performance.now()));
    after = await lib.leftovers(app.socket, app.port, { graceMs: 0 });
    if (after.traces.length) problems.push(`traces left on: ${JSON.stringify(after.traces)}`);
    if (after.gates.length) problems.push(`gates left on: ${JSON.stringify(after.gates)}`);
    if (after.trackWasArmed) problems.push('`requests track` was still armed after its longest allowed duration');
    if (!after.originals) problems.push(`instrumented functions not restored: ${JSON.stringify(after.identity)}`);
  } catch (err) {
    problems.push(`the agent did not answer after the run: ${err.message}`);
  }
  const fdAfter = await lib.settledFdCount(app.pid, fdBaseline);
  if (fdAfter !== fdBaseline) problems.push(`the app holds ${fdAfter} file descriptors after the run, ${fdBaseline} before: ${lib.fdList(app.pid).join(', ')}`);
  const stdout = app.stdout().split('\n').filter((l) => l && !/^PORT \d+$/.test(l));
  if (stdout.length) problems.push(`the agent wrote to the app's stdout: ${stdout.slice(0, 3).join(' | ')}`);
  const partials = app.outputDir && fs.existsSync(app.outputDir) ? fs.readdirSync(app.outputDir).filter((f) => f.endsWith('.partial')) : [];
  if (partials.length) problems.push(`partial artefacts left: ${partials.join(', ')}`);

  // When the agent itself died, say so first: every other problem follows from it.
  const died = /^ispy: agent worker failed.*(?:\n\s+at .*){0,4}/m.exec(app.stderr());
  if (died) problems.unshift(`the agent worker died: ${died[0].replace(/\n\s+/g, ' ← ')}`);
  const agentLines = app.stderr().split('\n').filter((l) => l.startsWith('ispy: '));
  return {
    seed,
    frames: run.framesSent,
    sessions,
    concurrency,
    fuzzSeconds: lib.round(fuzzMs / 1000, 1),
    framesPerSecond: Math.round(run.framesSent / (fuzzMs / 1000)),
    longestSessionMs: Math.round(longestMs),
    maxFrameBytes: limits.maxFrameBytes,
    kinds: Object.fromEntries(run.kinds),
    rawKinds: Object.fromEntries(run.rawKinds),
    ends: Object.fromEntries(run.ends),
    commandsCalled: run.called.size,
    errorCodes: Object.fromEntries([...run.errorCodes].sort((a, b) => b[1] - a[1])),
    closeCodes: Object.fromEntries(run.closeCodes),
    pluginFailures: [...new Set(run.pluginFailures)].slice(0, 10),
    http,
    visits: visited,
    fdBaseline,
    fdAfter,
    agentStderrLines: agentLines.length,
    agentStderrSample: [...new Set(agentLines.map((l) => l.replace(/\d+/g, 'N')))].slice(0, 5),
    problems,
  };
}

module.exports = { runFuzz, fuzzConfig };

if (require.main === module) {
  const common = require('./lib/common');
  const opts = common.parseArgs();
  const seed = opts.seed !== undefined ? Number(opts.seed) : crypto.randomBytes(4).readUInt32BE(0);
  common.finishEngine((async () => {
    const app = await common.startApp({ script: path.relative(path.join(__dirname, 'apps'), lib.RELIAB_APP), agent: true, config: { outputDir: 'out', audit: 'audit.log', limits: fuzzConfig('.', { maxFrameBytes: opts['max-frame'] ? Number(opts['max-frame']) : 1024 * 1024 }).limits } });
    app.outputDir = path.join(app.dir, 'out');
    const frames = common.num(opts.frames, 100_000);
    console.log(`fuzzing pid ${app.pid} with ${frames} frames, seed ${seed} (replay: --seed ${seed})`);
    const result = await runFuzz(app, { frames, concurrency: common.num(opts.concurrency, 12), seed, heavy: { 'heap snapshot': Math.ceil(frames / 3000), 'process report': Math.ceil(frames / 2000) }, log: console.log });
    await app.kill();
    return result;
  })());
}
