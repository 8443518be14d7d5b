/**
 * A sink's own on-disk queue: records waiting for a receiver, delivered in order.
 *
 * Files `spool-<n>.jsonl` hold record lines; `cursor.json` says how far delivery got. Appends never wait on
 * the network. The spool is bounded: past `maxBytes` the oldest whole files are dropped and counted, so a
 * receiver that never returns cannot fill the disk the audit log itself needs.
 */
import { closeSync, existsSync, ftruncateSync, openSync, readdirSync, readSync, renameSync, statSync, unlinkSync, writeFileSync, writeSync, readFileSync, constants } from 'node:fs';
import { join } from 'node:path';
import { ensurePrivateDir } from '../util/paths.js';
import { parsePrefix } from './format.js';

const FILE = /^spool-(\d{12})\.jsonl$/;
const FILE_MAX_BYTES = 1024 * 1024;

function fileName(n: number): string {
  return `spool-${String(n).padStart(12, '0')}.jsonl`;
}

interface Cursor {
  file: number;
  offset: number;
  /** Sequence number of the last record delivered. */
  deliveredSeq: number;
}

export interface SpoolBatch {
  lines: string[];
  /** Where delivery stands once this batch is confirmed. */
  next: Cursor;
}

export class Spool {
  private files: { n: number; size: number }[] = [];
  private cursor: Cursor;
  private fd = -1;
  /** Sequence number of the newest record the spool has taken in. */
  lastSeq: number;
  dropped = 0;
  /** True when the spool has never held anything (no files, no cursor). */
  readonly fresh: boolean;

  constructor(
    readonly dir: string,
    readonly maxBytes: number,
  ) {
    ensurePrivateDir(dir);
    for (const name of readdirSync(dir)) {
      const match = FILE.exec(name);
      if (match) this.files.push({ n: Number(match[1]), size: statSync(join(dir, name)).size });
    }
    this.files.sort((a, b) => a.n - b.n);
    this.fresh = this.files.length === 0 && !existsSync(join(dir, 'cursor.json'));
    this.cursor = this.readCursor();
    this.lastSeq = this.cursor.deliveredSeq;
    const newest = this.files.at(-1);
    if (newest) {
      const text = readFileSync(join(dir, fileName(newest.n)), 'utf8');
      // A line cut short by a crash is dropped; the backfill from the audit log puts the record back.
      const end = text.lastIndexOf('\n') + 1;
      if (end < text.length) {
        writeFileSync(join(dir, fileName(newest.n)), text.slice(0, end));
        newest.size = Buffer.byteLength(text.slice(0, end));
      }
      const lines = text.slice(0, end).split('\n');
      const last = lines.at(-2);
      const prefix = last ? parsePrefix(last) : undefined;
      if (prefix) this.lastSeq = Math.max(this.lastSeq, prefix.seq);
    }
  }

  private readCursor(): Cursor {
    try {
      const value = JSON.parse(readFileSync(join(this.dir, 'cursor.json'), 'utf8')) as Cursor;
      if (Number.isInteger(value.file) && Number.isInteger(value.offset) && Number.isInteger(value.deliveredSeq)) return value;
    } catch {
      // No cursor yet: start at the oldest file.
    }
    return { file: this.files[0]?.n ?? 0, offset: 0, deliveredSeq: 0 };
  }

  /** Makes a fresh spool begin after record `seq`: history before it is not sent. */
  startAt(seq: number): void {
    this.lastSeq = seq;
    this.saveCursor({ ...this.cursor, deliveredSeq: seq });
  }

  /** Bytes waiting for delivery. */
  get pendingBytes(): number {
    let total = 0;
    for (const file of this.files) {
      if (file.n < this.cursor.file) continue;
      total += file.n === this.cursor.file ? Math.max(0, file.size - this.cursor.offset) : file.size;
    }
    return total;
  }

  get deliveredSeq(): number {
    return this.cursor.deliveredSeq;
  }

  /** Takes in record lines (already on disk in the audit log). Never waits on the receiver. */
  append(lines: readonly { seq: number; line: string }[]): void {
    if (lines.length === 0) return;
    let current = this.files.at(-1);
    if (!current || current.size >= FILE_MAX_BYTES || this.fd < 0) {
      if (!current || current.size >= FILE_MAX_BYTES) {
        current = { n: (current?.n ?? this.cursor.file - 1) + 1, size: 0 };
        if (current.n < this.cursor.file) current.n = this.cursor.file;
        this.files.push(current);
      }
      if (this.fd >= 0) closeSync(this.fd);
      this.fd = openSync(join(this.dir, fileName(current.n)), constants.O_WRONLY | constants.O_APPEND | constants.O_CREAT, 0o600);
    }
    let text = '';
    for (const { line } of lines) text += line + '\n';
    const buffer = Buffer.from(text);
    let written = 0;
    try {
      while (written < buffer.length) written += writeSync(this.fd, buffer, written, buffer.length - written);
    } catch (error) {
      // Cut off a partial line so the next append starts clean.
      if (written > 0) ftruncateSync(this.fd, current.size);
      throw error;
    }
    current.size += buffer.length;
    this.lastSeq = lines[lines.length - 1]!.seq;
    this.enforceBound();
  }

  /** Drops the oldest files while the spool is over its bound; the newest file always stays. */
  private enforceBound(): void {
    while (this.files.length > 1 && this.pendingBytes > this.maxBytes) {
      const oldest = this.files.shift()!;
      const path = join(this.dir, fileName(oldest.n));
      let text = '';
      try {
        text = readFileSync(path, 'utf8');
      } catch {
        // Already gone.
      }
      const from = oldest.n === this.cursor.file ? this.cursor.offset : 0;
      if (oldest.n >= this.cursor.file) this.dropped += countLines(text, from);
      unlinkQuietly(path);
      if (this.cursor.file <= oldest.n) this.saveCursor({ ...this.cursor, file: this.files[0]!.n, offset: 0 });
    }
  }

  /** Up to `maxRecords` lines from the cursor, in order. */
  read(maxRecords: number): SpoolBatch {
    const lines: string[] = [];
    let { file, offset } = this.cursor;
    let deliveredSeq = this.cursor.deliveredSeq;
    for (const entry of this.files) {
      if (entry.n < file) continue;
      if (entry.n > file) {
        file = entry.n;
        offset = 0;
      }
      if (offset >= entry.size) continue;
      const fd = openSync(join(this.dir, fileName(entry.n)), 'r');
      try {
        const buffer = Buffer.alloc(Math.min(entry.size - offset, 4 * 1024 * 1024));
        readSync(fd, buffer, 0, buffer.length, offset);
        let start = 0;
        while (lines.length < maxRecords) {
          const end = buffer.indexOf(10, start);
          if (end < 0) break;
          const line = buffer.toString('utf8', start, end);
          lines.push(line);
          deliveredSeq = parsePrefix(line)?.seq ?? deliveredSeq;
          start = end + 1;
        }
        offset += start;
      } finally {
        closeSync(fd);
      }
      if (lines.length >= maxRecords) break;
    }
    return { lines, next: { file, offset, deliveredSeq } };
  }

  /** Confirms delivery up to `next`: moves the cursor and removes files that are fully delivered. */
  commit(next: Cursor): void {
    this.saveCursor(next);
    while (this.files.length > 1 && this.files[0]!.n < next.file) {
      const gone = this.files.shift()!;
      unlinkQuietly(join(this.dir, fileName(gone.n)));
    }
  }

  private saveCursor(cursor: Cursor): void {
    this.cursor = cursor;
    const path = join(this.dir, 'cursor.json');
    writeFileSync(`${path}.tmp`, JSON.stringify(cursor), { mode: 0o600 });
    renameSync(`${path}.tmp`, path);
  }

  close(): void {
    if (this.fd >= 0) closeSync(this.fd);
    this.fd = -1;
  }
}

function countLines(text: string, from: number): number {
  let count = 0;
  for (let i = text.indexOf('\n', from); i >= 0; i = text.indexOf('\n', i + 1)) count += 1;
  return count;
}

function unlinkQuietly(path: string): void {
  try {
    unlinkSync(path);
  } catch {
    // Already gone.
  }
}
