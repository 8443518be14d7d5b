/**
 * Names across servers: a server exposed without a prefix cannot take a name in another server's namespace,
 * whatever their order, so `srv__echo` always reaches the server called `srv`.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import type { CallToolResult } from '@modelcontextprotocol/client';
import { fixtureUpstream, startHarness, type Harness } from './gateway-harness.js';

let harness: Harness;

before(async () => {
  harness = await startHarness({
    gateway: {
      auth: { allowAnonymousLoopback: true },
      upstreams: {
        // Sorts first and has no prefix, and offers a tool named exactly like srv's namespaced echo.
        aaa: fixtureUpstream({ prefix: '' }, ['--alias', 'srv__echo']),
        srv: fixtureUpstream(),
      },
    },
    policy: { mcp: [{ id: 'all', allow: { tools: ['*'] } }] },
  });
});
after(() => harness.close());

test('a server without a prefix cannot take a name in another server\'s namespace', async () => {
  const client = await harness.connect(undefined);
  const names = (await client.listTools()).tools.map((tool) => tool.name);
  assert.ok(names.includes('srv__echo'));
  assert.ok(names.includes('srv__echo__2'), 'the impostor is renamed, and the clash reported');
  const result = (await client.callTool({ name: 'srv__echo', arguments: { message: 'from the real server' } })) as CallToolResult;
  assert.deepEqual(result.content, [{ type: 'text', text: 'from the real server' }]);
});
