/**
 * The config a run's policy comes from must lie outside what the program may write. Otherwise a program
 * rewrites (or, in a writable workspace, simply creates) the gatehouse.yaml its next `gatehouse run` reads:
 * `./gatehouse.yaml` is looked for before `<data-dir>/gatehouse.yaml`. The same holds for every file the
 * config names: a policy bundle, a trusted key, a `${file:}` value, the bwrap to run, a secret's file.
 */
import { dirname } from 'node:path';
import type { Config } from '../config/schema.js';
import type { FilesystemView } from '../policy/engine.js';
import { absolutePath } from '../util/paths.js';
import { computeMountPlan, writableInside } from './mount-plan.js';

const FILE_REFERENCE = /\$\{file:([^}]*)\}/g;

/**
 * The files a run depends on besides the config itself, absolute. With `node.requireSignedPolicy` the
 * config and its bundle are vouched for by a signature (trusted keys in a protected config), so only what
 * a signature does not cover is listed.
 */
export function configFiles(config: Config, configPath: string, text: string, home?: string): string[] {
  const base = dirname(configPath);
  const at = (path: string): string => absolutePath(path, base, home);
  const signed = config.node.requireSignedPolicy;
  const files = signed ? [] : [configPath];
  if (config.node.policyBundle !== undefined && !signed) files.push(at(config.node.policyBundle));
  for (const key of config.node.trustedKeys) if (!key.includes('-----BEGIN')) files.push(at(key));
  for (const match of text.matchAll(FILE_REFERENCE)) files.push(at(match[1]!.trim()));
  if (config.sandbox.bwrap !== undefined) files.push(at(config.sandbox.bwrap));
  if (config.secrets.masterKeyFile !== undefined) files.push(at(config.secrets.masterKeyFile));
  for (const provider of Object.values(config.secrets.providers)) {
    if (provider.file !== undefined) files.push(at(provider.file));
    if (provider.command?.[0]?.includes('/')) files.push(at(provider.command[0]));
  }
  return [...new Set(files)];
}

export interface ConfigExposureInput {
  /** The config file first, then the files it names (`configFiles`). */
  files: string[];
  configPath: string | undefined;
  view: FilesystemView;
  home: string;
  cwd: string;
  dataDir?: string;
  permits?: (path: string, access: 'read' | 'write') => boolean;
  /** The config whose policy is judged, when it is not `configPath` itself (the one a ./gatehouse.yaml shadows). */
  policyOf?: string;
}

/**
 * One sentence saying which config file the program could write and what to do, or undefined when none.
 * Judged on the policy's own mounts, without the read-only cover `gatehouse run` puts over the config:
 * that cover keeps an existing file, not the place a new one would be created.
 */
export function configExposure(input: ConfigExposureInput): string | undefined {
  const plan = computeMountPlan({
    view: input.view,
    home: input.home,
    cwd: input.cwd,
    ...(input.dataDir ? { dataDir: input.dataDir } : {}),
    ...(input.permits ? { permits: input.permits } : {}),
  });
  const exposed = input.files.find((file) => writableInside(plan, file));
  if (exposed === undefined) return undefined;
  const what = exposed === input.configPath ? `the config file ${exposed}` : `${exposed}, which the config file ${input.configPath ?? ''} uses,`;
  const where = input.policyOf ? `the policy of ${input.policyOf} lets a program write (so a sandboxed program may have put it there)` : 'the policy lets the program write, so the program could change the policy of the next run';
  return (
    `refusing to run: ${what} lies where ${where}; ` +
    'move the config (and the files it names) out of the workspace, for example into the data directory, or use a signed policy bundle with node.requireSignedPolicy'
  );
}
