/**
 * The on-disk form of the chained audit log.
 *
 * A log is a directory of segments, `segment-<first seq, 16 digits>.jsonl`, one record per line. Every line
 * begins `{"seq":N,"prev":"<sha256 hex>",`: `prev` is the SHA-256 of the previous line's bytes (without its
 * newline), so editing, deleting or reordering any record breaks the chain at that point. The very first
 * record carries 64 zeros. Fixing the prefix lets `audit verify` check the chain without parsing every record.
 */
import { hash } from 'node:crypto';
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import type { AuditRecord } from './record.js';

export const GENESIS_HASH = '0'.repeat(64);

/** System actions the log itself writes. */
export const CHECKPOINT_ACTION = 'audit.checkpoint';
export const REPAIR_ACTION = 'audit.repair';
export const RETENTION_ACTION = 'audit.retention';

const SEGMENT_NAME = /^segment-(\d{16})\.jsonl$/;

/** Where a node keeps its audit segments. */
export function auditDir(dataDir: string): string {
  return join(dataDir, 'audit');
}

export function segmentName(firstSeq: number): string {
  return `segment-${String(firstSeq).padStart(16, '0')}.jsonl`;
}

/** The segments in `dir`, oldest first, with the sequence number each starts at. */
export function listSegments(dir: string): { name: string; firstSeq: number }[] {
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return [];
  }
  const segments: { name: string; firstSeq: number }[] = [];
  for (const name of names) {
    const match = SEGMENT_NAME.exec(name);
    if (match) segments.push({ name, firstSeq: Number(match[1]) });
  }
  return segments.sort((a, b) => a.firstSeq - b.firstSeq);
}

/** Serialises a record with its chain fields first. Any `seq`/`prev` the caller set is replaced. */
export function serializeRecord(record: AuditRecord, seq: number, prev: string): string {
  // Most records come without chain fields; copying them only to leave those out costs on every append.
  const body = JSON.stringify('seq' in record || 'prev' in record ? withoutChainFields(record) : record);
  return `{"seq":${seq},"prev":"${prev}",${body.slice(1)}`;
}

function withoutChainFields(record: AuditRecord): Omit<AuditRecord, 'seq' | 'prev'> {
  const { seq: _seq, prev: _prev, ...rest } = record;
  return rest;
}

/**
 * The one-shot `hash` makes no Hash object per line (each one a native handle the garbage collector must
 * finalise): about 40% less time per line, on every append and every line `audit verify` reads.
 */
export function hashLine(line: string | Uint8Array): string {
  return hash('sha256', line, 'hex');
}

const PREFIX = /^\{"seq":(\d{1,16}),"prev":"([0-9a-f]{64})",/;

/** Reads the chain fields from a line's fixed prefix; undefined when the line does not start as the log writes. */
export function parsePrefix(line: string): { seq: number; prev: string } | undefined {
  const match = PREFIX.exec(line.length > 120 ? line.slice(0, 120) : line);
  if (!match) return undefined;
  return { seq: Number(match[1]), prev: match[2] as string };
}

/** What a checkpoint's signature covers: the chain up to (not including) the checkpoint at `seq`. */
export function checkpointMessage(node: string, seq: number, prev: string): Buffer {
  return Buffer.from(`gatehouse.audit.checkpoint.v1\n${node}\n${seq}\n${prev}`, 'utf8');
}
