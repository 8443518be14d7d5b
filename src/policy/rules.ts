/**
 * Compiled rules and the one per-rule check. The indexes in compile.ts only choose which rules to check;
 * whether a rule applies is decided here, the same way for the indexed path, the linear scan and explain.
 */
import { statSync, realpathSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import type { Condition, CelContext } from './cel.js';
import type { Glob } from './globs.js';
import { matchesAny } from './globs.js';
import { matchHostPattern, type HostPattern, type NormalisedHost } from './hosts.js';
import { cidrContains, type Cidr, type NormalisedIp } from './ip.js';
import type { FileAccess, Principal, Surface } from './types.js';

export interface RuleBase {
  id: string;
  surface: Surface;
  effect: 'allow' | 'deny';
  /** Position in the policy, for stable ordering of rule ids in decisions. */
  order: number;
  agents: Set<string> | undefined;
  teams: Set<string> | undefined;
  when: Condition | undefined;
  /** The condition reads the call's arguments, so it cannot be judged when listing. */
  whenReadsArgs: boolean;
  /** Per-decision de-duplication: the decision number that last visited this rule. */
  stamp: number;
}

export interface NetworkRule extends RuleBase {
  surface: 'network';
  hosts: HostPattern[];
  cidrs: Cidr[];
  ports: [number, number][] | undefined;
  schemes: Set<string> | undefined;
  methods: Set<string> | undefined;
  paths: Glob[] | undefined;
  inspect: boolean;
}

export interface FilesystemRule extends RuleBase {
  surface: 'filesystem';
  /** Absolute, normalised patterns, and their compiled whole-path matchers. */
  patterns: string[];
  matchers: RegExp[];
  /** allow: `ro` reads, `rw` reads and writes. deny: `all` or only `write`. */
  access: 'ro' | 'rw' | 'all' | 'write';
}

export interface McpRule extends RuleBase {
  surface: 'mcp';
  servers: Glob[] | undefined;
  tools: Glob[] | undefined;
  prompts: Glob[] | undefined;
  resources: Glob[] | undefined;
  annotations: [string, unknown][] | undefined;
  requireApproval: boolean;
}

export interface CredentialRule extends RuleBase {
  surface: 'credentials';
  /** Grants name one secret; denies may name several (globs). */
  secret: string | undefined;
  secrets: Glob[] | undefined;
  env: string | undefined;
  hosts: HostPattern[] | undefined;
  servers: Glob[] | undefined;
  header: { name: string; template: string } | undefined;
}

export type CompiledRule = NetworkRule | FilesystemRule | McpRule | CredentialRule;

// ---- normalised requests ------------------------------------------------------------------------------

export interface NormalisedPrincipal {
  agent: string | undefined;
  teams: string[];
  raw: Principal;
}

export interface NetworkFacts {
  surface: 'network';
  principal: NormalisedPrincipal;
  host: NormalisedHost;
  port: number;
  scheme: string | undefined;
  method: string | undefined;
  path: string | undefined;
  addresses: NormalisedIp[];
}

export interface FilesystemFacts {
  surface: 'filesystem';
  principal: NormalisedPrincipal;
  /** The path as asked and, when it differs, the path with symlinks resolved. Both must pass. */
  paths: string[];
  access: FileAccess;
}

export interface McpFacts {
  surface: 'mcp';
  principal: NormalisedPrincipal;
  server: string;
  kind: 'tool' | 'prompt' | 'resource' | undefined;
  name: string;
  args: Record<string, unknown>;
  /** Annotations with the MCP spec's defaults applied (an unannotated tool may be destructive). */
  annotations: Record<string, unknown>;
  /** Listing: no call's arguments exist yet (see PolicyEngine.listable). */
  argsUnknown: boolean;
  /** The arguments' types are unknown (see McpRequest.argsUnchecked). */
  argsUnchecked: boolean;
}

export interface CredentialFacts {
  surface: 'credentials';
  principal: NormalisedPrincipal;
  secret: string;
  host: NormalisedHost | undefined;
  server: string | undefined;
}

export type Facts = NetworkFacts | FilesystemFacts | McpFacts | CredentialFacts;

/**
 * MCP tool annotation defaults (spec, ToolAnnotations): readOnlyHint false, destructiveHint true,
 * idempotentHint false, openWorldHint true. A read-only tool is never destructive.
 */
export function effectiveAnnotations(given: Record<string, unknown> | undefined): Record<string, unknown> {
  const out: Record<string, unknown> = { ...given };
  const readOnly = out.readOnlyHint === true;
  out.readOnlyHint = readOnly;
  out.destructiveHint = readOnly ? false : out.destructiveHint === false ? false : true;
  out.idempotentHint = out.idempotentHint === true;
  out.openWorldHint = out.openWorldHint === false ? false : true;
  return out;
}

/** The absolute path and, if a symlink anywhere along it leads elsewhere, the real path. */
export function filesystemPaths(absolute: string, resolveSymlinks: boolean): string[] {
  if (!resolveSymlinks) return [absolute];
  // The file may not exist yet (a write): resolve the deepest existing ancestor and re-attach the rest.
  let existing = absolute;
  const rest: string[] = [];
  for (;;) {
    try {
      statSync(existing);
      break;
    } catch {
      const parent = dirname(existing);
      if (parent === existing) return [absolute];
      rest.unshift(basename(existing));
      existing = parent;
    }
  }
  let real: string;
  try {
    real = join(realpathSync(existing), ...rest);
  } catch {
    return [absolute];
  }
  return real === absolute ? [absolute] : [absolute, real];
}

// ---- the per-rule check ---------------------------------------------------------------------------------

/**
 * A network deny with method or path rules whose host and port match, judged before the HTTP request is
 * visible. It does not deny the connection, but the connection may only proceed if the proxy inspects it.
 */
export const AWAITS_REQUEST = 'it needs the HTTP method and path, which are not visible';

/**
 * Why a rule does not apply, or null when it does. Returns fixed strings so that the linear scan (the
 * benchmark's baseline) pays no more than the indexed path for building messages.
 */
export function mismatch(rule: CompiledRule, facts: Facts, context: () => CelContext): string | null {
  const scope = scopeMismatch(rule, facts.principal);
  if (scope) return scope;
  let reason: string | null;
  switch (rule.surface) {
    case 'network':
      reason = networkMismatch(rule, facts as NetworkFacts);
      break;
    case 'filesystem':
      reason = filesystemMismatch(rule, facts as FilesystemFacts);
      break;
    case 'mcp':
      reason = mcpMismatch(rule, facts as McpFacts);
      break;
    case 'credentials':
      reason = credentialMismatch(rule, facts as CredentialFacts);
      break;
  }
  if (reason) return reason;
  if (rule.when) {
    if (rule.whenReadsArgs && facts.surface === 'mcp' && facts.argsUnknown) {
      // Listing: an allow that may hold for some arguments keeps the entry visible; a deny that depends on
      // the arguments waits for the call, where `decide` judges it with them.
      return rule.effect === 'allow' ? null : 'it depends on the arguments of a call';
    }
    if (rule.whenReadsArgs && facts.surface === 'mcp' && facts.argsUnchecked) {
      // Unchecked arguments may have any type, and a type can turn a condition around (`"true" == true` is
      // false): judge the condition as one that could not be evaluated.
      return rule.effect === 'deny' ? null : 'it reads arguments the tool\'s inputSchema could not check';
    }
    const result = rule.when.evaluate(context());
    if (result instanceof Error) {
      // Fail closed: an unevaluable condition never grants, and always lets a deny stand.
      return rule.effect === 'deny' ? null : 'its condition could not be evaluated';
    }
    if (!result) return 'its condition is false';
  }
  return null;
}

export function scopeMismatch(rule: RuleBase, principal: NormalisedPrincipal): string | null {
  if (!rule.agents && !rule.teams) return null;
  if (rule.agents && principal.agent !== undefined && rule.agents.has(principal.agent)) return null;
  if (rule.teams) for (const team of principal.teams) if (rule.teams.has(team)) return null;
  return 'it is scoped to other agents or teams';
}

function networkTargetMatches(rule: NetworkRule, facts: NetworkFacts): boolean {
  const host = facts.host;
  if (host.kind === 'name') {
    for (const pattern of rule.hosts) if (matchHostPattern(pattern, host.name)) return true;
  } else if (host.kind === 'ip') {
    for (const pattern of rule.hosts) if (pattern.kind === 'all') return true;
    if (ipMatches(rule, host.ip)) return true;
  }
  if (facts.addresses.length > 0 && rule.cidrs.length > 0) {
    if (rule.effect === 'deny') {
      for (const address of facts.addresses) if (ipMatches(rule, address)) return true;
    } else {
      // An allow by CIDR must cover every address the name resolved to.
      let all = true;
      for (const address of facts.addresses) if (!ipMatches(rule, address)) all = false;
      if (all) return true;
    }
  }
  return false;
}

/** Deny rules also see the IPv4 addresses embedded in an IPv6 address; allows only see the address itself. */
function ipMatches(rule: NetworkRule, ip: NormalisedIp): boolean {
  for (const cidr of rule.cidrs) {
    if (cidrContains(cidr, ip.address)) return true;
    if (rule.effect === 'deny') for (const embedded of ip.embedded) if (cidrContains(cidr, embedded)) return true;
  }
  return false;
}

function networkMismatch(rule: NetworkRule, facts: NetworkFacts): string | null {
  if (!networkTargetMatches(rule, facts)) return 'the host matches none of its hosts or CIDRs';
  if (rule.ports) {
    let ok = false;
    for (const [low, high] of rule.ports) if (facts.port >= low && facts.port <= high) ok = true;
    if (!ok) return 'the port is not one of its ports';
  }
  if (rule.schemes && (facts.scheme === undefined || !rule.schemes.has(facts.scheme))) return 'the scheme is not one of its schemes';
  if (rule.methods || rule.paths) {
    // Without a visible HTTP request, method and path rules cannot be judged: an allow holds on condition
    // of inspection (see needsInspection), a deny waits for the request.
    if (facts.method === undefined && facts.path === undefined) return rule.effect === 'allow' ? null : AWAITS_REQUEST;
    if (rule.methods && (facts.method === undefined || !rule.methods.has(facts.method))) return 'the method is not one of its methods';
    if (rule.paths && (facts.path === undefined || !matchesAny(rule.paths, facts.path))) return 'the path matches none of its paths';
  }
  return null;
}

function filesystemMismatch(rule: FilesystemRule, facts: FilesystemFacts): string | null {
  // A filesystem rule is checked against one path at a time; compile.ts passes single-path facts.
  const path = facts.paths[0] ?? '';
  let covered = false;
  for (const matcher of rule.matchers) if (matcher.test(path)) covered = true;
  if (!covered) return 'the path is not under any of its paths';
  if (facts.access === 'write' && rule.access === 'ro') return 'it grants reading only';
  if (facts.access === 'read' && rule.access === 'write') return 'it denies writing only';
  return null;
}

function mcpMismatch(rule: McpRule, facts: McpFacts): string | null {
  if (rule.servers && !matchesAny(rule.servers, facts.server)) return 'the server is not one of its servers';
  if (facts.kind !== undefined) {
    const names = facts.kind === 'tool' ? rule.tools : facts.kind === 'prompt' ? rule.prompts : rule.resources;
    const restricted = rule.tools !== undefined || rule.prompts !== undefined || rule.resources !== undefined;
    if (restricted && (!names || !matchesAny(names, facts.name))) return `the ${facts.kind} is not one it names`;
  }
  if (rule.annotations) {
    if (facts.kind !== 'tool' && facts.kind !== undefined) return 'it matches tool annotations and this is not a tool';
    for (const [key, value] of rule.annotations) if (facts.annotations[key] !== value) return 'the tool annotations differ';
  }
  return null;
}

function credentialMismatch(rule: CredentialRule, facts: CredentialFacts): string | null {
  if (rule.secret !== undefined) {
    if (rule.secret !== facts.secret) return 'it grants another secret';
  } else if (rule.secrets && !matchesAny(rule.secrets, facts.secret)) return 'it names other secrets';
  if (rule.hosts === undefined && rule.servers === undefined) return null;
  if (facts.host === undefined && facts.server === undefined) {
    // "May this principal hold the secret at all?": a grant says yes; a destination-specific deny says
    // nothing until a destination is named.
    return rule.effect === 'allow' ? null : 'it applies only to the destinations it names';
  }
  const host = facts.host;
  if (host && rule.hosts && host.kind === 'name' && rule.hosts.some((pattern) => matchHostPattern(pattern, host.name))) return null;
  if (facts.server !== undefined && rule.servers && matchesAny(rule.servers, facts.server)) return null;
  return 'the destination is not one of its hosts or servers';
}

export function fileAccessLabel(access: FilesystemRule['access']): string {
  return access === 'ro' ? 'read' : access === 'rw' ? 'read and write' : access === 'write' ? 'writing' : 'reading and writing';
}
