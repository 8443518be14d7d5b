/**
 * `gatehouse secret set|ls|rm|rotate`: the encrypted vault. Values are read from stdin or a no-echo prompt,
 * never from the command line (argv is visible to other users in `ps` and lands in shell history).
 */
import type { Command } from 'commander';
import { dirname } from 'node:path';
import { examples, globalOptions, printJson, usageError } from './common.js';

async function contextFor(command: Command) {
  const { commandContext } = await import('./context.js');
  const { openSecrets } = await import('../secrets/index.js');
  const context = commandContext(globalOptions(command), { requireConfig: false });
  const secrets = openSecrets({ dataDir: context.dataDir, ...(context.loaded && context.configPath ? { settings: context.loaded.config.secrets, baseDir: dirname(context.configPath) } : {}) });
  return { secrets, credentials: context.loaded?.config.policy.credentials ?? [], context };
}

type SecretAction = 'secret.set' | 'secret.rotate' | 'secret.rm' | 'secret.rekey';

/**
 * Records a vault change (never its value) in the node's audit log. With a node running for the data dir,
 * through its control socket, which also has the node's leak scanners learn the new values; otherwise
 * straight into the log.
 */
async function recordChange(context: Awaited<ReturnType<typeof contextFor>>['context'], action: SecretAction, resource: string, reason: string, details?: Record<string, unknown>): Promise<void> {
  const { hostname } = await import('node:os');
  const { newCorrelationId } = await import('../audit/record.js');
  const { configSchema } = await import('../config/schema.js');
  const config = context.loaded?.config ?? configSchema.parse({ version: 1 });
  const node = config.node.name ?? hostname();
  const record: import('../audit/record.js').AuditRecord = {
    v: 1,
    time: new Date().toISOString(),
    node,
    principal: process.env.USER ? { user: process.env.USER } : {},
    surface: 'credentials',
    action,
    resource,
    effect: 'info',
    rules: [],
    reason,
    latencyUs: 0,
    correlationId: newCorrelationId(),
    ...(details ? { details } : {}),
  };
  try {
    const { connectToNode } = await import('../node/control-client.js');
    const link = await connectToNode(context.dataDir);
    if (link) {
      try {
        await link.secretsChanged(record);
      } finally {
        await link.close();
      }
      return;
    }
    const { openNodeAuditLog } = await import('../audit/node-log.js');
    const audit = openNodeAuditLog(context.dataDir, node, config.audit);
    try {
      await audit.append(record);
    } finally {
      await audit.close();
    }
  } catch (error) {
    const { GatehouseError, errorMessage } = await import('../util/errors.js');
    throw new GatehouseError('audit_failed', `the vault changed (${reason}), but the change could not be recorded in the audit log: ${errorMessage(error)}`, { exitCode: 1 });
  }
}

/** Reads a value: all of stdin when it is piped, else a prompt on the terminal that does not echo. */
async function readValue(name: string): Promise<string> {
  const stdin = process.stdin;
  if (!stdin.isTTY) {
    const chunks: Buffer[] = [];
    for await (const chunk of stdin) chunks.push(chunk as Buffer);
    const text = Buffer.concat(chunks).toString('utf8');
    // One trailing newline is from `echo` or the terminal, not part of the value.
    return text.endsWith('\r\n') ? text.slice(0, -2) : text.endsWith('\n') ? text.slice(0, -1) : text;
  }
  // Echo goes off before the prompt appears, so nothing typed after it is ever shown.
  stdin.setRawMode(true);
  process.stderr.write(`Value for ${name} (input is hidden): `);
  stdin.resume();
  try {
    return await new Promise<string>((resolve, reject) => {
      let value = '';
      const onData = (chunk: Buffer): void => {
        for (const char of chunk.toString('utf8')) {
          if (char === '\r' || char === '\n') {
            stdin.off('data', onData);
            process.stderr.write('\n');
            resolve(value);
            return;
          }
          if (char === '\u0003' || char === '\u0004') {
            stdin.off('data', onData);
            process.stderr.write('\n');
            reject(usageError('cancelled; nothing was stored'));
            return;
          }
          if (char === '\u007f' || char === '\b') value = value.slice(0, -1);
          else value += char;
        }
      };
      stdin.on('data', onData);
    });
  } finally {
    stdin.setRawMode(false);
    stdin.pause();
  }
}

export function registerSecretCommands(program: Command): void {
  const secret = program.command('secret').description('manage secrets in the encrypted vault (values are never printed)');

  examples(
    secret
      .command('set <name>')
      .description('store a new secret; the value is read from stdin or a hidden prompt, never from arguments')
      .option('-s, --scope <scope...>', 'labels recorded with the secret (for example agent:ci-bot, team:platform)')
      .action(async (name: string, options: { scope?: string[] }, command: Command) => {
        const { secrets, context } = await contextFor(command);
        const { Vault } = await import('../secrets/index.js');
        if (!Vault.validName(name)) throw usageError(`"${name}" is not a valid secret name: use letters, digits, "_", ".", ":" or "-"`);
        if (secrets.vault.has(name)) throw usageError(`a secret named "${name}" already exists; use "gatehouse secret rotate ${name}"`);
        const value = await readValue(name);
        secrets.vault.set(name, value, options.scope ?? []);
        await recordChange(context, 'secret.set', name, `secret "${name}" stored`, { scopes: options.scope ?? [] });
        process.stderr.write(`Secret "${name}" stored.\n`);
      }),
    ['gatehouse secret set github-token', 'printf %s "$TOKEN" | gatehouse secret set github-token --scope agent:claude-code', 'op read op://dev/db/password | gatehouse secret set db-password'],
  );

  examples(
    secret
      .command('ls')
      .description('list secrets: names, scopes, created and rotated times, and configured providers (never values)')
      .option('--json', 'print JSON')
      .action(async (options: { json?: boolean }, command: Command) => {
        const { secrets, credentials } = await contextFor(command);
        // Which policy rules grant each secret, and to whom: the scope that policy gives it.
        const grantedBy = (name: string): string[] =>
          credentials.filter((rule) => rule.secret === name).map((rule) => (rule.agents ? `${rule.id} (${rule.agents.join(', ')})` : rule.id));
        const stored = secrets.vault.list().map((info) => ({ ...info, source: 'vault', grantedBy: grantedBy(info.name) }));
        const provided = secrets.providers.names().map((name) => ({ name, source: secrets.providers.describe(name), grantedBy: grantedBy(name) }));
        if (options.json) return printJson({ vault: stored, providers: provided });
        if (stored.length === 0 && provided.length === 0) {
          return void process.stdout.write('No secrets yet. Add one with "gatehouse secret set NAME".\n');
        }
        for (const s of stored) {
          process.stdout.write(
            `${s.name.padEnd(28)} ${(s.scopes.join(',') || '-').padEnd(24)} created ${s.createdAt}  ${s.rotatedAt ? `rotated ${s.rotatedAt}` : 'never rotated'}` +
              `${s.grantedBy.length ? `  granted by ${s.grantedBy.join('; ')}` : ''}\n`,
          );
        }
        for (const p of provided) {
          process.stdout.write(`${p.name.padEnd(28)} ${'-'.padEnd(24)} from ${p.source}${p.grantedBy.length ? `  granted by ${p.grantedBy.join('; ')}` : ''}\n`);
        }
      }),
    ['gatehouse secret ls', 'gatehouse secret ls --json'],
  );

  examples(
    secret
      .command('rm <name>')
      .description('delete a secret from the vault')
      .action(async (name: string, _options: unknown, command: Command) => {
        const { secrets, context } = await contextFor(command);
        if (!secrets.vault.remove(name)) throw usageError(`no secret named "${name}" in the vault; see "gatehouse secret ls"`);
        await recordChange(context, 'secret.rm', name, `secret "${name}" removed`);
        process.stderr.write(`Secret "${name}" removed.\n`);
      }),
    ['gatehouse secret rm old-token'],
  );

  examples(
    secret
      .command('rekey')
      .description('rotate the vault master key: the data key is re-wrapped, secrets stay as they are')
      .option('--stdin', 'read the new master key from stdin (hex, base64 or a passphrase) instead of generating one')
      .action(async (options: { stdin?: boolean }, command: Command) => {
        const { secrets, context } = await contextFor(command);
        const vault = secrets.vault;
        const newKey = options.stdin ? await readValue('the new master key') : undefined;
        const result = vault.rekey(newKey);
        await recordChange(context, 'secret.rekey', 'vault', 'vault master key rotated', { keySource: result.source });
        if (result.newKey !== undefined) {
          process.stdout.write(`${result.newKey}\n`);
          process.stderr.write('Master key rotated. Set GATEHOUSE_MASTER_KEY to the key above (shown once) before the next start.\n');
        } else if (result.source === 'GATEHOUSE_MASTER_KEY') {
          process.stderr.write('Master key rotated. Set GATEHOUSE_MASTER_KEY to the new key before the next start.\n');
        } else {
          process.stderr.write(`Master key rotated; ${result.source} now holds the new key.\n`);
        }
      }),
    ['gatehouse secret rekey', 'openssl rand -hex 32 | gatehouse secret rekey --stdin'],
  );

  examples(
    secret
      .command('rotate <name>')
      .description('replace the value of an existing secret (read from stdin or a hidden prompt)')
      .action(async (name: string, _options: unknown, command: Command) => {
        const { secrets, context } = await contextFor(command);
        if (!secrets.vault.has(name)) throw usageError(`no secret named "${name}" in the vault; add it with "gatehouse secret set ${name}"`);
        const value = await readValue(name);
        const info = secrets.vault.rotate(name, value);
        await recordChange(context, 'secret.rotate', name, `secret "${name}" rotated to version ${info.version}`, { version: info.version });
        process.stderr.write(`Secret "${name}" rotated (version ${info.version}).\n`);
      }),
    ['printf %s "$NEW_TOKEN" | gatehouse secret rotate github-token'],
  );
}
