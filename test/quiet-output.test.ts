// Nothing ispy does writes into the app's output (issue 13 item 2). A CommonJS and an ES
// module app, each with every built-in plugin (eval enabled) and a config trace, take load
// while the real CLI runs every command of every built-in plugin, arming and disarming;
// then the app stops its own way (SIGTERM, closing its servers, process.exit() with
// sessions open), and its stdout and stderr must hold only what the app printed. The one
// line ispy writes by design, each eval's (docs/tracing.md#eval), is matched exactly and
// nothing else is allowed. `.ci/test-lines` runs this on each Node line.
//
// The command list comes from the agent's own catalogue (`plugins --json`): a command with
// no entry in VISITS fails the test, so a new command cannot be left unvisited.

import { afterAll, describe, expect, it } from 'vitest';
import { spawn } from 'node:child_process';
import * as http from 'node:http';
import * as path from 'node:path';
import { connect } from '../dist/src/client/index.js';
import { BIN, cleanup, runCli, startApp, tempDir, waitFor, FIXTURES, type App } from './helpers';

afterAll(cleanup);

/** One line's answer from `ispy run --json`. */
interface Answer {
  line: string;
  ok: boolean;
  result?: any;
  data?: any[];
  error?: { code: string; message: string };
}

/** What a visit needs: the app, a function its requests call, and the CLI. */
interface Visit {
  app: App;
  /** A method `trace add` and `profile gate` can wrap in both apps (an ES module export binding cannot be). */
  method: string;
  /** Runs lines through one `ispy run` (one connection, in order); every answer must be ok. */
  ok(...lines: string[]): Promise<Answer[]>;
  /** The same, any answers. */
  ask(...lines: string[]): Promise<Answer[]>;
}

/**
 * Every command of every built-in plugin, keyed `<plugin> <command>`, with valid arguments:
 * lines (run together in one `ispy run`), or a visit for a command that needs state (an id,
 * a request in flight, something armed first). A trace or gate that must outlive its `ispy
 * run` is added with --detach; `trace remove all` is not used, as it would end the config trace.
 */
const VISITS: Record<string, string[] | ((v: Visit) => Promise<unknown>)> = {
  'process info': ['process info'],
  'process stack': ['process stack', 'process stack --app-only --limit 5'],
  'process loop': ['process loop --duration 200ms'],
  'process handles': ['process handles'],
  'process env': ['process env', 'process env PATH'],
  'process modules': ['process modules', 'process modules --files'],
  'process report': ['process report'],
  'process gc': ['process gc --limit 5'],

  'requests list': ['requests list', 'requests list --min-age 1ms -n 5'],
  'requests show': async (v) => {
    // Armed, so `show` lists what the request waits on: a call to the upstream, held open.
    await v.ok('requests track --duration 60s');
    const answer = v.app.get('/hold', 60_000);
    answer.catch(() => undefined); // awaited below; a failure before that must not go unhandled
    const held = await waitFor(
      async () => ((await v.ok('requests list'))[0]!.result.requests as any[]).find((r) => r.url === '/hold'),
      30_000,
      'the held request in `requests list`',
    );
    const [shown] = await v.ok(`requests show ${held.id}`, 'requests track --off');
    expect(shown!.result).toMatchObject({ id: held.id, request: 'GET /hold HTTP/1.1' });
    expect((shown!.result.outbound as any[]).map((o) => o.url).join(' ')).toMatch(/\/wait/);
    expect((await v.app.get('/release')).body).not.toBe('0');
    expect((await answer).body).toBe('released');
  },
  'requests slow': ['requests slow -n 5'],
  'requests watch': async (v) => expect((await v.ok('requests watch -n 2'))[0]!.data).toHaveLength(2),
  'requests track': async (v) => {
    const answers = await v.ok('requests track --duration 30s', 'requests track --off', 'requests track --duration 30s --hooks', 'requests track --off');
    expect(answers.map((a) => a.result)).toMatchObject([
      { tracking: 'armed' },
      { tracking: 'off', wasArmed: true },
      { tracking: 'armed', mode: 'hooks' },
      { tracking: 'off', wasArmed: true },
    ]);
  },

  'profile cpu': ['profile cpu --duration 300ms', 'profile cpu --duration 200ms --interval 0.5ms --format collapsed'],
  'profile gate': async (v) => {
    // Waits for two profiled calls, which the load makes.
    expect((await v.ok(`profile gate ${v.method} --samples 2 --every 10ms`))[0]!.result).toMatchObject({ state: 'done', taken: 2 });
  },
  'profile gates': async (v) => {
    const [gate] = await v.ok(`profile gate ${v.method} --samples 1000 --every 10ms --detach`);
    const [gates] = await v.ok('profile gates', `profile ungate ${gate!.result.id}`);
    expect((gates!.result.gates as any[]).map((g) => g.id)).toContain(gate!.result.id);
  },
  'profile ungate': async (v) => {
    const [one, two] = await v.ok(`profile gate ${v.method} --samples 1000 --every 10ms --detach`, `profile gate ${v.method} --samples 1000 --every 10ms --detach`);
    const removed = await v.ok(`profile ungate ${one!.result.id}`, 'profile ungate all');
    expect(removed.map((a) => a.result)).toEqual([{ removed: [one!.result.id] }, { removed: [two!.result.id] }]);
  },
  'profile alloc': ['profile alloc --duration 300ms'],

  'heap stats': ['heap stats'],
  'heap gc': ['heap gc'],
  // v8.queryObjects prints an ExperimentalWarning the first time, unless ispy keeps it out.
  'heap count': ['heap count Map', 'heap count Map --via inspector'],
  'heap snapshot': ['heap snapshot'],

  'trace add': async (v) => {
    // Detached: it outlives this `ispy run` until removed; a watched call shows it is on.
    const [added] = await v.ok(`trace add ${v.method} --args --result --stack --limit 1000 --detach`);
    const [watched] = await v.ok(`trace watch --id ${added!.result.id} --replay -n 1`, `trace remove ${added!.result.id}`);
    expect(watched!.data).toMatchObject([{ trace: added!.result.id }]);
  },
  'trace list': async (v) => {
    // The config trace is on from the start, and sees the load's calls.
    const fromConfig = await waitFor(
      async () => ((await v.ok('trace list'))[0]!.result.traces as any[]).find((t) => t.origin === 'config' && (t.state !== 'active' || t.emitted > 0)),
      30_000,
      'calls seen by the config trace',
    );
    expect(fromConfig).toMatchObject({ state: 'active' });
  },
  'trace remove': async (v) => {
    const [added] = await v.ok(`trace add ${v.method} --detach`);
    expect((await v.ok(`trace remove ${added!.result.id}`))[0]!.result.removed).toEqual([added!.result.id]);
  },
  'trace watch': async (v) => {
    // Its own trace, so that events come from the load whatever became of the config trace.
    const [added] = await v.ok(`trace add ${v.method} --args --detach`);
    const [watched] = await v.ok(`trace watch --id ${added!.result.id} --replay -n 2`, `trace remove ${added!.result.id}`);
    expect(watched!.data!.map((e) => e.trace)).toEqual([added!.result.id, added!.result.id]);
  },

  'eval eval': async (v) => {
    const expressions = ['1 + 1', 'await new Promise((r) => setTimeout(() => r(process.pid), 10))'];
    const answers = await v.ok(...expressions.map((e) => `eval eval '${e}'`));
    expect(answers.map((a) => a.result.value)).toEqual(['2', String(v.app.pid)]);
  },
};

function ask(app: App, lines: string[]): Promise<Answer[]> {
  // A heap snapshot or a profile on a busy machine takes seconds; bounds are generous.
  const args = ['run', app.socket, '--json', '--timeout', '120s', ...lines.flatMap((l) => ['-c', l])];
  return runCli(args, { timeoutMs: 150_000 + lines.length * 10_000 }).then((r) => {
    const answers = r.stdout.split('\n').filter(Boolean).map((l) => JSON.parse(l) as Answer);
    if (answers.length !== lines.length) throw new Error(`ispy run gave ${answers.length} answers for ${lines.length} lines (exit ${r.code}): ${r.stdout} ${r.stderr}`);
    return answers;
  });
}

function visitor(app: App, method: string, visited: Set<string>): Visit {
  return {
    app,
    method,
    ask: (...lines) => ask(app, lines),
    async ok(...lines) {
      const answers = await ask(app, lines);
      for (const a of answers) {
        if (!a.ok) throw new Error(`\`${a.line}\` failed: ${a.error?.code}: ${a.error?.message}`);
        visited.add(a.line.split(/\s+/).slice(0, 2).join(' '));
      }
      return answers;
    },
  };
}

/** Requests from a few concurrent loops (a new connection each, short pauses) until stopped. */
function drive(port: number): { stop(): Promise<{ answered: number; failed: string[] }> } {
  const paths = ['/', '/slow?ms=30', '/work?n=2000&ms=3', '/call?ms=15', '/work?n=500&ms=7'];
  let running = true;
  let answered = 0;
  const failed: string[] = [];
  const one = (p: string) =>
    new Promise<number>((resolve, reject) => {
      const req = http.get({ host: '127.0.0.1', port, path: p, agent: false, timeout: 60_000 }, (res) => {
        res.resume();
        res.on('end', () => resolve(res.statusCode ?? 0));
      });
      req.on('timeout', () => req.destroy(new Error('timed out')));
      req.on('error', reject);
    });
  const loop = async (start: number) => {
    for (let i = start; running; i++) {
      const p = paths[i % paths.length]!;
      try {
        const status = await one(p);
        if (status === 200) answered++;
        else failed.push(`${p}: HTTP ${status}`);
      } catch (err) {
        failed.push(`${p}: ${(err as Error).message}`);
      }
      await new Promise((r) => setTimeout(r, 5));
    }
  };
  const loops = [0, 1, 2].map(loop);
  return {
    async stop() {
      running = false;
      await Promise.all(loops);
      return { answered, failed };
    },
  };
}

interface Kind {
  name: string;
  script: string;
  preload: 'require' | 'import';
  lib: string;
  /** How the app is stopped after the visits: both ways close its servers and let the process end by itself. */
  stop: Stop;
  /** How it is stopped with sessions open: one kind by process.exit(), the other by itself. */
  stopWithSessions: Stop;
}

type Stop = 'SIGTERM' | 'GET /exit' | 'process.exit()';

const KINDS: Kind[] = [
  { name: 'CommonJS', script: 'quiet-app.cjs', preload: 'require', lib: path.join(FIXTURES, 'quiet-lib.cjs'), stop: 'SIGTERM', stopWithSessions: 'process.exit()' },
  { name: 'ES module', script: 'quiet-app.mjs', preload: 'import', lib: path.join(FIXTURES, 'quiet-lib.mjs'), stop: 'GET /exit', stopWithSessions: 'GET /exit' },
];

async function start(kind: Kind): Promise<App> {
  const dir = tempDir('ispy-q-');
  const app = await startApp({
    script: kind.script,
    preload: kind.preload,
    dir,
    // Every built-in plugin loads unless disabled; eval only when enabled. The main-thread and
    // inspector waits are stretched (as the reliability tests do): on a loaded machine an
    // inspector call behind the app's own work can pass the 1 s default, and this test is
    // about output, not about those bounds.
    config: { eval: true, outputDir: dir, limits: { inspectorTimeout: '10s', mainThreadTimeout: '10s' }, traces: [{ target: `${kind.lib}:compute`, args: true, result: true, limit: 1_000_000, duration: '10m' }] },
  });
  await app.port();
  return app;
}

/** Stops the app its own way and waits (bounded) for its exit: when it closed its servers, nothing of ispy's may keep it alive. */
async function stop(app: App, how: Stop): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
  if (how === 'SIGTERM') app.child.kill('SIGTERM');
  else expect((await app.get(how === 'GET /exit' ? '/exit' : '/exit?now')).body).toBe('bye');
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`the app did not exit within 30 s of ${how} (something keeps it alive); stderr: ${app.stderr()}`)), 30_000);
  });
  try {
    return await Promise.race([app.exited, late]);
  } finally {
    clearTimeout(timer);
  }
}

describe.each(KINDS)('a $name app with every built-in plugin', (kind) => {
  it('holds only its own output after every command of every plugin ran against it under load', async () => {
    const app = await start(kind);
    const port = await app.port();
    const visited = new Set<string>();
    const v = visitor(app, `${kind.lib}:Store.prototype.get`, visited);

    const catalogue = (await v.ok('plugins'))[0]!.result.plugins as { name: string; source: string; commands: { name: string }[] }[];
    const commands = catalogue.filter((p) => p.source === 'builtin').flatMap((p) => p.commands.map((c) => `${p.name} ${c.name}`));
    expect(catalogue.filter((p) => p.source === 'builtin').map((p) => p.name).sort()).toEqual(['eval', 'heap', 'process', 'profile', 'requests', 'trace']);
    // A command the agent has and this table does not is a failure: add its visit to VISITS.
    expect(commands.filter((c) => !VISITS[c]), 'commands with no visit in VISITS').toEqual([]);
    expect(Object.keys(VISITS).filter((c) => !commands.includes(c)), 'visits of commands the agent does not have').toEqual([]);

    const load = drive(port);
    let served: { answered: number; failed: string[] };
    try {
      // The plain lines first, in one `ispy run`; then each visit that needs state.
      await v.ok(...commands.flatMap((c) => VISITS[c]).filter((visit): visit is string => typeof visit === 'string'));
      for (const command of commands) {
        const visit = VISITS[command]!;
        if (typeof visit === 'function') await visit(v);
      }
    } finally {
      served = await load.stop();
    }
    expect(served.failed).toEqual([]);
    expect(served.answered).toBeGreaterThan(0);
    expect(commands.filter((c) => !visited.has(c)), 'commands whose visit did not run them').toEqual([]);

    const exit = await stop(app, kind.stop);
    expect(exit).toEqual({ code: 0, signal: null });
    expect(app.stdout()).toBe(`PORT ${port}\nstopping: ${kind.stop}\n`);
    expect(app.stderr()).toBe('');
  }, 300_000);

  it('exits by itself, quietly, with profiles and streams running, tracking armed, a gate and a trace on, after a client vanished mid-stream', async () => {
    const app = await start(kind);
    const port = await app.port();
    const v = visitor(app, `${kind.lib}:Store.prototype.get`, new Set());
    const load = drive(port);
    // Left running, on a connection of their own that the app's exit ends: a CPU and an
    // allocation profile, each known to be running once it reports its first progress.
    const client = await connect(app.socket, { clientName: 'open-session' });
    const running = (what: string) => {
      let started!: () => void;
      const progress = new Promise<void>((resolve) => (started = resolve));
      const call = client.call('profile', what, { duration: '10m' }, { onProgress: () => started() });
      return { progress: Promise.race([progress, call]), call: call.then(() => 'answered', (e: Error & { code?: string }) => e.code) };
    };
    const cpu = running('cpu');
    const alloc = running('alloc');
    await cpu.progress;
    await alloc.progress;
    // And, from the CLI, tracking armed, a gate and a trace left on.
    await v.ok('requests track --duration 5m', `profile gate ${v.method} --samples 1000 --every 10ms --detach`, `trace add ${v.method} --args --detach`);
    // Two streams open on the same connection, each known to be open once it sent an item.
    const streams = ['requests', 'trace'].map((plugin) => {
      let first!: () => void;
      const item = new Promise<void>((resolve) => (first = resolve));
      const call = client.call(plugin, 'watch', {}, { onData: () => first() }).then(() => 'answered', (e: Error & { code?: string }) => e.code);
      return { item, call };
    });
    await Promise.all(streams.map((s) => s.item));
    // A client that vanishes mid-stream (a closed terminal, a dropped ssh): an `ispy
    // connect` watching the trace, killed with SIGKILL once events flow to it.
    const shell = spawn(process.execPath, [BIN, 'connect', app.socket], { env: { ...process.env, NO_COLOR: '1' }, stdio: ['pipe', 'pipe', 'ignore'] });
    let seen = '';
    shell.stdout.on('data', (d) => (seen += d));
    shell.stdin.write('trace watch\n');
    await waitFor(() => /trace=\d+ seq=\d+/.test(seen) || shell.exitCode !== null, 60_000, 'trace events in ispy connect');
    const gone = new Promise((resolve) => shell.once('exit', resolve));
    shell.kill('SIGKILL');
    await gone;
    const { failed } = await load.stop();
    expect(failed).toEqual([]);

    const exit = await stop(app, kind.stopWithSessions);
    expect(exit).toEqual({ code: 0, signal: null });
    expect(app.stdout()).toBe(`PORT ${port}\nstopping: ${kind.stopWithSessions}\n`);
    expect(app.stderr()).toBe('');
    // The profiles' and the streams' calls ended with the connection (the agent went away), not left hanging.
    expect(await Promise.all([cpu.call, alloc.call, ...streams.map((s) => s.call)])).toEqual(Array(4).fill('ISPY_ERR_DISCONNECTED'));
    await client.close();
  }, 180_000);
});
