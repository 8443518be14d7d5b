/**
 * Where a node's policy comes from: the `policy:` section of gatehouse.yaml, or a signed bundle named by
 * `node.policyBundle` and verified against `node.trustedKeys`. With `node.requireSignedPolicy`, only a
 * bundle will do.
 */
import { readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import type { Config } from '../config/schema.js';
import { verifyBundle, type VerifiedBundle } from '../policy/bundle.js';
import { compilePolicy, nodeCompileOptions } from '../policy/compile.js';
import type { PolicyEngine } from '../policy/engine.js';
import { GatehouseError } from '../util/errors.js';
import { expandHome } from '../util/paths.js';
import { loadPublicKey } from '../util/keys.js';

export interface LoadedPolicy {
  engine: PolicyEngine;
  /** What a person should read to know where the policy came from. */
  source: string;
  bundle?: VerifiedBundle;
}

function agentTeams(config: Config): Record<string, { teams: string[] }> {
  return Object.fromEntries(Object.entries(config.agents).map(([name, agent]) => [name, { teams: agent.teams }]));
}

export function loadPolicy(config: Config, configPath: string | undefined): LoadedPolicy {
  const base = configPath ? dirname(configPath) : process.cwd();
  const options = nodeCompileOptions(config.node, agentTeams(config));
  const bundlePath = config.node.policyBundle;
  if (bundlePath === undefined) {
    if (config.node.requireSignedPolicy) {
      throw new GatehouseError('policy_unsigned', `${configPath ?? 'the config'} sets node.requireSignedPolicy but names no node.policyBundle; sign the policy with "gatehouse policy bundle" and point node.policyBundle at it`);
    }
    return { engine: compilePolicy(config.policy, options), source: configPath ?? 'built-in defaults' };
  }
  const inline = config.policy;
  if (inline.network.length + inline.filesystem.length + inline.credentials.length + inline.mcp.length > 0) {
    throw new GatehouseError('config_invalid', `${configPath ?? 'the config'} has both policy rules and node.policyBundle; keep one source of policy`);
  }
  const path = resolve(base, expandHome(bundlePath));
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch {
    throw new GatehouseError('bundle_missing', `cannot read the policy bundle ${path} named by node.policyBundle`);
  }
  const trusted = config.node.trustedKeys.map((key) => loadPublicKey(key.includes('-----BEGIN') ? key : resolve(base, expandHome(key))));
  const bundle = verifyBundle(text, trusted, path);
  const engine = compilePolicy(bundle.statement.policy, { ...options, version: bundle.statement.version });
  return { engine, source: `${path} (signed by ${bundle.keyId})`, bundle };
}
