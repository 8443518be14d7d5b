import type { Command } from 'commander';

export function registerPolicyCommands(program: Command): void {
  void program;
}
