import type { Command } from 'commander';

export function registerKeysCommands(program: Command): void {
  void program;
}
