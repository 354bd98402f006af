import { defineConfig } from 'vitest/config';

// Fixture recorders (npm run capture:fixtures): they overwrite test/fixtures/.
export default defineConfig({
  test: { pool: 'forks', fileParallelism: false, include: ['test/**/*.capture.ts'], testTimeout: 120_000 },
});
