// A private OpenSSH server for the tests: its own sshd process (not the system service),
// on 127.0.0.1 only, at a free port, with a throwaway host key and a throwaway user key
// in a temp folder. The tests reach it with `ISPY_SSH_OPTIONS` (that key, a private
// known_hosts, no ~/.ssh/config). sshd and ssh-keygen are installed by .ci/run; the tests
// never install anything.

import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { shellQuote } from '../src/cli/ssh';
import { tempDir, waitFor } from './helpers';

export const SSHD = '/usr/sbin/sshd';

/** Why sshd cannot run here, or undefined when it can. */
export function sshdMissing(): string | undefined {
  if (!fs.existsSync(SSHD)) return `${SSHD} is not installed (apt-get install openssh-server; .ci/run does)`;
  for (const tool of ['ssh', 'ssh-keygen']) {
    try {
      execFileSync('sh', ['-c', `command -v ${tool}`], { stdio: 'ignore' });
    } catch {
      return `${tool} is not installed (apt-get install openssh-client; .ci/run does)`;
    }
  }
  return undefined;
}

/** A loopback port nothing listens on (taken and released at once). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}

export interface Sshd {
  port: number;
  user: string;
  /** ssh arguments that reach this server without prompts or ~/.ssh/config: the value for ISPY_SSH_OPTIONS. */
  sshOptions: string;
  /** What sshd logged (with -e): one "Accepted publickey" line per TCP connection. */
  log(): string;
  stop(): Promise<void>;
}

export async function startSshd(): Promise<Sshd> {
  const dir = tempDir('ispy-sshd-');
  const hostKey = path.join(dir, 'host_key');
  const userKey = path.join(dir, 'user_key');
  for (const key of [hostKey, userKey]) execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', key], { stdio: 'ignore' });
  // As root, sshd wants its privilege-separation folder (the package creates it at boot).
  if (process.getuid?.() === 0 && !fs.existsSync('/run/sshd')) fs.mkdirSync('/run/sshd', { mode: 0o755 });
  const port = await freePort();
  const config = path.join(dir, 'sshd_config');
  fs.writeFileSync(
    config,
    [
      'ListenAddress 127.0.0.1',
      `Port ${port}`,
      `HostKey ${hostKey}`,
      `AuthorizedKeysFile ${userKey}.pub`,
      `PidFile ${path.join(dir, 'sshd.pid')}`,
      'StrictModes no',
      'UsePAM no',
      'PasswordAuthentication no',
      'KbdInteractiveAuthentication no',
      'PermitRootLogin prohibit-password',
      '',
    ].join('\n'),
  );
  const child: ChildProcess = spawn(SSHD, ['-D', '-e', '-f', config], { stdio: ['ignore', 'ignore', 'pipe'] });
  let log = '';
  child.stderr!.on('data', (d) => (log += d));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  // Ready when it greets: an SSH server speaks first.
  await waitFor(
    () =>
      child.exitCode !== null
        ? Promise.reject(new Error(`sshd exited with ${child.exitCode}: ${log}`))
        : new Promise<boolean>((resolve) => {
            const s = net.connect(port, '127.0.0.1');
            s.setTimeout(500, () => s.destroy());
            s.once('data', (d) => {
              s.destroy();
              resolve(d.toString().startsWith('SSH-'));
            });
            s.once('error', () => resolve(false));
            s.once('close', () => resolve(false));
          }),
    10_000,
    `sshd on 127.0.0.1:${port} (log: ${log})`,
  );
  const options = ['-F', '/dev/null', '-i', userKey, '-o', 'IdentitiesOnly=yes', '-o', `UserKnownHostsFile=${path.join(dir, 'known_hosts')}`, '-o', 'StrictHostKeyChecking=no'];
  return {
    port,
    user: os.userInfo().username,
    sshOptions: options.map((o) => (/^[\w./=-]+$/.test(o) ? o : shellQuote(o))).join(' '),
    log: () => log,
    async stop() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
      const t = setTimeout(() => child.kill('SIGKILL'), 3000);
      await exited;
      clearTimeout(t);
    },
  };
}
