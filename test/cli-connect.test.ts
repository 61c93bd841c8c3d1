// `ispy connect` with piped stdin, against a real app with the agent: each line runs in
// order, results on stdout, mistakes on stderr as one line (never a stack), and the exit
// status is the worst of the lines: 0 ok, 1 failed, 2 mistyped.

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { ROOT, cleanup, runCli, startApp, tempDir, type App } from './helpers';

let app: App;

beforeAll(async () => {
  const dir = tempDir();
  // Artefacts the agent writes stay in the test's folder.
  // The example plugin brings a streaming command (hello ticks).
  app = await startApp({ script: 'http-app.cjs', dir, config: { outputDir: dir, plugins: [path.join(ROOT, 'examples', 'hello-plugin', 'index.js')] } });
});
afterAll(cleanup);

const connect = (input: string, args: string[] = []) => runCli(['connect', app.socket, ...args], { input });

describe('ispy connect with piped stdin', () => {
  it('runs process info and prints it as aligned key/value lines', async () => {
    const r = await connect('process info\n');
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(new RegExp(`^pid +${app.pid}$`, 'm'));
    expect(r.stdout).toMatch(/^versions\n {2}node +\d+\.\d+\.\d+/m);
    expect(r.stdout).not.toContain('\x1b[');
  });

  it('answers help, help <plugin> and help <plugin> <command> from the catalogue', async () => {
    const r = await connect('help\nhelp process\nhelp process stack\n');
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^plugins:\n {2}process +The process at a glance/m);
    expect(r.stdout).toMatch(/^ {2}stack +The main thread's JavaScript stack/m);
    expect(r.stdout).toContain('usage: process stack [--limit <integer>] [--app-only]');
    expect(r.stdout).toMatch(/--limit <integer> +show at most this many frames \(default 50, 1–1000\)/);
  });

  it('after use <plugin>, takes lines without the plugin name', async () => {
    const r = await connect('use process\nstack\nuse\nprocess handles\n');
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^state +(idle|running)/m);
    expect(r.stdout).toMatch(/^total +\d+/m);
  });

  it('shows the usage for a bad flag and exits 2, running the other lines', async () => {
    const r = await connect('process stack --bogus 3\nprocess info\n');
    expect(r.code).toBe(2);
    expect(r.stderr).toBe('error: unknown flag --bogus; known flags: --limit, --app-only\nusage: process stack [--limit <integer>] [--app-only]\n');
    expect(r.stdout).toMatch(new RegExp(`^pid +${app.pid}$`, 'm'));
  });

  it('suggests the closest name for an unknown command or plugin', async () => {
    const r = await connect('process stak\nproces info\n');
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('error: plugin process has no command "stak"; did you mean "stack"?');
    expect(r.stderr).toContain('error: unknown plugin "proces"; did you mean "process"?');
    expect(r.stderr).not.toMatch(/\n\s+at /);
  });

  it('prints raw JSON with --json', async () => {
    const r = await connect('process info --json\nplugins --json\n');
    expect(r.code).toBe(0);
    const [info, plugins] = r.stdout.trim().split('\n').map((l) => JSON.parse(l));
    expect(info.pid).toBe(app.pid);
    expect(info.versions.node).toBe(process.versions.node);
    expect(plugins.plugins.map((p: { name: string }) => p.name)).toContain('process');
  });

  it('prints each item of a stream as its own line, as it comes', async () => {
    const r = await connect('hello ticks --count 3 --every 20ms\nhello ticks -n 2 --every 20ms --json\n');
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const lines = r.stdout.trim().split('\n');
    expect(lines.slice(0, 3).map((l) => /^tick=(\d) at=\S+ heartbeatAgeMs=\d+$/.exec(l)?.[1])).toEqual(['1', '2', '3']);
    expect(lines.slice(-2).map((l) => JSON.parse(l).tick)).toEqual([1, 2]);
  });

  it('suggests pid:<n> for a bare number', async () => {
    const r = await runCli(['connect', '4242'], { input: '' });
    expect(r.code).toBe(1);
    expect(r.stderr).toBe('ispy: no socket file named 4242 here; to reach process 4242, use pid:4242\n');
  });

  it('saves an artefact with -o (0600), or says where the agent wrote it', async () => {
    const dir = tempDir('ispy-o-');
    const file = path.join(dir, 'report.json');
    const r = await connect(`process report -o ${file}\nprocess report\n`);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(JSON.parse(fs.readFileSync(file, 'utf8')).header.nodejsVersion).toBe(process.version);
    expect(fs.statSync(file).mode & 0o777).toBe(0o600);
    expect(fs.readdirSync(dir)).toEqual(['report.json']);
    expect(r.stdout).toContain(`saved ${file}`);
    expect(r.stdout).toMatch(/report-[\w-]+\.json \([\d.]+ KB\) written by the agent at \//);
  });

  it('refuses -o on a command that produces no file, and a folder that does not exist', async () => {
    const r = await connect('process info -o x.json\nprocess report -o /nonexistent-ispy/x.json\n');
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('process info produces no file to save');
    expect(r.stderr).toContain('folder /nonexistent-ispy does not exist');
  });

  it('names a missing or stale socket in one line, exit 1, no stack', async () => {
    const dir = tempDir('ispy-none-');
    const r = await runCli(['connect', path.join(dir, 'nope.sock')], { input: 'process info\n' });
    expect(r.code).toBe(1);
    expect(r.stderr).toBe(`ispy: no agent socket at ${dir}/nope.sock (no such file); list live agents with \`ispy ps\`\n`);
    const bad = await runCli(['connect', 'pid:abc']);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain('expected pid:<number>');
  });

  it('says plainly when the agent goes away mid-session, and exits 1', async () => {
    const doomed = await startApp({ script: 'http-app.cjs' });
    // Killed once the session is under way (its first line answered), however long that took.
    const out = await runCli(['connect', doomed.socket], {
      input: 'process info --json\nprocess loop --duration 30s\nprocess info\n',
      onStdout: (soFar) => soFar.includes('\n') && doomed.child.kill('SIGKILL'),
    });
    expect(out.code).toBe(1);
    expect(out.stderr).toMatch(new RegExp(`^agent ${doomed.pid} went away \\(`, 'm'));
    // The first line's answer, and nothing after it.
    expect(JSON.parse(out.stdout)).toMatchObject({ pid: doomed.pid });
  });
});
