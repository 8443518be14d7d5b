/**
 * Shared set-up for the gateway integration tests: a real gateway on 127.0.0.1 with a real policy engine,
 * a real agent registry in a temporary SQLite store, real upstream MCP servers from npm, and the official
 * SDK client on the other side.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { Client, StreamableHTTPClientTransport, type ClientOptions } from '@modelcontextprotocol/client';
import { AgentRegistry } from '../src/agents/index.js';
import { MemoryAuditLog } from '../src/audit/jsonl.js';
import { configSchema } from '../src/config/schema.js';
import { startGateway, type RunningGateway } from '../src/gateway/index.js';
import { compilePolicy } from '../src/policy/index.js';
import type { PolicyEngine } from '../src/policy/engine.js';
import { openStore } from '../src/store/index.js';

const require = createRequire(import.meta.url);

/** The server-everything entry point, run with this node. */
export const everythingEntry = join(dirname(require.resolve('@modelcontextprotocol/server-everything/package.json')), 'dist', 'index.js');
export const filesystemEntry = join(dirname(require.resolve('@modelcontextprotocol/server-filesystem/package.json')), 'dist', 'index.js');

export interface Harness {
  gateway: RunningGateway;
  audit: MemoryAuditLog;
  agents: AgentRegistry;
  policy: { current: PolicyEngine };
  dataDir: string;
  connect(key: string | undefined, options?: ClientOptions, headers?: Record<string, string>): Promise<Client>;
  close(): Promise<void>;
}

export async function startHarness(config: Record<string, unknown>): Promise<Harness> {
  const parsed = configSchema.parse({ version: 1, ...config });
  const dataDir = mkdtempSync(join(tmpdir(), 'gatehouse-gw-'));
  const agents = new AgentRegistry(openStore(dataDir));
  const audit = new MemoryAuditLog();
  const policy = { current: compilePolicy(parsed.policy, { agents: parsed.agents }) as PolicyEngine };
  const gateway = await startGateway({
    settings: { ...parsed.gateway, listen: '127.0.0.1:0' },
    policy,
    audit,
    agents,
    agentTeams: parsed.agents,
    node: 'test-node',
  });
  const clients: Client[] = [];
  return {
    gateway,
    audit,
    agents,
    policy,
    dataDir,
    async connect(key, options = {}, headers = {}) {
      const client = new Client({ name: 'test-client', version: '1.0.0' }, options);
      const transport = new StreamableHTTPClientTransport(new URL(gateway.url), {
        requestInit: { headers: { ...(key ? { authorization: `Bearer ${key}` } : {}), ...headers } },
      });
      await client.connect(transport);
      clients.push(client);
      return client;
    },
    async close() {
      await Promise.all(clients.map((client) => client.close().catch(() => undefined)));
      await gateway.close();
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

export function everythingUpstream(extra: Record<string, unknown> = {}): Record<string, unknown> {
  return { command: process.execPath, args: [everythingEntry, 'stdio'], ...extra };
}
