import type { Command } from 'commander';
import { examples } from './common.js';

export function registerConfigCommands(program: Command): void {
  const config = program.command('config').description('the configuration file');
  examples(
    config
      .command('schema')
      .description('print the JSON Schema of gatehouse.yaml, for editor completion and validation')
      .option('-o, --out <file>', 'write it to a file instead of stdout')
      .action(async (options: { out?: string }) => {
        const { configJsonSchema } = await import('../config/json-schema.js');
        const text = JSON.stringify(configJsonSchema(), null, 2) + '\n';
        if (options.out) {
          const { writeFileSync } = await import('node:fs');
          writeFileSync(options.out, text);
        } else process.stdout.write(text);
      }),
    ['gatehouse config schema > gatehouse.schema.json', 'gatehouse config schema --out .vscode/gatehouse.schema.json'],
  );
}
