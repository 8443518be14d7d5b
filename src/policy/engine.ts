/**
 * The policy engine's public face. Every data plane holds a `PolicyEngine` and asks it; none of them reads
 * rules directly. A node swaps the whole engine atomically on reload, so a data plane should read
 * `holder.current` per connection or call rather than caching the engine.
 */
import type { DlpSettings, PolicyDocument } from '../config/policy-schema.js';
import type { Decision, DecisionRequest, Explanation, McpRequest, Mode, Principal, Surface } from './types.js';

/** A secret this principal may use, and where the real value may go. */
export interface CredentialGrant {
  ruleId: string;
  secret: string;
  /** Environment variable that carries the placeholder, if any. */
  env?: string;
  /** Normalised host patterns (`api.github.com`, `*.example.com`, `**.example.com`). */
  hosts: string[];
  servers: string[];
  /** Header template such as "Authorization: Bearer {secret}". */
  header?: { name: string; template: string };
}

/** What a sandbox should mount for a principal: absolute, `~`-expanded literal prefixes. */
export interface FilesystemView {
  /** Paths readable (ro) or writable (rw), from allow rules. Glob rules are left out (they cannot be mounted). */
  allow: { path: string; access: 'ro' | 'rw'; ruleId: string }[];
  /** Paths denied: reads and writes (`all`) or only writes (`write`). Masked by the sandbox. */
  deny: { path: string; access: 'all' | 'write'; ruleId: string }[];
  /**
   * Rules a mount cannot express exactly: globs (`**` and `*.pem` patterns) and conditions. Allows among them are left out of
   * `allow` (fail closed); denies with a literal path are still in `deny`. `prefix` is the pattern's
   * longest literal leading directory, for a sandbox that chooses to mask it whole.
   */
  unmountable: { pattern: string; ruleId: string; effect: 'allow' | 'deny'; prefix: string }[];
}

export interface PolicyEngine {
  /** A label for this policy: a bundle's version, or `local-<digest prefix>` for a config file. */
  readonly version: string;
  /** `sha256:<hex>` over the canonical JSON of the policy document. */
  readonly digest: string;
  readonly document: PolicyDocument;
  readonly dlp: DlpSettings;
  /** Total number of rules across surfaces. */
  readonly ruleCount: number;

  decide(request: DecisionRequest): Decision;
  /**
   * Whether an MCP tool, prompt or resource may appear in a list, before any call's arguments exist. Rules
   * whose condition reads `args` are judged per call: an allow among them keeps the entry listed, a deny
   * among them waits for the call. Every other rule applies exactly as in `decide`, which still authorises
   * each call with its real arguments.
   */
  listable(request: McpRequest): Decision;
  /** The same decision, plus every rule's verdict and the normalised request. Slower; for people. */
  explain(request: DecisionRequest): Explanation;
  mode(surface: Surface): Mode;
  /** Credential grants that apply to a principal (scope and node labels already applied). */
  grants(principal: Principal): CredentialGrant[];
  filesystemView(principal: Principal): FilesystemView;
  /**
   * Whether some allow rule by IP or CIDR could admit this principal on this port. When none could, a name
   * that no rule allows is denied without resolving it: a DNS query is itself a way to leak data.
   */
  mayAllowByAddress(principal: Principal, port: number): boolean;
  /** Whether a network rule asks for TLS inspection of this host for this principal. */
  inspects(host: string, principal: Principal): boolean;
}

/** Holds the active engine; reload replaces `current` in one assignment. */
export interface PolicyHolder {
  readonly current: PolicyEngine;
}
