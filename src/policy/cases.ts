/**
 * Policy test cases: how a team tests its policy in its own CI (`gatehouse policy test CASES.yaml`).
 *
 *   config: gatehouse.yaml          # optional; relative to this file
 *   cases:
 *     - name: developers reach the GitHub API
 *       request: { surface: network, agent: dev, host: api.github.com, port: 443 }
 *       expect: allow                 # allow | deny | observed-deny
 *       rule: github-api              # optional: this rule must be among the deciding rules
 */
import { z } from 'zod';
import { parseYaml } from '../config/load.js';
import type { PolicyEngine } from './engine.js';
import { decisionRequestSchema } from './request-schema.js';
import type { Decision, DecisionRequest } from './types.js';

export const casesFileSchema = z.strictObject({
  config: z.string().min(1).optional(),
  cases: z
    .array(
      z.strictObject({
        name: z.string().min(1),
        request: decisionRequestSchema,
        expect: z.enum(['allow', 'deny', 'observed-deny']),
        rule: z.string().min(1).optional(),
        /** The exact list of deciding rules, in policy order. */
        rules: z.array(z.string()).optional(),
      }),
    )
    .min(1, 'a cases file needs at least one case'),
});

export type CasesFile = z.output<typeof casesFileSchema>;

export interface CaseResult {
  name: string;
  passed: boolean;
  request: DecisionRequest;
  expected: { effect: string; rule?: string; rules?: string[] };
  decision: Decision;
  /** Readable lines saying how expectation and decision differ; empty when passed. */
  diff: string[];
}

export function parseCases(text: string, file: string, baseDir: string): CasesFile {
  return parseYaml(text, file, casesFileSchema, baseDir);
}

function describeOutcome(effect: string, rules: string[] | undefined, reason?: string): string {
  const by = rules && rules.length > 0 ? ` by ${rules.map((r) => `"${r}"`).join(', ')}` : '';
  return `${effect}${by}${reason ? ` (${reason})` : ''}`;
}

export function runCases(engine: PolicyEngine, cases: CasesFile['cases']): CaseResult[] {
  return cases.map((testCase) => {
    const request = testCase.request as DecisionRequest;
    const decision = engine.decide(request);
    const expected: CaseResult['expected'] = { effect: testCase.expect };
    if (testCase.rule !== undefined) expected.rule = testCase.rule;
    if (testCase.rules !== undefined) expected.rules = testCase.rules;
    let passed = decision.effect === testCase.expect;
    if (testCase.rule !== undefined && !decision.rules.includes(testCase.rule)) passed = false;
    if (testCase.rules !== undefined && testCase.rules.join('\n') !== decision.rules.join('\n')) passed = false;
    const diff = passed
      ? []
      : [
          `- expected  ${describeOutcome(testCase.expect, testCase.rules ?? (testCase.rule ? [testCase.rule] : undefined))}`,
          `+ actual    ${describeOutcome(decision.effect, decision.rules, decision.reason)}`,
        ];
    return { name: testCase.name, passed, request, expected, decision, diff };
  });
}
