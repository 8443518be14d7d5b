/**
 * Runs every benchmark in bench/ one after another (`npm run bench`), or the ones named:
 *   node dist/bench/run.js policy dlp
 */
import { spawnSync } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const wanted = process.argv.slice(2);
const names = readdirSync(here)
  .filter((file) => file.endsWith('.js') && file !== 'run.js' && !file.endsWith('.test.js'))
  .map((file) => file.slice(0, -3))
  .filter((name) => wanted.length === 0 || wanted.includes(name))
  .sort();
let failed = 0;
for (const name of names) {
  console.log(`\n===== bench/${name} =====`);
  const result = spawnSync(process.execPath, [join(here, `${name}.js`)], { stdio: 'inherit' });
  if (result.status !== 0) failed += 1;
}
process.exit(failed > 0 ? 1 : 0);
