/**
 * Turns a policy decision into its audit record: the one place that says how each surface's request is
 * named as a resource. Data planes add their own facts (bytes, resolved address) in `details`.
 */
import type { Decision, DecisionRequest } from '../policy/types.js';
import { newCorrelationId, type AuditRecord } from './record.js';

export function resourceOf(request: DecisionRequest): string {
  switch (request.surface) {
    case 'network':
      return `${request.host}:${request.port}${request.method ? ` ${request.method} ${request.path ?? '/'}` : ''}`;
    case 'filesystem':
      return request.path;
    case 'mcp':
      return `${request.server}/${request.tool ?? request.prompt ?? request.resource ?? ''}`;
    case 'credentials':
      return `${request.secret}${request.host ? ` -> ${request.host}` : request.server ? ` -> ${request.server}` : ''}`;
  }
}

export interface RecordContext {
  node: string;
  policy: { version: string; digest: string };
  action?: string;
  session?: string;
  details?: Record<string, unknown>;
}

export function decisionRecord(request: DecisionRequest, decision: Decision, context: RecordContext): AuditRecord {
  const principal: AuditRecord['principal'] = {};
  if (request.agent !== undefined) principal.agent = request.agent;
  if (request.teams !== undefined) principal.teams = request.teams;
  if (request.user !== undefined) principal.user = request.user;
  if (context.session !== undefined) principal.session = context.session;
  const record: AuditRecord = {
    v: 1,
    time: new Date().toISOString(),
    node: context.node,
    principal,
    surface: decision.surface,
    action: context.action ?? 'decide',
    resource: resourceOf(request),
    effect: decision.effect,
    rules: decision.rules,
    reason: decision.reason,
    latencyUs: decision.latencyUs,
    correlationId: request.correlationId ?? newCorrelationId(),
    policy: context.policy,
  };
  const details = { ...surfaceDetails(request), ...context.details };
  if (Object.keys(details).length > 0) record.details = details;
  return record;
}

/** Facts a report needs that the resource string does not carry on its own. */
function surfaceDetails(request: DecisionRequest): Record<string, unknown> {
  switch (request.surface) {
    case 'filesystem':
      return { access: request.access };
    case 'credentials':
      return request.host !== undefined ? { host: request.host } : request.server !== undefined ? { server: request.server } : {};
    default:
      return {};
  }
}
