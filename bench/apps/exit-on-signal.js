'use strict';
// Preloaded by requests-overhead.js's diagnostic profile: SIGINT ends the process through
// process.exit(), so that `node --cpu-prof` writes its profile (it does on a normal exit,
// not when a signal kills the process).
process.on('SIGINT', () => process.exit(0));
