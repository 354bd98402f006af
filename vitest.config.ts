import { defineConfig } from 'vitest/config';

// Native addon: the default `forks` pool (one process per file), never `threads`.
// Network tests share the kernel; run files one at a time so timings are not skewed.
export default defineConfig({
  test: {
    pool: 'forks',
    fileParallelism: false,
    include: ['test/**/*.test.ts'],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    reporters: ['default'],
  },
});
