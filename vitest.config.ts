import { defineConfig } from 'vitest/config';

// Under wine (scripts/test-wine.sh) a process takes seconds to start and everything is slower.
const timeout = process.platform === 'win32' ? 120_000 : 30_000;

// OS threads are process-wide: every test file gets its own process.
export default defineConfig({
  test: {
    pool: 'forks',
    include: ['test/**/*.test.ts'],
    testTimeout: timeout,
    hookTimeout: timeout,
  },
});
