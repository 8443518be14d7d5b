import type { Command } from 'commander';
import { examples, globalOptions } from './common.js';

export function registerNodeCommands(program: Command): void {
  examples(
    program
      .command('up')
      .description('start a node on embedded defaults; on first run create the data dir, keys and an example policy')
      .option('--api <address>', 'listen address for the local API (default: node.api.listen, 127.0.0.1:7400)')
      .option('--gateway <address>', 'listen address for the MCP gateway (default: gateway.listen, 127.0.0.1:7401)')
      .option('--egress <address>', 'listen address for the egress proxy (default: egress.listen, 127.0.0.1:7402)')
      .action(async (options: { api?: string; gateway?: string; egress?: string }, command: Command) => {
        const { existsSync, writeFileSync } = await import('node:fs');
        const { join } = await import('node:path');
        const { findConfigPath } = await import('../config/load.js');
        const { EXAMPLE_CONFIG } = await import('../node/defaults.js');
        const { ensurePrivateDir, resolveDataDir } = await import('../util/paths.js');
        const globals = globalOptions(command);
        const dataDir = ensurePrivateDir(resolveDataDir(globals.dataDir));
        let configPath = findConfigPath(globals.config, dataDir);
        if (!configPath) {
          configPath = join(dataDir, 'gatehouse.yaml');
          if (!existsSync(configPath)) {
            writeFileSync(configPath, EXAMPLE_CONFIG, { mode: 0o600 });
            process.stdout.write(`created ${configPath} (an example policy; edit it, it reloads on save)\n`);
          }
        }
        await runNode({ ...globals, config: configPath, dataDir }, options);
      }),
    ['gatehouse up', 'GATEHOUSE_HOME=/tmp/gh gatehouse up --api 127.0.0.1:7500'],
  );

  examples(
    program
      .command('node')
      .description('run a node from gatehouse.yaml: the decision API, the MCP gateway and the egress proxy')
      .option('--api <address>', 'listen address for the local API (default: node.api.listen)')
      .option('--gateway <address>', 'listen address for the MCP gateway (default: gateway.listen)')
      .option('--egress <address>', 'listen address for the egress proxy (default: egress.listen)')
      .action(async (options: { api?: string; gateway?: string; egress?: string }, command: Command) => {
        await runNode(globalOptions(command), options);
      }),
    ['gatehouse node --config /etc/gatehouse/gatehouse.yaml', 'gatehouse --data-dir /var/lib/gatehouse node'],
  );
}

async function runNode(globals: { config?: string; dataDir?: string }, listen: { api?: string; gateway?: string; egress?: string }): Promise<void> {
  const { commandContext } = await import('./context.js');
  const { startNode } = await import('../node/daemon.js');
  const { createLogger } = await import('../node/log.js');
  const { ensurePrivateDir } = await import('../util/paths.js');
  const context = commandContext(globals, { requireConfig: true });
  const logger = createLogger();
  const node = await startNode({
    configPath: context.configPath!,
    dataDir: ensurePrivateDir(context.dataDir),
    logger,
    ...(listen.api ? { apiListen: listen.api } : {}),
    ...(listen.gateway ? { gatewayListen: listen.gateway } : {}),
    ...(listen.egress ? { egressListen: listen.egress } : {}),
  });
  const lines = [
    `gatehouse node "${node.name}" is running`,
    `  config       ${context.configPath}`,
    `  data dir     ${node.dataDir}`,
    `  policy       ${node.holder.current.version} (${node.holder.current.ruleCount} rules) from ${node.holder.source}`,
    `  decision API ${node.api.url}  (GET /healthz, POST /v1/decide, POST /v1/explain, GET /v1/policy, GET /metrics)`,
    node.gateway ? `  MCP gateway  ${node.gateway.url}  (${Object.keys(node.config.gateway.upstreams).length} upstream servers)` : '  MCP gateway  off (gateway.enabled: false)',
    ...(node.gateway?.socketPath ? [`               ${node.gateway.socketPath}  (for gatehouse mcp, the stdio bridge; sandboxes get the gateway at its URL)`] : []),
    node.egress
      ? `  egress proxy http://${node.egress.address.host.includes(':') ? `[${node.egress.address.host}]` : node.egress.address.host}:${node.egress.address.port}  (HTTP, CONNECT and SOCKS5; agents authenticate with their key)`
      : '  egress proxy off (egress.enabled: false)',
    `  audit log    ${node.dataDir}/audit/`,
    `stop with Ctrl-C`,
  ];
  process.stdout.write(lines.join('\n') + '\n');
  await new Promise<void>((resolve) => {
    const stop = (signal: string): void => {
      process.stdout.write(`\n${signal}: stopping\n`);
      node.close().then(resolve, (error: unknown) => {
        logger.error({ error: String(error) }, 'error while stopping');
        resolve();
      });
    };
    process.once('SIGINT', () => stop('SIGINT'));
    process.once('SIGTERM', () => stop('SIGTERM'));
  });
}
