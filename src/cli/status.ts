/** `gatehouse status`: the running gateway's upstreams with their state, tool counts, restarts and last error. */
import type { Command } from 'commander';
import { examples, fail, globalOptions, printJson } from './common.js';

interface StatusReport {
  url: string;
  sessions: number;
  upstreams: { name: string; kind: string; state: string; pid?: number; tools?: number; restarts: number; lastError?: string; garbageLines: number; inFlight: number }[];
  catalog?: { held: { upstream: string; tool: string; reason: string }[]; collisions: unknown[]; unavailable: { upstream: string; error: string }[] };
}

export function registerStatusCommands(program: Command): void {
  examples(
    program
      .command('status')
      .description('show the running MCP gateway: upstreams, their state, tool counts, restarts and last error')
      .option('--url <url>', 'gateway base URL (default: from gateway.listen in the config)')
      .option('--json', 'print JSON')
      .action(async (options: { url?: string; json?: boolean }, command: Command) => {
        let base = options.url?.replace(/\/mcp$/, '');
        if (!base) {
          const { resolveDataDir } = await import('../util/paths.js');
          const { findConfigPath, loadConfigFile } = await import('../config/load.js');
          const path = findConfigPath(globalOptions(command).config, resolveDataDir(globalOptions(command).dataDir));
          base = `http://${path ? loadConfigFile(path).config.gateway.listen : '127.0.0.1:7401'}`;
        }
        let report: StatusReport;
        try {
          const response = await fetch(`${base}/status`, { signal: AbortSignal.timeout(5000) });
          if (!response.ok) throw new Error(`HTTP ${response.status}`);
          report = (await response.json()) as StatusReport;
        } catch (error) {
          process.stderr.write(`gatehouse: no gateway answered at ${base} (${error instanceof Error ? error.message : String(error)}); start one with "gatehouse up"\n`);
          return fail(1);
        }
        if (options.json) return printJson(report);
        process.stdout.write(`Gateway ${report.url}: ${report.sessions} session${report.sessions === 1 ? '' : 's'}\n`);
        for (const u of report.upstreams) {
          const tools = u.tools === undefined ? '-' : String(u.tools);
          process.stdout.write(
            `  ${u.name.padEnd(20)} ${u.kind.padEnd(6)} ${u.state.padEnd(9)} tools ${tools.padStart(4)}  restarts ${u.restarts}${u.lastError ? `  last error: ${u.lastError}` : ''}\n`,
          );
        }
        for (const held of report.catalog?.held ?? []) {
          process.stdout.write(`  held: ${held.upstream}/${held.tool} (${held.reason}); see "gatehouse mcp pins diff ${held.upstream} ${held.tool}"\n`);
        }
      }),
    ['gatehouse status', 'gatehouse status --json'],
  );
}
