/**
 * Reads YAML into a validated model. Every error names the file, line, column and key, and says what was
 * expected. `${env:NAME}` and `${file:PATH}` are substituted in string values before validation
 * (`$${` writes a literal `${`).
 */
import { existsSync, readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { isMap, isPair, isScalar, isSeq, LineCounter, parseDocument, visit, type Document, type Node } from 'yaml';
import type { z } from 'zod';
import { GatehouseError } from '../util/errors.js';
import { absolutePath } from '../util/paths.js';
import { configSchema, type Config } from './schema.js';

export interface ConfigProblem {
  file: string;
  line: number;
  column: number;
  /** Dotted key path, `policy.network[2].ports`. */
  key: string;
  message: string;
}

export function formatProblem(p: ConfigProblem): string {
  return `${p.file}:${p.line}:${p.column}: ${p.key ? `${p.key}: ` : ''}${p.message}`;
}

function invalid(problems: ConfigProblem[], what: string): GatehouseError {
  const lines = problems.map(formatProblem);
  const more = problems.length > 1 ? ` (and ${problems.length - 1} more problem${problems.length > 2 ? 's' : ''})` : '';
  return new GatehouseError('config_invalid', `${lines[0]}${more}`, {
    exitCode: 2,
    details: { what, problems, text: lines.join('\n') },
  });
}

function keyPath(path: readonly PropertyKey[]): string {
  let out = '';
  for (const part of path) {
    if (typeof part === 'number') out += `[${part}]`;
    else out += out ? `.${String(part)}` : String(part);
  }
  return out;
}

const SUBSTITUTION = /\$\$\{|\$\{(env|file):([^}]*)\}/g;

function substitute(value: string, baseDir: string): string {
  return value.replace(SUBSTITUTION, (whole, kind: string | undefined, arg: string | undefined) => {
    if (whole === '$${') return '${';
    const name = (arg ?? '').trim();
    if (kind === 'env') {
      const found = process.env[name];
      if (found === undefined) throw new Error(`\${env:${name}} names an environment variable that is not set`);
      return found;
    }
    const path = absolutePath(name, baseDir);
    try {
      return readFileSync(path, 'utf8').replace(/\r?\n$/, '');
    } catch {
      throw new Error(`\${file:${name}} names a file that cannot be read (${path})`);
    }
  });
}

/**
 * Parses `text` as YAML and validates it against `schema`.
 * `file` is only used in messages; `baseDir` anchors relative `${file:}` paths.
 */
export function parseYaml<S extends z.ZodType>(text: string, file: string, schema: S, baseDir = process.cwd()): z.output<S> {
  const lineCounter = new LineCounter();
  const doc = parseDocument(text, { lineCounter, prettyErrors: false, uniqueKeys: true });
  const at = (offset: number | undefined): { line: number; column: number } =>
    offset === undefined ? { line: 1, column: 1 } : (({ line, col }) => ({ line, column: col }))(lineCounter.linePos(offset));

  if (doc.errors.length > 0) {
    throw invalid(
      doc.errors.map((e) => ({ file, ...at(e.pos[0]), key: '', message: e.message.split('\n')[0] ?? 'invalid YAML' })),
      'yaml',
    );
  }

  const substitutionProblems: ConfigProblem[] = [];
  visit(doc, {
    Scalar(_key, node, path) {
      if (typeof node.value !== 'string' || !node.value.includes('${')) return;
      try {
        node.value = substitute(node.value, baseDir);
      } catch (error) {
        const keys = path.flatMap((step) => (isPair(step) && isScalar(step.key) ? [String(step.key.value)] : []));
        substitutionProblems.push({ file, ...at(node.range?.[0]), key: keys.join('.'), message: (error as Error).message });
      }
    },
  });
  if (substitutionProblems.length > 0) throw invalid(substitutionProblems, 'substitution');

  const data = doc.toJS({ maxAliasCount: 100 }) ?? {};
  const result = schema.safeParse(data);
  if (result.success) return result.data;
  throw invalid(
    result.error.issues.map((issue) => locateIssue(doc, issue, file, at)),
    'schema',
  );
}

function locateIssue(
  doc: Document,
  issue: z.core.$ZodIssue,
  file: string,
  at: (offset: number | undefined) => { line: number; column: number },
): ConfigProblem {
  const path = issue.path;
  if (issue.code === 'unrecognized_keys') {
    const map = path.length === 0 ? doc.contents : doc.getIn(path as unknown[], true);
    const name = issue.keys[0] ?? '';
    let offset: number | undefined = (map as Node | undefined)?.range?.[0];
    if (isMap(map)) {
      const pair = map.items.find((item) => isScalar(item.key) && item.key.value === name);
      if (pair && isScalar(pair.key)) offset = pair.key.range?.[0];
    }
    const which = issue.keys.length > 1 ? `unknown keys ${issue.keys.map((k) => `"${k}"`).join(', ')}` : `unknown key "${name}"`;
    return { file, ...at(offset), key: keyPath([...path, name]), message: `${which}; see "gatehouse config schema" for the keys allowed here` };
  }
  // Walk up the path until a node exists: a missing key is reported at the map that lacks it.
  let node: unknown;
  for (let depth = path.length; depth >= 0; depth -= 1) {
    node = depth === 0 ? doc.contents : doc.getIn(path.slice(0, depth) as unknown[], true);
    if (node !== undefined) break;
  }
  const offset = isScalar(node) || isMap(node) || isSeq(node) ? node.range?.[0] : undefined;
  return { file, ...at(offset), key: keyPath(path), message: describeIssue(issue) };
}

function describeIssue(issue: z.core.$ZodIssue): string {
  if (issue.code === 'invalid_type' && /received undefined/.test(issue.message)) return `is required (expected ${issue.expected})`;
  return issue.message.replace(/^Invalid input: /, '');
}

export interface LoadedConfig {
  config: Config;
  /** Absolute path of the file read, or undefined for built-in defaults. */
  path: string | undefined;
  text: string;
}

export function loadConfigFile(path: string): LoadedConfig {
  const absolute = resolve(path);
  let text: string;
  try {
    text = readFileSync(absolute, 'utf8');
  } catch {
    throw new GatehouseError('config_missing', `cannot read the config file ${absolute}; check the path given to --config`);
  }
  return { config: parseYaml(text, absolute, configSchema, dirname(absolute)), path: absolute, text };
}

/** `--config`, else `./gatehouse.yaml`, else `<dataDir>/gatehouse.yaml`. Undefined when none exists. */
export function findConfigPath(flag: string | undefined, dataDir: string): string | undefined {
  if (flag !== undefined) return resolve(flag);
  for (const candidate of [resolve('gatehouse.yaml'), resolve(dataDir, 'gatehouse.yaml')]) {
    if (existsSync(candidate)) return candidate;
  }
  return undefined;
}
