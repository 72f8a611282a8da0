import { defineConfig } from 'vitest/config';

// OS threads are process-wide: every test file gets its own process.
export default defineConfig({
  test: {
    pool: 'forks',
    include: ['test/**/*.test.ts'],
    testTimeout: 30_000,
    hookTimeout: 30_000,
  },
});
