/**
 * audit/: the one record format, the node's chained and durable log, its verifier, the SQLite index behind
 * `audit query`, the sinks that forward records, reports and policy suggestions drawn from the trail, and
 * the Prometheus metrics. Imports only config/, policy/ (types), store/ and util/; knows nothing of the data
 * planes, which reach it only through the `AuditLog` interface.
 */
import { join } from 'node:path';
import type { AuditSettings } from '../config/schema.js';
import { ensureNodeKeys } from '../util/keys.js';
import { ChainedAuditLog, type ChainedLogOptions } from './chain.js';

export type { AuditLog, AuditRecord, RecordEffect, RecordSurface } from './record.js';
export { auditRecordJsonSchema, newCorrelationId } from './record.js';
export { MemoryAuditLog } from './jsonl.js';
export { ChainedAuditLog, BATCH_SYNC_MS, type ChainedLogOptions, type DurabilityMode, type WrittenRecord } from './chain.js';
export { verifyLog, type VerifyResult, type VerifyProblem } from './verify.js';

/** Where a node keeps its audit segments. */
export function auditDir(dataDir: string): string {
  return join(dataDir, 'audit');
}

/** Opens the node's chained audit log as the config's `audit:` section describes it. */
export function openNodeAuditLog(
  dataDir: string,
  node: string,
  settings: AuditSettings,
  extra: Pick<ChainedLogOptions, 'onWritten'> = {},
): ChainedAuditLog {
  return ChainedAuditLog.open({
    dir: auditDir(dataDir),
    node,
    keys: ensureNodeKeys(dataDir),
    mode: settings.mode,
    recordValues: settings.recordValues,
    maxRecordBytes: settings.maxRecordBytes,
    segmentMaxBytes: settings.segment.maxBytes,
    segmentMaxAgeMs: settings.segment.maxAge,
    ...(settings.retention.maxBytes !== undefined ? { retentionMaxBytes: settings.retention.maxBytes } : {}),
    ...(settings.retention.maxAge !== undefined ? { retentionMaxAgeMs: settings.retention.maxAge } : {}),
    checkpointEvery: settings.checkpoint.every,
    checkpointIntervalMs: settings.checkpoint.interval,
    ...extra,
  });
}
