#!/usr/bin/env node
/**
 * The `gatehouse` command. Each command group lives in its own file and registers its commands here; the
 * work behind a command is imported only when that command runs, so start-up stays lean.
 */
import { Command, CommanderError } from 'commander';
import { realpathSync } from 'node:fs';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { isGatehouseError } from '../util/errors.js';
import { guardRegexps } from '../util/regexp-guard.js';
import { registerAgentCommands } from './agent.js';
import { registerCaCommands } from './ca.js';
import { registerMcpCommands } from './mcp.js';
import { registerStatusCommands } from './status.js';
import { registerAuditCommands } from './audit.js';
import { registerConfigCommands } from './config.js';
import { registerKeysCommands } from './keys.js';
import { registerNodeCommands } from './node.js';
import { registerPolicyCommands } from './policy.js';
import { registerRunCommands } from './run.js';
import { registerDoctorCommands } from './doctor.js';
import { registerScanCommands } from './scan.js';
import { registerSecretCommands } from './secret.js';

const { version } = createRequire(import.meta.url)('../../../package.json') as { version: string };

export function buildProgram(): Command {
  const program = new Command('gatehouse')
    .description('Runtime governance for AI agents: one policy for network, filesystem, credentials and MCP tools.')
    .version(version, '-V, --version')
    .option('-c, --config <file>', 'configuration file (default: ./gatehouse.yaml, else <data-dir>/gatehouse.yaml)')
    .option('-d, --data-dir <dir>', 'state directory (default: $GATEHOUSE_HOME or ~/.gatehouse)')
    .showHelpAfterError('(run with --help for usage)')
    .exitOverride();
  registerNodeCommands(program);
  registerPolicyCommands(program);
  registerRunCommands(program);
  registerDoctorCommands(program);
  registerKeysCommands(program);
  registerConfigCommands(program);
  registerAgentCommands(program);
  registerCaCommands(program);
  registerMcpCommands(program);
  registerStatusCommands(program);
  registerAuditCommands(program);
  registerSecretCommands(program);
  registerScanCommands(program);
  return program;
}

async function main(argv: string[]): Promise<void> {
  guardRegexps();
  const program = buildProgram();
  try {
    await program.parseAsync(argv);
  } catch (error) {
    if (error instanceof CommanderError) {
      // Help and --version exit 0; usage mistakes exit 2 (commander already printed the message).
      process.exitCode = error.exitCode === 0 ? 0 : 2;
      return;
    }
    if (isGatehouseError(error)) {
      process.stderr.write(`gatehouse: ${error.message}\n`);
      const text = error.details?.text;
      if (typeof text === 'string' && text.includes('\n')) process.stderr.write(text + '\n');
      process.exitCode = error.exitCode;
      return;
    }
    process.stderr.write(`gatehouse: internal error: ${error instanceof Error ? error.message : String(error)}\n`);
    if (process.env.GATEHOUSE_DEBUG) console.error(error);
    process.exitCode = 2;
  }
}

// Run only as the program itself (also through npm's bin symlink), not when a test imports buildProgram.
const entry = process.argv[1];
if (entry !== undefined && realpathSync(entry) === fileURLToPath(import.meta.url)) await main(process.argv);
