/**
 * Resolves what a command works on: the data dir and the config file. Imported lazily by actions.
 * Order: --config, else ./gatehouse.yaml, else <data-dir>/gatehouse.yaml; the data dir is --data-dir, else
 * $GATEHOUSE_HOME, else the config's node.dataDir, else ~/.gatehouse.
 */
import { dirname } from 'node:path';
import { findConfigPath, loadConfigFile, type LoadedConfig } from '../config/load.js';
import { GatehouseError } from '../util/errors.js';
import { absolutePath, resolveDataDir } from '../util/paths.js';
import type { GlobalOptions } from './common.js';

export interface CommandContext {
  dataDir: string;
  configPath: string | undefined;
  loaded: LoadedConfig | undefined;
}

export function commandContext(globals: GlobalOptions, options: { requireConfig: boolean }): CommandContext {
  const provisional = resolveDataDir(globals.dataDir);
  const configPath = findConfigPath(globals.config, provisional);
  if (!configPath) {
    if (options.requireConfig) {
      throw new GatehouseError('config_missing', `no gatehouse.yaml found (looked for ./gatehouse.yaml and ${provisional}/gatehouse.yaml); pass --config FILE, or run "gatehouse up" to create one`);
    }
    return { dataDir: provisional, configPath: undefined, loaded: undefined };
  }
  const loaded = loadConfigFile(configPath);
  const fromConfig = loaded.config.node.dataDir !== undefined ? absolutePath(loaded.config.node.dataDir, dirname(configPath)) : undefined;
  return { dataDir: resolveDataDir(globals.dataDir, fromConfig), configPath, loaded };
}
