/**
 * One place the data planes ask for a secret's value by name: configured providers first (config is
 * explicit), then the vault. The vault opens on first use, so nodes that only use providers never need a
 * master key.
 */
import type { SecretsSettings } from '../config/schema.js';
import type { DlpSettings } from '../config/policy-schema.js';
import type { KnownSecret } from '../dlp/known.js';
import { createScanner, type Scanner } from '../dlp/scanner.js';
import { secretsFromEnvironment } from '../dlp/known.js';
import { GatehouseError } from '../util/errors.js';
import { absolutePath } from '../util/paths.js';
import { ProviderSet } from './providers.js';
import { Vault } from './vault.js';

export interface SecretsOptions {
  dataDir: string;
  settings?: SecretsSettings;
  env?: NodeJS.ProcessEnv;
  /** What relative paths in `settings` (key file, file providers) are relative to: the config file's directory. */
  baseDir?: string;
}

export class Secrets {
  readonly providers: ProviderSet;
  private openedVault: Vault | undefined;

  constructor(private readonly options: SecretsOptions) {
    this.providers = new ProviderSet(options.settings?.providers ?? {}, options.env ?? process.env, Date.now, options.baseDir ?? process.cwd());
  }

  /** The vault (opened, and created on first use). Throws a GatehouseError on a wrong or missing master key. */
  get vault(): Vault {
    this.openedVault ??= Vault.open(this.options.dataDir, {
      ...(this.options.settings?.masterKeyFile !== undefined
        ? { keyFile: absolutePath(this.options.settings.masterKeyFile, this.options.baseDir ?? process.cwd()) }
        : {}),
      ...(this.options.env ? { env: this.options.env } : {}),
    });
    return this.openedVault;
  }

  /** The value of secret `name`; rejects with `secret_not_found` if neither a provider nor the vault has it. */
  async resolveSecret(name: string): Promise<string> {
    if (this.providers.has(name)) return this.providers.resolve(name);
    const value = this.vault.get(name);
    if (value === undefined) {
      throw new GatehouseError('secret_not_found', `no secret named "${name}" in the vault or secrets.providers; add it with "gatehouse secret set ${name}"`, {
        exitCode: 1,
      });
    }
    return value;
  }

  /**
   * Values the leak scanner should treat as known secrets: every vault entry, every provider that resolves,
   * and (unless `scanEnvironment` is off) credential-looking variables of the node's environment.
   */
  async knownSecrets(): Promise<KnownSecret[]> {
    const known: KnownSecret[] = this.vault.entries();
    for (const name of this.providers.names()) {
      try {
        known.push({ name, value: await this.providers.resolve(name) });
      } catch {
        // A provider that fails now is reported when a grant needs it; leak detection goes on without it.
      }
    }
    if (this.options.settings?.scanEnvironment !== false) known.push(...secretsFromEnvironment(this.options.env ?? process.env));
    return known;
  }

  /**
   * The leak scanner for a node: the policy's limits and rule choices, and every known secret. Build it at
   * start-up and again after a policy reload or a vault change.
   */
  async createScanner(dlp: Pick<DlpSettings, 'maxBytes' | 'disabledRules'>): Promise<Scanner> {
    return createScanner({ knownSecrets: await this.knownSecrets(), maxBytes: dlp.maxBytes, disabledRules: dlp.disabledRules ?? [] });
  }
}

export function openSecrets(options: SecretsOptions): Secrets {
  return new Secrets(options);
}
