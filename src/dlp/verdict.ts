/**
 * Turns a scan outcome into what the data plane does, from `policy.dlp`: the action for the surface
 * (block, redact or log) and `onTooLarge` for content over the limit. Fails closed: anything found under
 * `block` is a deny, and oversized content is a deny unless the policy says `allow`.
 */
import type { DlpSettings } from '../config/policy-schema.js';
import type { Finding, ScanOutcome } from './scanner.js';

export type DlpSurface = 'mcp' | 'network';

const SEVERITY_RANK = { low: 1, medium: 2, high: 3 } as const;

export interface DlpVerdict {
  /** `allow`: forward as is. `redact`: forward the redacted content. `deny`: stop it. */
  effect: 'allow' | 'redact' | 'deny';
  /** The configured action that applied (`log` forwards and records). */
  action: 'block' | 'redact' | 'log' | 'none' | 'too_large';
  reason: string;
  findings: Finding[];
}

/**
 * Redact-mode callers redact every finding (`redactJson(value, verdict.findings)`), including those below
 * `minSeverity`: removing a low-severity secret costs nothing.
 */
export function dlpVerdict(outcome: ScanOutcome, settings: DlpSettings, surface: DlpSurface): DlpVerdict {
  if (outcome.status === 'too_large') {
    const allowed = settings.onTooLarge === 'allow';
    return {
      effect: allowed ? 'allow' : 'deny',
      action: 'too_large',
      reason: `content of ${outcome.size} bytes is over policy.dlp.maxBytes (${settings.maxBytes}) and was not scanned; onTooLarge is ${settings.onTooLarge}`,
      findings: [],
    };
  }
  if (outcome.status === 'clean') return { effect: 'allow', action: 'none', reason: 'no secrets found', findings: [] };
  const minimum = SEVERITY_RANK[settings.minSeverity ?? 'medium'];
  const acted = outcome.findings.filter((f) => SEVERITY_RANK[f.severity] >= minimum);
  if (acted.length === 0) {
    return { effect: 'allow', action: 'log', reason: `logged: ${summarize(outcome.findings)} below policy.dlp.minSeverity`, findings: outcome.findings };
  }
  const action = settings.surfaces?.[surface] ?? settings.action;
  const summary = summarize(outcome.findings);
  if (action === 'block') return { effect: 'deny', action, reason: `blocked: ${summary}`, findings: outcome.findings };
  if (action === 'redact') return { effect: 'redact', action, reason: `redacted: ${summary}`, findings: outcome.findings };
  return { effect: 'allow', action, reason: `logged: ${summary}`, findings: outcome.findings };
}

function summarize(findings: readonly Finding[]): string {
  const ids = [...new Set(findings.map((f) => f.secretName ? `${f.ruleId} (${f.secretName})` : f.ruleId))];
  return `${findings.length} secret${findings.length === 1 ? '' : 's'} found (${ids.slice(0, 5).join(', ')}${ids.length > 5 ? ', ...' : ''})`;
}

/** Findings as they may go into an audit record's `details`: no spans into content, no values. */
export function findingsForAudit(findings: readonly Finding[]): Record<string, unknown>[] {
  return findings.map((f) => ({
    rule: f.ruleId,
    severity: f.severity,
    confidence: f.confidence,
    preview: f.preview,
    ...(f.path !== undefined ? { path: f.path } : {}),
    ...(f.percentEncoded ? { percentEncoded: true } : {}),
    ...(f.secretName !== undefined ? { secret: f.secretName, encoding: f.encoding } : {}),
    span: [f.start, f.end],
  }));
}
