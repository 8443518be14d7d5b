/**
 * Shared set-up for the gateway integration tests: a real gateway on 127.0.0.1 with a real policy engine,
 * a real agent registry in a temporary SQLite store, real upstream MCP servers from npm, and the official
 * SDK client on the other side.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { Client, StreamableHTTPClientTransport, type ClientOptions } from '@modelcontextprotocol/client';
import { AgentRegistry } from '../src/agents/index.js';
import { MemoryAuditLog } from '../src/audit/jsonl.js';
import type { AuditLog } from '../src/audit/record.js';
import { configSchema } from '../src/config/schema.js';
import { PinStore, startGateway, type GatewayOptions, type RunningGateway } from '../src/gateway/index.js';
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

/** `extra.localSocket` serves the local socket in the harness's data dir, as a node does. */
export async function startHarness(config: Record<string, unknown>, auditLog?: AuditLog, extra: Partial<GatewayOptions> & { localSocket?: boolean } = {}): Promise<Harness> {
  const parsed = configSchema.parse({ version: 1, ...config });
  const dataDir = mkdtempSync(join(tmpdir(), 'gatehouse-gw-'));
  const agents = new AgentRegistry(openStore(dataDir));
  const audit = new MemoryAuditLog();
  const policy = { current: compilePolicy(parsed.policy, { agents: parsed.agents }) as PolicyEngine };
  const gateway = await startGateway({
    settings: { ...parsed.gateway, listen: '127.0.0.1:0' },
    policy,
    audit: auditLog ?? audit,
    agents,
    agentTeams: parsed.agents,
    pins: new PinStore(openStore(dataDir)),
    node: 'test-node',
    ...(extra.localSocket ? { localSocketDir: dataDir } : {}),
    ...Object.fromEntries(Object.entries(extra).filter(([name]) => name !== 'localSocket')),
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

/** The misbehaving fixture server (test/fixtures/fixture-server.ts), compiled beside this file. */
export const fixtureEntry = new URL('./fixtures/fixture-server.js', import.meta.url).pathname;

export function fixtureUpstream(extra: Record<string, unknown> = {}, args: string[] = []): Record<string, unknown> {
  return { command: process.execPath, args: [fixtureEntry, ...args], ...extra };
}

/** The fixture server as a remote upstream: one session over Streamable HTTP on 127.0.0.1, in a process of its own. */
export async function fixtureOverHttp(env: Record<string, string> = {}): Promise<{ url: string; close(): void }> {
  const child = spawn(process.execPath, [fixtureEntry, '--http'], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'inherit'] });
  const url = await new Promise<string>((resolve, reject) => {
    let printed = '';
    child.stdout!.on('data', (chunk: Buffer) => {
      printed += chunk.toString();
      if (printed.includes('\n')) resolve(printed.trim());
    });
    child.once('exit', (code) => reject(new Error(`the fixture server exited with ${code}`)));
  });
  return { url, close: () => void child.kill('SIGKILL') };
}

export interface RawResponse {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}

/** A raw HTTP request to the gateway, for what the SDK client would never send (bad Host, bad JSON). */
export async function rawRequest(
  url: string,
  options: { method?: string; headers?: Record<string, string>; body?: string | Buffer },
): Promise<RawResponse> {
  const { request } = await import('node:http');
  const target = new URL(url);
  return new Promise((resolve, reject) => {
    const req = request(
      { host: target.hostname, port: target.port, path: target.pathname, method: options.method ?? 'POST', headers: options.headers ?? {} },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (chunk: Buffer) => chunks.push(chunk));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString('utf8') }));
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.setTimeout(10_000, () => req.destroy(new Error('raw request timed out')));
    req.end(options.body);
  });
}

export const JSON_HEADERS = { 'content-type': 'application/json', accept: 'application/json, text/event-stream' };

/** Opens a session by hand and returns its id (for raw requests on it). */
export async function rawSession(url: string, key: string): Promise<string> {
  const response = await rawRequest(url, {
    headers: { ...JSON_HEADERS, authorization: `Bearer ${key}` },
    body: JSON.stringify({
      jsonrpc: '2.0',
      id: 1,
      method: 'initialize',
      params: { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 'raw', version: '1' } },
    }),
  });
  const id = response.headers['mcp-session-id'];
  if (typeof id !== 'string') throw new Error(`initialize failed: ${response.status} ${response.body}`);
  await rawRequest(url, {
    headers: { ...JSON_HEADERS, authorization: `Bearer ${key}`, 'mcp-session-id': id, 'mcp-protocol-version': '2025-06-18' },
    body: JSON.stringify({ jsonrpc: '2.0', method: 'notifications/initialized' }),
  });
  return id;
}

/**
 * Calls the fixture's `hang` tool, cancels it giving `words` as the client's reason, and returns what the
 * fixture heard as the reason (its `last-cancel` tool), polled until the cancellation reached it.
 */
export async function reasonHeardOnCancel(client: Client, words: string): Promise<string> {
  const cancelling = new AbortController();
  const hanging = client.callTool({ name: 'fixture__hang', arguments: {} }, { signal: cancelling.signal });
  await new Promise((resolve) => setTimeout(resolve, 100));
  cancelling.abort(words);
  await assert.rejects(hanging);
  let heard = '';
  for (let i = 0; i < 50 && (heard === '' || heard === 'reason: '); i++) {
    await new Promise((resolve) => setTimeout(resolve, 20));
    const result = await client.callTool({ name: 'fixture__last-cancel', arguments: {} });
    heard = (result.content as { text: string }[]).map((block) => block.text).join('');
  }
  return heard;
}
