/**
 * The policy as an admin writes it (`policy:` in gatehouse.yaml, or a signed bundle).
 * Validated once at the edge; compile.ts turns it into indexed matchers.
 */
import { z } from 'zod';
import { checkCondition } from '../policy/cel.js';

const ruleId = z
  .string()
  .regex(/^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$/, 'a rule id: letters, digits, "_", ".", ":" or "-", starting with a letter or digit');

const stringList = z.union([z.string().min(1), z.array(z.string().min(1)).min(1)]).transform((v) => (Array.isArray(v) ? v : [v]));

const portSpec = z.union([
  z.number().int().min(1).max(65535),
  z.string().regex(/^\d{1,5}(-\d{1,5})?$/, 'a port (443) or a port range ("8000-8100")'),
]);

/** A CEL condition, checked here so that a bad one is reported with its file, line and column. */
const condition = z
  .string()
  .min(1)
  .superRefine((source, ctx) => {
    const problem = checkCondition(source);
    if (problem) ctx.addIssue({ code: 'custom', message: problem });
  });

/** Scope and condition, shared by rules on every surface. */
const scope = {
  description: z.string().optional(),
  agents: stringList.optional(),
  teams: stringList.optional(),
  /** Node labels: the rule applies only on nodes whose labels include all of these. */
  labels: z.record(z.string(), z.string()).optional(),
  /** A CEL condition over the request; the rule matches only when it is true. */
  when: condition.optional(),
};

function exactlyOneEffect(rule: { allow?: unknown; deny?: unknown }, ctx: z.RefinementCtx): void {
  if ((rule.allow === undefined) === (rule.deny === undefined)) {
    ctx.addIssue({ code: 'custom', message: 'a rule needs exactly one of "allow" or "deny"' });
  }
}

export const networkRuleSchema = z
  .strictObject({
    id: ruleId,
    /** Hosts (`api.github.com`, `*.example.com`, `**.example.com`), IP addresses and CIDRs. */
    allow: stringList.optional(),
    deny: stringList.optional(),
    ports: z.array(portSpec).min(1).optional(),
    schemes: z.array(z.string().min(1)).min(1).optional(),
    methods: z.array(z.string().min(1)).min(1).optional(),
    paths: z.array(z.string().startsWith('/', 'an HTTP path starting with "/"')).min(1).optional(),
    /** TLS inspection for these hosts: lets method and path rules, scanning and injection see inside. */
    inspect: z.boolean().optional(),
    ...scope,
  })
  .superRefine(exactlyOneEffect);

const fsAllow = z.strictObject({
  paths: stringList,
  access: z.enum(['ro', 'rw']).default('ro'),
  when: condition.optional(),
});
const fsDeny = z.strictObject({
  paths: stringList,
  /** Absent: reading and writing are denied. `write`: only writing is. */
  access: z.enum(['write']).optional(),
  when: condition.optional(),
});

export const filesystemRuleSchema = z
  .strictObject({ id: ruleId, allow: fsAllow.optional(), deny: fsDeny.optional(), ...scope })
  .superRefine(exactlyOneEffect);

const mcpMatch = z.strictObject({
  server: stringList.optional(),
  tools: stringList.optional(),
  prompts: stringList.optional(),
  resources: stringList.optional(),
  annotations: z.record(z.string(), z.union([z.boolean(), z.string(), z.number()])).optional(),
  when: condition.optional(),
});

export const mcpRuleSchema = z
  .strictObject({
    id: ruleId,
    allow: mcpMatch.optional(),
    deny: mcpMatch.optional(),
    /** Ask a person (MCP elicitation) before an allowed call goes ahead. */
    requireApproval: z.boolean().optional(),
    ...scope,
  })
  .superRefine(exactlyOneEffect);

const credentialDeny = z.strictObject({
  secrets: stringList,
  hosts: stringList.optional(),
  servers: stringList.optional(),
});

export const credentialRuleSchema = z
  .strictObject({
    id: ruleId,
    /** A grant: the secret's name in the vault or a configured provider. */
    secret: z.string().min(1).optional(),
    /** The agent sees a placeholder in this environment variable. */
    env: z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/, 'an environment variable name').optional(),
    /** The only hosts the real value may go to. */
    hosts: stringList.optional(),
    /** The only MCP servers the real value may go to. */
    servers: stringList.optional(),
    /** A header the proxy sets on the way out, for example "Authorization: Bearer {secret}". */
    header: z
      .string()
      .regex(/^[A-Za-z0-9-]+:\s?.*\{secret\}.*$/, 'a header like "Authorization: Bearer {secret}"')
      .optional(),
    deny: credentialDeny.optional(),
    ...scope,
  })
  .superRefine((rule, ctx) => {
    if ((rule.secret === undefined) === (rule.deny === undefined)) {
      ctx.addIssue({ code: 'custom', message: 'a credentials rule is either a grant ("secret") or a "deny", not both or neither' });
    }
    if (rule.secret !== undefined && rule.hosts === undefined && rule.servers === undefined) {
      ctx.addIssue({ code: 'custom', message: 'a credentials grant needs "hosts" or "servers": where the real value may go' });
    }
  });

export const dlpActionSchema = z.enum(['block', 'redact', 'log']);

export const dlpSchema = z.strictObject({
  action: dlpActionSchema.default('block'),
  /** Per-surface overrides of `action`. */
  surfaces: z
    .strictObject({ mcp: dlpActionSchema.optional(), network: dlpActionSchema.optional() })
    .optional(),
  /** Content over this size is not scanned; `onTooLarge` decides what happens to it. */
  maxBytes: z.number().int().positive().default(10 * 1024 * 1024),
  onTooLarge: z.enum(['block', 'allow']).default('block'),
  /**
   * Findings below this severity are recorded but not acted on (default `medium`: documentation examples
   * such as AWS's `EXAMPLE` keys and test card numbers are `low`).
   */
  minSeverity: z.enum(['low', 'medium', 'high']).optional(),
  /** Detection rule ids to turn off (see `gatehouse scan --json` for the ids). */
  disabledRules: z.array(z.string().min(1)).optional(),
});

const modeSchema = z.enum(['enforce', 'observe']);

export const policySchema = z.strictObject({
  network: z.array(networkRuleSchema).default([]),
  filesystem: z.array(filesystemRuleSchema).default([]),
  credentials: z.array(credentialRuleSchema).default([]),
  mcp: z.array(mcpRuleSchema).default([]),
  dlp: dlpSchema.default({ action: 'block', maxBytes: 10 * 1024 * 1024, onTooLarge: 'block' }),
  /** `observe` lets would-be denials through and records them as `observed-deny`. */
  modes: z
    .strictObject({
      network: modeSchema.optional(),
      filesystem: modeSchema.optional(),
      credentials: modeSchema.optional(),
      mcp: modeSchema.optional(),
    })
    .default({}),
});

export type PolicyDocument = z.output<typeof policySchema>;
export type NetworkRuleSpec = z.output<typeof networkRuleSchema>;
export type FilesystemRuleSpec = z.output<typeof filesystemRuleSchema>;
export type McpRuleSpec = z.output<typeof mcpRuleSchema>;
export type CredentialRuleSpec = z.output<typeof credentialRuleSchema>;
export type DlpSettings = z.output<typeof dlpSchema>;
