/**
 * audit/: the one record format, the node's chained and durable log, its verifier, the SQLite index behind
 * `audit query`, the sinks that forward records, reports and policy suggestions drawn from the trail, and
 * the Prometheus metrics. Imports only config/, policy/ (types), store/, util/ and dlp/ (to redact secrets
 * in recorded values); knows nothing of the data planes, which reach it only through the `AuditLog` interface.
 */
import { Worker } from 'node:worker_threads';
import type { AuditSettings } from '../config/schema.js';
import { createScanner, secretsFromEnvironment } from '../dlp/index.js';
import type { ChainedAuditLog } from './chain.js';
import { auditDir } from './format.js';
import { openNodeAuditLog } from './node-log.js';
import { AuditMetrics } from './metrics.js';
import type { ValueRedactor } from './privacy.js';
import type { AppendOptions, AuditLog, AuditRecord } from './record.js';
import { openSinkRunners, type RunnerOptions, type SinkRunner, type SinkStatus } from './sinks/runner.js';

export type { AppendOptions, AuditLog, AuditRecord, RecordEffect, RecordSurface } from './record.js';
export { auditRecordJsonSchema, newCorrelationId } from './record.js';
export { MemoryAuditLog } from './jsonl.js';
export { ChainedAuditLog, BATCH_SYNC_MS, type ChainedLogOptions, type DurabilityMode, type WrittenRecord } from './chain.js';
export { verifyLog, type VerifyResult, type VerifyProblem } from './verify.js';
export { AuditMetrics, METRICS_CONTENT_TYPE } from './metrics.js';
export type { SinkStatus } from './sinks/runner.js';
export { auditDir } from './format.js';
export { openNodeAuditLog } from './node-log.js';
export { AuditIndex } from './indexer.js';
export { buildReport, formatReport } from './report.js';
export { suggestPolicy } from './suggest.js';


/**
 * Everything audit a node runs: the chained log, a runner per configured sink, and the metrics. Use it as the
 * `AuditLog` every data plane is given; `metrics.render()` is the body of `GET /metrics`.
 */
export interface NodeAudit extends AuditLog {
  readonly log: ChainedAuditLog;
  readonly metrics: AuditMetrics;
  sinks(): SinkStatus[];
  /** Waits up to `timeoutMs` for every sink to deliver its spool; true when all did. */
  drainSinks(timeoutMs: number): Promise<boolean>;
}

export function openNodeAudit(
  dataDir: string,
  node: string,
  settings: AuditSettings,
  options: {
    metrics?: AuditMetrics;
    runner?: RunnerOptions;
    /** How long close waits for sinks to deliver (default 2000 ms). */
    closeDrainMs?: number;
    /**
     * Redacts secrets in recorded values (audit.recordValues): pass the node's DLP scanner's `redactJson`, which
     * knows the vault's secrets. Without it, a scanner that knows the environment's secrets is used.
     */
    redactValues?: ValueRedactor;
    /** Catch the SQLite index up from a worker thread this often (0: never; `audit query` catches up itself). */
    indexIntervalMs?: number;
  } = {},
): NodeAudit {
  const metrics = options.metrics ?? new AuditMetrics();
  let runners: SinkRunner[] = [];
  let redactValues = options.redactValues;
  if (settings.recordValues && !redactValues) {
    const scanner = createScanner({ knownSecrets: secretsFromEnvironment() });
    redactValues = (value) => scanner.redactJson(value);
  }
  const log = openNodeAuditLog(dataDir, node, settings, {
    ...(redactValues ? { redactValues } : {}),
    onWritten: (records) => {
      for (const runner of runners) runner.offer(records);
    },
  });
  // Opened after the log so a spool that fell behind can be refilled up to the log's head.
  runners = openSinkRunners(auditDir(dataDir), settings.sinks, settings.spool.maxBytes, log.headSeq, options.runner);
  const indexIntervalMs = options.indexIntervalMs ?? 5000;
  const indexer =
    indexIntervalMs > 0
      ? new Worker(new URL('./index-worker.js', import.meta.url), { workerData: { dataDir, auditDir: auditDir(dataDir), intervalMs: indexIntervalMs } })
      : undefined;
  indexer?.unref();
  indexer?.on('error', () => undefined);
  metrics.queueDepth.collect = () => [{ labels: {}, value: log.queueDepth }];
  const statuses = () => runners.map((runner) => runner.status());
  metrics.sinkLag.collect = () => statuses().map((s) => ({ labels: { sink: s.name }, value: s.lagRecords }));
  metrics.sinkSpool.collect = () => statuses().map((s) => ({ labels: { sink: s.name }, value: s.spoolBytes }));
  metrics.sinkDropped.collect = () => statuses().map((s) => ({ labels: { sink: s.name }, value: s.dropped }));
  metrics.sinkUp.collect = () => statuses().map((s) => ({ labels: { sink: s.name }, value: s.lastError ? 0 : 1 }));
  return {
    log,
    metrics,
    async append(record: AuditRecord, options?: AppendOptions): Promise<void> {
      metrics.observeRecord(record);
      try {
        await log.append(record, options);
      } catch (error) {
        metrics.auditWriteFailures.inc();
        throw error;
      }
    },
    sinks: statuses,
    async drainSinks(timeoutMs: number): Promise<boolean> {
      const results = await Promise.all(runners.map((runner) => runner.drain(timeoutMs)));
      return results.every(Boolean);
    },
    async close(): Promise<void> {
      await log.close();
      // Give the receivers a moment to take what the log just wrote; what they do not take stays spooled.
      await Promise.all(runners.map((runner) => runner.drain(options.closeDrainMs ?? 2000)));
      await Promise.all(runners.map((runner) => runner.close()));
      if (indexer) {
        // One last catch-up, then the worker ends; a stuck one is terminated.
        const exited = new Promise<void>((resolve) => indexer.once('exit', () => resolve()));
        indexer.postMessage('stop');
        const timer = setTimeout(() => void indexer.terminate(), 5000);
        await exited;
        clearTimeout(timer);
      }
    },
  };
}
