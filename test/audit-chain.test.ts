import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { appendFileSync, readFileSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { ChainedAuditLog } from '../src/audit/chain.js';
import { listSegments, GENESIS_HASH, hashLine } from '../src/audit/format.js';
import { verifyLog } from '../src/audit/verify.js';
import { createScanner } from '../src/dlp/index.js';
import { decisionRecord, readAllLines, readAllRecords, tempDataDir } from './audit-fixtures.js';

const distRoot = resolve(import.meta.dirname, '..');

test('chains every record to the previous one and signs checkpoints that verify', async () => {
  const tmp = tempDataDir();
  try {
    const log = ChainedAuditLog.open({ dir: tmp.auditDir, node: 'n1', keys: tmp.keys, checkpointEvery: 10 });
    for (let i = 0; i < 25; i += 1) await log.append(decisionRecord(i));
    await log.close();
    const lines = readAllLines(tmp.auditDir);
    const records = lines.map((l) => JSON.parse(l) as { seq: number; prev: string; action: string });
    assert.equal(records[0]!.seq, 1);
    assert.equal(records[0]!.prev, GENESIS_HASH);
    for (let i = 1; i < records.length; i += 1) {
      assert.equal(records[i]!.seq, i + 1);
      assert.equal(records[i]!.prev, hashLine(lines[i - 1]!));
    }
    // 25 decisions, a checkpoint after every 10, and a final one on close.
    assert.equal(records.filter((r) => r.action === 'audit.checkpoint').length, 3);
    const result = verifyLog(tmp.auditDir, { publicKey: tmp.keys.publicKey });
    assert.equal(result.ok, true, result.problem?.message);
    assert.equal(result.checkpoints, 3);
    assert.equal(result.unsignedTail, 0);
  } finally {
    tmp.cleanup();
  }
});

test('writes a signed checkpoint after the interval even when few records arrive', async () => {
  const tmp = tempDataDir();
  try {
    const log = ChainedAuditLog.open({ dir: tmp.auditDir, node: 'n1', keys: tmp.keys, checkpointEvery: 1000, checkpointIntervalMs: 40 });
    await log.append(decisionRecord(1));
    await new Promise((r) => setTimeout(r, 150));
    const before = readAllRecords(tmp.auditDir);
    assert.deepEqual(before.map((r) => r.action), [decisionRecord(1).action, 'audit.checkpoint'], 'one timed checkpoint, none while idle');
    await log.close();
    assert.equal(verifyLog(tmp.auditDir, { publicKey: tmp.keys.publicKey }).unsignedTail, 0);
  } finally {
    tmp.cleanup();
  }
});

test('resumes the chain after a restart', async () => {
  const tmp = tempDataDir();
  try {
    let log = ChainedAuditLog.open({ dir: tmp.auditDir, node: 'n1', keys: tmp.keys });
    for (let i = 0; i < 5; i += 1) await log.append(decisionRecord(i));
    await log.close();
    log = ChainedAuditLog.open({ dir: tmp.auditDir, node: 'n1', keys: tmp.keys });
    assert.equal(log.headSeq, 6);
    await log.append(decisionRecord(99, { resource: 'after-restart:443' }));
    await log.close();
    const records = readAllRecords(tmp.auditDir);
    assert.equal(records.find((r) => r.resource === 'after-restart:443')?.seq, 7);
    assert.equal(verifyLog(tmp.auditDir, { publicKey: tmp.keys.publicKey }).ok, true);
  } finally {
    tmp.cleanup();
  }
});

test('resumes into an empty segment left by a crash right after rotation', async () => {
  const tmp = tempDataDir();
  try {
    let log = ChainedAuditLog.open({ dir: tmp.auditDir, node: 'n1', keys: tmp.keys });
    for (let i = 0; i < 4; i += 1) await log.append(decisionRecord(i));
    await log.close();
    // 4 records and the closing checkpoint: the next segment would start at 6.
    writeFileSync(join(tmp.auditDir, 'segment-0000000000000006.jsonl'), '');
    log = ChainedAuditLog.open({ dir: tmp.auditDir, node: 'n1', keys: tmp.keys });
    assert.equal(log.headSeq, 5);
    await log.append(decisionRecord(9));
    await log.close();
    assert.equal(readFileSync(join(tmp.auditDir, 'segment-0000000000000006.jsonl'), 'utf8').split('\n')[0]!.startsWith('{"seq":6,'), true);
    assert.equal(verifyLog(tmp.auditDir, { publicKey: tmp.keys.publicKey }).ok, true);
  } finally {
    tmp.cleanup();
  }
});

test('refuses a second writer on the same log directory', async () => {
  const tmp = tempDataDir();
  try {
    const log = ChainedAuditLog.open({ dir: tmp.auditDir, node: 'n1', keys: tmp.keys });
    assert.throws(() => ChainedAuditLog.open({ dir: tmp.auditDir, node: 'n1', keys: tmp.keys }), /another Gatehouse process/);
    await log.close();
  } finally {
    tmp.cleanup();
  }
});

test('rotates segments by size, keeps the chain across them, and retention removes old ones with a record', async () => {
  const tmp = tempDataDir();
  try {
    const log = ChainedAuditLog.open({
      dir: tmp.auditDir,
      node: 'n1',
      keys: tmp.keys,
      segmentMaxBytes: 4096,
      retentionMaxBytes: 12 * 1024,
      checkpointEvery: 1000,
    });
    for (let i = 0; i < 200; i += 1) await log.append(decisionRecord(i));
    await log.close();
    const segments = listSegments(tmp.auditDir);
    assert.ok(segments.length >= 3, `expected several segments, got ${segments.length}`);
    for (const segment of segments) {
      const first = readFileSync(join(tmp.auditDir, segment.name), 'utf8').split('\n')[0]!;
      assert.equal((JSON.parse(first) as { seq: number }).seq, segment.firstSeq, 'a segment is named by its first record');
    }
    const closedBytes = segments.slice(0, -1).reduce((sum, s) => sum + statSync(join(tmp.auditDir, s.name)).size, 0);
    assert.ok(closedBytes <= 12 * 1024 + 4096, `retention keeps closed segments near the limit (${closedBytes} bytes)`);
    const records = readAllRecords(tmp.auditDir);
    assert.ok(records.some((r) => r.action === 'audit.retention'), 'retention leaves a record saying what it removed');
    assert.ok(segments[0]!.firstSeq > 1, 'the oldest segments are gone');
    const result = verifyLog(tmp.auditDir, { publicKey: tmp.keys.publicKey });
    assert.equal(result.ok, true, result.problem?.message);
    // Each rotation ends the old segment with a signed checkpoint.
    assert.ok(result.checkpoints >= segments.length - 1);
  } finally {
    tmp.cleanup();
  }
});

test('rotates a segment once it is older than the age limit', async () => {
  const tmp = tempDataDir();
  try {
    const log = ChainedAuditLog.open({ dir: tmp.auditDir, node: 'n1', keys: tmp.keys, segmentMaxAgeMs: 30 });
    await log.append(decisionRecord(1));
    await new Promise((r) => setTimeout(r, 60));
    await log.append(decisionRecord(2));
    await log.close();
    assert.equal(listSegments(tmp.auditDir).length, 2);
    assert.equal(verifyLog(tmp.auditDir, { publicKey: tmp.keys.publicKey }).ok, true);
  } finally {
    tmp.cleanup();
  }
});

test('repairs a torn final line on restart and appends a record saying so', async () => {
  const tmp = tempDataDir();
  try {
    let log = ChainedAuditLog.open({ dir: tmp.auditDir, node: 'n1', keys: tmp.keys });
    for (let i = 0; i < 3; i += 1) await log.append(decisionRecord(i));
    await log.close();
    const segment = join(tmp.auditDir, listSegments(tmp.auditDir).at(-1)!.name);
    const torn = '{"seq":5,"prev":"00ab';
    appendFileSync(segment, torn);
    log = ChainedAuditLog.open({ dir: tmp.auditDir, node: 'n1', keys: tmp.keys });
    await log.append(decisionRecord(7));
    await log.close();
    const records = readAllRecords(tmp.auditDir);
    const repair = records.find((r) => r.action === 'audit.repair');
    assert.ok(repair, 'a repair record is written');
    assert.equal(repair.effect, 'error');
    assert.ok(repair.reason.includes(`torn final record (${torn.length} bytes)`), repair.reason);
    assert.equal(verifyLog(tmp.auditDir, { publicKey: tmp.keys.publicKey }).ok, true);
  } finally {
    tmp.cleanup();
  }
});

test('records digests instead of argument values unless recordValues is on, and bounds record size', async () => {
  const tmp = tempDataDir();
  try {
    const secretish = { owner: 'acme', body: 'customer list: alice@example.com' };
    let log = ChainedAuditLog.open({ dir: tmp.auditDir, node: 'n1', keys: tmp.keys, maxRecordBytes: 2048 });
    await log.append(decisionRecord(2, { details: { args: secretish, argsBytes: 10 } }));
    await log.append(decisionRecord(3, { reason: 'x'.repeat(10_000), details: { note: 'y'.repeat(10_000) } }));
    await log.close();
    let lines = readAllLines(tmp.auditDir);
    assert.ok(!lines[0]!.includes('alice@example.com'), 'argument values are not recorded');
    const first = JSON.parse(lines[0]!) as { details: { args: { omitted: boolean; sha256: string }; argsBytes: number } };
    assert.equal(first.details.args.omitted, true);
    assert.match(first.details.args.sha256, /^[0-9a-f]{64}$/);
    assert.equal(first.details.argsBytes, 10);
    assert.ok(Buffer.byteLength(lines[1]!) <= 2048 + 200, `record is bounded (${Buffer.byteLength(lines[1]!)} bytes)`);
    assert.equal((JSON.parse(lines[1]!) as { details: { truncated: boolean } }).details.truncated, true);

    // With recordValues, values are kept but secrets inside them are redacted by the DLP scanner.
    const scanner = createScanner();
    const token = 'ghp_' + 'A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8';
    log = ChainedAuditLog.open({ dir: tmp.auditDir, node: 'n1', keys: tmp.keys, recordValues: true, redactValues: (v) => scanner.redactJson(v) });
    await log.append(decisionRecord(4, { details: { args: { ...secretish, token } } }));
    await log.close();
    lines = readAllLines(tmp.auditDir);
    const kept = lines.find((l) => l.includes('alice@example.com'));
    assert.ok(kept, 'values are recorded when the config says so');
    assert.ok(!lines.some((l) => l.includes(token)), 'a secret inside a recorded value is never written');
    assert.match(kept, /\[REDACTED:[a-z0-9-]+\]/);

    // recordValues without a redactor still digests: values are never written unredacted.
    log = ChainedAuditLog.open({ dir: tmp.auditDir, node: 'n1', keys: tmp.keys, recordValues: true });
    await log.append(decisionRecord(5, { details: { args: { token } } }));
    await log.close();
    assert.ok(!readAllLines(tmp.auditDir).some((l) => l.includes(token)));
  } finally {
    tmp.cleanup();
  }
});

/** Runs a write storm in a child that prints each acknowledged correlation id, then kills it with SIGKILL. */
async function killDuringStorm(mode: 'sync' | 'batch', dataDir: string, killAfterAcks: number): Promise<Set<string>> {
  const script = `
    import { ChainedAuditLog } from ${JSON.stringify(join(distRoot, 'src/audit/chain.js'))};
    import { ensureNodeKeys } from ${JSON.stringify(join(distRoot, 'src/util/keys.js'))};
    const dataDir = process.env.STORM_DIR;
    const log = ChainedAuditLog.open({ dir: dataDir + '/audit', node: 'storm', keys: ensureNodeKeys(dataDir), mode: process.env.STORM_MODE, checkpointEvery: 100, segmentMaxBytes: 64 * 1024 });
    let n = 0;
    const one = () => {
      const id = 'r' + (n++);
      return log.append({ v: 1, time: new Date().toISOString(), node: 'storm', principal: { agent: 'a' }, surface: 'network',
        action: 'connect', resource: 'h:443', effect: 'allow', rules: ['r'], reason: 'ok', latencyUs: 1, correlationId: id,
        details: { pad: 'x'.repeat(200) } }).then(() => { process.stdout.write(id + '\\n'); });
    };
    const worker = async () => { for (;;) await one(); };
    for (let i = 0; i < 32; i += 1) worker();
    setTimeout(() => process.exit(3), 20000);
  `;
  const child = spawn(process.execPath, ['--input-type=module', '-e', script], {
    env: { ...process.env, STORM_DIR: dataDir, STORM_MODE: mode },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const acked = new Set<string>();
  let buffered = '';
  await new Promise<void>((resolvePromise, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`the storm did not reach ${killAfterAcks} acknowledgements (got ${acked.size})`));
    }, 15000);
    child.stdout.on('data', (chunk: Buffer) => {
      buffered += chunk.toString('utf8');
      const parts = buffered.split('\n');
      buffered = parts.pop() ?? '';
      for (const id of parts) acked.add(id);
      if (acked.size >= killAfterAcks && child.exitCode === null && !child.killed) {
        child.kill('SIGKILL');
      }
    });
    child.on('exit', (code, signal) => {
      clearTimeout(timer);
      if (signal === 'SIGKILL') resolvePromise();
      else reject(new Error(`the storm exited on its own (code ${code})`));
    });
  });
  // Acks still in the pipe when the child died were acknowledged too.
  for (const id of buffered.split('\n')) if (id) acked.add(id);
  return acked;
}

for (const [mode, acks] of [
  ['batch', 5000],
  ['sync', 300],
] as const) {
  test(`loses no acknowledged record when killed with SIGKILL during a write storm (${mode} mode)`, async () => {
    const tmp = tempDataDir();
    try {
      const acked = await killDuringStorm(mode, tmp.dataDir, acks);
      assert.ok(acked.size >= acks);
      const log = ChainedAuditLog.open({ dir: tmp.auditDir, node: 'storm', keys: tmp.keys });
      await log.append(decisionRecord(1, { resource: 'after-kill:443' }));
      await log.close();
      const ids = new Set(readAllRecords(tmp.auditDir).map((r) => r.correlationId));
      const lost = [...acked].filter((id) => !ids.has(id));
      assert.deepEqual(lost.slice(0, 5), [], `${lost.length} acknowledged records are missing`);
      const result = verifyLog(tmp.auditDir, { publicKey: tmp.keys.publicKey });
      assert.equal(result.ok, true, result.problem?.message);
      assert.ok(readAllRecords(tmp.auditDir).some((r) => r.resource === 'after-kill:443'));
    } finally {
      tmp.cleanup();
    }
  });
}

function canMountTmpfs(): boolean {
  const probe = spawnSync('unshare', ['--mount', '--map-root-user', 'sh', '-c', 'mount -t tmpfs -o size=64k tmpfs /tmp'], { stdio: 'ignore' });
  return probe.status === 0;
}

test('a full disk rejects appends with a clear reason, does not crash, and recovers when space returns', { skip: !canMountTmpfs() && process.env.GATEHOUSE_REQUIRE_SANDBOX !== '1' ? 'needs unshare --mount --map-root-user to mount a small tmpfs' : false }, () => {
  const tmp = tempDataDir();
  try {
    const mountPoint = join(tmp.dataDir, 'small-disk');
    const script = `
      import { mkdirSync, writeFileSync, unlinkSync } from 'node:fs';
      import { ChainedAuditLog } from ${JSON.stringify(join(distRoot, 'src/audit/chain.js'))};
      import { verifyLog } from ${JSON.stringify(join(distRoot, 'src/audit/verify.js'))};
      import { ensureNodeKeys } from ${JSON.stringify(join(distRoot, 'src/util/keys.js'))};
      const dir = process.env.DISK;
      const keys = ensureNodeKeys(dir);
      const log = ChainedAuditLog.open({ dir: dir + '/audit', node: 'full', keys, mode: 'sync' });
      writeFileSync(dir + '/filler', Buffer.alloc(200 * 1024));
      const record = (i) => ({ v: 1, time: new Date().toISOString(), node: 'full', principal: {}, surface: 'network', action: 'connect',
        resource: 'h:443', effect: 'allow', rules: [], reason: 'ok', latencyUs: 1, correlationId: 'c' + i, details: { pad: 'z'.repeat(900) } });
      let accepted = 0, error;
      for (let i = 0; i < 1000 && !error; i += 1) {
        try { await log.append(record(i)); accepted += 1; } catch (e) { error = e; }
      }
      let second;
      try { await log.append(record(5000)); } catch (e) { second = e; }
      unlinkSync(dir + '/filler');
      await log.append(record(9999));
      await log.close();
      const result = verifyLog(dir + '/audit', { publicKey: keys.publicKey });
      console.log(JSON.stringify({ accepted, code: error?.code, message: error?.message, secondCode: second?.code, ok: result.ok, records: result.records, problem: result.problem }));
    `;
    spawnSync('mkdir', ['-p', mountPoint]);
    const run = spawnSync(
      'unshare',
      ['--mount', '--map-root-user', 'sh', '-c', 'mount -t tmpfs -o size=256k tmpfs "$0" && exec "$1" --input-type=module -e "$2"', mountPoint, process.execPath, script],
      { env: { ...process.env, DISK: mountPoint }, encoding: 'utf8', timeout: 20000 },
    );
    assert.equal(run.status, 0, `the process survived the full disk (stderr: ${run.stderr})`);
    const outcome = JSON.parse(run.stdout.trim().split('\n').at(-1)!) as Record<string, unknown>;
    assert.ok((outcome.accepted as number) > 10, 'records were accepted while there was space');
    assert.equal(outcome.code, 'audit_write_failed');
    assert.match(String(outcome.message), /disk is full.*decisions are denied/);
    assert.equal(outcome.secondCode, 'audit_write_failed', 'appends keep failing closed while the disk is full');
    assert.equal(outcome.ok, true, `the log still verifies: ${JSON.stringify(outcome.problem)}`);
  } finally {
    tmp.cleanup();
  }
});

test('batch mode acknowledges before the group fsync; the segment holds the record at acknowledgement', async () => {
  const tmp = tempDataDir();
  try {
    const log = ChainedAuditLog.open({ dir: tmp.auditDir, node: 'n1', keys: tmp.keys, mode: 'batch' });
    await log.append(decisionRecord(1, { resource: 'visible-now:443' }));
    const segment = readdirSync(tmp.auditDir).find((n) => n.startsWith('segment-'))!;
    assert.match(readFileSync(join(tmp.auditDir, segment), 'utf8'), /visible-now:443/);
    await log.close();
  } finally {
    tmp.cleanup();
  }
});
