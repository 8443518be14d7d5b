import { test } from 'node:test';
import assert from 'node:assert/strict';
import Database from 'better-sqlite3';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { openNodeAudit } from '../src/audit/index.js';
import { auditDefaults, type AuditSettings } from '../src/config/schema.js';
import { decisionRecord, tempDataDir } from './audit-fixtures.js';

test('a running node keeps the audit index caught up from a worker thread', async () => {
  const tmp = tempDataDir();
  const audit = openNodeAudit(tmp.dataDir, 'n1', { ...auditDefaults } as AuditSettings, { indexIntervalMs: 50 });
  try {
    for (let i = 0; i < 30; i += 1) await audit.append(decisionRecord(i, { correlationId: `bg-${i}` }));
    const path = join(tmp.dataDir, 'gatehouse.db');
    const deadline = Date.now() + 10_000;
    let indexed = 0;
    while (Date.now() < deadline && indexed < 30) {
      if (existsSync(path)) {
        const db = new Database(path, { readonly: true });
        try {
          indexed = (db.prepare("SELECT COUNT(*) AS n FROM audit_records WHERE surface != 'system'").get() as { n: number }).n;
        } catch {
          indexed = 0; // the worker has not created the table yet
        } finally {
          db.close();
        }
      }
      if (indexed < 30) await new Promise((r) => setTimeout(r, 25));
    }
    assert.equal(indexed, 30, 'every decision was indexed without anyone querying');
  } finally {
    await audit.close();
    tmp.cleanup();
  }
});
