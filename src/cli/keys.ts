import type { Command } from 'commander';
import { examples, globalOptions, printJson } from './common.js';

export function registerKeysCommands(program: Command): void {
  const keys = program.command('keys').description('manage Ed25519 signing keys');
  examples(
    keys
      .command('generate')
      .description('create an Ed25519 key pair (private key mode 0600) for signing policy bundles and audit checkpoints')
      .option('--name <name>', 'file name stem: <name>.key and <name>.pub', 'node')
      .option('--dir <dir>', 'where to write them (default: <data-dir>/keys)')
      .option('--force', 'replace an existing key')
      .option('--json', 'print JSON')
      .action(async (options: { name: string; dir?: string; force?: boolean; json?: boolean }, command: Command) => {
        const { join, resolve } = await import('node:path');
        const { resolveDataDir } = await import('../util/paths.js');
        const { writeKeyPair } = await import('../util/keys.js');
        if (!/^[A-Za-z0-9_.-]+$/.test(options.name)) {
          const { usageError } = await import('./common.js');
          throw usageError(`--name "${options.name}" must be letters, digits, ".", "_" or "-"`);
        }
        const dir = options.dir ? resolve(options.dir) : join(resolveDataDir(globalOptions(command).dataDir), 'keys');
        const pair = writeKeyPair(dir, options.name, options.force === true);
        if (options.json) printJson({ keyId: pair.keyId, privateKey: pair.privatePath, publicKey: pair.publicPath });
        else process.stdout.write(`created key ${pair.keyId}\n  private ${pair.privatePath} (keep it secret)\n  public  ${pair.publicPath} (list it in node.trustedKeys)\n`);
      }),
    ['gatehouse keys generate', 'gatehouse keys generate --name release --dir ./keys'],
  );
}
