// What a client target names, turned into something that can be connected to:
//
//   /path/to/app.sock          one socket
//   /tmp/ispy-1000/*.sock      a glob (* and ?), expanded here, matching sockets only
//   pid:4242                   the agent's default socket for that process
//   ssh://[user@]host[:port]/path/to.sock   a socket (or glob) on another host (ssh.ts)
//
// Every target resolves to {label, connect()}: the fan-out, the shell and `ps` never look
// at what kind it was. A remote glob can only be expanded on its host, so it carries an
// `expand()` the fan-out calls when it gets to it, turning it into one target per socket.

import * as fs from 'node:fs';
import * as path from 'node:path';
import { currentUid, defaultSocketDir, processAlive } from '../protocol/socket-path';
import { connect, type Client } from '../client/index';
import { IspyError } from '../protocol/index';
import { sshTarget, type RemoteHosts } from './ssh';

export interface Target {
  /** The target as the operator will read it: a socket path, or the pattern that matched nothing. */
  label: string;
  /** The host as the operator named it, for remote targets (`web1`, `10.0.0.7:2222`). */
  host?: string;
  connect(opts: { timeoutMs: number }): Promise<Client>;
  /** A pattern only its host can expand (a remote glob): the targets it names, or why none. */
  expand?(opts: { timeoutMs: number }): Promise<Target[]>;
}

// Shared with the agent (protocol/socket-path), so both agree on the default folder.
export { currentUid, defaultSocketDir };

export function pidSocket(pid: number): string {
  return path.join(defaultSocketDir(), `${pid}.sock`);
}

const GLOB_CHARS = /[*?]/;

function globRegExp(component: string): RegExp {
  const body = component.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '[^/]*').replace(/\?/g, '[^/]');
  return new RegExp(`^${body}$`);
}

function isKind(file: string, kind: 'socket' | 'dir'): boolean {
  try {
    // lstat for the socket itself (a symlink to a socket is not followed: it could point
    // anywhere); stat for folders on the way, which may legitimately be links (/tmp on macOS).
    return kind === 'socket' ? fs.lstatSync(file).isSocket() : fs.statSync(file).isDirectory();
  } catch {
    return false;
  }
}

/**
 * Expands `*` and `?` in path components (any of them, typically the last), the way a
 * shell would, but keeping only sockets: `dir/*` never offers a log file as a target.
 * Like a shell, a wildcard does not match a leading dot. Sorted, so output is stable.
 */
export function expandGlob(pattern: string): string[] {
  const absolute = pattern.startsWith('/');
  const parts = pattern.split('/').filter((p, i) => p !== '' || i === 0);
  if (absolute) parts.shift();
  let found: string[] = [absolute ? '/' : ''];
  parts.forEach((part, i) => {
    const last = i === parts.length - 1;
    const next: string[] = [];
    for (const base of found) {
      if (!GLOB_CHARS.test(part)) {
        next.push(base ? path.join(base, part) : part);
        continue;
      }
      let names: string[];
      try {
        names = fs.readdirSync(base || '.');
      } catch {
        continue;
      }
      const re = globRegExp(part);
      for (const name of names) {
        if (name.startsWith('.') && !part.startsWith('.')) continue;
        if (re.test(name)) next.push(base ? path.join(base, name) : name);
      }
    }
    found = next.filter((f) => (last ? isKind(f, 'socket') : isKind(f, 'dir')));
  });
  return found.sort();
}

function socketTarget(file: string): Target {
  return {
    label: file,
    connect({ timeoutMs }) {
      // A bare number is most likely a pid typed without its prefix.
      if (/^\d+$/.test(file) && !fs.existsSync(file)) {
        return Promise.reject(new IspyError('ISPY_ERR_CONNECT', `no socket file named ${file} here; to reach process ${file}, use pid:${file}`));
      }
      return connect(file, { timeoutMs, clientName: `ispy-cli/${process.pid}` });
    },
  };
}

function failingTarget(label: string, err: IspyError): Target {
  return { label, connect: () => Promise.reject(err) };
}

function pidTarget(spec: string): Target {
  const pid = Number(spec.slice(4));
  if (!Number.isSafeInteger(pid) || pid <= 0) throw new IspyError('ISPY_ERR_USAGE', `bad target ${spec}: expected pid:<number>, e.g. pid:4242`);
  const file = pidSocket(pid);
  return {
    label: file,
    async connect({ timeoutMs }) {
      if (!fs.existsSync(file)) {
        throw new IspyError(
          'ISPY_ERR_CONNECT',
          processAlive(pid)
            ? `process ${pid} has no agent socket at ${file}: it was started without the agent (node -r ispy/register) or with another socket path; \`ispy ps\` lists live agents`
            : `no process ${pid} on this host (and no agent socket at ${file})`,
        );
      }
      return connect(file, { timeoutMs, clientName: `ispy-cli/${process.pid}` });
    },
  };
}

/**
 * Resolves target specs, in order, without duplicates. A glob that matches nothing
 * becomes a target that fails with a clear message, so in a fan-out it is reported beside
 * the others instead of aborting them. Throws ISPY_ERR_USAGE for a spec that cannot mean
 * anything (a malformed pid:, an ssh:// target with a bad host or an unsafe path).
 */
export function resolveTargets(specs: readonly string[], opts: { remote?: RemoteHosts } = {}): Target[] {
  const out: Target[] = [];
  const seen = new Set<string>();
  const add = (t: Target, key: string) => {
    if (seen.has(key)) return;
    seen.add(key);
    out.push(t);
  };
  for (const spec of specs) {
    if (spec.startsWith('ssh://')) {
      if (!opts.remote) throw new IspyError('ISPY_ERR_USAGE', `ssh:// targets are not accepted here (${spec})`);
      const { target, key } = sshTarget(spec, opts.remote);
      add(target, key);
      continue;
    }
    if (spec.startsWith('pid:')) {
      const t = pidTarget(spec);
      add(t, path.resolve(t.label));
    } else if (GLOB_CHARS.test(spec)) {
      const matches = expandGlob(spec);
      if (matches.length === 0) {
        add(failingTarget(spec, new IspyError('ISPY_ERR_CONNECT', `no agent sockets match ${spec}; \`ispy ps\` lists live agents`)), `glob:${spec}`);
      }
      for (const file of matches) add(socketTarget(file), path.resolve(file));
    } else if (spec.trim() === '') {
      throw new IspyError('ISPY_ERR_USAGE', 'empty target; give a socket path, a glob of them, or pid:<n>');
    } else {
      add(socketTarget(spec), path.resolve(spec));
    }
  }
  return out;
}

/** Reads targets from a file: one per line; blank lines, `#` lines and ` # trailing` comments skipped. */
export function readTargetsFile(file: string): string[] {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    throw new IspyError('ISPY_ERR_USAGE', `cannot read targets file ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
  return text
    .split('\n')
    .map((l) => l.replace(/(^|\s)#.*$/, '').trim())
    .filter((l) => l !== '');
}
