/**
 * Deferred appends (the egress proxy's records of finished connections): in batch mode they wait up to
 * DEFERRED_WRITE_MS to share one write, keep their order, settle only once written, and are not lost when
 * the process ends without closing the log.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { join, resolve } from 'node:path';
import { ChainedAuditLog, DEFERRED_WRITE_MS } from '../src/audit/chain.js';
import { verifyLog } from '../src/audit/verify.js';
import { decisionRecord, readAllRecords, tempDataDir } from './audit-fixtures.js';

const distRoot = resolve(import.meta.dirname, '..');

test('deferred records wait to be written, keep their order ahead of a later record, and settle once written', async () => {
  const tmp = tempDataDir();
  try {
    // A deferral far longer than the test, so that a slow machine cannot see the timer write them first.
    const log = ChainedAuditLog.open({ dir: tmp.auditDir, node: 'n1', keys: tmp.keys, deferredWriteMs: 60_000 });
    const settled: number[] = [];
    const deferred = Array.from({ length: 20 }, (_, i) => log.append(decisionRecord(i, { resource: `deferred-${i}` }), { deferred: true }).then(() => settled.push(i)));
    await new Promise((r) => setImmediate(r));
    assert.equal(readAllRecords(tmp.auditDir).length, 0, 'nothing is written before the deferral ends');
    assert.deepEqual(settled, [], 'no deferred append settles before its record is written');

    // A record someone waits for goes out at once, and takes the deferred ones with it, ahead of it.
    await log.append(decisionRecord(99, { resource: 'awaited' }));
    const resources = readAllRecords(tmp.auditDir).map((r) => r.resource);
    assert.deepEqual(resources, [...Array.from({ length: 20 }, (_, i) => `deferred-${i}`), 'awaited']);
    await Promise.all(deferred);
    assert.deepEqual(settled, Array.from({ length: 20 }, (_, i) => i), 'each deferred append settled, in order');
    await log.close();
    const result = verifyLog(tmp.auditDir, { publicKey: tmp.keys.publicKey });
    assert.equal(result.ok, true, result.problem?.message);
  } finally {
    tmp.cleanup();
  }
});

test('a deferred record with nothing after it waits out the deferral, then is written', async () => {
  const tmp = tempDataDir();
  try {
    // 200 ms rather than DEFERRED_WRITE_MS: the event loop's clock may lag by a few ms when the test starts.
    const log = ChainedAuditLog.open({ dir: tmp.auditDir, node: 'n1', keys: tmp.keys, deferredWriteMs: 200 });
    const appended = log.append(decisionRecord(1, { resource: 'alone' }), { deferred: true });
    await new Promise((r) => setImmediate(r));
    assert.deepEqual(readAllRecords(tmp.auditDir), [], 'it waits for company');
    await appended;
    assert.deepEqual(readAllRecords(tmp.auditDir).map((r) => r.resource), ['alone']);
    await log.close();
  } finally {
    tmp.cleanup();
  }
});

test(`with the default deferral (${DEFERRED_WRITE_MS} ms) a lone record is written promptly`, async () => {
  const tmp = tempDataDir();
  try {
    const log = ChainedAuditLog.open({ dir: tmp.auditDir, node: 'n1', keys: tmp.keys });
    const started = performance.now();
    await log.append(decisionRecord(1, { resource: 'alone' }), { deferred: true });
    const waited = performance.now() - started;
    assert.deepEqual(readAllRecords(tmp.auditDir).map((r) => r.resource), ['alone']);
    // The rest is slack for a loaded machine: the timer fires once the event loop gets to it.
    assert.ok(waited < DEFERRED_WRITE_MS + 500, `it was written after ${waited.toFixed(1)} ms`);
    await log.close();
  } finally {
    tmp.cleanup();
  }
});

test('a full queue of deferred records is written at once, without waiting out the deferral', async () => {
  const tmp = tempDataDir();
  try {
    // A deferral far longer than the test: only a full queue can make these records go out.
    const log = ChainedAuditLog.open({ dir: tmp.auditDir, node: 'n1', keys: tmp.keys, checkpointEvery: 100_000, deferredWriteMs: 60_000 });
    const appended = Array.from({ length: 1023 }, (_, i) => log.append(decisionRecord(i), { deferred: true }));
    await new Promise((r) => setTimeout(r, 20));
    assert.equal(readAllRecords(tmp.auditDir).length, 0, '1023 records wait');
    appended.push(log.append(decisionRecord(1023), { deferred: true }));
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(readAllRecords(tmp.auditDir).length, 1024, 'the 1024th sends them all');
    await Promise.all(appended);
    await log.close();
  } finally {
    tmp.cleanup();
  }
});

test('closing the log writes its deferred records before the final checkpoint', async () => {
  const tmp = tempDataDir();
  try {
    const log = ChainedAuditLog.open({ dir: tmp.auditDir, node: 'n1', keys: tmp.keys });
    const appended = [1, 2, 3].map((i) => log.append(decisionRecord(i, { resource: `deferred-${i}` }), { deferred: true }));
    await log.close();
    await Promise.all(appended);
    const records = readAllRecords(tmp.auditDir);
    assert.deepEqual(records.map((r) => r.resource), ['deferred-1', 'deferred-2', 'deferred-3', 'audit']);
    assert.equal(records.at(-1)?.action, 'audit.checkpoint');
    assert.equal(verifyLog(tmp.auditDir, { publicKey: tmp.keys.publicKey }).unsignedTail, 0);
  } finally {
    tmp.cleanup();
  }
});

for (const [how, ending] of [
  ['process.exit()', 'process.exit(0);'],
  ['an uncaught exception', "setImmediate(() => { throw new Error('crash'); });"],
] as const) {
  test(`deferred records are written when the process ends by ${how} without closing the log`, () => {
    const tmp = tempDataDir();
    try {
      const script = `
        import { ChainedAuditLog } from ${JSON.stringify(join(distRoot, 'src/audit/chain.js'))};
        import { ensureNodeKeys } from ${JSON.stringify(join(distRoot, 'src/util/keys.js'))};
        const dir = process.env.DIR;
        const log = ChainedAuditLog.open({ dir: dir + '/audit', node: 'n', keys: ensureNodeKeys(dir) });
        for (let i = 0; i < 5; i++) {
          void log.append({ v: 1, time: new Date().toISOString(), node: 'n', principal: {}, surface: 'network', action: 'request',
            resource: 'deferred-' + i, effect: 'allow', rules: [], reason: 'ok', latencyUs: 1, correlationId: 'c' + i }, { deferred: true });
        }
        ${ending}
      `;
      const run = spawnSync(process.execPath, ['--input-type=module', '-e', script], { env: { ...process.env, DIR: tmp.dataDir }, encoding: 'utf8', timeout: 20000 });
      assert.notEqual(run.status, null, 'the child ended by itself');
      const records = readAllRecords(tmp.auditDir);
      assert.deepEqual(records.map((r) => r.resource), [0, 1, 2, 3, 4].map((i) => `deferred-${i}`));
      const result = verifyLog(tmp.auditDir, { publicKey: tmp.keys.publicKey });
      assert.equal(result.ok, true, result.problem?.message);
    } finally {
      tmp.cleanup();
    }
  });
}
