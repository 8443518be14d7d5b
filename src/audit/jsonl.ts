/**
 * The simplest durable audit log: one JSON object per line in `<dataDir>/audit/audit.jsonl`.
 * Appends are serialised through one stream; `close` waits for everything queued.
 */
import { createWriteStream, mkdirSync, type WriteStream } from 'node:fs';
import { dirname } from 'node:path';
import type { AuditLog, AuditRecord } from './record.js';

export class JsonlAuditLog implements AuditLog {
  private readonly stream: WriteStream;
  private failure: Error | undefined;

  constructor(readonly path: string) {
    mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
    this.stream = createWriteStream(path, { flags: 'a', mode: 0o600 });
    this.stream.on('error', (error) => {
      this.failure = error;
    });
  }

  append(record: AuditRecord): Promise<void> {
    // Fail closed: once the log cannot be written, nothing that depends on an audit record may proceed.
    if (this.failure) return Promise.reject(this.failure);
    return new Promise((resolve, reject) => {
      this.stream.write(JSON.stringify(record) + '\n', (error) => (error ? reject(error) : resolve()));
    });
  }

  close(): Promise<void> {
    return new Promise((resolve) => this.stream.end(() => resolve()));
  }
}

/** Collects records in memory; for embedding and for tests that assert what was recorded. */
export class MemoryAuditLog implements AuditLog {
  readonly records: AuditRecord[] = [];
  append(record: AuditRecord): Promise<void> {
    this.records.push(record);
    return Promise.resolve();
  }
  close(): Promise<void> {
    return Promise.resolve();
  }
}
