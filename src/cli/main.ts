// The `ispy` binary: one commander program, one subcommand per way of reaching agents.
//
//   ispy connect <target>          shell on one process (piped stdin: run lines, exit)
//   ispy run <target…> -c <line>   the same lines on many processes at once
//   ispy ps [dir]                  live agents on this host
//   ispy attach <pid>              load the agent into a process started without it
//   ispy bridge <socket>           stdio ↔ socket, for ssh and kubectl exec (--mux: many sockets)
//
// Errors: a known IspyError is one line on stderr and an exit status (2 for usage, 1 for
// anything else); only an unexpected error prints a stack. Nothing calls process.exit():
// each command sets process.exitCode and lets the event loop drain, so output piped to a
// file is never cut short. Subcommands are loaded on use, keeping start-up light for
// `ispy run` over many hosts.

import { readFileSync } from 'node:fs';
import * as path from 'node:path';
import { Command, CommanderError, InvalidArgumentError, Option } from 'commander';
import { IspyError, isIspyError, parseDuration } from '../protocol/index';
import { EXIT_FAILED, EXIT_USAGE, isUsageError } from './report';

function version(): string {
  try {
    // dist/src/cli/main.js → package root
    return (JSON.parse(readFileSync(path.resolve(__dirname, '..', '..', '..', 'package.json'), 'utf8')) as { version: string }).version;
  } catch {
    return 'unknown';
  }
}

function durationOption(value: string): number {
  const ms = parseDuration(value);
  if (ms === undefined || ms <= 0) throw new InvalidArgumentError('expected a duration such as 500ms, 2s or 1m');
  return ms;
}

function positiveInteger(value: string): number {
  const n = Number(value);
  if (!/^\d+$/.test(value.trim()) || !Number.isSafeInteger(n) || n < 1) throw new InvalidArgumentError('expected a whole number of at least 1');
  return n;
}

function collect(value: string, previous: string[] | undefined): string[] {
  return [...(previous ?? []), value];
}

const io = () => ({ output: process.stdout, error: process.stderr, env: process.env });

function setStatus(status: number): void {
  process.exitCode = Math.max(Number(process.exitCode ?? 0), status);
}

/** How long `ispy connect` waits to reach its target when --timeout does not say. */
const CONNECT_TIMEOUT_MS = 15_000;

async function connectAction(spec: string, options: { timeout?: number; bridge?: string }): Promise<void> {
  const { resolveTargets } = await import('./targets.js');
  const { RemoteHosts, remoteSettings } = await import('./ssh.js');
  const { Shell } = await import('./shell.js');
  // ssh connections made for remote targets; closed (ssh -O exit) whatever happens.
  const remote = new RemoteHosts(remoteSettings(process.env, options));
  const targets = resolveTargets([spec], { remote });
  if (targets.length !== 1) {
    throw new IspyError('ISPY_ERR_USAGE', `${spec} matches ${targets.length} sockets (${targets.map((t) => t.label).join(', ')}); connect attaches to one, \`ispy run\` reaches many`);
  }
  // Connecting may mean an ssh handshake and a bridge's start on a busy host: seconds, not ms.
  const client = await targets[0]!.connect({ timeoutMs: options.timeout ?? CONNECT_TIMEOUT_MS }).catch(async (err: unknown) => {
    await remote.close();
    throw err;
  });
  try {
    const shell = new Shell(client, { input: process.stdin, ...io() }, options.timeout !== undefined ? { timeoutMs: options.timeout } : {});
    setStatus(await shell.run());
    // Piped stdin may still be open at the writer's end; we have read all we will.
    if (!shell.interactive) process.stdin.destroy();
  } finally {
    // Whatever happened, an open connection must not keep the process alive. Idempotent.
    await client.close();
    await remote.close();
  }
}

interface RunFlags {
  command?: string[];
  file?: string;
  json?: boolean;
  concurrency: number;
  timeout: number;
  targetsFile?: string;
  merge?: boolean;
  bridge?: string;
}

async function runAction(specs: string[], flags: RunFlags): Promise<void> {
  const { resolveTargets, readTargetsFile } = await import('./targets.js');
  const { runFanout, scriptLines } = await import('./run.js');
  const { RemoteHosts, remoteSettings } = await import('./ssh.js');
  const lines = [...(flags.command ?? [])];
  if (flags.file !== undefined) {
    let text: string;
    try {
      text = flags.file === '-' ? readFileSync(0, 'utf8') : readFileSync(flags.file, 'utf8');
    } catch (err) {
      throw new IspyError('ISPY_ERR_USAGE', `cannot read script ${flags.file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
    }
    lines.push(...scriptLines(text));
  }
  const all = [...specs, ...(flags.targetsFile !== undefined ? readTargetsFile(flags.targetsFile) : [])];
  if (all.length === 0) throw new IspyError('ISPY_ERR_USAGE', 'no targets: give socket paths, globs (quoted: "/tmp/ispy-1000/*.sock"), pid:<n>, or --targets-file');
  const remote = new RemoteHosts(remoteSettings(process.env, flags));
  try {
    const targets = resolveTargets(all, { remote });
    setStatus(await runFanout(targets, { lines, json: flags.json === true, merge: flags.merge === true, concurrency: flags.concurrency, timeoutMs: flags.timeout, ...io() }));
  } finally {
    await remote.close();
  }
}

async function psAction(dir: string | undefined, flags: { all?: boolean; clean?: boolean; json?: boolean; timeout: number }): Promise<void> {
  const { ps } = await import('./ps.js');
  setStatus(
    await ps({ ...(dir !== undefined ? { dir } : {}), all: flags.all === true, clean: flags.clean === true, json: flags.json === true, timeoutMs: flags.timeout, ...io() }),
  );
}

async function attachAction(pid: string, flags: { socket?: string; config?: string; timeout: number; json?: boolean }): Promise<void> {
  const { attachCommand } = await import('./attach.js');
  setStatus(await attachCommand(pid, flags, io()));
}

async function bridgeAction(socket: string | undefined, options: { mux?: boolean }): Promise<void> {
  if (options.mux ? socket !== undefined : socket === undefined) {
    throw new IspyError('ISPY_ERR_USAGE', options.mux ? `ispy bridge --mux takes no socket (the client names each one in the stream), not ${socket}` : 'ispy bridge needs the agent socket to connect to, e.g. ispy bridge /tmp/ispy-1000/4242.sock (or --mux)');
  }
  const { bridge, bridgeMux } = await import('./bridge.js');
  const io = { input: process.stdin, output: process.stdout, error: process.stderr };
  setStatus(await (socket === undefined ? bridgeMux(io) : bridge(socket, io)));
}

export function buildProgram(): Command {
  const program = new Command('ispy')
    .description('Look inside live Node.js processes: attach a shell to one, or run commands across many.')
    .version(version(), '-V, --version')
    .showHelpAfterError('(ispy --help, or ispy <command> --help, lists what is accepted)')
    .exitOverride()
    .configureOutput({ outputError: (text, write) => write(text) });

  program
    .command('connect')
    .summary('interactive shell on one process (piped stdin: run each line, then exit)')
    .description(
      'Attach a shell to one process. At a terminal: a prompt naming the process, Tab completion, `help`, history in ~/.ispy_history ($ISPY_HISTORY), Ctrl-C cancels the running command. With stdin piped: run each line, print the results, exit 0 (all ok), 1 (a line failed) or 2 (a line was mistyped).',
    )
    .argument('<target>', 'a socket path, a glob matching one socket, pid:<n>, or ssh://[user@]host[:port]/path.sock')
    .addOption(new Option('--timeout <duration>', 'limit for connecting and for each line (default: 15s to connect, no limit for a line; Ctrl-C at a terminal)').argParser(durationOption))
    .option('--bridge <command>', 'for ssh:// targets: what runs on the remote host (default: $ISPY_REMOTE_BRIDGE, else "ispy bridge")')
    .action(connectAction)
    .addHelpText('after', '\nExamples:\n  ispy connect pid:4242\n  echo "process info" | ispy connect /tmp/ispy-1000/4242.sock');

  program
    .command('run')
    .summary('run the same lines on many processes at once')
    .description(
      'Run lines on every target concurrently. Output is one block per target, printed as each finishes, and a summary `N ok, M failed` on stderr. Exit status: 0 when every target answered every line, 2 when every reachable target rejected a line as mistyped, 1 otherwise.',
    )
    .argument('[targets...]', 'socket paths, globs of them ("/tmp/ispy-1000/*.sock", quoted so ispy expands them), pid:<n>, ssh://[user@]host[:port]/path (a glob there is expanded on that host)')
    .addOption(new Option('-c, --command <line>', 'a line to run, e.g. "process info" (repeatable; run before -f lines)').argParser(collect))
    .option('-f, --file <script>', 'a script: one line each, # comments and blank lines skipped (- reads stdin)')
    .option('--json', 'one JSON object per target per line: {target, pid, host, line, ok, result | error}')
    .addOption(new Option('--concurrency <n>', 'targets in flight at once').argParser(positiveInteger).default(32))
    .addOption(new Option('--timeout <duration>', 'limit for each line on each target (and for connecting)').argParser(durationOption).default(10_000, '10s'))
    .option('--targets-file <file>', 'more targets, one per line (# comments)')
    .option('--merge', 'one table per line across all targets, with host and pid columns, sorted by the command\'s natural key (--json: one object per line with its rows)')
    .option('--bridge <command>', 'for ssh:// targets: what runs on the remote host (default: $ISPY_REMOTE_BRIDGE, else "ispy bridge")')
    .action(runAction)
    .addHelpText(
      'after',
      '\nA line with -o FILE saves one file per target, the pid before the extension (report.json → report-4242.json).\n\nExamples:\n  ispy run "/tmp/ispy-1000/*.sock" -c "process info"\n  ispy run pid:4242 pid:4243 -c "process loop --duration 2s" --json | jq .result.delayMs\n  ispy run "ssh://web1/tmp/ispy-1000/*.sock" "ssh://web2/tmp/ispy-1000/*.sock" -c "requests list" --merge\n\nssh:// targets use the system ssh, non-interactively (BatchMode); extra ssh arguments come from $ISPY_SSH_OPTIONS.',
    );

  program
    .command('ps')
    .summary('list live agents on this host')
    .description('List the agents whose sockets are in dir (default: <tmpdir>/ispy-<uid>): pid, title, agent uptime, Node version, socket.')
    .argument('[dir]', 'folder of agent sockets')
    .option('--all', 'also list stale sockets (nothing listening) and unreachable ones, with the reason')
    .option('--clean', 'remove stale sockets (only sockets that refuse connections)')
    .option('--json', 'one JSON object per agent')
    .addOption(new Option('--timeout <duration>', 'how long to wait for each agent').argParser(durationOption).default(1000, '1s'))
    .action(psAction);

  program
    .command('attach')
    .summary('load the agent into a running Node process started without it (Linux)')
    .description(
      'Open the process\'s inspector with SIGUSR1, load the agent through it on 127.0.0.1, and close the inspector again. While it is open (reported; typically 40-130 ms), any local user could connect to that port. Refuses a process that is not Node.js, already has an agent or an open inspector, belongs to another user, or whose inspector port is held by another process. See docs/attach.md.',
    )
    .argument('<pid>', 'the process id')
    .option('--socket <path>', 'socket path for the agent ({pid} allowed; default: its config, else <tmpdir>/ispy-<uid>/<pid>.sock)')
    .option('--config <file>', 'ispy.config.json for the agent (default: the one the process would read: $ISPY_CONFIG, else its cwd)')
    .addOption(new Option('--timeout <duration>', 'longest wait for the inspector to open and for the main thread to come back to its event loop (while the port is open: at most 3s in all, whatever this says; the agent\'s start-up gets at least 15s)').argParser(durationOption).default(5000, '5s'))
    .option('--json', 'one JSON object: {pid, socket, inspector: {host, port, openMs, closed}, timings, plugins, failedPlugins, connect}')
    .action(attachAction)
    .addHelpText('after', '\nExamples:\n  ispy attach 4242\n  ispy attach 4242 --socket /tmp/ispy-debug/{pid}.sock && ispy connect /tmp/ispy-debug/4242.sock');

  program
    .command('bridge')
    .summary('pipe stdin/stdout to an agent socket (for ssh, kubectl exec)')
    .description('Copy bytes between stdin/stdout and the socket until either side closes. Used as the far end of a remote connection: ssh host ispy bridge /tmp/ispy-1000/4242.sock')
    .argument('[socket]', 'the agent socket')
    .option('--mux', 'many sockets over one stdin/stdout, in framed streams the client opens (what ispy run uses over ssh; see docs/fleet.md)')
    .action(bridgeAction);

  program
    .command('flamegraph')
    .summary('render a .cpuprofile (or collapsed stacks) as a flame graph to open in a browser')
    .description('Writes a self-contained HTML page (click to zoom, search) or an SVG, chosen by the extension of -o. Default: <profile>.html beside the profile.')
    .argument('<profile>', 'a .cpuprofile from `profile cpu` / `profile gate`, or a collapsed-stacks file')
    .option('-o, --output <file>', 'where to write it: .html or .svg')
    .option('--title <text>', 'the title shown above the graph')
    .action(flamegraphAction);

  return program;
}

async function flamegraphAction(file: string, options: { output?: string; title?: string }): Promise<void> {
  const { loadProfile, parseCollapsed, renderHtml, renderSvg } = await import('./flame.js');
  const out = options.output ?? `${file.replace(/\.(cpuprofile|txt|collapsed)$/, '')}.html`;
  if (!/\.(html?|svg)$/i.test(out)) throw new IspyError('ISPY_ERR_USAGE', `-o ${out}: the flame graph is written as .html or .svg`);
  const root = parseCollapsed(loadProfile(file));
  if (!root.value) throw new IspyError('ISPY_ERR_USAGE', `${file} holds no samples to draw`);
  const opts = { title: options.title ?? path.basename(file) };
  const { writeFileSync } = await import('node:fs');
  writeFileSync(out, /\.svg$/i.test(out) ? renderSvg(root, opts) : renderHtml(root, opts));
  process.stdout.write(`${out}: ${root.value} samples\n`);
}

function report(err: unknown): void {
  if (err instanceof CommanderError) {
    // commander has printed its message (and the hint); only the status is ours to set.
    const fine = err.code === 'commander.helpDisplayed' || err.code === 'commander.version' || err.exitCode === 0;
    setStatus(fine ? 0 : EXIT_USAGE);
    return;
  }
  if (isIspyError(err)) {
    process.stderr.write(`ispy: ${err.message}\n`);
    setStatus(isUsageError(err) ? EXIT_USAGE : EXIT_FAILED);
    return;
  }
  process.stderr.write(`ispy: unexpected error (a bug; please report it with this output)\n${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  setStatus(EXIT_FAILED);
}

export async function main(argv: string[]): Promise<void> {
  // A reader that stops early (`ispy ps | head -1`) is not an error worth a stack.
  process.stdout.on('error', (err: NodeJS.ErrnoException) => {
    if (err.code === 'EPIPE') process.exit(Number(process.exitCode ?? 0));
    throw err;
  });
  try {
    await buildProgram().parseAsync(argv, { from: 'user' });
  } catch (err) {
    report(err);
  }
}
