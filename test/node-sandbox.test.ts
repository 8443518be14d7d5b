/**
 * A node runs every stdio MCP server in its own sandbox: server-filesystem, told it may serve a whole
 * directory, sees only the part the policy gives its principal (`mcp-server:<name>`).
 */
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { describe, it } from 'node:test';
import { Client, StreamableHTTPClientTransport } from '@modelcontextprotocol/client';
import { pino } from 'pino';
import { openAgentRegistry } from '../src/agents/index.js';
import { startNode } from '../src/node/daemon.js';
import { skipWithoutBwrap } from './sandbox-helpers.js';

const repo = resolve(import.meta.dirname, '..', '..');

describe('node: sandboxed MCP servers', { skip: skipWithoutBwrap }, () => {
  it('serves a filesystem server that reads inside its allowed path and cannot see outside it', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'gh-node-sandbox-'));
    const served = join(dir, 'served');
    mkdirSync(join(served, 'allowed'), { recursive: true });
    writeFileSync(join(served, 'allowed', 'notes.txt'), 'inside the allowed path\n');
    writeFileSync(join(served, 'secret.txt'), 'the server was told it may read this\n');
    const configPath = join(dir, 'gatehouse.yaml');
    writeFileSync(
      configPath,
      [
        'version: 1',
        'gateway:',
        '  upstreams:',
        `    fs: { command: ${JSON.stringify(join(repo, 'node_modules', '.bin', 'mcp-server-filesystem'))}, args: [${JSON.stringify(served)}] }`,
        'policy:',
        '  filesystem:',
        '    - id: fs-server-code',
        '      agents: [mcp-server:fs]',
        `      allow: { paths: [${JSON.stringify(join(repo, 'node_modules'))}, ${JSON.stringify(process.execPath)}, /usr, /lib, /lib64, /bin, /etc] }`,
        '    - id: fs-server-data',
        '      agents: [mcp-server:fs]',
        `      allow: { paths: [${JSON.stringify(join(served, 'allowed'))}] }`,
        '  mcp:',
        '    - { id: fs-tools, agents: [dev], allow: { server: fs } }',
      ].join('\n'),
    );
    const dataDir = join(dir, 'data');
    const node = await startNode({ configPath, dataDir, logger: pino({ level: 'silent' }), apiListen: '127.0.0.1:0', gatewayListen: '127.0.0.1:0', egressListen: '127.0.0.1:0' });
    const client = new Client({ name: 'node-sandbox-test', version: '1' });
    try {
      const key = openAgentRegistry(dataDir).add('dev').key;
      await client.connect(new StreamableHTTPClientTransport(new URL(node.gateway!.url), { requestInit: { headers: { authorization: `Bearer ${key}` } } }));
      const read = async (path: string) => client.callTool({ name: 'fs__read_text_file', arguments: { path } });
      const inside = await read(join(served, 'allowed', 'notes.txt'));
      assert.deepEqual(inside.content, [{ type: 'text', text: 'inside the allowed path\n' }]);
      const outside = await read(join(served, 'secret.txt'));
      assert.equal(outside.isError, true);
      assert.doesNotMatch(JSON.stringify(outside.content), /told it may read this/);
    } finally {
      await client.close();
      await node.close();
    }
  });
});
