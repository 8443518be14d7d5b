/**
 * The node's chained audit log as the config's `audit:` section describes it. Kept apart from index.ts so
 * that `gatehouse run` can open the log without loading the sinks and the index (start-up cost).
 */
import type { AuditSettings } from '../config/schema.js';
import { ensureNodeKeys } from '../util/keys.js';
import { ChainedAuditLog, type ChainedLogOptions } from './chain.js';
import { auditDir } from './format.js';

/** Opens the node's chained audit log as the config's `audit:` section describes it. */
export function openNodeAuditLog(
  dataDir: string,
  node: string,
  settings: AuditSettings,
  extra: Pick<ChainedLogOptions, 'onWritten' | 'redactValues'> = {},
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
