// What `node -r ispy/register` loads before the app's first line runs (issue 12: the
// preload holds that line back). Counted, not timed: the app's first line reports which of
// ispy's modules are in require.cache and which of Node's built-ins are loaded, against an
// allow-list. A module added to the preload path fails here first; it belongs after the
// first line (the deferred start in src/agent/start.ts) unless the plugins' main-thread
// setup needs it.

import { afterAll, describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { cleanup, REGISTER, startApp, tempDir } from './helpers';
import { connect } from '../dist/src/client/index.js';

afterAll(cleanup);

/** ispy's own modules (relative to dist/) the preload may load before the first line. */
const OWN_ALLOWED = new Set([
  'src/register.js',
  'src/agent/loader.js',
  'src/agent/thread.js',
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
  // The one built-in whose main-thread setup must see the app from its first line (and
  // trace, only when the config has traces for it: the last test).
  'plugins/requests/index.js',
  'plugins/requests/table.js',
]);

/** Node built-ins the preload may add to those Node loads for a bare `node app.js`. */
const BUILTINS_ALLOWED = new Set(['NativeModule vm', 'NativeModule diagnostics_channel']);

const FIRST_LINE =
  "const own = Object.keys(require.cache).filter((f) => f.startsWith(process.env.DIST_PREFIX)).map((f) => f.slice(process.env.DIST_PREFIX.length));" +
  "const builtins = process.moduleLoadList.filter((m) => m.startsWith('NativeModule '));" +
  // Whether the requests plugin is already listening for the app's first request.
  "const requests = require('node:diagnostics_channel').hasSubscribers('http.server.request.start');" +
  'console.log(JSON.stringify({ own, builtins, requests }));';

function firstLine(dir: string, args: string[]): { own: string[]; builtins: string[]; requests: boolean } {
  const script = path.join(dir, 'first-line.cjs');
  writeFileSync(script, `${FIRST_LINE}\n`);
  const env: NodeJS.ProcessEnv = { ...process.env, DIST_PREFIX: `${path.dirname(path.dirname(REGISTER))}/`, ISPY_SOCKET: path.join(dir, '{pid}.sock') };
  delete env.ISPY_CONFIG;
  delete env.NODE_OPTIONS;
  const out = execFileSync(process.execPath, [...args, script], { cwd: dir, env, timeout: 30_000 }).toString();
  return JSON.parse(out.trim().split('\n')[0]!) as { own: string[]; builtins: string[]; requests: boolean };
}

describe('what the preload loads before the app\'s first line', () => {
  it('only the modules on the allow-list: the plugins that instrument the app and what their setup needs', () => {
    const dir = tempDir();
    const bare = firstLine(dir, []);
    const withAgent = firstLine(dir, ['-r', REGISTER]);
    expect(withAgent.own.filter((f) => !OWN_ALLOWED.has(f))).toEqual([]);
    expect(withAgent.requests).toBe(true);
    expect(bare.requests).toBe(false);
    const bareSet = new Set(bare.builtins);
    expect(withAgent.builtins.filter((m) => !bareSet.has(m) && !BUILTINS_ALLOWED.has(m))).toEqual([]);
  });

  it('the trace plugin too when the config has traces to wrap from the first call', () => {
    const dir = tempDir();
    writeFileSync(path.join(dir, 'ispy.config.json'), JSON.stringify({ traces: [{ target: './lib.cjs:work' }] }));
    const withAgent = firstLine(dir, ['-r', REGISTER]);
    expect(withAgent.own).toContain('plugins/trace/index.js');
    expect(firstLine(tempDir(), ['-r', REGISTER]).own).not.toContain('plugins/trace/index.js');
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
