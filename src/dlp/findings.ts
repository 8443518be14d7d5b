/**
 * What a scan reports, and the operations on findings that the scanner and streams share: resolving
 * overlaps, redacting spans, and reading bytes as latin1 text (one character per byte, so any binary input
 * scans, and spans are byte offsets).
 */
import type { KnownEncoding } from './known.js';
import { RULES, type Confidence, type Severity } from './rules.js';

export interface Finding {
  ruleId: string;
  title: string;
  severity: Severity;
  confidence: Confidence;
  /**
   * The secret's span, `[start, end)`: UTF-16 code units for string input, bytes for a Buffer or a stream,
   * and within the string at `path` for JSON.
   */
  start: number;
  end: number;
  /** Safe to log: the format's public prefix (if any), masking, and the length. Never the secret. */
  preview: string;
  /** JSON pointer (RFC 6901) to the string holding the secret, for `scanJson`. */
  path?: string;
  /** The secret was hidden with invisible characters (zero-width spaces, soft hyphens) inside it. */
  hidden?: boolean;
  /** For `scanJson`: the secret is in an object key, not a value. */
  inKey?: boolean;
  /** For `scanJson`: the secret showed only once the string was percent-decoded (its span is the escapes). */
  percentEncoded?: boolean;
  /** For known secrets: the secret's name (`github-token`, `env:OPENAI_API_KEY`) and how it was encoded. */
  secretName?: string;
  encoding?: KnownEncoding;
}

export type ScanStatus = 'clean' | 'found' | 'too_large';

export interface ScanOutcome {
  status: ScanStatus;
  findings: Finding[];
  /** Characters (strings), bytes (Buffers), or for JSON the string characters plus one per value. */
  size: number;
}

export const KNOWN_SECRET_RULE_ID = 'known-secret';

/** Where a finding's whole match starts, when that is before the secret (streams hold back from there). */
export const matchStarts = new WeakMap<Finding, number>();

const SEVERITY_ORDER: Record<Severity, number> = { high: 3, medium: 2, low: 1 };
const CONFIDENCE_ORDER: Record<Confidence, number> = { high: 3, medium: 2, low: 1 };

/**
 * Where findings overlap, keeps the strongest: known secrets, then higher severity, higher confidence, and
 * the more specific rule (earlier in the table; the generic rules come last).
 */
export function resolveOverlaps(findings: Finding[]): Finding[] {
  if (findings.length < 2) return findings;
  // One sweep in start order (n log n even for adversarial input with very many findings): a finding that
  // overlaps the last one kept replaces it if it is stronger.
  const sorted = findings.slice().sort((a, b) => a.start - b.start || b.end - a.end);
  const kept: Finding[] = [];
  for (const finding of sorted) {
    const last = kept[kept.length - 1];
    if (last !== undefined && finding.start < last.end) {
      if (score(finding) > score(last)) kept[kept.length - 1] = finding;
      continue;
    }
    kept.push(finding);
  }
  return kept;
}

const RULE_ORDER = new Map(RULES.map((rule, index) => [rule.id, index]));

function score(finding: Finding): number {
  const known = finding.ruleId === KNOWN_SECRET_RULE_ID ? 1 : 0;
  return (
    known * 1_000_000 +
    SEVERITY_ORDER[finding.severity] * 100_000 +
    CONFIDENCE_ORDER[finding.confidence] * 10_000 +
    (1000 - (RULE_ORDER.get(finding.ruleId) ?? 999))
  );
}

/** Replaces each finding's span with `[REDACTED:<rule id>]` (no quotes or backslashes: JSON strings stay valid). */
export function applyRedactions(text: string, findings: readonly Finding[]): string {
  if (findings.length === 0) return text;
  const sorted = [...findings].sort((a, b) => a.start - b.start);
  let out = '';
  let at = 0;
  for (const finding of sorted) {
    if (finding.start < at) {
      // Overlapping the one before: already under its marker, up to where this one ends.
      at = Math.max(at, finding.end);
      continue;
    }
    out += text.slice(at, finding.start) + `[REDACTED:${finding.ruleId}]`;
    at = finding.end;
  }
  return out + text.slice(at);
}

export function latin1(bytes: Uint8Array): string {
  return (Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length)).toString('latin1');
}

