/**
 * What every command shares: finding the data dir and config, printing JSON or text, and exit codes.
 * Keep this file cheap to import: it is on the start-up path of every command.
 */
import type { Command } from 'commander';
import { GatehouseError } from '../util/errors.js';

export interface GlobalOptions {
  config?: string;
  dataDir?: string;
}

/** Global options (`--config`, `--data-dir`) as given to the root program. */
export function globalOptions(command: Command): GlobalOptions {
  let root = command;
  while (root.parent) root = root.parent;
  return root.opts<GlobalOptions>();
}

/** Prints a value as pretty JSON on stdout. */
export function printJson(value: unknown): void {
  process.stdout.write(JSON.stringify(value, null, 2) + '\n');
}

/** Sets the exit code without cutting off pending output (1: denied or a check failed). */
export function fail(code: 1 | 2 = 1): void {
  process.exitCode = code;
}

export function usageError(message: string): GatehouseError {
  return new GatehouseError('usage', message, { exitCode: 2 });
}

/** Adds "Examples:" to a command's help. */
export function examples(command: Command, lines: string[]): Command {
  return command.addHelpText('after', `\nExamples:\n${lines.map((l) => `  $ ${l}`).join('\n')}\n`);
}
