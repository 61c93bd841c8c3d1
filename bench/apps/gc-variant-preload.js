'use strict';
// Preload for bench/gc-pattern.js: one of the always-on pieces of the default agent alone,
// on a bare app, to tell which of them changes the app's garbage collection.
// GC_VARIANT=observer      a PerformanceObserver on 'gc' entries, as plugins/process/gc.ts
//                           had it (a callback per batch, each entry read)
// GC_VARIANT=fastify-start a no-op subscriber on Fastify's tracing:fastify.request.handler:start
// GC_VARIANT=gcprofiler    v8.GCProfiler, restarted every second
// GC_VARIANT=http-channels no-op subscribers on http.server.request.start and .response.finish
const variant = process.env.GC_VARIANT;
if (variant === 'observer') {
  setTimeout(() => {
    const { PerformanceObserver } = require('node:perf_hooks');
    let n = 0;
    new PerformanceObserver((list) => {
      for (const e of list.getEntries()) n += e.duration;
    }).observe({ entryTypes: ['gc'] });
  }, 0).unref();
} else if (variant === 'gcprofiler') {
  // v8.GCProfiler, stopped and started afresh every second (what it holds is then bounded).
  const { GCProfiler } = require('node:v8');
  let p = new GCProfiler();
  p.start();
  let n = 0;
  setInterval(() => {
    const r = p.stop();
    p = new GCProfiler();
    p.start();
    for (const s of r.statistics) n += s.cost;
  }, 1000).unref();
} else if (variant === 'http-channels') {
  // The two channels the requests plugin reads per request, each with a no-op subscriber:
  // what node:http then does per request for any subscriber (bench/instructions.js `channels`).
  const dc = require('node:diagnostics_channel');
  dc.subscribe('http.server.request.start', () => {});
  dc.subscribe('http.server.response.finish', () => {});
} else if (variant === 'fastify-start') {
  require('node:diagnostics_channel').subscribe('tracing:fastify.request.handler:start', () => {});
} else if (variant) {
  throw new Error(`GC_VARIANT ${variant}: unknown`);
}
