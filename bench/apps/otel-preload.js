'use strict';
// Preloaded (`node -r bench/apps/otel-preload.js bench/apps/hello-server.js`) by
// requests-overhead.js: OpenTelemetry's HTTP instrumentation set up the way its docs show
// for Node: a NodeTracerProvider (AsyncLocalStorage context manager), every request
// sampled, spans handed to a BatchSpanProcessor whose exporter drops them (no network, no
// memory growth), and @opentelemetry/instrumentation-http registered before the app
// requires `http`. The packages come from bench/peers, never from the root package.
//
// Once a second it writes how many spans ended to $OTEL_SPAN_COUNT_FILE (when set), so
// the benchmark can check that the instrumentation really traced the requests.

const fs = require('node:fs');
const { peerRequire } = require('../lib/peers');

const { NodeTracerProvider, BatchSpanProcessor } = peerRequire('@opentelemetry/sdk-trace-node');
const { registerInstrumentations } = peerRequire('@opentelemetry/instrumentation');
const { HttpInstrumentation } = peerRequire('@opentelemetry/instrumentation-http');

let exported = 0;
const dropExporter = {
  export(spans, done) {
    exported += spans.length;
    done({ code: 0 });
  },
  shutdown: () => Promise.resolve(),
  forceFlush: () => Promise.resolve(),
};

const provider = new NodeTracerProvider({ spanProcessors: [new BatchSpanProcessor(dropExporter)] });
provider.register();
registerInstrumentations({ instrumentations: [new HttpInstrumentation()] });

const countFile = process.env.OTEL_SPAN_COUNT_FILE;
if (countFile) {
  setInterval(() => {
    try {
      fs.writeFileSync(countFile, String(exported));
    } catch {
      // the benchmark's temp folder is gone: we are about to be killed
    }
  }, 1000).unref();
}
