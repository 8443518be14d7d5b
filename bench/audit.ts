/**
 * bench/audit: what the chained audit log costs.
 *
 *   node dist/bench/audit.js [verify-records=1000000] [append-records=200000]
 *
 * - records/s with the chain and checkpoints on, in batch and sync mode; baseline: the plain JSONL writer
 *   (one stream, no chain, no fsync) in the same run;
 * - the latency one awaited append adds to a decision (p50/p99), batch mode; baseline: an in-memory log;
 * - `audit verify` over N records; baseline: reading and SHA-256-hashing the same bytes in one pass.
 * Targets: >= 50,000 records/s batch; <= 0.2 ms added p99 batch; verify 1 M records in <= 10 s.
 */
import { closeSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync, writeSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ChainedAuditLog } from '../src/audit/chain.js';
import { CHECKPOINT_ACTION, GENESIS_HASH, checkpointMessage, hashLine, listSegments, segmentName, serializeRecord } from '../src/audit/format.js';
import { JsonlAuditLog, MemoryAuditLog } from '../src/audit/jsonl.js';
import type { AuditLog, AuditRecord } from '../src/audit/record.js';
import { verifyLog } from '../src/audit/verify.js';
import { ensureNodeKeys, signBytes, type KeyPair } from '../src/util/keys.js';

const verifyCount = Number(process.argv[2] ?? 1_000_000);
const appendCount = Number(process.argv[3] ?? 200_000);

function record(i: number): AuditRecord {
  return {
    v: 1,
    time: new Date(1_790_000_000_000 + i).toISOString(),
    node: 'bench',
    principal: { agent: i % 2 ? 'coder' : 'ci-bot', teams: ['dev'] },
    surface: 'network',
    action: 'connect',
    resource: `host-${i % 100}.example.com:443`,
    effect: i % 7 === 0 ? 'deny' : 'allow',
    rules: ['rule-a'],
    reason: 'matched rule-a',
    latencyUs: 2,
    correlationId: `c${i}`,
    details: { address: '93.184.216.34' },
  };
}

/** Appends `count` records with up to `concurrency` awaiting at once; returns records per second. */
async function throughput(log: AuditLog, count: number, concurrency: number): Promise<number> {
  const started = process.hrtime.bigint();
  let next = 0;
  const worker = async () => {
    while (next < count) await log.append(record(next++));
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  await log.close();
  return count / seconds;
}

/** Per-append latency in microseconds, awaited one at a time as a decision would. */
async function latencies(log: AuditLog, count: number): Promise<{ p50: number; p99: number }> {
  const samples: number[] = [];
  for (let i = 0; i < count; i += 1) {
    const started = process.hrtime.bigint();
    await log.append(record(i));
    samples.push(Number(process.hrtime.bigint() - started) / 1000);
  }
  await log.close();
  samples.sort((a, b) => a - b);
  return { p50: samples[Math.floor(count * 0.5)]!, p99: samples[Math.floor(count * 0.99)]! };
}

/** Writes a valid chained log of `count` records straight to disk (a checkpoint every 1000), for verify. */
function writeChain(dir: string, count: number, keys: KeyPair): void {
  const perSegment = 250_000;
  let prev = GENESIS_HASH;
  let fd = -1;
  let buffer: string[] = [];
  const flush = () => {
    if (buffer.length) writeSync(fd, buffer.join(''));
    buffer = [];
  };
  for (let seq = 1; seq <= count; seq += 1) {
    if ((seq - 1) % perSegment === 0) {
      if (fd >= 0) {
        flush();
        closeSync(fd);
      }
      fd = openSync(join(dir, segmentName(seq)), 'w');
    }
    let r = record(seq);
    if (seq % 1000 === 0) {
      const signature = signBytes(keys.privateKey, checkpointMessage('bench', seq, prev)).toString('base64');
      r = { ...r, surface: 'system', action: CHECKPOINT_ACTION, details: { covers: seq - 1, head: prev, keyId: keys.keyId, signature } };
    }
    const line = serializeRecord(r, seq, prev);
    prev = hashLine(line);
    buffer.push(line + '\n');
    if (buffer.length >= 10_000) flush();
  }
  flush();
  closeSync(fd);
}

function hashOnly(dir: string): void {
  for (const { name } of listSegments(dir)) createHash('sha256').update(readFileSync(join(dir, name))).digest();
}

const fmt = (n: number) => Math.round(n).toLocaleString('en-US');
const root = mkdtempSync(join(tmpdir(), 'gh-bench-audit-'));
try {
  const keys = ensureNodeKeys(root);
  const open = (name: string, mode: 'sync' | 'batch') =>
    ChainedAuditLog.open({ dir: join(root, name), node: 'bench', keys, mode, checkpointEvery: 1000, checkpointIntervalMs: 1000 });

  const plain = await throughput(new JsonlAuditLog(join(root, 'plain', 'audit.jsonl')), appendCount, 256);
  const batch = await throughput(open('batch', 'batch'), appendCount, 256);
  const syncCount = Math.min(appendCount, 20_000);
  const sync = await throughput(open('sync', 'sync'), syncCount, 256);
  console.log(`append, plain JSONL writer (baseline):  ${fmt(plain)} records/s`);
  console.log(`append, chained, batch mode:            ${fmt(batch)} records/s  (${(batch / plain).toFixed(2)}x baseline; target >= 50,000)`);
  console.log(`append, chained, sync mode (fsync):     ${fmt(sync)} records/s  (${(sync / plain).toFixed(3)}x baseline; 256 concurrent, group commit)`);

  const latencyCount = 20_000;
  const memory = await latencies(new MemoryAuditLog(), latencyCount);
  const added = await latencies(open('latency', 'batch'), latencyCount);
  console.log(
    `awaited append, in-memory log (baseline): p50 ${memory.p50.toFixed(1)} us, p99 ${memory.p99.toFixed(1)} us`,
  );
  console.log(
    `awaited append, chained batch mode:       p50 ${added.p50.toFixed(1)} us, p99 ${added.p99.toFixed(1)} us  ` +
      `(adds ${((added.p99 - memory.p99) / 1000).toFixed(3)} ms at p99; target <= 0.2 ms)`,
  );

  const syncLatency = await latencies(open('latency-sync', 'sync'), 2000);
  console.log(`awaited append, chained sync mode (fsync each): p50 ${syncLatency.p50.toFixed(1)} us, p99 ${syncLatency.p99.toFixed(1)} us`);

  const verifyDir = join(root, 'verify', 'audit');
  mkdirSync(verifyDir, { recursive: true });
  writeChain(verifyDir, verifyCount, keys);
  let started = process.hrtime.bigint();
  hashOnly(verifyDir);
  const hashSeconds = Number(process.hrtime.bigint() - started) / 1e9;
  started = process.hrtime.bigint();
  const result = verifyLog(verifyDir, { publicKey: keys.publicKey });
  const verifySeconds = Number(process.hrtime.bigint() - started) / 1e9;
  if (!result.ok || result.records !== verifyCount) throw new Error(`verify failed on a valid log: ${result.problem?.message ?? result.records}`);
  console.log(`read + SHA-256 of the same bytes (baseline): ${hashSeconds.toFixed(2)} s`);
  console.log(
    `audit verify, ${fmt(verifyCount)} records, ${result.checkpoints} signatures: ${verifySeconds.toFixed(2)} s  ` +
      `(${(verifySeconds / hashSeconds).toFixed(2)}x baseline; ${fmt(verifyCount / verifySeconds)} records/s; target 1 M in <= 10 s)`,
  );
} finally {
  rmSync(root, { recursive: true, force: true });
}
