/**
 * A tool call's arguments checked against the tool's advertised inputSchema before the policy decides.
 *
 * A condition is only as good as the types it reads: CEL finds `"true" == true` and `1 == true` plainly
 * false, so `deny ... when: "args.force == true"` would let `force: "true"` through to a server that
 * coerces it into true. Arguments that fit the schema have the types the policy author saw. An argument the
 * schema does not declare is refused too (unless the schema itself allows extras): no policy author has seen
 * it, and a lenient server may still act on it.
 *
 * Each schema is compiled once, in an engine of its own (a `$id` in one server's schema can never resolve
 * in another's), and cached by the digest of the schema, which changes whenever the pinned definition's
 * schema does. Checking then costs well under a microsecond for a typical tool.
 */
import type { Tool } from '@modelcontextprotocol/client';
import { AjvJsonSchemaValidator } from '@modelcontextprotocol/client/validators/ajv';
import { digestOf } from './canonical.js';

/** What checking one call's arguments found. */
export type ArgumentCheck =
  | { ok: true }
  /** The arguments break the schema; `problem` names the failing paths as `args/<pointer>`. */
  | { ok: false; problem: string }
  /** The schema cannot be compiled, so the arguments could not be checked (see GatewayCore.callTool). */
  | { ok: 'unchecked'; reason: string };

/** A compiled schema: checks one call's arguments. */
export type ArgumentChecker = (args: Record<string, unknown>) => ArgumentCheck;

/** Keywords under which a schema may declare properties of its own; closing the root would refuse those. */
const OPENING_KEYWORDS = ['additionalProperties', 'patternProperties', 'unevaluatedProperties', 'allOf', 'anyOf', 'oneOf', '$ref', '$dynamicRef', 'if', 'dependentSchemas', 'dependencies'];

/** Enough for every tool of a large fleet; beyond it the oldest schemas are compiled again when next used. */
const MAX_SCHEMAS = 10_000;

export class InputSchemas {
  private readonly checkers = new Map<string, ArgumentChecker>();

  /**
   * The checker for a tool's schema, compiled on first sight of the schema. `unusable` hears, once per
   * schema, why a schema could not be compiled.
   */
  checkerFor(schema: Tool['inputSchema'], unusable: (reason: string) => void): ArgumentChecker {
    const digest = digestOf(schema);
    let checker = this.checkers.get(digest);
    if (!checker) {
      checker = compile(schema, unusable);
      if (this.checkers.size >= MAX_SCHEMAS) this.checkers.delete(this.checkers.keys().next().value!);
      this.checkers.set(digest, checker);
    }
    return checker;
  }
}

function compile(schema: Tool['inputSchema'], unusable: (reason: string) => void): ArgumentChecker {
  let validate: (input: unknown) => { valid: boolean; errorMessage?: string | undefined };
  try {
    const validator = new AjvJsonSchemaValidator();
    const engine = engineFor(validator, schema);
    engine.opts.code.regExp = patternRegExp;
    annotateUnknownFormats(engine, schema);
    validate = validator.getValidator(schema as never);
  } catch (error) {
    const reason = `its inputSchema cannot be compiled (${brief(firstSentence(error))})`;
    unusable(reason);
    return () => ({ ok: 'unchecked', reason });
  }
  const declared = closedProperties(schema);
  return (args) => {
    if (declared) {
      for (const name of Object.keys(args)) {
        if (!declared.has(name)) return { ok: false, problem: brief(`args/${escapePointer(name)} is not a parameter of this tool`) };
      }
    }
    const result = validate(args);
    // Ajv names the arguments object `data`; the policy's conditions call it `args`.
    return result.valid ? { ok: true } : { ok: false, problem: brief((result.errorMessage ?? 'they do not match').replace(/(^|, )data(?=[/ ])/g, '$1args')) };
  };
}

/** What this module sets on the Ajv engine the SDK validator picks for a schema's dialect. */
interface Engine {
  opts: { code: { regExp: unknown } };
  formats: Record<string, unknown>;
  addFormat(name: string, format: true): unknown;
}

/**
 * The engine for the schema's dialect, reached through the SDK validator's `_engineFor`; if that ever goes,
 * the schema counts as unusable, which fails closed.
 */
function engineFor(validator: AjvJsonSchemaValidator, schema: Tool['inputSchema']): Engine {
  const pick = (validator as unknown as { _engineFor?: (schema: unknown) => Engine })._engineFor;
  if (typeof pick !== 'function') throw new Error('the SDK validator no longer exposes its engines, so patterns cannot be bounded');
  return pick.call(validator, schema);
}

/**
 * A server's `pattern` (and `patternProperties`) runs on the caller's input: one that backtracks
 * catastrophically would stall every session. V8 moves such a match to its linear-time engine
 * (util/regexp-guard.ts), but not under the `u` flag Ajv compiles patterns with; so a pattern that compiles
 * without it is compiled without it (astral characters then count as two, which only a length-like pattern
 * can notice, and the server still checks its own input).
 */
const patternRegExp = Object.assign(
  (pattern: string, flags: string): RegExp => {
    try {
      return new RegExp(pattern, flags.replace('u', ''));
    } catch {
      return new RegExp(pattern, flags);
    }
  },
  { code: 'patternRegExp' },
);

/**
 * `format` names a check a validator may make; one it does not know is an annotation (JSON Schema 2020-12,
 * whose default vocabulary makes every format one). The SDK's engines know, and enforce, the formats of
 * ajv-formats (date-time, email, uri, uuid, ipv4, …); any other (idn-email, iri, a server's own "phone") Ajv
 * skipped anyway, printing a warning to stderr for every schema that used it. Such formats are declared
 * annotations here, so they are skipped in silence. That fails safe: a format only narrows a string, and the
 * argument must still be a string, so the types the policy reads hold (the server checks its own formats).
 * Refusing the schema instead would leave every argument of the tool unchecked. A name that
 * Ajv would find on Object.prototype (toString, hasOwnProperty, …) is declared too, so it is no longer taken
 * for a check that throws or refuses every string.
 */
function annotateUnknownFormats(engine: Engine, schema: Tool['inputSchema']): void {
  // Every string under a "format" key, keyword or not: an annotation too many changes nothing.
  const pending: unknown[] = [schema];
  while (pending.length > 0) {
    const node = pending.pop();
    if (node === null || typeof node !== 'object') continue;
    for (const [key, value] of Object.entries(node)) {
      if (key === 'format' && typeof value === 'string') {
        // Ajv looks formats up in a plain object: this one name finds Object.prototype, cannot be declared,
        // and makes the compiled check throw on every call.
        if (value === '__proto__') throw new Error('it uses the format "__proto__", which the validator cannot look up');
        if (!Object.hasOwn(engine.formats, value)) engine.addFormat(value, true);
      } else {
        pending.push(value);
      }
    }
  }
}

/** The names a plain object schema declares, when it says nothing about other properties; else undefined. */
function closedProperties(schema: Tool['inputSchema']): Set<string> | undefined {
  const properties = schema.properties;
  if (properties === null || typeof properties !== 'object') return undefined;
  if (OPENING_KEYWORDS.some((keyword) => keyword in schema)) return undefined;
  return new Set(Object.keys(properties));
}

function escapePointer(name: string): string {
  return name.replaceAll('~', '~0').replaceAll('/', '~1');
}

/** The first sentence of an error, without its full stop (Ajv's messages go on with advice for developers). */
function firstSentence(error: unknown): string {
  const text = error instanceof Error ? error.message : String(error);
  const line = text.split('\n')[0] ?? text;
  return (/^.*?(?=\.(\s|$))/.exec(line)?.[0] ?? line).trim();
}

/** Property names come from the caller and schemas from the server: keep what lands in errors and audit short. */
function brief(text: string): string {
  return text.length > 500 ? `${text.slice(0, 500)}…` : text;
}
