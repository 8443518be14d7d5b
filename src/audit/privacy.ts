/**
 * What an audit record may hold. Argument values and bodies are replaced by a digest and a size unless the
 * config says `audit.recordValues: true`; every record is bounded in size. The log applies both on append,
 * so a data plane that forgets cannot leak values into the trail.
 */
import { hash } from 'node:crypto';
import type { AuditRecord } from './record.js';

/** `details` keys that carry what an agent sent or received rather than facts about it. */
export const VALUE_KEYS: ReadonlySet<string> = new Set([
  'args',
  'arguments',
  'body',
  'requestBody',
  'responseBody',
  'result',
  'headers',
  'values',
]);

export interface OmittedValue {
  omitted: true;
  sha256: string;
  bytes: number;
}

function digestOf(value: unknown): OmittedValue {
  const text = typeof value === 'string' ? value : (JSON.stringify(value) ?? '');
  return { omitted: true, sha256: hash('sha256', text, 'hex'), bytes: Buffer.byteLength(text) };
}

/** Replaces value-bearing keys in `details` (top level) with their digest. Returns the record unchanged if none. */
export function withoutValues(record: AuditRecord): AuditRecord {
  const details = record.details;
  if (!details) return record;
  let changed: Record<string, unknown> | undefined;
  for (const key of Object.keys(details)) {
    if (!VALUE_KEYS.has(key)) continue;
    const value = details[key];
    if (value === undefined || (typeof value === 'object' && value !== null && (value as { omitted?: unknown }).omitted === true)) continue;
    changed ??= { ...details };
    changed[key] = digestOf(value);
  }
  return changed ? { ...record, details: changed } : record;
}

/** Replaces secrets inside a value with redacted previews (the DLP scanner's `redactJson`). */
export type ValueRedactor = (value: unknown) => unknown;

/**
 * Keeps value-bearing keys (audit.recordValues) but passes each through the secret redactor first: values
 * are recorded, secrets inside them are not. A value the redactor cannot handle is digested instead.
 */
export function withRedactedValues(record: AuditRecord, redact: ValueRedactor): AuditRecord {
  const details = record.details;
  if (!details) return record;
  let changed: Record<string, unknown> | undefined;
  for (const key of Object.keys(details)) {
    if (!VALUE_KEYS.has(key) || details[key] === undefined) continue;
    changed ??= { ...details };
    try {
      changed[key] = redact(details[key]);
    } catch {
      changed[key] = digestOf(details[key]);
    }
  }
  return changed ? { ...record, details: changed } : record;
}

const MAX_TEXT = 1024;

function clip(text: string): string {
  return text.length > MAX_TEXT ? `${text.slice(0, MAX_TEXT)}…` : text;
}

/**
 * Keeps a serialised record under `maxBytes`: long text fields are clipped, then `details` is replaced by its
 * digest. What was cut is said in the record (`details.truncated`), never silently dropped.
 */
export function boundRecord(record: AuditRecord, serializedBytes: number, maxBytes: number): AuditRecord {
  if (serializedBytes <= maxBytes) return record;
  const details = record.details === undefined ? undefined : digestOf(record.details);
  return {
    ...record,
    resource: clip(record.resource),
    reason: clip(record.reason),
    action: clip(record.action),
    rules: record.rules.slice(0, 32).map(clip),
    principal: { ...record.principal, ...(record.principal.claims ? { claims: digestOf(record.principal.claims) as unknown as Record<string, unknown> } : {}) },
    details: { truncated: true, originalBytes: serializedBytes, ...(details ? { details } : {}) },
  };
}
