// Test runner configuration: unit tests sit beside their sources, the multi-process,
// LAN (network namespace) and browser suites live under tests/.
import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['{daemon,protocol,scheduler,scripts,web-ui,tests}/**/*.test.ts'],
    testTimeout: 30_000,
    hookTimeout: 60_000,
    // Multi-process and LAN suites start real daemons; two cores do not take many at once.
    fileParallelism: true,
    maxWorkers: 2,
    reporters: ['default'],
  },
});
