import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // Generous: waits end on the state they wait for, so a limit only matters when something
    // is wrong, and a busy machine (other work beside the suite) must not turn into red.
    testTimeout: 60_000,
    hookTimeout: 120_000,
    // Integration tests start real processes; two cores run them best a few at a time.
    maxWorkers: 2,
    pool: 'forks',
  },
});
