'use strict';
// Makes V8's code cache for the modules ispy's preload compiles in its setup's synchronous part
// (issue 12; src/agent/loader.ts reads it). `npm run build` runs it after tsc, so the cache
// is made from the files just built, by the Node that built them: a Node with another V8
// (or another arch) finds no file of its own and compiles as before. To give a container
// image the cache for its own Node, run this once more with that Node at image build time
// (`node node_modules/ispy/scripts/code-cache.js`): nothing is ever written at run time.
//
// How: a fresh `node -r <this file> -r ispy/register <first line>` in a temp folder, with
// the default config and no NODE_OPTIONS (V8 rejects data made under other V8 flags). This
// file, preloaded first, turns recording on in the agent's loader; a tick queued by the first
// line takes V8's cached data of every module compiled by then (and the functions that ran) and
// writes the file, which the driver then moves into dist/code-cache/ (a rename: a reader
// never sees half a file).
//
//   node scripts/code-cache.js [--node /path/to/node …]   (default: the node running it)

const { execFileSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const DIST = path.join(__dirname, '..', 'dist');
const LOADER = path.join(DIST, 'src', 'agent', 'loader.js');
const REGISTER = path.join(DIST, 'src', 'register.js');

if (require.main !== module) {
  // Preloaded in the child, before ispy/register: the same loader instance (Node's module cache).
  const { recordCodeCache, codeCacheFile } = require(LOADER);
  const take = recordCodeCache();
  module.exports = {
    /** Once the setup's synchronous part has run: the cache file's bytes to `out`, and which file they are for. */
    write(out) {
      fs.writeFileSync(out, take());
      process.stdout.write(`${JSON.stringify({ file: codeCacheFile() })}\n`);
    },
  };
} else {
  main();
}

function main() {
  const args = process.argv.slice(2);
  const nodes = [];
  for (let i = 0; i < args.length; i++) {
    if (args[i] === '--node' && args[i + 1]) nodes.push(path.resolve(args[++i]));
    else {
      console.error(`code-cache: unknown argument ${args[i]}; usage: node scripts/code-cache.js [--node /path/to/node …]`);
      process.exit(2);
    }
  }
  if (nodes.length === 0) nodes.push(process.execPath);
  if (!fs.existsSync(REGISTER)) {
    console.error(`code-cache: ${REGISTER} is missing: run tsc first (npm run build does)`);
    process.exit(1);
  }
  // A rebuild voids every cache made from the old files.
  const dir = path.join(DIST, 'code-cache');
  fs.rmSync(dir, { recursive: true, force: true });
  fs.mkdirSync(dir, { recursive: true });
  for (const node of nodes) record(node, dir);
}

function record(node, dir) {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'ispy-code-cache-'));
  try {
    const out = path.join(tmp, 'cache.bin');
    const env = { ...process.env, ISPY_SOCKET: path.join(tmp, '{pid}.sock') };
    for (const name of ['NODE_OPTIONS', 'ISPY_CONFIG', 'ISPY_DISABLE', 'ISPY_VERBOSE']) delete env[name];
    // The preload's setup runs in a process.nextTick queued before the app's first line
    // (src/agent/early.ts); this one, queued by the first line, runs right after it, before
    // any promise callback: the modules recorded are those of the setup's synchronous part.
    const firstLine = `process.nextTick(() => require(${JSON.stringify(__filename)}).write(${JSON.stringify(out)}))`;
    const stdout = execFileSync(node, ['-r', __filename, '-r', REGISTER, '-e', firstLine], { cwd: tmp, env, timeout: 60_000 }).toString();
    const { file } = JSON.parse(stdout.trim().split('\n').pop());
    if (path.dirname(file) !== dir) throw new Error(`the child's cache file ${file} is not under ${dir}`);
    fs.copyFileSync(out, `${file}.tmp`);
    fs.renameSync(`${file}.tmp`, file);
    console.log(`code-cache: ${path.relative(process.cwd(), file)} (${fs.statSync(file).size} bytes, ${node})`);
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}
