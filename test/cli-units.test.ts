// The CLI's pure parts: formatting, suggestions, line parsing against a catalogue,
// completion, glob expansion, file naming. No processes; the integration tests beside
// this file drive the built binary against real agents.

import { afterAll, describe, expect, it } from 'vitest';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import type { CommandInfo, PluginInfo } from '../src/protocol/index';
import { formatItem, formatTable, formatUptime, formatValue } from '../src/cli/format';
import { closest, editDistance } from '../src/cli/suggest';
import { commandUsage, parseLine, type Catalogue } from '../src/cli/line';
import { complete } from '../src/cli/complete';
import { expandGlob, resolveTargets } from '../src/cli/targets';
import { artefactFiles, fileWriter, insertBeforeExtension } from '../src/cli/artefact';
import { scriptLines } from '../src/cli/run';
import { commandHelp } from '../src/cli/help';
import { loadHistory, saveHistory } from '../src/cli/history';
import { stderrText } from '../src/cli/ssh';
import { cleanup, tempDir } from './helpers';

afterAll(cleanup);

const cmd = (c: Partial<CommandInfo> & { name: string }): CommandInfo => ({ summary: `${c.name} things`, thread: 'worker', stream: false, artefact: false, args: [], ...c });

const processPlugin: PluginInfo = {
  name: 'process',
  summary: 'the process',
  source: 'builtin',
  commands: [
    cmd({ name: 'info' }),
    cmd({
      name: 'stack',
      args: [
        { name: 'limit', type: 'integer', summary: 'frames', default: 50, min: 1, max: 1000 },
        { name: 'appOnly', type: 'boolean', summary: 'app frames only', default: false },
      ],
    }),
    cmd({ name: 'loop', args: [{ name: 'duration', type: 'duration', summary: 'how long', default: '1s', min: 20, max: 60000 }] }),
    cmd({ name: 'env', args: [{ name: 'filter', type: 'string', summary: 'keys containing', positional: true }] }),
    cmd({ name: 'report', artefact: true }),
  ],
};
const tracePlugin: PluginInfo = {
  name: 'trace',
  summary: 'tracing',
  source: 'builtin',
  commands: [
    cmd({ name: 'watch', stream: true, args: [{ name: 'format', type: 'enum', summary: 'how', choices: ['text', 'json'], default: 'text' }] }),
  ],
};
const cat: Catalogue = {
  plugins: [processPlugin, tracePlugin],
  failedPlugins: [{ name: 'hello', source: './hello.js', error: { code: 'ISPY_ERR_PLUGIN_LOAD', message: 'Cannot find module' } }],
};

describe('format', () => {
  it('lays out arrays of flat objects as aligned tables, numbers right-aligned', () => {
    const text = formatTable([
      { pid: 7, title: 'node', tags: ['a', 'b'] },
      { pid: 12345, title: 'worker' },
    ]);
    expect(text.split('\n')).toEqual(['  pid  title   tags', '    7  node    a, b', '12345  worker']);
  });

  it('lays out objects as key/value, nesting indented, scalar arrays joined', () => {
    const text = formatValue({ pid: 1, argv: ['node', 'app.js'], versions: { node: '20', v8: '11' }, frames: [{ fn: 'a', line: 1 }], empty: {}, none: [] });
    expect(text.split('\n')).toEqual([
      'pid   1',
      'argv  node, app.js',
      'versions',
      '  node  20',
      '  v8    11',
      'frames',
      '  fn  line',
      '  a      1',
      'empty  (empty)',
      'none  (none)',
    ]);
  });

  it('prints scalars as themselves and nothing for null', () => {
    expect(formatValue('hello')).toBe('hello');
    expect(formatValue(42)).toBe('42');
    expect(formatValue(null)).toBe('');
    expect(formatValue([1, 2])).toBe('1\n2');
  });

  it('colours only when asked', () => {
    expect(formatValue({ a: 1 })).not.toContain('\x1b[');
    expect(formatValue({ a: 1 }, { color: true })).toContain('\x1b[36m');
  });

  it('puts a stream item on one line', () => {
    expect(formatItem({ method: 'GET', url: '/a b', ms: 3 })).toBe('method=GET url="/a b" ms=3');
    expect(formatItem({ deep: { x: 1 } })).toBe('{"deep":{"x":1}}');
    expect(formatItem('plain')).toBe('plain');
  });

  it('formats uptimes', () => {
    expect(formatUptime(5)).toBe('5s');
    expect(formatUptime(125)).toBe('2m5s');
    expect(formatUptime(7300)).toBe('2h1m');
    expect(formatUptime(90000)).toBe('1d1h');
  });
});

describe('suggest', () => {
  it('measures edit distance', () => {
    expect(editDistance('stak', 'stack')).toBe(1);
    expect(editDistance('', 'abc')).toBe(3);
    expect(editDistance('same', 'same')).toBe(0);
  });

  it('offers the closest plausible name, or none', () => {
    expect(closest('stak', ['info', 'stack', 'loop'])).toBe('stack');
    expect(closest('proc', ['process', 'trace'])).toBe('process');
    expect(closest('zzzzzz', ['info', 'stack'])).toBeUndefined();
  });
});

describe('parseLine', () => {
  it('parses plugin, command, positionals and flags into checked args', () => {
    const line = parseLine('process stack --limit 5 --app-only', cat);
    expect(line).toMatchObject({ kind: 'call', plugin: { name: 'process' }, command: { name: 'stack' }, args: { limit: 5, appOnly: true }, json: false });
    expect(parseLine('process loop --duration 2s', cat)).toMatchObject({ args: { duration: 2000 } });
    expect(parseLine('process env PATH', cat)).toMatchObject({ args: { filter: 'PATH' } });
  });

  it('takes --json and -o off the line', () => {
    expect(parseLine('process info --json', cat)).toMatchObject({ kind: 'call', json: true });
    expect(parseLine('process report -o out.json', cat)).toMatchObject({ output: 'out.json' });
    expect(parseLine('process report --output=x.json --json', cat)).toMatchObject({ output: 'x.json', json: true });
    expect(() => parseLine('process info -o x', cat)).toThrow(/produces no file to save.*such as process report/);
  });

  it('after use, lets the plugin name be left out', () => {
    expect(parseLine('stack', cat, processPlugin)).toMatchObject({ kind: 'call', command: { name: 'stack' } });
    expect(parseLine('trace watch', cat, processPlugin)).toMatchObject({ kind: 'call', plugin: { name: 'trace' } });
  });

  it('recognises shell words', () => {
    expect(parseLine('  ', cat)).toEqual({ kind: 'empty' });
    expect(parseLine('exit', cat)).toEqual({ kind: 'exit' });
    expect(parseLine('plugins --json', cat)).toEqual({ kind: 'plugins', json: true });
    expect(parseLine('use process', cat)).toMatchObject({ kind: 'use', plugin: { name: 'process' } });
    expect(parseLine('use ..', cat)).toEqual({ kind: 'use' });
    expect(parseLine('help process stack', cat)).toMatchObject({ kind: 'help', plugin: { name: 'process' }, command: { name: 'stack' } });
    expect(parseLine('help stack', cat, processPlugin)).toMatchObject({ kind: 'help', command: { name: 'stack' } });
  });

  it('suggests the closest name for unknown plugins and commands', () => {
    expect(() => parseLine('proces info', cat)).toThrow(/unknown plugin "proces"; did you mean "process"/);
    expect(() => parseLine('process stak', cat)).toThrow(/no command "stak"; did you mean "stack"/);
    expect(() => parseLine('info', cat)).toThrow(/did you mean "process info"/);
    expect(() => parseLine('hello greet', cat)).toThrow(/failed to load.*Cannot find module/);
    expect(() => parseLine('process', cat)).toThrow(/needs a command: info, stack/);
  });

  it('puts the usage of a command beside a bad flag', () => {
    try {
      parseLine('process stack --bogus', cat);
      expect.unreachable();
    } catch (err) {
      expect((err as Error).message).toBe('unknown flag --bogus; known flags: --limit, --app-only');
      expect((err as { details: { usage: string } }).details.usage).toBe('process stack [--limit <integer>] [--app-only]');
    }
    expect(() => parseLine('process stack --limit 0', cat)).toThrow(/between 1 and 1000/);
    expect(() => parseLine('process stack "unclosed', cat)).toThrow(/unclosed/);
  });

  it('shows -o in the usage and help of commands that produce files', () => {
    expect(commandUsage('process', processPlugin.commands[4]!)).toBe('process report [-o <file>]');
    expect(commandHelp(processPlugin, processPlugin.commands[1]!)).toMatch(/--limit <integer>\s+frames \(default 50, 1–1000\)/);
  });
});

describe('complete', () => {
  it('completes plugins, commands, flags and enum values', () => {
    expect(complete('proc', cat)).toEqual([['process '], 'proc']);
    expect(complete('process s', cat)).toEqual([['stack '], 's']);
    expect(complete('process stack --', cat)[0]).toEqual(['--limit', '--app-only', '--json']);
    expect(complete('process stack --limit 3 --', cat)[0]).toEqual(['--app-only', '--json']);
    expect(complete('process report -', cat)[0]).toEqual(['-o', '--json']);
    expect(complete('trace watch --format ', cat)[0]).toEqual(['text', 'json']);
    expect(complete('help tr', cat)).toEqual([['trace '], 'tr']);
    expect(complete('st', cat, processPlugin)).toEqual([['stack '], 'st']);
  });
});

describe('targets and files', () => {
  it('expands * and ? to sockets only, skipping dotfiles and non-sockets', async () => {
    const dir = tempDir('ispy-glob-');
    const servers = await Promise.all(
      ['a1.sock', 'a2.sock', 'b1.sock', '.hidden.sock'].map(
        (name) =>
          new Promise<net.Server>((resolve) => {
            const s = net.createServer();
            s.listen(path.join(dir, name), () => resolve(s));
          }),
      ),
    );
    fs.writeFileSync(path.join(dir, 'a3.sock'), 'not a socket');
    try {
      expect(expandGlob(`${dir}/a?.sock`)).toEqual([`${dir}/a1.sock`, `${dir}/a2.sock`]);
      expect(expandGlob(`${dir}/*.sock`)).toEqual([`${dir}/a1.sock`, `${dir}/a2.sock`, `${dir}/b1.sock`]);
      expect(expandGlob(`${path.dirname(dir)}/${path.basename(dir).slice(0, 9)}*/b*.sock`)).toEqual([`${dir}/b1.sock`]);
      expect(expandGlob(`${dir}/nothing*.sock`)).toEqual([]);
      const targets = resolveTargets([`${dir}/*.sock`, `${dir}/a1.sock`, `${dir}/zz*.sock`, 'pid:1']);
      expect(targets.map((t) => t.label)).toEqual([`${dir}/a1.sock`, `${dir}/a2.sock`, `${dir}/b1.sock`, `${dir}/zz*.sock`, expect.stringMatching(/ispy-\d+\/1\.sock$/)]);
      await expect(targets[3]!.connect({ timeoutMs: 100 })).rejects.toThrow(/no agent sockets match/);
      expect(() => resolveTargets(['ssh://host/x.sock'])).toThrow(/not accepted here/); // ssh:// needs a RemoteHosts (cli-ssh.test.ts)
      expect(() => resolveTargets(['pid:abc'])).toThrow(/pid:<number>/);
    } finally {
      for (const s of servers) s.close();
    }
  });

  it('names per-target and extra artefact files', () => {
    expect(insertBeforeExtension('report.json', 42)).toBe('report-42.json');
    expect(insertBeforeExtension('/tmp/x/snap.heapsnapshot', 7)).toBe('/tmp/x/snap-7.heapsnapshot');
    expect(insertBeforeExtension('out', 7)).toBe('out-7');
    const next = artefactFiles('p.cpuprofile');
    expect([next(), next(), next()]).toEqual(['p.cpuprofile', 'p-2.cpuprofile', 'p-3.cpuprofile']);
  });

  it('writes artefacts 0600 through a .partial file, and removes it on abort', async () => {
    const dir = tempDir('ispy-art-');
    const file = path.join(dir, 'a.bin');
    const w = fileWriter(file);
    w.write(Buffer.from('hello '));
    w.write(Buffer.from('world'));
    await w.end();
    expect(fs.readFileSync(file, 'utf8')).toBe('hello world');
    expect(fs.statSync(file).mode & 0o777).toBe(0o600);
    expect(fs.existsSync(`${file}.partial`)).toBe(false);
    const aborted = fileWriter(path.join(dir, 'b.bin'));
    aborted.write(Buffer.from('half'));
    await aborted.abort();
    expect(fs.readdirSync(dir)).toEqual(['a.bin']);
  });

  it('reads scripts without comments or blank lines', () => {
    expect(scriptLines('# check\nprocess info\n\n  process loop --duration 1s  \n#done\n')).toEqual(['process info', 'process loop --duration 1s']);
  });

  it('keeps at most 1000 history lines, oldest first on disk, 0600', () => {
    const file = path.join(tempDir('ispy-hist-'), 'h');
    const newestFirst = Array.from({ length: 1200 }, (_, i) => `line ${1199 - i}`);
    saveHistory(file, newestFirst);
    const lines = fs.readFileSync(file, 'utf8').trim().split('\n');
    expect(lines.length).toBe(1000);
    expect(lines[0]).toBe('line 200');
    expect(lines[999]).toBe('line 1199');
    expect(fs.statSync(file).mode & 0o777).toBe(0o600);
    expect(loadHistory(file)[0]).toBe('line 1199');
  });
});

describe('the reason a remote bridge failed', () => {
  it("is the bridge's own line when it spoke, not what the remote login shell printed beside it", () => {
    const noise = "rm: cannot remove '/root/.pyenv/shims/tmp.qJa5': No such file or directory\npyenv: cannot rehash: /root/.pyenv/shims isn't writable\n";
    expect(stderrText(`${noise}ispy bridge: stale socket /tmp/x.sock: nothing is listening on it\n`)).toBe('stale socket /tmp/x.sock: nothing is listening on it');
    // Without a line of the bridge's, everything ssh and the shell said is the reason.
    expect(stderrText(`Warning: Permanently added '[127.0.0.1]:22' to the list of known hosts.\nssh: connect to host 127.0.0.1 port 1: Connection refused\n`)).toBe(
      'connect to host 127.0.0.1 port 1: Connection refused',
    );
  });
});
