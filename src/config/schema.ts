/**
 * gatehouse.yaml: one validated model for a node's settings and its policy. Unknown keys are errors.
 * Each data plane owns one section here; the section is validated at the edge so the inside trusts its types.
 */
import { z } from 'zod';
import { policySchema } from './policy-schema.js';

/** "127.0.0.1:7400", "[::1]:7400" or "localhost:7400". */
export const listenSchema = z
  .string()
  .regex(/^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):\d{1,5}$/, 'a listen address like "127.0.0.1:7400"');

const nodeSchema = z.strictObject({
  /** Names this node in audit records; defaults to the host name. */
  name: z.string().min(1).optional(),
  /** Rules scoped with `labels` apply only where all of them match these. */
  labels: z.record(z.string(), z.string()).default({}),
  dataDir: z.string().min(1).optional(),
  /** Directory that `./` in filesystem rules means; defaults to the directory `gatehouse` was started in. */
  workspace: z.string().min(1).optional(),
  api: z.strictObject({ listen: listenSchema.default('127.0.0.1:7400') }).default({ listen: '127.0.0.1:7400' }),
  /** Load the policy from this signed bundle instead of the `policy:` section. */
  policyBundle: z.string().min(1).optional(),
  /** Public keys (PEM files or inline PEM) whose signatures this node accepts on policy bundles. */
  trustedKeys: z.array(z.string().min(1)).default([]),
  /** Refuse any policy that does not arrive as a bundle signed by a trusted key. */
  requireSignedPolicy: z.boolean().default(false),
  /** Watch the config file (and bundle) and reload on change. */
  watch: z.boolean().default(true),
});

const agentSchema = z.strictObject({
  teams: z.array(z.string().min(1)).default([]),
  description: z.string().optional(),
});

const auditSchema = z.strictObject({
  /** `sync`: fsync before a decision takes effect. `batch`: group commit, at most every 50 ms. */
  mode: z.enum(['sync', 'batch']).default('batch'),
  /** Record argument values and bodies (otherwise only digests). */
  recordValues: z.boolean().default(false),
});

export const configSchema = z.strictObject({
  version: z.literal(1, { error: 'the config version: this Gatehouse reads version 1' }),
  node: nodeSchema.default({ labels: {}, api: { listen: '127.0.0.1:7400' }, trustedKeys: [], requireSignedPolicy: false, watch: true }),
  /** Agents this node knows, with the teams that policy scope can name. */
  agents: z.record(z.string(), agentSchema).default({}),
  audit: auditSchema.default({ mode: 'batch', recordValues: false }),
  policy: policySchema.default({
    network: [],
    filesystem: [],
    credentials: [],
    mcp: [],
    dlp: { action: 'block', maxBytes: 10 * 1024 * 1024, onTooLarge: 'block' },
    modes: {},
  }),
});

export type Config = z.output<typeof configSchema>;
export type NodeSettings = Config['node'];
