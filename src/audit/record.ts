/**
 * The one audit record format. Every decision, launch, reload and connection becomes one of these.
 * `auditRecordJsonSchema` is the published contract for SIEM pipelines; keep the two in step.
 */
import { randomFillSync } from 'node:crypto';
import type { Effect, Principal, Surface } from '../policy/types.js';

export type RecordSurface = Surface | 'system';
/** `info` and `error` are for events that are not decisions (reloads, launches, exits). */
export type RecordEffect = Effect | 'info' | 'error';

/** The action of a flood summary record (egress/flood.ts): refusals counted, not recorded one by one. */
export const SUPPRESSED_REFUSALS = 'refusals.suppressed';

export interface AuditRecord {
  /** Record format version. */
  v: 1;
  /** ISO-8601 time with milliseconds, UTC. */
  time: string;
  node: string;
  principal: Principal & { session?: string };
  surface: RecordSurface;
  /** What was attempted: `decide`, `connect`, `request`, `tools/call`, `launch`, `policy.reload`, ... */
  action: string;
  /** What it was attempted on: `api.github.com:443`, `/home/dev/.ssh/id_rsa`, `github/delete_repo`. */
  resource: string;
  effect: RecordEffect;
  /** Ids of the rules that made the decision. */
  rules: string[];
  reason: string;
  latencyUs: number;
  correlationId: string;
  /** The policy that decided: version label and content digest. */
  policy?: { version: string; digest: string };
  /** Surface-specific facts: resolved address, bytes, argument digest, redacted findings. Never secrets. */
  details?: Record<string, unknown>;
  /** Hash chain, set by the audit log when it appends (sequence number and previous record's SHA-256). */
  seq?: number;
  prev?: string;
}

export interface AppendOptions {
  /**
   * Nobody waits for this record, so the log may hold it briefly to write it together with others (the chained
   * log's batch mode, see chain.ts). The promise still settles only once the record is written.
   */
  deferred?: boolean;
}

/** An append-only audit log. `append` resolves once the record is as durable as the configured mode demands. */
export interface AuditLog {
  append(record: AuditRecord, options?: AppendOptions): Promise<void>;
  close(): Promise<void>;
}

let isoMs = Number.NaN;
let isoText = '';

/** The time now as `time` takes it (ISO 8601, UTC), formatted once per millisecond however many records share it. */
export function isoNow(): string {
  const now = Date.now();
  if (now !== isoMs) {
    isoMs = now;
    isoText = new Date(now).toISOString();
  }
  return isoText;
}

/** Random bytes drawn in bulk, one call into the CSPRNG per 256 ids: ids name records, nothing relies on their secrecy. */
const idPool = Buffer.alloc(12 * 256);
let idPoolOffset = idPool.length;

export function newCorrelationId(): string {
  if (idPoolOffset === idPool.length) {
    randomFillSync(idPool);
    idPoolOffset = 0;
  }
  idPoolOffset += 12;
  return idPool.toString('base64url', idPoolOffset - 12, idPoolOffset);
}

/** The JSON Schema of one audit record (draft 2020-12). */
export const auditRecordJsonSchema = {
  $schema: 'https://json-schema.org/draft/2020-12/schema',
  $id: 'https://gatehouse.dev/schema/audit-record.json',
  title: 'Gatehouse audit record',
  type: 'object',
  additionalProperties: false,
  required: ['v', 'time', 'node', 'principal', 'surface', 'action', 'resource', 'effect', 'rules', 'reason', 'latencyUs', 'correlationId'],
  properties: {
    v: { const: 1 },
    time: { type: 'string', format: 'date-time' },
    node: { type: 'string' },
    principal: {
      type: 'object',
      properties: {
        agent: { type: 'string' },
        teams: { type: 'array', items: { type: 'string' } },
        user: { type: 'string' },
        session: { type: 'string' },
        claims: { type: 'object' },
      },
    },
    surface: { enum: ['network', 'filesystem', 'credentials', 'mcp', 'system'] },
    action: { type: 'string' },
    resource: { type: 'string' },
    effect: { enum: ['allow', 'deny', 'observed-deny', 'info', 'error'] },
    rules: { type: 'array', items: { type: 'string' } },
    reason: { type: 'string' },
    latencyUs: { type: 'number', minimum: 0 },
    correlationId: { type: 'string' },
    policy: {
      type: 'object',
      required: ['version', 'digest'],
      properties: { version: { type: 'string' }, digest: { type: 'string' } },
    },
    details: { type: 'object' },
    seq: { type: 'integer', minimum: 0 },
    prev: { type: 'string' },
  },
} as const;
