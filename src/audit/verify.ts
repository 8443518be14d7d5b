/**
 * `audit verify`: walks every segment once, checks the hash chain and the checkpoint signatures, and
 * pinpoints the first record that was altered, removed or moved. Only the log's own system records are
 * parsed; every other line is checked by its fixed prefix and its hash, which keeps a million records fast.
 */
import { closeSync, openSync, readSync } from 'node:fs';
import { createHash, type KeyObject } from 'node:crypto';
import { join } from 'node:path';
import { keyIdOf, verifyBytes } from '../util/keys.js';
import { CHECKPOINT_ACTION, GENESIS_HASH, RETENTION_ACTION, checkpointMessage, listSegments } from './format.js';

export type ProblemKind = 'altered' | 'missing' | 'reordered' | 'malformed' | 'bad-signature';

export interface VerifyProblem {
  kind: ProblemKind;
  /** The sequence number the problem is about. */
  seq: number;
  segment: string;
  /** 1-based line within the segment. */
  line: number;
  message: string;
}

export interface VerifyResult {
  ok: boolean;
  segments: number;
  records: number;
  firstSeq: number;
  lastSeq: number;
  checkpoints: number;
  lastCheckpointSeq: number;
  /** Records after the last signed checkpoint: chained, but not yet covered by a signature. */
  unsignedTail: number;
  /** Whether checkpoint signatures were checked (a public key was given). */
  signaturesChecked: boolean;
  /** The newest segment ends in an unfinished line, which was not checked. */
  partialTail?: boolean;
  problem?: VerifyProblem;
}

export interface VerifyOptions {
  /** The node's Ed25519 public key; without it (or `publicKeys`) signatures are not checked. */
  publicKey?: KeyObject;
  /** Several trusted keys, for a log that spans a key rotation. */
  publicKeys?: KeyObject[];
}

interface Line {
  segment: string;
  number: number;
  bytes: Buffer;
  /** The newest segment's last bytes without a newline: a record still being written, or torn by a crash. */
  partial?: boolean;
}

const CHUNK = 8 * 1024 * 1024;
const SYSTEM_MARK = Buffer.from('"action":"audit.');

/** Every line of every segment, in order. */
function* lines(dir: string, segments: { name: string }[]): Generator<Line> {
  const newest = segments.at(-1)?.name;
  for (const { name } of segments) {
    const fd = openSync(join(dir, name), 'r');
    try {
      let carry: Buffer = Buffer.alloc(0);
      let number = 0;
      let position = 0;
      for (;;) {
        const chunk = Buffer.allocUnsafe(CHUNK);
        const read = readSync(fd, chunk, 0, CHUNK, position);
        if (read === 0) break;
        position += read;
        const data = carry.length > 0 ? Buffer.concat([carry, chunk.subarray(0, read)]) : chunk.subarray(0, read);
        let start = 0;
        for (;;) {
          const end = data.indexOf(10, start);
          if (end < 0) break;
          number += 1;
          yield { segment: name, number, bytes: data.subarray(start, end) };
          start = end + 1;
        }
        carry = Buffer.from(data.subarray(start));
      }
      if (carry.length > 0) yield { segment: name, number: number + 1, bytes: carry, ...(name === newest ? { partial: true } : {}) };
    } finally {
      closeSync(fd);
    }
  }
}

/** Reads `{"seq":N,"prev":"<64 hex>",` from the start of a line without parsing the rest. */
function prefixOf(bytes: Buffer): { seq: number; prev: string } | undefined {
  // {"seq":  is 7 bytes; digits; ,"prev":"  is 9 bytes; 64 hex; ",
  if (bytes.length < 84 || bytes.toString('latin1', 0, 7) !== '{"seq":') return undefined;
  let index = 7;
  let seq = 0;
  while (index < bytes.length && index < 24) {
    const c = bytes[index] as number;
    if (c < 48 || c > 57) break;
    seq = seq * 10 + (c - 48);
    index += 1;
  }
  if (index === 7 || bytes.toString('latin1', index, index + 9) !== ',"prev":"') return undefined;
  const prev = bytes.toString('latin1', index + 9, index + 73);
  if (!/^[0-9a-f]{64}$/.test(prev) || bytes.toString('latin1', index + 73, index + 75) !== '",') return undefined;
  return { seq, prev };
}

export function verifyLog(dir: string, options: VerifyOptions = {}): VerifyResult {
  const segments = listSegments(dir);
  const result: VerifyResult = {
    ok: true,
    segments: segments.length,
    records: 0,
    firstSeq: 0,
    lastSeq: 0,
    checkpoints: 0,
    lastCheckpointSeq: 0,
    unsignedTail: 0,
    signaturesChecked: options.publicKey !== undefined || (options.publicKeys?.length ?? 0) > 0,
  };
  const trusted = new Map<string, KeyObject>();
  for (const key of [...(options.publicKey ? [options.publicKey] : []), ...(options.publicKeys ?? [])]) trusted.set(keyIdOf(key), key);
  const fail = (problem: VerifyProblem): VerifyResult => {
    result.ok = false;
    result.problem = problem;
    result.unsignedTail = result.lastSeq - result.lastCheckpointSeq;
    return result;
  };

  let expected = 0;
  let prevHash = GENESIS_HASH;
  let previous: Line | undefined;
  let removedThrough = 0;

  for (const line of lines(dir, segments)) {
    if (line.partial) {
      // A writer is mid-record (or crashed mid-record; its next start cuts this off and says so).
      result.partialTail = true;
      break;
    }
    const prefix = prefixOf(line.bytes);
    if (!prefix) {
      return fail({
        kind: 'malformed',
        seq: expected || 1,
        segment: line.segment,
        line: line.number,
        message: `line ${line.number} of ${line.segment} is not an audit record as the log writes them (it was altered or inserted)`,
      });
    }
    const { seq, prev } = prefix;
    if (result.records === 0) {
      result.firstSeq = seq;
      expected = seq;
      if (seq === 1 && prev !== GENESIS_HASH) {
        return fail({ kind: 'altered', seq, segment: line.segment, line: line.number, message: `record 1 (${line.segment} line ${line.number}) does not start the chain: its "prev" was altered` });
      }
      prevHash = prev;
    }
    if (seq !== expected) return fail(misplaced(dir, segments, line, seq, expected));
    if (prev !== prevHash) {
      const where = previous ? `${previous.segment} line ${previous.number}` : 'the previous segment';
      return fail({
        kind: 'altered',
        seq: seq - 1,
        segment: previous?.segment ?? line.segment,
        line: previous?.number ?? line.number,
        message: `record ${seq - 1} (${where}) was altered: its hash does not match the one record ${seq} carries`,
      });
    }
    prevHash = createHash('sha256').update(line.bytes).digest('hex');

    if (line.bytes.indexOf(SYSTEM_MARK) >= 0) {
      let record: { node?: string; action?: string; details?: Record<string, unknown> };
      try {
        record = JSON.parse(line.bytes.toString('utf8')) as typeof record;
      } catch {
        return fail({ kind: 'malformed', seq, segment: line.segment, line: line.number, message: `record ${seq} (${line.segment} line ${line.number}) is not valid JSON` });
      }
      if (record.action === CHECKPOINT_ACTION) {
        const problem = checkCheckpoint(record, seq, prev, line, result.signaturesChecked ? trusted : undefined);
        if (problem) return fail(problem);
        result.checkpoints += 1;
        result.lastCheckpointSeq = seq;
      } else if (record.action === RETENTION_ACTION) {
        const through = Number(record.details?.removedThroughSeq);
        if (Number.isInteger(through)) removedThrough = Math.max(removedThrough, through);
      }
    }
    result.records += 1;
    result.lastSeq = seq;
    expected = seq + 1;
    previous = line;
  }

  if (result.firstSeq > 1 && removedThrough < result.firstSeq - 1) {
    const first = segments[0]!.name;
    return fail({
      kind: 'missing',
      seq: 1,
      segment: first,
      line: 1,
      message: `records 1-${result.firstSeq - 1} are missing before ${first}, and no retention record accounts for them`,
    });
  }
  result.unsignedTail = result.lastSeq - result.lastCheckpointSeq;
  return result;
}

function checkCheckpoint(
  record: { node?: string; details?: Record<string, unknown> },
  seq: number,
  prev: string,
  line: Line,
  trusted: Map<string, KeyObject> | undefined,
): VerifyProblem | undefined {
  const at = `${line.segment} line ${line.number}`;
  const details = record.details ?? {};
  if (details.head !== prev || details.covers !== seq - 1) {
    return { kind: 'altered', seq, segment: line.segment, line: line.number, message: `checkpoint ${seq} (${at}) does not describe the chain it sits in` };
  }
  if (!trusted) return undefined;
  const publicKey = trusted.get(String(details.keyId));
  if (!publicKey) {
    return {
      kind: 'bad-signature',
      seq,
      segment: line.segment,
      line: line.number,
      message: `checkpoint ${seq} (${at}) was signed by key ${String(details.keyId)}, not by a trusted key (${[...trusted.keys()].join(', ')})`,
    };
  }
  const signature = Buffer.from(String(details.signature ?? ''), 'base64');
  if (!verifyBytes(publicKey, checkpointMessage(String(record.node ?? ''), seq, prev), signature)) {
    return { kind: 'bad-signature', seq, segment: line.segment, line: line.number, message: `checkpoint ${seq} (${at}) has an invalid signature` };
  }
  return undefined;
}

/** Tells a removed record from a moved one by looking for the expected sequence number elsewhere. */
function misplaced(dir: string, segments: { name: string }[], line: Line, seq: number, expected: number): VerifyProblem {
  const at = `${line.segment} line ${line.number}`;
  if (seq < expected) {
    return { kind: 'reordered', seq, segment: line.segment, line: line.number, message: `record ${seq} appears out of order at ${at}, where record ${expected} was expected` };
  }
  for (const other of lines(dir, segments)) {
    const prefix = prefixOf(other.bytes);
    if (prefix?.seq === expected) {
      return {
        kind: 'reordered',
        seq: expected,
        segment: other.segment,
        line: other.number,
        message: `record ${expected} is out of order: it was expected at ${at} but found at ${other.segment} line ${other.number}`,
      };
    }
  }
  const range = seq - 1 === expected ? `record ${expected} is` : `records ${expected}-${seq - 1} are`;
  return { kind: 'missing', seq: expected, segment: line.segment, line: line.number, message: `${range} missing before ${at}` };
}
