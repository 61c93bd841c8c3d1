// Remote targets: `ssh://[user@]host[:port]/path/to.sock`, the path possibly a glob. The
// transport is the system's own OpenSSH client running `ispy bridge` on the far host, so
// the WebSocket sessions ride an ssh channel and no TCP port is opened anywhere. ssh is
// the security boundary: its keys, agent, known_hosts and config decide who gets in; ispy
// adds no authentication of its own, and never prompts (BatchMode=yes).
//
//   ispy run ─┬─ ssh -S c0-0 host sh -c 'for f in …'        (glob, listed on the host)
//             └─ ssh -S c0-0 host ispy bridge --mux  ═══ /p/a.sock, /p/b.sock, …
//                                                          (every socket, one channel)
//
// The mux bridge (mux.ts) is tried when the bridge command is ispy's own (its last word is
// `bridge`); when it does not greet in time (an older ispy) or the command is something
// else (socat, a script), each socket gets a channel of its own running
// `<bridge> '/p/a.sock'`, as before:
//
//             ├─ ssh -S c0-0 host ispy bridge /p/a.sock  ─┐
//             ├─ ssh -S c0-0 host ispy bridge /p/b.sock  ─┼─ channels of one master
//             └─ …                                        ─┘   (one TCP connection)
//
// One ControlMaster per SESSIONS_PER_CONNECTION channels (sshd's MaxSessions is 10 by
// default; a busier host gets a second master), with its control socket in a private
// 0700 temp folder of ours. Masters live in the background (ControlPersist, short, so
// one left behind by a killed run goes away by itself) and are closed with `ssh -O exit`
// when the run ends; the folder is removed.
//
// Nothing of a target string reaches a shell unchecked: user, host and path are checked
// against narrow character sets, and the path is single-quoted (a glob's `*` and `?` are
// the only characters left unquoted, so the remote shell expands them and nothing else).

import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Duplex } from 'node:stream';
import { connect, type Client } from '../client/index';
import { IspyError, tokenize } from '../protocol/index';
import { likeSocket, MuxSession } from './mux';
import type { Target } from './targets';

/** Channels opened on one master at most: below OpenSSH's default MaxSessions (10). */
const DEFAULT_SESSIONS_PER_CONNECTION = 8;
/** Masters to one host at most; beyond that, targets wait for a free channel. */
const MAX_MASTERS_PER_HOST = 8;
/** Idle seconds before a background master exits on its own (a safety net: we close it). */
const CONTROL_PERSIST_S = 10;
/** How long closing waits for `ssh -O exit` and for bridges to leave. */
const CLOSE_WAIT_MS = 3000;
const DEFAULT_BRIDGE = 'ispy bridge';
/**
 * How long the mux bridge has to greet before the host is taken not to have it. A bridge
 * that has it greets as soon as Node has started (~0.1 s); an older ispy exits at once.
 */
const MUX_HELLO_WAIT_MS = 3000;
/** How long closing gives the mux bridge to see its stdin end and leave on its own. */
const MUX_END_WAIT_MS = 1000;

const USER = /^[A-Za-z0-9._][A-Za-z0-9._-]*$/;
const HOST = /^[A-Za-z0-9_][A-Za-z0-9._-]*$/;
const IPV6 = /^[0-9A-Fa-f:.]+$/;
/** Absolute; letters, digits and `._/@%+=:,~-`, plus `*` and `?` for globs. No spaces, no quotes. */
const SAFE_PATH = /^\/[A-Za-z0-9._/@%+=:,~*?-]*$/;
const GLOB = /[*?]/;

export interface SshSpec {
  user?: string;
  /** As ssh takes it: a name, an address, or an IPv6 address without brackets. */
  host: string;
  port?: number;
  path: string;
}

function usage(message: string): IspyError {
  return new IspyError('ISPY_ERR_USAGE', message);
}

/** Parses and checks `ssh://[user@]host[:port]/path`; throws ISPY_ERR_USAGE naming what is wrong. */
export function parseSshTarget(spec: string): SshSpec {
  const rest = spec.slice('ssh://'.length);
  const slash = rest.indexOf('/');
  if (slash < 0 || slash === rest.length - 1) throw usage(`bad target ${spec}: expected ssh://[user@]host[:port]/path/to.sock (the socket path on that host)`);
  const authority = rest.slice(0, slash);
  const file = rest.slice(slash);
  const at = authority.lastIndexOf('@');
  const user = at >= 0 ? authority.slice(0, at) : undefined;
  const hostPort = at >= 0 ? authority.slice(at + 1) : authority;
  let host: string;
  let portText: string | undefined;
  if (hostPort.startsWith('[')) {
    const close = hostPort.indexOf(']');
    host = hostPort.slice(1, close);
    const after = hostPort.slice(close + 1);
    if (close < 0 || !IPV6.test(host) || (after !== '' && !after.startsWith(':'))) throw usage(`bad host in ${spec}: an IPv6 address goes in brackets, e.g. ssh://[::1]:2222/tmp/app.sock`);
    if (after) portText = after.slice(1);
  } else {
    const colon = hostPort.indexOf(':');
    host = colon >= 0 ? hostPort.slice(0, colon) : hostPort;
    if (colon >= 0) portText = hostPort.slice(colon + 1);
    if (!HOST.test(host)) throw usage(`bad host in ${spec}: expected a host name or address (letters, digits, . _ -)`);
  }
  if (user !== undefined && !USER.test(user)) throw usage(`bad user in ${spec}: expected letters, digits, . _ - (not starting with -)`);
  let port: number | undefined;
  if (portText !== undefined) {
    port = Number(portText);
    if (!/^\d+$/.test(portText) || port < 1 || port > 65535) throw usage(`bad port in ${spec}: expected a number from 1 to 65535`);
  }
  if (!SAFE_PATH.test(file)) {
    throw usage(`bad socket path in ${spec}: a remote path must be absolute and use only letters, digits, . _ / @ % + = : , ~ - (and * ? in a glob), so it can be passed to the remote shell safely`);
  }
  return { ...(user !== undefined ? { user } : {}), host, ...(port !== undefined ? { port } : {}), path: file };
}

/** `'…'` for a POSIX shell: the one character that cannot appear inside is `'` itself. */
export function shellQuote(text: string): string {
  return `'${text.replace(/'/g, `'\\''`)}'`;
}

/** A glob as one shell word: literal runs quoted, `*` and `?` left for the shell to expand. */
export function globWord(glob: string): string {
  return glob
    .split(/([*?])/)
    .filter((p) => p !== '')
    .map((p) => (p === '*' || p === '?' ? p : shellQuote(p)))
    .join('');
}

/** The remote command that lists the sockets a glob matches (not symlinks), NUL-separated. */
export function listCommand(glob: string): string {
  const script = `for f in ${globWord(glob)}; do if [ -S "$f" ] && [ ! -h "$f" ]; then printf '%s\\0' "$f"; fi; done; exit 0`;
  // Always through sh: the login shell may be zsh (no-match is an error there) or another.
  return `sh -c ${shellQuote(script)}`;
}

export interface RemoteSettings {
  /** The command run on the remote host, followed by the quoted socket path (or --mux). */
  bridge: string;
  /** Try `<bridge> --mux` first: one channel per host for all its sockets. */
  mux: boolean;
  /** Extra arguments for ssh, placed before ispy's defaults (so they override them). */
  sshOptions: string[];
  sessionsPerConnection: number;
}

/**
 * Settings from the flags and the environment:
 *   --bridge CMD, else ISPY_REMOTE_BRIDGE, else `ispy bridge`
 *   ISPY_SSH_OPTIONS   extra ssh arguments, split like a shell line: `-F ~/.ssh/fleet -i key`
 *   ISPY_SSH_MAX_SESSIONS  channels per ssh connection (default 8; set 1 for MaxSessions 1)
 *   ISPY_SSH_MUX=0     never try the mux bridge: one channel per socket
 */
export function remoteSettings(env: NodeJS.ProcessEnv, flags: { bridge?: string | undefined } = {}): RemoteSettings {
  const bridge = (flags.bridge ?? env.ISPY_REMOTE_BRIDGE ?? DEFAULT_BRIDGE).trim();
  if (bridge === '') throw usage('empty bridge command: --bridge (or ISPY_REMOTE_BRIDGE) names what runs on the remote host, e.g. "node /opt/ispy/bin/ispy.js bridge"');
  const sshOptions = env.ISPY_SSH_OPTIONS ? tokenize(env.ISPY_SSH_OPTIONS) : [];
  const sessions = env.ISPY_SSH_MAX_SESSIONS !== undefined ? Number(env.ISPY_SSH_MAX_SESSIONS) : DEFAULT_SESSIONS_PER_CONNECTION;
  if (!Number.isSafeInteger(sessions) || sessions < 1) throw usage(`ISPY_SSH_MAX_SESSIONS must be a whole number of at least 1, not ${env.ISPY_SSH_MAX_SESSIONS}`);
  const muxSetting = env.ISPY_SSH_MUX ?? '1';
  if (muxSetting !== '0' && muxSetting !== '1') throw usage(`ISPY_SSH_MUX must be 1 (try one channel per host, the default) or 0 (one channel per socket), not ${muxSetting}`);
  return { bridge, mux: muxSetting === '1' && isIspyBridge(bridge), sshOptions, sessionsPerConnection: sessions };
}

/**
 * Whether a bridge command is ispy's own, so it can be asked for --mux: its last word is
 * `bridge` (`ispy bridge`, `node /opt/ispy/bin/ispy.js bridge`, `sudo -u app ispy bridge`).
 * Anything else (`socat - UNIX-CONNECT:`, a script) gets one channel per socket.
 */
export function isIspyBridge(command: string): boolean {
  return tokenize(command).at(-1) === 'bridge';
}

interface Master {
  ctl: string;
  inUse: number;
  dead: boolean;
}

interface Lease {
  ctl: string;
  release(): void;
}

/**
 * The text a failed ssh left on stderr, cleaned of prefixes, on one line. When the bridge
 * said why (its lines start "ispy bridge: "), only that: whatever the remote login shell
 * printed beside it (a profile's complaints, a motd) is not the reason.
 */
export function stderrText(text: string): string {
  const lines = text.split('\n').map((l) => l.trim());
  const bridge = lines.filter((l) => l.startsWith('ispy bridge: '));
  return (bridge.length > 0 ? bridge : lines)
    .map((l) => l.replace(/^ispy bridge: /, '').replace(/^ssh: /, ''))
    .filter((l) => l !== '' && !l.startsWith('Warning: Permanently added'))
    .join('; ')
    .slice(0, 500);
}

function remaining(deadline: number): number {
  return Math.max(0, deadline - Date.now());
}

/** Exit of a child we started, or null when it is still running after `ms`. */
/** `promise`'s value, or 'running' when it has not settled within `ms`; the timer never outlives it. */
async function within<T>(promise: Promise<T>, ms: number): Promise<T | 'running'> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([promise, new Promise<'running'>((resolve) => (timer = setTimeout(() => resolve('running'), ms)))]);
  } finally {
    clearTimeout(timer);
  }
}

function exitWithin(child: ChildProcess, ms: number): Promise<number | null | 'running'> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve(child.exitCode);
  return within(new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code))), ms);
}

/** A Duplex over a child's stdio, with the socket methods the WebSocket layer calls. */
function stdioStream(child: ChildProcess): Duplex {
  child.stdin!.on('error', () => {});
  return likeSocket(Duplex.from({ readable: child.stdout!, writable: child.stdin! }));
}

/** `promise`, or `timeout()` thrown once the deadline has passed; the timer never outlives it. */
async function byDeadline<T>(promise: Promise<T>, deadline: number, timeout: () => Error): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([promise, new Promise<never>((_, reject) => (timer = setTimeout(() => reject(timeout()), remaining(deadline))))]);
  } finally {
    clearTimeout(timer);
  }
}

/** One remote host (user, host, port): its masters, its channels, its fate. */
export class SshHost {
  /** How the operator reads it in labels and in --json `host`: `web1`, `10.0.0.7:2222`. */
  readonly display: string;
  private readonly masters: Master[] = [];
  /** Masters being started now, and how many were ever started (for their names). */
  private startingCount = 0;
  private startedCount = 0;
  /** Callers waiting for a channel: how many masters are worth starting at once. */
  private demand = 0;
  /** Set when the host cannot be reached at all: every later target fails with it at once. */
  private failure: IspyError | undefined;
  /** A further master was refused while others are up: use those, start no more. */
  private full = false;
  private waiters = new Set<() => void>();
  private readonly children = new Set<ChildProcess>();
  /** The mux channel, once asked for: its session, or undefined when the host lacks it. */
  private mux: Promise<MuxSession | undefined> | undefined;
  private muxChild: ChildProcess | undefined;
  /** The mux bridge did not greet: every later target takes a channel of its own. */
  private muxMissing = false;

  constructor(
    private readonly owner: RemoteHosts,
    private readonly spec: Omit<SshSpec, 'path'>,
    private readonly index: number,
  ) {
    const host = spec.host.includes(':') ? `[${spec.host}]` : spec.host;
    this.display = spec.port !== undefined ? `${host}:${spec.port}` : host;
  }

  private get destination(): string {
    return this.spec.user !== undefined ? `${this.spec.user}@${this.spec.host}` : this.spec.host;
  }

  /** ssh's arguments up to and including the destination. Ours that must hold come first (first value wins in ssh). */
  private args(ctl: string, master: boolean, timeoutMs: number): string[] {
    return [
      '-T',
      ...(master ? ['-N'] : []),
      '-o', 'BatchMode=yes',
      '-o', `ControlMaster=${master ? 'yes' : 'no'}`,
      '-o', `ControlPath=${ctl}`,
      ...(master ? ['-o', `ControlPersist=${CONTROL_PERSIST_S}`] : []),
      ...this.owner.settings.sshOptions,
      // A second beyond our own timer, which then always speaks first, in one wording.
      '-o', `ConnectTimeout=${Math.ceil(timeoutMs / 1000) + 1}`,
      '-o', 'LogLevel=ERROR',
      ...(this.spec.port !== undefined ? ['-p', String(this.spec.port)] : []),
      '--',
      this.destination,
    ];
  }

  private spawnSsh(args: string[], stdio: ('pipe' | 'ignore')[]): ChildProcess {
    const child = spawn('ssh', args, { stdio: stdio as ['pipe' | 'ignore', 'pipe' | 'ignore', 'pipe' | 'ignore'] });
    this.children.add(child);
    child.once('exit', () => this.children.delete(child));
    child.once('error', () => this.children.delete(child));
    return child;
  }

  private reachError(why: string): IspyError {
    const hint = /Permission denied|Host key verification failed/.test(why)
      ? ' (ispy runs ssh with BatchMode=yes: it must log in with a key or an agent and a known host key, no prompts)'
      : '';
    return new IspyError('ISPY_ERR_CONNECT', `cannot reach ${this.display} over ssh: ${why}${hint}`);
  }

  /** Starts one more master; resolves when its control socket is up, or throws why not. */
  private startMaster(deadline: number, timeoutMs: number): Promise<void> {
    const ctl = path.join(this.owner.controlDir(), `c${this.index}-${this.startedCount++}`);
    return new Promise<void>((resolve, reject) => {
      // With ControlPersist, ssh goes to the background once logged in and this process
      // exits 0; its stderr then points at /dev/null, so our pipe closes with it.
      const child = this.spawnSsh(this.args(ctl, true, remaining(deadline)), ['ignore', 'ignore', 'pipe']);
      let stderr = '';
      child.stderr!.on('data', (d) => (stderr += d));
      const timer = setTimeout(() => {
        child.kill('SIGKILL');
        reject(new IspyError('ISPY_ERR_CONNECT', `${this.display} did not answer over ssh within ${timeoutMs} ms`));
      }, remaining(deadline));
      child.once('error', (err: NodeJS.ErrnoException) => {
        clearTimeout(timer);
        reject(
          err.code === 'ENOENT'
            ? new IspyError('ISPY_ERR_CONNECT', 'no ssh client found on the PATH: ssh:// targets use the system OpenSSH client (install openssh-client)')
            : this.reachError(err.message),
        );
      });
      child.once('exit', (code, signal) => {
        clearTimeout(timer);
        if (signal === 'SIGKILL') return; // our timer's doing, already reported
        // stderr may still hold its last bytes for a moment after exit.
        setImmediate(() => {
          if (code === 0 && fs.existsSync(ctl)) {
            this.masters.push({ ctl, inUse: 0, dead: false });
            resolve();
          } else reject(this.reachError(stderrText(stderr) || `ssh exited with status ${code}`));
        });
      });
    });
  }

  private alive(m: Master): boolean {
    if (!m.dead && !fs.existsSync(m.ctl)) m.dead = true;
    return !m.dead;
  }

  private wake(): void {
    const all = [...this.waiters];
    this.waiters.clear();
    for (const w of all) w();
  }

  /**
   * A channel slot on a live master, starting masters as needed; bounded by the deadline.
   * Until one master has logged in, only one is tried (a host that is down costs one
   * attempt, and every target on it gets that answer); after that, as many start at once
   * as the callers waiting need.
   */
  private async channel(deadline: number, timeoutMs: number): Promise<Lease> {
    const limit = this.owner.settings.sessionsPerConnection;
    this.demand++;
    try {
      for (;;) {
        if (this.failure) throw this.failure;
        const free = this.masters.find((m) => m.inUse < limit && this.alive(m));
        if (free) {
          free.inUse++;
          let released = false;
          return {
            ctl: free.ctl,
            release: () => {
              if (released) return;
              released = true;
              free.inUse--;
              this.wake();
            },
          };
        }
        const proven = this.masters.length > 0;
        if (remaining(deadline) === 0) {
          // Still waiting for the first login (another target is trying it): the host is slow, not busy.
          throw new IspyError(
            'ISPY_ERR_CONNECT',
            proven ? `no free ssh channel to ${this.display} in time (every connection to it is busy)` : `${this.display} did not answer over ssh within ${timeoutMs} ms`,
          );
        }
        const live = this.masters.filter((m) => this.alive(m)).length;
        const worthStarting = proven ? this.demand > this.startingCount * limit : this.startingCount === 0;
        if (!this.full && worthStarting && live + this.startingCount < MAX_MASTERS_PER_HOST) {
          this.startingCount++;
          try {
            await this.startMaster(deadline, timeoutMs);
          } catch (err) {
            // Refused while others work (sshd's MaxStartups, say): make do with those.
            if (live > 0 || this.startingCount > 1) this.full = true;
            else this.failure = err as IspyError;
          } finally {
            this.startingCount--;
            this.wake();
          }
          continue;
        }
        await new Promise<void>((resolve) => {
          const wake = () => {
            clearTimeout(t);
            resolve();
          };
          const t = setTimeout(() => {
            this.waiters.delete(wake);
            resolve();
          }, remaining(deadline));
          this.waiters.add(wake);
        });
      }
    } finally {
      this.demand--;
    }
  }

  /** The sockets a glob matches on this host (sockets only, not symlinks), sorted. */
  async list(glob: string, timeoutMs: number): Promise<string[]> {
    const deadline = Date.now() + timeoutMs;
    const lease = await this.channel(deadline, timeoutMs);
    try {
      const child = this.spawnSsh([...this.args(lease.ctl, false, remaining(deadline)), listCommand(glob)], ['ignore', 'pipe', 'pipe']);
      let out = '';
      let err = '';
      child.stdout!.on('data', (d) => (out += d));
      child.stderr!.on('data', (d) => (err += d));
      const code = await new Promise<number | null>((resolve, reject) => {
        const t = setTimeout(() => {
          child.kill('SIGKILL');
          reject(new IspyError('ISPY_ERR_CONNECT', `listing ${glob} on ${this.display} took longer than ${timeoutMs} ms`));
        }, remaining(deadline));
        child.once('error', (e) => {
          clearTimeout(t);
          reject(this.reachError(e.message));
        });
        child.once('close', (c) => {
          clearTimeout(t);
          resolve(c);
        });
      });
      if (code !== 0) throw new IspyError('ISPY_ERR_CONNECT', `cannot list ${glob} on ${this.display}: ${stderrText(err) || `exit status ${code}`}`);
      // Only what the glob could have produced; a name that would need quoting is skipped.
      return [...new Set(out.split('\0').filter((f) => f !== '' && SAFE_PATH.test(f) && !GLOB.test(f)))].sort();
    } finally {
      lease.release();
    }
  }

  /** Connects a client to one remote socket: over the host's mux channel, else a channel of its own. */
  async connect(label: string, socket: string, timeoutMs: number): Promise<Client> {
    const deadline = Date.now() + timeoutMs;
    if (this.owner.settings.mux && !this.muxMissing) {
      const session = await this.muxSession(deadline, timeoutMs);
      if (session) return this.connectMux(session, label, socket, deadline);
    }
    return this.connectChannel(label, socket, deadline, timeoutMs);
  }

  /**
   * The host's mux session, started by the first target to ask (the others wait for the
   * same one, each within its own deadline). Undefined when the bridge did not greet: the
   * host is then served one channel per socket. A failure to reach the host is thrown to
   * every waiting target, as for a channel of their own; a session that dies later is
   * replaced on the next ask.
   */
  private muxSession(deadline: number, timeoutMs: number): Promise<MuxSession | undefined> {
    if (!this.mux) {
      const started = this.startMux(deadline, timeoutMs);
      this.mux = started;
      started.catch(() => {
        if (this.mux === started) this.mux = undefined;
      });
    }
    return byDeadline(this.mux, deadline, () => new IspyError('ISPY_ERR_CONNECT', `${this.display} did not answer over ssh within ${timeoutMs} ms`));
  }

  private async startMux(deadline: number, timeoutMs: number): Promise<MuxSession | undefined> {
    const lease = await this.channel(deadline, timeoutMs);
    const child = this.spawnSsh([...this.args(lease.ctl, false, remaining(deadline)), `${this.owner.settings.bridge} --mux`], ['pipe', 'pipe', 'pipe']);
    const session = new MuxSession(child.stdout!, child.stdin!, MUX_HELLO_WAIT_MS);
    this.muxChild = child;
    let stderr = '';
    child.stderr!.on('data', (d) => {
      if (stderr.length < 4096) stderr += d;
    });
    let spawnError: Error | undefined;
    child.once('error', (err) => {
      spawnError = err;
      lease.release();
      session.fail(this.reachError(err.message).message);
    });
    // 'close': exited, and its stderr read to the end, so the reason is whole.
    child.once('close', (code) => {
      lease.release();
      const why = stderrText(stderr) || `exit status ${code}`;
      session.fail(code === 255 ? this.reachError(why).message : `the mux bridge on ${this.display} ended: ${why}`);
      if (this.muxChild === child) {
        this.muxChild = undefined;
        // A channel that dies mid-run (the connection dropped) is replaced for later targets.
        this.mux = undefined;
      }
    });
    if (await session.ready) return session;
    if (spawnError) throw this.reachError(spawnError.message);
    // An older ispy (no --mux: it exits with a usage error), or no greeting in time.
    this.muxMissing = true;
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
    return undefined;
  }

  private async connectMux(session: MuxSession, label: string, socket: string, deadline: number): Promise<Client> {
    const stream = session.open(socket);
    try {
      return await connect(label, { timeoutMs: Math.max(1, remaining(deadline)), clientName: `ispy-cli/${process.pid}`, createConnection: () => stream });
    } catch (err) {
      stream.destroy();
      // The bridge's own words (stale socket, no such file, permission), or why the channel went.
      if (stream.remoteError !== undefined) throw new IspyError('ISPY_ERR_CONNECT', stream.remoteError);
      throw err;
    }
  }

  /** Connects a client to one remote socket through `<bridge> '<socket>'` on a channel of its own. */
  private async connectChannel(label: string, socket: string, deadline: number, timeoutMs: number): Promise<Client> {
    const lease = await this.channel(deadline, timeoutMs);
    const remoteCommand = `${this.owner.settings.bridge} ${shellQuote(socket)}`;
    const child = this.spawnSsh([...this.args(lease.ctl, false, remaining(deadline)), remoteCommand], ['pipe', 'pipe', 'pipe']);
    child.once('exit', () => lease.release());
    // 'close', not 'exit': only then is the bridge's stderr (its reason) read to the end.
    const closed = new Promise<number | null>((resolve) => child.once('close', (code) => resolve(code)));
    let spawnError: Error | undefined;
    child.once('error', (err) => {
      spawnError = err;
      lease.release();
    });
    let stderr = '';
    child.stderr!.on('data', (d) => {
      if (stderr.length < 4096) stderr += d;
    });
    try {
      return await connect(label, { timeoutMs: Math.max(1, remaining(deadline)), clientName: `ispy-cli/${process.pid}`, createConnection: () => stdioStream(child) });
    } catch (err) {
      // The client saw the stream end; ssh or the bridge said why on stderr.
      const code = await within(closed, Math.min(1000, Math.max(200, remaining(deadline))));
      if (code === 'running') child.kill('SIGTERM');
      if (spawnError) throw this.reachError(spawnError.message);
      const why = stderrText(stderr);
      if (!why) throw err;
      if (code === 127 || /(command )?not found/.test(why)) {
        throw new IspyError(
          'ISPY_ERR_CONNECT',
          `the bridge command \`${this.owner.settings.bridge}\` is not available on ${this.display} (${why}); name it with --bridge "node /path/to/ispy/bin/ispy.js bridge" or ISPY_REMOTE_BRIDGE`,
        );
      }
      throw new IspyError('ISPY_ERR_CONNECT', code === 255 ? this.reachError(why).message : why);
    }
  }

  /** Ends the bridges still running and every master (`ssh -O exit`). */
  async close(): Promise<void> {
    // The mux bridge leaves by itself when its stdin ends, closing every socket it holds.
    const muxChild = this.muxChild;
    if (muxChild) {
      muxChild.stdin!.end();
      await exitWithin(muxChild, MUX_END_WAIT_MS);
    }
    const children = [...this.children];
    for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGTERM');
    await Promise.all(children.map((c) => exitWithin(c, CLOSE_WAIT_MS).then((r) => r === 'running' && c.kill('SIGKILL'))));
    await Promise.all(
      this.masters.filter((m) => fs.existsSync(m.ctl)).map(async (m) => {
        const child = spawn('ssh', this.exitArgs(m.ctl), { stdio: 'ignore' });
        child.on('error', () => {});
        if ((await exitWithin(child, CLOSE_WAIT_MS)) === 'running') child.kill('SIGKILL');
        m.dead = true;
      }),
    );
  }

  private exitArgs(ctl: string): string[] {
    return ['-o', `ControlPath=${ctl}`, ...this.owner.settings.sshOptions, '-o', 'LogLevel=QUIET', '-O', 'exit', '--', this.destination];
  }

  /** For process exit: no event loop left, so everything synchronously and briefly. */
  closeSync(): void {
    for (const c of this.children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGTERM');
    for (const m of this.masters) {
      if (m.dead || !fs.existsSync(m.ctl)) continue;
      spawnSync('ssh', this.exitArgs(m.ctl), { stdio: 'ignore', timeout: 1000 });
      m.dead = true;
    }
  }
}

/**
 * Every remote host one command talks to, and the private folder of their control
 * sockets. Whoever creates it closes it (idempotent); a process exit without close still
 * ends the masters and removes the folder.
 */
export class RemoteHosts {
  private dir: string | undefined;
  private readonly hosts = new Map<string, SshHost>();
  private readonly onExit = () => this.closeSync();
  // Ctrl-C or a kill ends the run without an 'exit' event: close first, then die of the
  // same signal as if we had not been listening.
  private readonly onSignal = (signal: NodeJS.Signals) => {
    this.closeSync();
    process.kill(process.pid, signal);
  };

  constructor(readonly settings: RemoteSettings) {}

  host(spec: SshSpec): SshHost {
    const key = `${spec.user ?? ''}@${spec.host}:${spec.port ?? ''}`;
    let h = this.hosts.get(key);
    if (!h) {
      h = new SshHost(this, spec, this.hosts.size);
      this.hosts.set(key, h);
    }
    return h;
  }

  /**
   * Control sockets live here. A UNIX socket path is limited to 104–108 bytes and ssh
   * adds a random suffix while creating one, so the folder sits in /tmp when the OS temp
   * dir has a long path (macOS), and the sockets have short names.
   */
  controlDir(): string {
    if (this.dir === undefined) {
      const base = os.tmpdir().length <= 24 || !fs.existsSync('/tmp') ? os.tmpdir() : '/tmp';
      this.dir = fs.mkdtempSync(path.join(base, 'ispy-ssh-'));
      fs.chmodSync(this.dir, 0o700);
      process.on('exit', this.onExit);
      process.once('SIGINT', this.onSignal);
      process.once('SIGTERM', this.onSignal);
      process.once('SIGHUP', this.onSignal);
    }
    return this.dir;
  }

  async close(): Promise<void> {
    await Promise.all([...this.hosts.values()].map((h) => h.close()));
    this.removeDir();
  }

  private closeSync(): void {
    for (const h of this.hosts.values()) h.closeSync();
    this.removeDir();
  }

  private removeDir(): void {
    if (this.dir === undefined) return;
    fs.rmSync(this.dir, { recursive: true, force: true });
    this.dir = undefined;
    process.off('exit', this.onExit);
    for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.off(signal, this.onSignal);
  }
}

function remoteSocketTarget(host: SshHost, socket: string): Target {
  const label = `${host.display}:${socket}`;
  return { label, host: host.display, connect: ({ timeoutMs }) => host.connect(label, socket, timeoutMs) };
}

/**
 * The target an ssh:// spec names: one remote socket, or a glob expanded on the host
 * when it is run (`expand`). Connecting to a glob connects to its one match.
 */
export function sshTarget(spec: string, remote: RemoteHosts): { target: Target; key: string } {
  const s = parseSshTarget(spec);
  const host = remote.host(s);
  const key = `ssh:${s.user ?? ''}@${s.host}:${s.port ?? ''}${s.path}`;
  if (!GLOB.test(s.path)) return { target: remoteSocketTarget(host, s.path), key };
  const label = `${host.display}:${s.path}`;
  const expand = async ({ timeoutMs }: { timeoutMs: number }): Promise<Target[]> => {
    const files = await host.list(s.path, timeoutMs);
    if (files.length === 0) throw new IspyError('ISPY_ERR_CONNECT', `no agent sockets match ${s.path} on ${host.display}`);
    return files.map((f) => remoteSocketTarget(host, f));
  };
  return {
    key,
    target: {
      label,
      host: host.display,
      expand,
      async connect(opts) {
        const found = await expand(opts);
        if (found.length !== 1) {
          throw new IspyError('ISPY_ERR_USAGE', `${label} matches ${found.length} sockets (${found.map((t) => t.label).join(', ')}); connect attaches to one, \`ispy run\` reaches many`);
        }
        return found[0]!.connect(opts);
      },
    },
  };
}
