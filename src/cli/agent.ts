/** `gatehouse agent add|ls|rm`: agent identities and their API keys. */
import type { Command } from 'commander';
import { examples, globalOptions, printJson, usageError } from './common.js';

async function registryFor(command: Command) {
  const { openAgentRegistry } = await import('../agents/index.js');
  const { resolveDataDir } = await import('../util/paths.js');
  return openAgentRegistry(resolveDataDir(globalOptions(command).dataDir));
}

export function registerAgentCommands(program: Command): void {
  const agent = program.command('agent').description('manage agent identities and their API keys');

  examples(
    agent
      .command('add <name>')
      .description('create an agent and print its API key (shown once; only a hash is kept)')
      .option('-t, --team <team...>', 'teams the agent belongs to (policy scope can name them)')
      .option('--json', 'print JSON')
      .action(async (name: string, options: { team?: string[]; json?: boolean }, command: Command) => {
        const created = (await registryFor(command)).add(name, options.team ?? []);
        if (options.json) return printJson(created);
        process.stdout.write(
          `Agent "${created.name}" created${created.teams.length ? ` (teams: ${created.teams.join(', ')})` : ''}.\n` +
            `API key (shown once; store it now):\n\n  ${created.key}\n\n` +
            `Give it to the agent as GATEHOUSE_AGENT_KEY, or as "Authorization: Bearer <key>" to the MCP gateway.\n`,
        );
      }),
    ['gatehouse agent add claude-code', 'gatehouse agent add ci-bot --team platform ci'],
  );

  examples(
    agent
      .command('ls')
      .description('list agents (never their keys)')
      .option('--json', 'print JSON')
      .action(async (options: { json?: boolean }, command: Command) => {
        const agents = (await registryFor(command)).list();
        if (options.json) return printJson(agents);
        if (agents.length === 0) return void process.stdout.write('No agents yet. Create one with "gatehouse agent add NAME".\n');
        for (const a of agents) {
          process.stdout.write(`${a.name.padEnd(24)} ${a.keyId.padEnd(20)} ${a.teams.join(',') || '-'}  ${a.createdAt}\n`);
        }
      }),
    ['gatehouse agent ls', 'gatehouse agent ls --json'],
  );

  examples(
    agent
      .command('rm <name>')
      .description('remove an agent; its key stops working at once')
      .action(async (name: string, _options: unknown, command: Command) => {
        if (!(await registryFor(command)).remove(name)) throw usageError(`no agent named "${name}"; see "gatehouse agent ls"`);
        process.stdout.write(`Agent "${name}" removed.\n`);
      }),
    ['gatehouse agent rm ci-bot'],
  );
}
