/**
 * The launcher API the MCP gateway uses for stdio servers: the real server-filesystem from npm, started in
 * a sandbox with a per-server policy, spoken to over its stdio pipes (JSON-RPC, newline-delimited). The
 * server is told it may read everything; the sandbox lets it see one directory.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { MemoryAuditLog } from '../src/audit/jsonl.js';
import { configSchema } from '../src/config/schema.js';
import { compilePolicy } from '../src/policy/compile.js';
import { startEgressProxy } from '../src/egress/index.js';
import { mcpServerLauncher } from '../src/sandbox/mcp.js';
import type { GatewayOptions } from '../src/gateway/index.js';
import { cleanup, hasBwrap, identities, mkdirOwned, scratch, skipWithoutBwrap, writeOwned, assertCheckoutReadable } from './sandbox-helpers.js';

const repository = new URL('../../', import.meta.url).pathname.replace(/\/$/, '');
const server = join(repository, 'node_modules', '@modelcontextprotocol', 'server-filesystem', 'dist', 'index.js');

/** A minimal JSON-RPC client over the sandboxed server's stdio. */
function rpc(child: Awaited<ReturnType<NonNullable<GatewayOptions['launch']>>>): (method: string, params?: unknown) => Promise<{ result?: any; error?: any }> {
  let buffer = '';
  let next = 1;
  const waiting = new Map<number, (message: any) => void>();
  child.stdout!.setEncoding('utf8').on('data', (chunk: string) => {
    buffer += chunk;
    let newline: number;
    while ((newline = buffer.indexOf('\n')) >= 0) {
      const line = buffer.slice(0, newline);
      buffer = buffer.slice(newline + 1);
      if (!line.trim()) continue;
      const message = JSON.parse(line) as { id?: number };
      if (message.id !== undefined) waiting.get(message.id)?.(message);
    }
  });
  return (method, params) => {
    const id = next++;
    child.stdin!.write(JSON.stringify({ jsonrpc: '2.0', id, method, ...(params ? { params } : {}) }) + '\n');
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`${method}: no answer`)), 15000);
      waiting.set(id, (message) => {
        clearTimeout(timer);
        resolve(message);
      });
    });
  };
}

for (const identity of identities()) {
  describe(`a stdio MCP server in the sandbox as ${identity.name}`, { skip: skipWithoutBwrap }, () => {
    let root: string;
    before(() => {
      assertCheckoutReadable(identity);
      assert.ok(hasBwrap, 'bwrap is required (GATEHOUSE_REQUIRE_SANDBOX=1): apt-get install bubblewrap');
      root = scratch(identity, 'mcp');
      mkdirOwned(identity, join(root, 'work'));
      mkdirOwned(identity, join(root, 'private'));
      writeOwned(identity, join(root, 'work', 'notes.txt'), 'inside the allowed path\n', 0o644);
      writeOwned(identity, join(root, 'private', 'secret.txt'), 'never for the server\n', 0o644);
      mkdirSync(join(root, 'home'), { recursive: true });
    });
    after(() => cleanup(root));

    test('reads inside its allowed path and fails outside it, even though the server itself allows everything', async () => {
      // The per-server policy: the server's code, and /work read-only for the fs server only; another
      // server's rule (private/) must not leak into it.
      const document = configSchema.parse({
        version: 1,
        policy: {
          filesystem: [
            { id: 'server-code', allow: { paths: [join(repository, 'node_modules')], access: 'ro' } },
            { id: 'fs-work', allow: { paths: [join(root, 'work')], access: 'ro' }, agents: ['mcp-server:fs'] },
            { id: 'other-private', allow: { paths: [join(root, 'private')], access: 'ro' }, agents: ['mcp-server:other'] },
          ],
        },
      }).policy;
      const audit = new MemoryAuditLog();
      // Typed as the gateway's `launch` option: this is what the node plugs in.
      const launch: NonNullable<GatewayOptions['launch']> = mcpServerLauncher({ policy: { current: compilePolicy(document) }, audit, ...(identity.user ? { user: identity.user } : {}) });
      const child = await launch('fs', { command: process.execPath, args: [server, root], env: {}, cwd: join(root, 'work') });
      const call = rpc(child);
      try {
        const initialized = await call('initialize', { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 'gatehouse-test', version: '0' } });
        assert.ok(initialized.result, JSON.stringify(initialized));
        child.stdin!.write(JSON.stringify({ jsonrpc: '2.0', method: 'notifications/initialized' }) + '\n');

        const inside = await call('tools/call', { name: 'read_text_file', arguments: { path: join(root, 'work', 'notes.txt') } });
        assert.match(JSON.stringify(inside.result), /inside the allowed path/);

        const outside = await call('tools/call', { name: 'read_text_file', arguments: { path: join(root, 'private', 'secret.txt') } });
        assert.doesNotMatch(JSON.stringify(outside), /never for the server/);
        assert.ok(outside.error || outside.result?.isError, 'the read outside fails');
      } finally {
        child.stdin!.end();
        child.kill('SIGTERM');
        await child.exited;
      }
      const launched = audit.records.find((record) => record.action === 'sandbox.launch');
      assert.equal(launched?.resource, 'mcp-server:fs');
      assert.equal(launched?.principal.agent, 'mcp-server:fs');
      assert.ok(audit.records.some((record) => record.action === 'sandbox.exit'));
    });

    test("a server whose policy lets it write the node's config is not started; one that cannot write it is", async () => {
      const audit = new MemoryAuditLog();
      const configDir = join(root, 'work', 'conf');
      mkdirOwned(identity, configDir);
      const configPath = join(configDir, 'gatehouse.yaml');
      const document = configSchema.parse({
        version: 1,
        policy: { filesystem: [{ id: 'fs-work', allow: { paths: [join(root, 'work')], access: 'rw' }, agents: ['mcp-server:writer'] }] },
      }).policy;
      const policy = { current: compilePolicy(document) };
      const launch = mcpServerLauncher({ policy, audit, config: () => ({ path: configPath, files: [configPath] }), ...(identity.user ? { user: identity.user } : {}) });
      await assert.rejects(launch('writer', { command: '/bin/sh', args: ['-c', 'exit 0'], env: {} }), /MCP server "writer" \(principal mcp-server:writer\): refusing to run: the config file .*gatehouse.yaml lies where the policy lets the program write/);
      assert.equal(audit.records.length, 0, 'nothing was launched');
      const child = await launch('reader', { command: '/bin/sh', args: ['-c', 'exit 0'], env: {} });
      assert.equal((await child.exited).code, 0);
    });

    test('each launch gets its own egress session, which ends when the server exits', async () => {
      const audit = new MemoryAuditLog();
      const socketDir = scratch({ name: 'host' }, 'mcp-sessions');
      const policy = { current: compilePolicy(configSchema.parse({ version: 1 }).policy) };
      const proxy = await startEgressProxy({ policy, audit, authenticate: () => undefined, settings: { listen: '127.0.0.1:0' }, socketDir });
      try {
        const launch = mcpServerLauncher({ policy, audit, egressSessionFor: (principal) => proxy.openSession(principal), ...(identity.user ? { user: identity.user } : {}) });
        for (let restart = 0; restart < 2; restart++) {
          const child = await launch('short-lived', { command: '/bin/sh', args: ['-c', 'exit 0'], env: {} });
          assert.equal(readdirSync(socketDir).length, 1, 'the running server has its session socket');
          await child.exited;
          // The session closes just after the exit is reported.
          for (let wait = 0; wait < 100 && readdirSync(socketDir).length > 0; wait++) await new Promise((resolve) => setTimeout(resolve, 10));
          assert.deepEqual(readdirSync(socketDir), [], 'no session outlives its server');
        }
      } finally {
        await proxy.close();
        cleanup(socketDir);
      }
    });
  });
}
