/**
 * A cache of what `gatehouse run` derives from the config, so a repeated run skips YAML, validation and
 * policy compilation (most of its start-up). An entry is keyed by everything the result depends on: the
 * config file's path and exact text, the working directory, HOME, the agent, the user, and the compiled
 * code itself. Configs that pull in other files or the environment (`${file:}`, `${env:}`, a policy bundle)
 * are never cached, because their text alone does not say what they mean.
 *
 * Entries live in `<data-dir>/cache/` (private to the user, like the rest of the data dir).
 */
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, renameSync, statSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { AuditSettings, SandboxSettings } from '../config/schema.js';
import type { FilesystemView } from '../policy/engine.js';

export interface CachedLaunch {
  v: 1;
  dataDir: string;
  configPath: string | undefined;
  node: string;
  audit: AuditSettings;
  sandbox: SandboxSettings;
  policy: { version: string; digest: string };
  view: FilesystemView;
  /** The policy lets something out, so the egress proxy must run: not a fast-path launch. */
  needsEgress: boolean;
  /** The config file and the files it names, which must lie outside what the program may write (config-guard.ts). */
  configFiles?: string[];
}

export interface CacheInputs {
  /** `--config`, if given. */
  configFlag: string | undefined;
  /** The data dir before the config is read (`--data-dir`, GATEHOUSE_HOME or ~/.gatehouse). */
  provisionalDataDir: string;
  cwd: string;
  home: string;
  agent: string | undefined;
  user: string | undefined;
}

/** The same lookup as config/load.ts `findConfigPath`, without importing the YAML and zod machinery. */
function configPathFor(inputs: CacheInputs): string | undefined {
  if (inputs.configFlag !== undefined) return resolve(inputs.configFlag);
  for (const candidate of [resolve(inputs.cwd, 'gatehouse.yaml'), resolve(inputs.provisionalDataDir, 'gatehouse.yaml')]) {
    if (existsSync(candidate)) return candidate;
  }
  return undefined;
}

const compiledCode = fileURLToPath(new URL('../policy/compile.js', import.meta.url));

/** The cache file for these inputs, or undefined when this config cannot be cached. */
export function cachePath(inputs: CacheInputs): string | undefined {
  const configPath = configPathFor(inputs);
  let text = '';
  if (configPath !== undefined) {
    try {
      text = readFileSync(configPath, 'utf8');
    } catch {
      return undefined;
    }
    if (text.includes('${') || /\bpolicyBundle\b/.test(text)) return undefined;
  }
  let codeStamp = 0;
  try {
    codeStamp = statSync(compiledCode).mtimeMs;
  } catch {
    return undefined;
  }
  const key = createHash('sha256')
    .update(JSON.stringify({ configPath, text, cwd: inputs.cwd, home: inputs.home, agent: inputs.agent, user: inputs.user, codeStamp, compiledCode }))
    .digest('hex');
  return join(inputs.provisionalDataDir, 'cache', `run-${key.slice(0, 40)}.json`);
}

export function readCachedLaunch(path: string): CachedLaunch | undefined {
  try {
    const entry = JSON.parse(readFileSync(path, 'utf8')) as CachedLaunch;
    return entry.v === 1 ? entry : undefined;
  } catch {
    return undefined;
  }
}

/** Writes atomically (temporary file, then rename) so a concurrent run never reads half an entry. */
export function writeCachedLaunch(path: string, entry: CachedLaunch): void {
  try {
    mkdirSync(join(path, '..'), { recursive: true, mode: 0o700 });
    const temporary = `${path}.${process.pid}.tmp`;
    writeFileSync(temporary, JSON.stringify(entry), { mode: 0o600 });
    renameSync(temporary, path);
  } catch {
    // A cache that cannot be written only costs speed.
  }
}
