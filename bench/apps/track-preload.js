'use strict';
// Preload for bench/track-callgrind.js: the requests plugin's main-thread part alone (its
// table fed by the same channels, and with TRACK_ARM set, `requests track` armed for good),
// without the rest of the agent. Under valgrind the agent's worker start is slow and now
// and then never completes on a busy machine; this measures what arming adds per request.
// TRACK_ARM: `1` for the mode `requests track` picks, `hooks` for --hooks; TRACK_STACKS:
// stack captures a second (the tracker's default when unset).
const path = require('node:path');
const dc = require('node:diagnostics_channel');
const ROOT = process.env.TRACK_ROOT ?? path.join(__dirname, '..', '..');
const { RequestTable } = require(path.join(ROOT, 'dist', 'plugins', 'requests', 'table.js'));
const trackerModule = require(path.join(ROOT, 'dist', 'plugins', 'requests', 'tracker.js'));
const t = new RequestTable(500, () => false);
dc.subscribe('http.server.request.start', t.onServerStart.bind(t));
dc.subscribe('http.server.response.finish', t.onServerFinish.bind(t));
dc.subscribe('http.client.request.start', (m) => t.onClientStart(m));
dc.subscribe('undici:request:create', (m) => t.onUndiciCreate(m));
dc.subscribe('undici:request:trailers', (m) => t.onUndiciDone(m));
dc.subscribe('undici:request:error', (m) => t.onUndiciDone(m));
dc.subscribe('fastify.initialization', (m) => t.onFastifyInit(m));
setInterval(() => t.sweep(), 1000).unref();
const arm = process.env.TRACK_ARM;
if (arm) {
  const { Tracker, contextFramesCarryStores } = trackerModule;
  let tracker;
  if (contextFramesCarryStores) {
    const mode = arm !== 'hooks' && contextFramesCarryStores() ? 'context' : 'hooks';
    // TRACK_STACKS: stack captures a second (pluginOptions.requests.trackStacksPerSecond).
    const stacks = process.env.TRACK_STACKS === undefined ? undefined : Number(process.env.TRACK_STACKS);
    tracker = new Tracker(1e9, () => t.inFlight(), mode, stacks);
  } else {
    tracker = new Tracker(1e9, t.inFlight()); // the tracker before AsyncContextFrame
  }
  tracker.arm();
  t.tracker = tracker;
  process.stderr.write(`armed ${tracker.mode ?? 'hooks'}\n`);
}
