// `npm run dashboards`: writes the generated dashboards and rules (run from the repository root).
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { renderAll } from './build.js';

const root = process.cwd();
for (const [path, content] of Object.entries(renderAll())) {
  mkdirSync(dirname(join(root, path)), { recursive: true });
  writeFileSync(join(root, path), content);
  console.log(`wrote ${path}`);
}
