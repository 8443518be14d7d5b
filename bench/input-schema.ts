/**
 * bench/input-schema: what checking a tools/call's arguments against the tool's inputSchema adds per call,
 * against what the same call already pays in the same run: the policy decision (a small MCP policy with a
 * CEL condition on the arguments) and the argument digest recorded in the audit log.
 *
 * Rows: the hot path (the checker cached on the catalog entry, as in callTool), the lookup by schema digest
 * that a rebuilt catalog pays once per tool, and the first compile of a schema (once per definition).
 * Target: the hot path in microseconds, well below the decision it guards.
 *
 *   node dist/bench/input-schema.js [--seconds 0.5]
 */
import { policySchema, type PolicyDocument } from '../src/config/policy-schema.js';
import { digestOf } from '../src/gateway/canonical.js';
import { InputSchemas } from '../src/gateway/input-schema.js';
import { compilePolicy } from '../src/policy/compile.js';
import type { McpRequest } from '../src/policy/types.js';

const secondsFlag = process.argv.indexOf('--seconds');
const SECONDS = secondsFlag > 0 ? Number(process.argv[secondsFlag + 1]) : 0.5;

/** A schema shaped like a real tool's (server-github's create_issue), and arguments that fit it. */
const schema = {
  type: 'object' as const,
  properties: {
    owner: { type: 'string' },
    repo: { type: 'string' },
    title: { type: 'string', minLength: 1 },
    body: { type: 'string' },
    labels: { type: 'array', items: { type: 'string' } },
    assignees: { type: 'array', items: { type: 'string' } },
    milestone: { type: 'integer', minimum: 1 },
    draft: { type: 'boolean' },
  },
  required: ['owner', 'repo', 'title'],
};
const args = { owner: 'acme', repo: 'widgets', title: 'Flaky test in CI', body: 'It fails one run in ten.\n'.repeat(8), labels: ['bug', 'ci'], draft: false };

const engine = compilePolicy(
  policySchema.parse({
    mcp: [
      { id: 'github', allow: { server: 'github', tools: ['*'] } },
      { id: 'acme-only', deny: { server: 'github', tools: ['create_*'] }, when: "args.owner != 'acme'" },
      { id: 'no-destructive', deny: { tools: ['*'], annotations: { destructiveHint: true } } },
    ],
  }) as PolicyDocument,
);
const request: McpRequest = { surface: 'mcp', agent: 'dev', server: 'github', tool: 'create_issue', args, annotations: { destructiveHint: false } };

/** Mean time per run of `body` over about SECONDS, in µs. */
function timePerRun(body: () => unknown): number {
  for (let i = 0; i < 2000; i += 1) body();
  let runs = 0;
  const started = performance.now();
  const until = started + SECONDS * 1000;
  while (performance.now() < until) {
    for (let i = 0; i < 500; i += 1) body();
    runs += 500;
  }
  return ((performance.now() - started) * 1000) / runs;
}

const schemas = new InputSchemas();
const unusable = (reason: string) => {
  throw new Error(reason);
};
const cached = schemas.checkerFor(schema, unusable);
if (cached(args).ok !== true) throw new Error('the benchmark arguments do not fit the schema');

const decide = timePerRun(() => engine.decide(request));
const digest = timePerRun(() => digestOf(args));
const check = timePerRun(() => cached(args));
const lookup = timePerRun(() => schemas.checkerFor(schema, unusable)(args));
let variant = 0;
const compileMs = timePerRun(() => new InputSchemas().checkerFor({ ...schema, description: `variant ${(variant += 1)}` }, unusable)) / 1000;

const row = (label: string, us: number) => console.log(`${label.padEnd(44)} ${us.toFixed(3).padStart(9)} µs   ${(us / decide).toFixed(2).padStart(6)}× the decision`);
row('policy decision (baseline)', decide);
row('argument digest (already paid per call)', digest);
row('argument check, cached checker (per call)', check);
row('argument check with lookup by schema digest', lookup);
console.log(`${'first compile of a schema (once per definition)'.padEnd(44)} ${compileMs.toFixed(3).padStart(9)} ms`);
