'use strict';
// A reference point for rss.js, not part of ispy: preloaded instead of the agent, it starts
// one idle worker thread the way the agent starts its own (no preloads, same heap limit)
// and nothing else. The memory it adds is the floor of any agent built on a worker thread.
const { Worker } = require('node:worker_threads');

const worker = new Worker('setInterval(() => {}, 1 << 30);', {
  eval: true,
  execArgv: [],
  resourceLimits: { maxOldGenerationSizeMb: 256, maxYoungGenerationSizeMb: 4 },
  name: 'bench-bare-worker',
});
worker.unref();
