/**
 * `gatehouse mcp`: the stdio bridge a stdio-only MCP client launches as its "server" (gateway/bridge.ts), and
 * `gatehouse mcp pins` to list, diff and approve held tool definitions.
 */
import type { Command } from 'commander';
import type { BridgeTarget } from '../gateway/bridge.js';
import { examples, globalOptions, printJson, usageError } from './common.js';

interface BridgeOptions {
  url?: string;
  agent?: string;
  keyFile?: string;
}

async function dataDirOf(command: Command): Promise<string> {
  const { resolveDataDir } = await import('../util/paths.js');
  return resolveDataDir(globalOptions(command).dataDir);
}

async function pinStore(command: Command) {
  const { openStore } = await import('../store/index.js');
  const { PinStore } = await import('../gateway/pins.js');
  return new PinStore(openStore(await dataDirOf(command)));
}

/**
 * Where the bridge reaches the gateway: --url, else $GATEHOUSE_GATEWAY_URL (either may be `unix:<path>` for a
 * local socket; inside `gatehouse run` it is the gateway's URL); else the local socket of the node on this
 * data dir, falling back to the config's gateway.listen over HTTP when no node serves it.
 */
async function bridgeTarget(command: Command, flag: string | undefined): Promise<BridgeTarget> {
  const given = flag ?? (process.env.GATEHOUSE_GATEWAY_URL || undefined);
  if (given !== undefined) {
    if (given.startsWith('unix:')) return { socket: given.slice('unix:'.length) };
    if (!/^https?:\/\//i.test(given)) throw usageError(`the gateway URL "${given}" must start with http://, https:// or unix:`);
    return { url: given };
  }
  const { findConfigPath, loadConfigFile } = await import('../config/load.js');
  const { join } = await import('node:path');
  const { LOCAL_SOCKET } = await import('../gateway/local-socket.js');
  const dataDir = await dataDirOf(command);
  const path = findConfigPath(globalOptions(command).config, dataDir);
  const listen = path ? loadConfigFile(path).config.gateway.listen : '127.0.0.1:7401';
  return { socket: join(dataDir, LOCAL_SOCKET), fallbackUrl: `http://${listen}/mcp` };
}

async function agentKey(options: BridgeOptions): Promise<string | undefined> {
  if (options.keyFile) {
    const { readFileSync } = await import('node:fs');
    try {
      return readFileSync(options.keyFile, 'utf8').trim();
    } catch {
      throw usageError(`cannot read the key file ${options.keyFile}`);
    }
  }
  return process.env.GATEHOUSE_AGENT_KEY?.trim() || undefined;
}

async function runBridge(options: BridgeOptions, command: Command): Promise<void> {
  const target = await bridgeTarget(command, options.url);
  const key = await agentKey(options);
  // Inside `gatehouse run`, which names the gateway in GATEHOUSE_GATEWAY_URL, no key is needed: the run's own
  // socket there is its agent. Anywhere else a missing key is a mistake to say at once.
  const inRun = options.url === undefined && 'url' in target && target.url === process.env.GATEHOUSE_GATEWAY_URL;
  if (!key && !inRun) {
    throw usageError(
      `no agent key${options.agent ? ` for "${options.agent}"` : ''}: set GATEHOUSE_AGENT_KEY or pass --key-file (create one with "gatehouse agent add NAME")`,
    );
  }
  const { runStdioBridge } = await import('../gateway/bridge.js');
  process.exit(await runStdioBridge({ target, ...(key ? { key } : {}) }));
}

export function registerMcpCommands(program: Command): void {
  const mcp = examples(
    program
      .command('mcp')
      .description('stdio bridge to the MCP gateway: point a stdio-only MCP client at this command')
      .option('--url <url>', 'gateway endpoint, http(s)://... or unix:<socket> (default: $GATEHOUSE_GATEWAY_URL, else the local node\'s socket <data-dir>/mcp.sock, else gateway.listen from the config)')
      .option('--agent <name>', 'the agent this bridge speaks for (its key comes from $GATEHOUSE_AGENT_KEY or --key-file)')
      .option('--key-file <file>', 'file holding the agent API key')
      .action((options: BridgeOptions, command: Command) => runBridge(options, command)),
    [
      'GATEHOUSE_AGENT_KEY=ghk_... gatehouse mcp --agent claude-code',
      'gatehouse mcp --url http://127.0.0.1:7401/mcp --key-file ~/.config/gatehouse/agent.key',
    ],
  );

  const pins = mcp.command('pins').description('tool pins: list, diff and approve held tool definitions');
  examples(
    pins
      .command('list', { isDefault: true })
      .description('list pinned tools and those held for approval')
      .option('--json', 'print JSON')
      .option('--held', 'only tools held for approval')
      .action(async (options: { json?: boolean; held?: boolean }, command: Command) => {
        const rows = (await pinStore(command)).list().filter((row) => !options.held || row.state !== 'pinned');
        if (options.json) return printJson(rows);
        if (rows.length === 0) return void process.stdout.write('No tools pinned yet: tools are pinned the first time the gateway lists them.\n');
        for (const row of rows) {
          const flags = row.flags.length ? `  flags: ${row.flags.join(', ')}` : '';
          process.stdout.write(`${row.state.padEnd(13)} ${`${row.server}/${row.tool}`.padEnd(48)} ${(row.pendingDigest ?? row.digest ?? '').slice(7, 19)}${flags}\n`);
        }
      }),
    ['gatehouse mcp pins', 'gatehouse mcp pins list --held --json'],
  );
  examples(
    pins
      .command('diff <server> <tool>')
      .description('show the approved and the pending definition of a held tool')
      .option('--json', 'print JSON')
      .action(async (server: string, tool: string, options: { json?: boolean }, command: Command) => {
        const diff = (await pinStore(command)).diff(server, tool);
        if (!diff) throw usageError(`${server}/${tool} has no pending change; see "gatehouse mcp pins list --held"`);
        if (options.json) return printJson(diff);
        const before = JSON.stringify(diff.approved, null, 2)?.split('\n') ?? ['(none: held on first sight)'];
        const after = JSON.stringify(diff.pending, null, 2).split('\n');
        const kept = new Set(before);
        const added = new Set(after);
        for (const line of before) if (!added.has(line)) process.stdout.write(`- ${line}\n`);
        for (const line of after) process.stdout.write(`${kept.has(line) ? ' ' : '+'} ${line}\n`);
      }),
    ['gatehouse mcp pins diff github create_issue'],
  );
  examples(
    pins
      .command('approve <server> <tool>')
      .description('approve the pending definition of a held tool; the gateway lists it again')
      .action(async (server: string, tool: string, _options: unknown, command: Command) => {
        if (!(await pinStore(command)).approve(server, tool)) throw usageError(`${server}/${tool} has no pending change to approve`);
        process.stdout.write(`Approved ${server}/${tool}.\n`);
      }),
    ['gatehouse mcp pins approve github create_issue'],
  );
}
