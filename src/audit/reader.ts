/**
 * Reading the log for people: the last records, following new ones as they land (across rotation), and
 * rendering a record as one table line or as CSV.
 */
import { closeSync, openSync, readSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { listSegments } from './format.js';
import type { AuditRecord } from './record.js';

/** Where the log ends right now: the newest segment and its size. */
export interface LogEnd {
  segment?: string;
  position: number;
}

export function logEnd(dir: string): LogEnd {
  const segment = listSegments(dir).at(-1)?.name;
  return segment ? { segment, position: statSync(join(dir, segment)).size } : { position: 0 };
}

/**
 * The last `count` lines of the log up to `end` (newest last) that `keep` accepts, reading backwards through
 * segments only as far as needed.
 */
export function lastLines(dir: string, count: number, end: LogEnd = logEnd(dir), keep: (line: string) => boolean = () => true): string[] {
  const out: string[] = [];
  const segments = listSegments(dir).filter((s) => end.segment === undefined || s.name <= end.segment);
  for (let i = segments.length - 1; i >= 0 && out.length < count; i -= 1) {
    const name = segments[i]!.name;
    const path = join(dir, name);
    const text = readWhole(path, name === end.segment ? end.position : undefined);
    const lines = text.split('\n');
    // A final piece without a newline is a line still being written (or torn): not yet a record.
    lines.pop();
    for (let j = lines.length - 1; j >= 0 && out.length < count; j -= 1) if (lines[j] && keep(lines[j]!)) out.push(lines[j]!);
  }
  return out.reverse();
}

function readWhole(path: string, upTo?: number): string {
  try {
    const fd = openSync(path, 'r');
    try {
      const size = Math.min(statSync(path).size, upTo ?? Number.MAX_SAFE_INTEGER);
      const buffer = Buffer.alloc(size);
      readSync(fd, buffer, 0, size, 0);
      return buffer.toString('utf8');
    } finally {
      closeSync(fd);
    }
  } catch {
    return '';
  }
}

export interface Follower {
  stop(): void;
}

/**
 * Calls `onLine` for every complete line appended after `from`, in order, following rotation into new
 * segments. Polls every `intervalMs` (a log on a network file system gives no reliable change events).
 */
export function followLines(dir: string, onLine: (line: string) => void, from: LogEnd = logEnd(dir), intervalMs = 200): Follower {
  let segment = from.segment;
  let position = from.position;
  let carry = '';
  const poll = () => {
    for (let guard = 0; guard < 100; guard += 1) {
      if (segment === undefined) {
        segment = listSegments(dir)[0]?.name;
        position = 0;
        if (segment === undefined) return;
      }
      const path = join(dir, segment);
      let size = 0;
      try {
        size = statSync(path).size;
      } catch {
        size = -1;
      }
      if (size > position) {
        const fd = openSync(path, 'r');
        try {
          const buffer = Buffer.alloc(size - position);
          readSync(fd, buffer, 0, buffer.length, position);
          position = size;
          const text = carry + buffer.toString('utf8');
          const lines = text.split('\n');
          carry = lines.pop() ?? '';
          for (const line of lines) if (line) onLine(line);
        } finally {
          closeSync(fd);
        }
      }
      // Move on once a newer segment exists: the current one is closed for good.
      const next = listSegments(dir).find((s) => s.name > (segment as string));
      if (!next) return;
      if (statSync(path).size > position) continue;
      segment = next.name;
      position = 0;
      carry = '';
    }
  };
  const timer = setInterval(poll, intervalMs);
  return { stop: () => clearInterval(timer) };
}

/** One aligned table line: time, effect, surface, agent, action, resource, rules and reason. */
export function formatRecordLine(record: AuditRecord): string {
  const agent = record.principal?.agent ?? '-';
  const rules = record.rules?.length ? ` [${record.rules.join(',')}]` : '';
  return [
    record.time,
    String(record.seq ?? '').padStart(6),
    String(record.effect).padEnd(13),
    String(record.surface).padEnd(11),
    agent.padEnd(12),
    record.action.padEnd(14),
    record.resource,
    `—${rules} ${record.reason}`,
  ].join('  ');
}

export const CSV_COLUMNS = ['seq', 'time', 'node', 'agent', 'surface', 'action', 'resource', 'effect', 'rules', 'reason', 'latencyUs', 'correlationId', 'policyVersion'] as const;

/** RFC 4180 quoting; a cell that a spreadsheet would run as a formula is prefixed with `'`. */
function csvCell(value: unknown): string {
  let text = value === undefined || value === null ? '' : String(value);
  if (/^[=+\-@\t\r]/.test(text)) text = `'${text}`;
  return /[",\r\n]/.test(text) ? `"${text.replace(/"/g, '""')}"` : text;
}

export function csvHeader(): string {
  return CSV_COLUMNS.join(',');
}

export function csvRow(record: AuditRecord): string {
  const values: Record<(typeof CSV_COLUMNS)[number], unknown> = {
    seq: record.seq,
    time: record.time,
    node: record.node,
    agent: record.principal?.agent,
    surface: record.surface,
    action: record.action,
    resource: record.resource,
    effect: record.effect,
    rules: (record.rules ?? []).join(' '),
    reason: record.reason,
    latencyUs: record.latencyUs,
    correlationId: record.correlationId,
    policyVersion: record.policy?.version,
  };
  return CSV_COLUMNS.map((column) => csvCell(values[column])).join(',');
}

/** "7d", "12h", "30m", "45s" before `now`, or an ISO-8601 date/time; undefined when neither. */
export function parseTimeBound(value: string, now = Date.now()): string | undefined {
  const relative = /^(\d+)(s|m|h|d|w)$/.exec(value.trim());
  if (relative) {
    const unit = { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000, w: 604_800_000 }[relative[2] as 's'];
    return new Date(now - Number(relative[1]) * unit).toISOString();
  }
  if (!/^\d{4}-\d{2}-\d{2}/.test(value)) return undefined;
  const parsed = Date.parse(value);
  return Number.isNaN(parsed) ? undefined : new Date(parsed).toISOString();
}
