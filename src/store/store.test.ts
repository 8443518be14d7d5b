import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { closeStores, migrate, openStore } from './index.js';

const here = fileURLToPath(new URL('./index.js', import.meta.url));

describe('the embedded store', () => {
  it('applies each migration once, even when several processes open a new store at the same moment', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'gh-store-'));
    // Real processes racing on one file: each opens the store and runs the same migrations.
    const script = `
      const { openStore, migrate } = await import(${JSON.stringify(here)});
      const db = openStore(${JSON.stringify(dir)});
      migrate(db, [{ id: 'race/1', sql: 'CREATE TABLE things (id INTEGER PRIMARY KEY, name TEXT)' }, { id: 'race/2', sql: 'ALTER TABLE things ADD COLUMN extra TEXT' }]);
      db.prepare('INSERT INTO things (name) VALUES (?)').run(String(process.pid));
    `;
    const runs = Array.from({ length: 4 }, () =>
      new Promise<number | null>((resolve) => {
        const child = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'ignore', 'inherit'] });
        child.on('exit', resolve);
      }),
    );
    assert.deepEqual(await Promise.all(runs), [0, 0, 0, 0]);
    const db = openStore(dir);
    assert.equal((db.prepare('SELECT count(*) AS n FROM things').get() as { n: number }).n, 4);
    assert.equal((db.prepare("SELECT count(*) AS n FROM migrations WHERE id LIKE 'race/%'").get() as { n: number }).n, 2);
    migrate(db, [{ id: 'race/1', sql: 'this is not SQL and must not run again' }]);
    closeStores();
  });
});
