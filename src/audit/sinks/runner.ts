/**
 * Runs one sink: records go into its spool as soon as the audit log has them, and a pump delivers the spool
 * in order, one batch at a time, retrying with exponential backoff (with jitter) while the receiver is away.
 * Enforcement never waits on any of this: `offer` only appends to the spool file.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { AuditSinkSettings } from '../../config/schema.js';
import { errorMessage } from '../../util/errors.js';
import { listSegments, parsePrefix } from '../format.js';
import { Spool } from '../spool.js';
import { SplunkHecSink, WebhookSink } from './http.js';
import { OtlpLogSink } from './otlp.js';
import { SyslogSink } from './syslog.js';
import type { Sink } from './types.js';

export interface SinkStatus {
  name: string;
  type: string;
  /** Bytes spooled and not yet delivered. */
  spoolBytes: number;
  /** Records the log has that the receiver has not acknowledged. */
  lagRecords: number;
  delivered: number;
  /** Records dropped because the spool hit its bound. */
  dropped: number;
  lastError?: string;
}

export interface RunnerOptions {
  batchSize?: number;
  minBackoffMs?: number;
  maxBackoffMs?: number;
}

export class SinkRunner {
  private busy = false;
  private retryTimer: NodeJS.Timeout | undefined;
  private backoffMs: number;
  private closed = false;
  private idleWaiters: (() => void)[] = [];
  delivered = 0;
  lastError: string | undefined;
  private readonly batchSize: number;
  private readonly minBackoffMs: number;
  private readonly maxBackoffMs: number;

  constructor(
    readonly sink: Sink,
    readonly type: string,
    readonly spool: Spool,
    options: RunnerOptions = {},
  ) {
    this.batchSize = options.batchSize ?? 500;
    this.minBackoffMs = options.minBackoffMs ?? 250;
    this.maxBackoffMs = options.maxBackoffMs ?? 30_000;
    this.backoffMs = this.minBackoffMs;
  }

  offer(records: readonly { seq: number; line: string }[]): void {
    if (this.closed) return;
    try {
      this.spool.append(records);
    } catch (error) {
      // The spool's disk failed: these records are lost for this sink (they stay in the audit log). Say so.
      this.spool.dropped += records.length;
      this.lastError = `cannot spool: ${errorMessage(error)}`;
      return;
    }
    this.kick();
  }

  /** Starts delivery now unless a batch is in flight or a retry is waiting. */
  kick(): void {
    if (this.busy || this.retryTimer || this.closed) return;
    void this.pump();
  }

  private async pump(): Promise<void> {
    this.busy = true;
    try {
      while (!this.closed) {
        const batch = this.spool.read(this.batchSize);
        if (batch.lines.length === 0) break;
        try {
          await this.sink.send(batch.lines);
        } catch (error) {
          this.lastError = errorMessage(error);
          const delay = this.backoffMs * (0.5 + Math.random() / 2);
          this.backoffMs = Math.min(this.backoffMs * 2, this.maxBackoffMs);
          this.retryTimer = setTimeout(() => {
            this.retryTimer = undefined;
            this.kick();
          }, delay);
          this.retryTimer.unref();
          return;
        }
        this.spool.commit(batch.next);
        this.delivered += batch.lines.length;
        this.backoffMs = this.minBackoffMs;
        this.lastError = undefined;
      }
    } finally {
      this.busy = false;
      if (this.spool.pendingBytes === 0 || this.closed) for (const resolve of this.idleWaiters.splice(0)) resolve();
    }
  }

  status(): SinkStatus {
    return {
      name: this.sink.name,
      type: this.type,
      spoolBytes: this.spool.pendingBytes,
      lagRecords: Math.max(0, this.spool.lastSeq - this.spool.deliveredSeq),
      delivered: this.delivered,
      dropped: this.spool.dropped,
      ...(this.lastError ? { lastError: this.lastError } : {}),
    };
  }

  /** Resolves once everything spooled is delivered, or after `timeoutMs`; true when delivered. */
  async drain(timeoutMs: number): Promise<boolean> {
    if (this.spool.pendingBytes === 0 && !this.busy) return true;
    if (this.retryTimer) {
      clearTimeout(this.retryTimer);
      this.retryTimer = undefined;
    }
    const idle = new Promise<void>((resolve) => this.idleWaiters.push(resolve));
    this.kick();
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<void>((resolve) => (timer = setTimeout(resolve, timeoutMs)));
    await Promise.race([idle, timeout]);
    clearTimeout(timer);
    return this.spool.pendingBytes === 0;
  }

  async close(): Promise<void> {
    this.closed = true;
    clearTimeout(this.retryTimer);
    for (const resolve of this.idleWaiters.splice(0)) resolve();
    await this.sink.close().catch(() => undefined);
    this.spool.close();
  }
}

export function createSink(settings: AuditSinkSettings, name: string): Sink {
  switch (settings.type) {
    case 'webhook':
      return new WebhookSink(name, settings.url, settings.secret, settings.headers);
    case 'splunk':
      return new SplunkHecSink(name, settings.url, settings.token, { sourcetype: settings.sourcetype, ...(settings.index ? { index: settings.index } : {}) });
    case 'otlp':
      return new OtlpLogSink(name, settings.url, settings.headers);
    case 'syslog':
      return new SyslogSink(name, {
        host: settings.host,
        port: settings.port,
        appName: settings.appName,
        facility: settings.facility,
        ...(settings.tls ? { tls: settings.tls } : {}),
      });
  }
}

/**
 * Opens a runner per configured sink, each with its spool in `<auditDir>/spool/<name>`. A spool that is behind
 * the log (the node died between writing a record and spooling it) is refilled from the segments, so a crash
 * loses nothing for the sinks either. A sink seen for the first time starts at the log's current end.
 */
export function openSinkRunners(
  auditDir: string,
  sinks: readonly AuditSinkSettings[],
  defaultSpoolBytes: number,
  headSeq: number,
  options: RunnerOptions = {},
): SinkRunner[] {
  return sinks.map((settings) => {
    const name = settings.name ?? settings.type;
    const spool = new Spool(join(auditDir, 'spool', name), settings.spoolMaxBytes ?? defaultSpoolBytes);
    if (spool.fresh) spool.startAt(headSeq);
    const runner = new SinkRunner(createSink(settings, name), settings.type, spool, options);
    if (spool.lastSeq < headSeq) runner.offer(linesAfter(auditDir, spool.lastSeq, headSeq));
    runner.kick();
    return runner;
  });
}

/** Record lines with from < seq <= to, read from the segments. */
function linesAfter(auditDir: string, from: number, to: number): { seq: number; line: string }[] {
  const out: { seq: number; line: string }[] = [];
  const segments = listSegments(auditDir);
  for (let i = 0; i < segments.length; i += 1) {
    const next = segments[i + 1];
    if (next && next.firstSeq <= from + 1) continue;
    const text = readFileSync(join(auditDir, segments[i]!.name), 'utf8');
    for (const line of text.split('\n')) {
      const prefix = line ? parsePrefix(line) : undefined;
      if (prefix && prefix.seq > from && prefix.seq <= to) out.push({ seq: prefix.seq, line });
    }
  }
  return out;
}
