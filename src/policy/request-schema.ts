/**
 * Decision requests as they arrive from outside (HTTP API, `policy explain`, policy test cases), validated
 * once at the edge. Unknown fields are errors so that a typo (`tool_name`) cannot silently widen a request.
 */
import { z } from 'zod';
import type { DecisionRequest } from './types.js';

const principal = {
  agent: z.string().min(1).optional(),
  teams: z.array(z.string()).optional(),
  user: z.string().optional(),
  claims: z.record(z.string(), z.unknown()).optional(),
  correlationId: z.string().max(128).optional(),
};

export const decisionRequestSchema = z.discriminatedUnion('surface', [
  z.strictObject({
    surface: z.literal('network'),
    ...principal,
    host: z.string().min(1).max(1024),
    port: z.number().int().min(1).max(65535),
    scheme: z.string().optional(),
    method: z.string().optional(),
    path: z.string().max(8192).optional(),
    addresses: z.array(z.string()).max(64).optional(),
  }),
  z.strictObject({
    surface: z.literal('filesystem'),
    ...principal,
    path: z.string().min(1).max(4096),
    access: z.enum(['read', 'write']),
    cwd: z.string().optional(),
  }),
  z.strictObject({
    surface: z.literal('credentials'),
    ...principal,
    secret: z.string().min(1),
    host: z.string().optional(),
    server: z.string().optional(),
  }),
  z.strictObject({
    surface: z.literal('mcp'),
    ...principal,
    server: z.string().min(1),
    tool: z.string().optional(),
    prompt: z.string().optional(),
    resource: z.string().optional(),
    args: z.record(z.string(), z.unknown()).optional(),
    argsUnchecked: z.boolean().optional(),
    annotations: z.record(z.string(), z.unknown()).optional(),
  }),
], { error: (issue) => (issue.code === 'invalid_union' ? 'the request needs "surface": one of network, filesystem, credentials, mcp' : undefined) });

/** Parses a request; the error is one sentence naming the field. */
export function parseDecisionRequest(value: unknown): { request: DecisionRequest } | { error: string } {
  const result = decisionRequestSchema.safeParse(value);
  if (result.success) return { request: result.data as DecisionRequest };
  const issue = result.error.issues[0];
  if (!issue) return { error: 'the request is invalid' };
  const where = issue.path.length ? `"${issue.path.join('.')}": ` : '';
  const message = issue.code === 'unrecognized_keys' ? `unknown field${issue.keys.length > 1 ? 's' : ''} ${issue.keys.map((k) => `"${k}"`).join(', ')}` : issue.message.replace(/^Invalid input: /, '');
  return { error: `${where}${message}` };
}
