// What `node -r ispy/register` loads before the app's first line runs (issue 12: the
// preload holds that line back), and what the agent's setup loads when it runs. Counted,
// not timed: the app reports which of ispy's modules are in require.cache and which of
// Node's built-ins are loaded, against allow-lists, at three moments: its first line; a
// process.nextTick it queues there (which runs right after the agent's setup, queued by the
// preload before it: src/agent/early.ts); and a setImmediate (the event loop's first turn).
// With no traces or plugins in the config, the first line waits for three small modules
// only, and the setup is done before the loop's first turn.

import { afterAll, describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { cleanup, REGISTER, startApp, tempDir } from './helpers';
import { connect } from '../dist/src/client/index.js';

afterAll(cleanup);

/** ispy's own modules (relative to dist/) the preload loads before the first line. */
const BEFORE_FIRST_LINE = new Set(['src/register.js', 'src/agent/thread.js', 'src/agent/early.js']);

/** ispy's own modules (relative to dist/) the synchronous part of the agent's setup may load. */
const OWN_ALLOWED = new Set([
  ...BEFORE_FIRST_LINE,
  'src/agent/loader.js',
  'src/agent/log.js',
  'src/agent/start.js',
  'src/agent/config.js',
  'src/agent/schema.js',
  'src/agent/paths.js',
  'src/agent/main-host.js',
  'src/agent/runtime.js',
  'src/protocol/errors.js',
  'src/protocol/args.js',
  'src/protocol/index.js',
  'src/protocol/socket-path.js',
  'src/plugin/define.js',
  'src/plugin/index.js',
  'src/plugin/redact.js',
  'src/plugin/stream.js',
  // The one built-in whose main-thread setup must see the app from its start (and trace,
  // only when the config has traces for it: the last test).
  'plugins/requests/index.js',
  'plugins/requests/table.js',
]);

/** Node built-ins the preload may add to those Node loads for a bare `node app.js`. */
const BUILTINS_ALLOWED = new Set(['NativeModule vm', 'NativeModule diagnostics_channel']);

const REPORT =
  "const own = Object.keys(require.cache).filter((f) => f.startsWith(process.env.DIST_PREFIX)).map((f) => f.slice(process.env.DIST_PREFIX.length));" +
  "const builtins = process.moduleLoadList.filter((m) => m.startsWith('NativeModule '));" +
  // Whether the requests plugin is listening for the app's first request.
  "const requests = require('node:diagnostics_channel').hasSubscribers('http.server.request.start');" +
  'console.log(JSON.stringify({ own, builtins, requests }));';
const APP = `${REPORT}\nprocess.nextTick(() => { ${REPORT} });\nsetImmediate(() => { ${REPORT} });\n`;

interface Moment {
  own: string[];
  builtins: string[];
  requests: boolean;
}

/** What the app saw at its first line, right after the agent's setup, and at the loop's first turn. */
function moments(dir: string, args: string[]): { firstLine: Moment; afterSetup: Moment; firstTurn: Moment } {
  const script = path.join(dir, 'first-line.cjs');
  writeFileSync(script, APP);
  const env: NodeJS.ProcessEnv = { ...process.env, DIST_PREFIX: `${path.dirname(path.dirname(REGISTER))}/`, ISPY_SOCKET: path.join(dir, '{pid}.sock') };
  delete env.ISPY_CONFIG;
  delete env.NODE_OPTIONS;
  const out = execFileSync(process.execPath, [...args, script], { cwd: dir, env, timeout: 30_000 }).toString();
  const [firstLine, afterSetup, firstTurn] = out.trim().split('\n').map((l) => JSON.parse(l) as Moment);
  return { firstLine: firstLine!, afterSetup: afterSetup!, firstTurn: firstTurn! };
}

describe('what the preload loads before the app\'s first line', () => {
  it('three small modules before the first line; the setup after the app\'s synchronous start, before the loop\'s first turn', () => {
    const dir = tempDir();
    const bare = moments(dir, []);
    const withAgent = moments(dir, ['-r', REGISTER]);
    // Against the bare app at the same moment (its console.log to a pipe loads node:net).
    const added = (m: Moment, at: Moment) => m.builtins.filter((b) => !at.builtins.includes(b));

    expect(withAgent.firstLine.own.filter((f) => !BEFORE_FIRST_LINE.has(f))).toEqual([]);
    expect(added(withAgent.firstLine, bare.firstLine).filter((b) => b !== 'NativeModule diagnostics_channel')).toEqual([]);
    expect(withAgent.firstLine.requests).toBe(false);

    // The setup has run: the requests plugin listens, with only the allow-listed modules.
    expect(withAgent.afterSetup.requests).toBe(true);
    expect(withAgent.afterSetup.own.filter((f) => !OWN_ALLOWED.has(f))).toEqual([]);
    expect(added(withAgent.afterSetup, bare.afterSetup).filter((b) => !BUILTINS_ALLOWED.has(b))).toEqual([]);
    expect(withAgent.firstTurn.requests).toBe(true);
    expect(bare.firstTurn.requests).toBe(false);
  });

  it('the setup before the first line, with the trace plugin, when the config has traces to wrap from the first call', () => {
    const dir = tempDir();
    writeFileSync(path.join(dir, 'ispy.config.json'), JSON.stringify({ traces: [{ target: './lib.cjs:work' }] }));
    const withAgent = moments(dir, ['-r', REGISTER]);
    expect(withAgent.firstLine.own).toContain('plugins/trace/index.js');
    expect(withAgent.firstLine.requests).toBe(true);
    expect(moments(tempDir(), ['-r', REGISTER]).afterSetup.own).not.toContain('plugins/trace/index.js');
  });

  it('every built-in plugin is loaded once the agent is up, in the usual order, with its main-thread commands', async () => {
    const app = await startApp({ script: 'http-app.cjs', config: { eval: true } });
    const c = await connect(app.socket);
    expect(c.welcome.plugins.map((p) => p.name)).toEqual(['process', 'requests', 'profile', 'heap', 'trace', 'eval']);
    // A main-thread command of a plugin loaded after the first line.
    expect((await c.call('heap', 'stats')) as Record<string, unknown>).toHaveProperty('usedMB');
    expect(await c.call('eval', 'eval', { expression: '1 + 1' })).toMatchObject({ type: 'number', value: '2' });
    await c.close();
    await app.kill();
  });
});
