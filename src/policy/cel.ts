/**
 * CEL conditions (`when:` on a rule), compiled once when the policy compiles.
 *
 * Variables: agent, teams, user, claims, now (timestamp), request (the whole request) and, per surface,
 * host, port, scheme, method, path (network); path, access (filesystem); server, tool, prompt, resource,
 * args, annotations (mcp); secret, host, server (credentials).
 *
 * A condition that fails to evaluate (a missing argument, a type mismatch) fails closed: an allow rule does
 * not match, a deny rule does.
 */
import { Environment } from '@marcbachmann/cel-js';

export const CEL_VARIABLES = [
  'agent', 'teams', 'user', 'claims', 'now', 'request',
  'host', 'port', 'scheme', 'method', 'path', 'access',
  'server', 'tool', 'prompt', 'resource', 'args', 'annotations', 'secret',
] as const;

const environment = new Environment();
for (const name of CEL_VARIABLES) environment.registerVariable(name, name === 'now' ? 'google.protobuf.Timestamp' : 'dyn');

export type CelContext = Record<(typeof CEL_VARIABLES)[number], unknown>;

export interface Condition {
  source: string;
  /** True, false, or an Error when evaluation failed. */
  evaluate(context: CelContext): boolean | Error;
}

/** Returns an error sentence if `source` is not a valid boolean CEL expression over the known variables. */
export function checkCondition(source: string): string | undefined {
  let result: { valid: boolean; type?: string; error?: { message?: string } };
  try {
    result = environment.check(source) as typeof result;
  } catch (error) {
    return `the condition "${source}" is not valid CEL: ${firstLine(error)}`;
  }
  if (!result.valid) return `the condition "${source}" is not valid CEL: ${firstLine(result.error)}; variables are ${CEL_VARIABLES.join(', ')}`;
  if (result.type !== 'bool' && result.type !== 'dyn') return `the condition "${source}" gives a ${result.type}, not true or false`;
  return undefined;
}

export function compileCondition(source: string): Condition {
  const program = environment.parse(source);
  return {
    source,
    evaluate(context) {
      try {
        const value: unknown = program(context);
        return value === true ? true : value === false ? false : new Error(`the condition "${source}" did not give true or false`);
      } catch (error) {
        return error instanceof Error ? error : new Error(String(error));
      }
    },
  };
}

function firstLine(value: unknown): string {
  const text = value instanceof Error ? value.message : typeof value === 'object' && value && 'message' in value ? String((value as { message: unknown }).message) : String(value);
  return (text.split('\n')[0] ?? text).trim();
}
