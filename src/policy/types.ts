/**
 * The shapes every data plane speaks to the policy engine: requests in, decisions out.
 * These are the JSON shapes of `POST /v1/decide`, `gatehouse policy explain --request` and policy test cases.
 */

export const SURFACES = ['network', 'filesystem', 'credentials', 'mcp'] as const;
export type Surface = (typeof SURFACES)[number];

/** `observed-deny`: a would-be denial let through because the surface is in observe mode. */
export type Effect = 'allow' | 'deny' | 'observed-deny';
export type Mode = 'enforce' | 'observe';

/** Who is asking. Scope in rules (`agents`, `teams`) is matched against this. */
export interface Principal {
  agent?: string;
  teams?: string[];
  user?: string;
  /** Identity claims (for example from an OAuth JWT), visible to CEL conditions as `claims`. */
  claims?: Record<string, unknown>;
}

/** One identity, as the gateway counts and binds what it does: agent, user and teams (in a fixed order). */
export function principalBinding(principal: Principal): unknown[] {
  return [principal.agent ?? null, principal.user ?? null, [...(principal.teams ?? [])].sort()];
}

/** `principalBinding` as one string, for keying maps by identity. */
export function principalKey(principal: Principal): string {
  return JSON.stringify(principalBinding(principal));
}

interface RequestBase extends Principal {
  /** Carried into the audit record so a decision can be joined with the connection or call it served. */
  correlationId?: string;
}

export interface NetworkRequest extends RequestBase {
  surface: 'network';
  /** A host name or an IP literal in any encoding a client might use (`2130706433`, `0x7f.1`, `[::1]`). */
  host: string;
  port: number;
  scheme?: string;
  /** Present only where the HTTP request is visible (plain HTTP, or inspected TLS). */
  method?: string;
  path?: string;
  /** Addresses the host resolved to. Each one is checked: a deny on any address denies. */
  addresses?: string[];
}

export type FileAccess = 'read' | 'write';

export interface FilesystemRequest extends RequestBase {
  surface: 'filesystem';
  path: string;
  access: FileAccess;
  /** Directory that relative request paths are resolved against; defaults to the policy's workspace. */
  cwd?: string;
}

export interface CredentialsRequest extends RequestBase {
  surface: 'credentials';
  secret: string;
  /** The destination the secret would go to: a host (egress) or an MCP server (gateway). */
  host?: string;
  server?: string;
}

export interface McpRequest extends RequestBase {
  surface: 'mcp';
  server: string;
  /** Exactly one of tool, prompt or resource names what is being listed, called, read or got. */
  tool?: string;
  prompt?: string;
  resource?: string;
  args?: Record<string, unknown>;
  /**
   * The arguments could not be checked against the tool's inputSchema (the schema is unusable), so their
   * types are unknown: every condition that reads them is judged as unevaluable (fail closed).
   */
  argsUnchecked?: boolean;
  /** The tool's annotations as the upstream declared them (`destructiveHint`, `readOnlyHint`, ...). */
  annotations?: Record<string, unknown>;
}

export type DecisionRequest = NetworkRequest | FilesystemRequest | CredentialsRequest | McpRequest;

export interface Decision {
  surface: Surface;
  effect: Effect;
  /** Ids of the deciding rules: the matching denies for a deny, the matching allows for an allow. */
  rules: string[];
  reason: string;
  mode: Mode;
  /** Set when an allowing MCP rule demands a person's approval before the call proceeds. */
  requireApproval?: boolean;
  /** Set when an allow depends on method or path rules the connection could not yet show (egress inspects). */
  needsInspection?: boolean;
  /** Wall time the decision took, in microseconds. */
  latencyUs: number;
}

export function isAllowed(decision: Pick<Decision, 'effect'>): boolean {
  return decision.effect !== 'deny';
}

/** One rule's verdict on a request, as `policy explain` shows it. */
export interface RuleTrace {
  id: string;
  effect: 'allow' | 'deny';
  matched: boolean;
  /** Why it matched or which part of the match failed. */
  why: string;
}

export interface Explanation {
  decision: Decision;
  request: DecisionRequest;
  /** The normalised form the matchers saw (punycode host, canonical IP, absolute path). */
  normalised: Record<string, unknown>;
  rules: RuleTrace[];
}
