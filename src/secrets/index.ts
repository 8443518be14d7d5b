/**
 * Secrets: the encrypted vault, the providers named in config, and placeholders.
 *
 * Placeholders (for the sandbox launcher, egress proxy and MCP gateway):
 *
 *   const registry = new PlaceholderRegistry();                 // one per node
 *   const { env } = await registry.issueForSession(session, engine.grants(principal), (name) => secrets.resolveSecret(name));
 *   const p = registry.issue(session, grant, realValue);        // or one at a time
 *   env[grant.env] = p.value;                                    // the agent only ever sees p.value
 *   registry.containsAny(body)                                   // any live placeholder of any session?
 *   registry.swap(text, session, { host } | { server })          // real values in where allowed; `refused` lists
 *                                                                //   placeholders heading to the wrong place
 *   registry.swap(pathAndQuery, session, destination, { url: true }) // placeholders also found percent-encoded;
 *                                                                //   real values go in percent-encoded
 *   registry.swapHeader(value, session, destination)             // also inside `Basic` credentials (git)
 *   registry.mask(response, session)                             // reflected real values back to placeholders
 *   registry.masker(session, redactionPairs(name, real))         // the same for one response, as a stream
 *                                                                //   (push/end), values cut between pieces too
 *   registry.headerFor(session, grant.ruleId, destination)       // the grant's `header`, filled in
 *   registry.secretFor(session, p.value, destination)
 *   registry.withoutPlaceholders(findings, input)                // leak findings minus live placeholders
 *   registry.revokeSession(session)
 *
 * Vault and providers (for the CLI and the data planes):
 *
 *   const secrets = openSecrets({ dataDir, settings: config.secrets });
 *   await secrets.resolveSecret('github-token')                 // a configured provider first, then the vault
 *   await secrets.createScanner(engine.dlp)                      // the leak scanner with every known secret
 *   secrets.vault.set(name, value) / list() / remove(name) / rotate(name, value) / rekey()
 *
 * The vault opens on first use and throws a GatehouseError (`vault_wrong_master_key`, `vault_key_file_mode`,
 * `vault_key_file_missing`) that names the key's source and the fix. GATEHOUSE_MASTER_KEY stays in the node's
 * environment: the sandbox launcher must not pass it (or any GATEHOUSE_* variable) to agents.
 *
 * May import: util, store, config, policy (types and host patterns), dlp (formats). Knows nothing of the
 * data planes.
 */
export { PlaceholderRegistry, redactionPairs } from './placeholders.js';
export { Masker, type MaskPair } from './masker.js';
export type { Placeholder, PlaceholderHit, Destination } from './placeholders.js';
export { Vault } from './vault.js';
export type { SecretInfo, MasterKeyOptions } from './vault.js';
export { ProviderSet, runCommand } from './providers.js';
export { Secrets, openSecrets } from './service.js';
export type { SecretsOptions } from './service.js';
