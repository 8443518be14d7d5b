/**
 * Sessions and running calls are shared resources: one agent's key may hold only its share of them, so it
 * cannot lock every other agent out of the gateway.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import type { CallToolResult } from '@modelcontextprotocol/client';
import { fixtureUpstream, JSON_HEADERS, rawRequest, startHarness, type Harness } from './gateway-harness.js';

let harness: Harness;
let greedy: string;
let other: string;

before(async () => {
  harness = await startHarness({
    gateway: { maxSessionsPerAgent: 2, maxCallsPerAgent: 2, upstreams: { fixture: fixtureUpstream({}, ['--echoing']) } },
    policy: { mcp: [{ id: 'all', allow: { tools: ['*'], prompts: ['*'], resources: ['*'] } }] },
  });
  greedy = harness.agents.add('greedy').key;
  other = harness.agents.add('other').key;
});
after(() => harness.close());

test('an agent cannot open more sessions than its share, and other agents still can', async () => {
  await harness.connect(greedy);
  await harness.connect(greedy);
  await assert.rejects(harness.connect(greedy), /maxSessionsPerAgent/);
  const client = await harness.connect(other);
  assert.ok((await client.listTools()).tools.length > 0);
  assert.ok(harness.audit.records.some((r) => r.action === 'session.refused' && r.principal.agent === 'greedy'), 'the refusal is recorded');
});

test('an agent cannot run more calls at once than its share, across its sessions; a finished call frees its place', async () => {
  const busy = harness.agents.add('busy').key;
  const [first, second] = [await harness.connect(busy), await harness.connect(busy)];
  const stop = new AbortController();
  const hanging = [first!, second!].map((client) => client.callTool({ name: 'fixture__hang', arguments: {} }, { signal: stop.signal }).catch(() => 'cancelled'));
  await new Promise((resolve) => setTimeout(resolve, 200));
  const refused = (await first!.callTool({ name: 'fixture__echo', arguments: { message: 'one more' } })) as CallToolResult;
  assert.equal(refused.isError, true);
  assert.match(JSON.stringify(refused.content), /already has 2 calls running \(gateway.maxCallsPerAgent is 2\)/);
  assert.ok(harness.audit.records.some((r) => r.action === 'tools/call' && r.effect === 'deny' && r.rules.includes('limit') && r.principal.agent === 'busy'));
  // Another agent is not held back.
  const bystander = await harness.connect(other);
  assert.deepEqual(((await bystander.callTool({ name: 'fixture__echo', arguments: { message: 'fine' } })) as CallToolResult).content, [{ type: 'text', text: 'fine' }]);
  stop.abort();
  assert.deepEqual(await Promise.all(hanging), ['cancelled', 'cancelled']);
  let freed: CallToolResult | undefined;
  for (let i = 0; i < 50; i += 1) {
    freed = (await first!.callTool({ name: 'fixture__echo', arguments: { message: 'freed' } })) as CallToolResult;
    if (!freed.isError) break;
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  assert.deepEqual(freed?.content, [{ type: 'text', text: 'freed' }]);
});

test('prompt gets and resource reads take places among an agent\'s running calls: past its share they are refused too', async () => {
  const reader = harness.agents.add('reader').key;
  const client = await harness.connect(reader);
  const stop = new AbortController();
  const hanging = [1, 2].map(() => client.callTool({ name: 'fixture__hang', arguments: {} }, { signal: stop.signal }).catch(() => 'cancelled'));
  await new Promise((resolve) => setTimeout(resolve, 200));
  await assert.rejects(client.readResource({ uri: 'fixture://note' }), /already has 2 calls running \(gateway.maxCallsPerAgent is 2\)/);
  await assert.rejects(client.getPrompt({ name: 'fixture__echo', arguments: { text: 'hi' } }), /already has 2 calls running/);
  for (const action of ['resources/read', 'prompts/get']) {
    assert.ok(harness.audit.records.some((r) => r.action === action && r.effect === 'deny' && r.rules.includes('limit') && r.principal.agent === 'reader'), `${action} refusal recorded`);
  }
  stop.abort();
  await Promise.all(hanging);
  // Once the calls end, reads go through again.
  let read: unknown;
  for (let i = 0; i < 50 && read === undefined; i += 1) {
    read = await client.readResource({ uri: 'fixture://note' }).catch(() => new Promise((resolve) => setTimeout(() => resolve(undefined), 20)));
  }
  assert.match(JSON.stringify(read), /a note/);
});

test('a 2026-07-28 agent, which needs no session, cannot run more calls at once than its share either', async () => {
  const modern = harness.agents.add('modern-busy').key;
  const call = (id: number, name: string, signal?: AbortSignal) =>
    fetch(harness.gateway.url, {
      method: 'POST',
      headers: { ...JSON_HEADERS, authorization: `Bearer ${modern}`, 'mcp-protocol-version': '2026-07-28', 'mcp-method': 'tools/call', 'mcp-name': name },
      body: JSON.stringify({
        jsonrpc: '2.0',
        id,
        method: 'tools/call',
        params: { name, arguments: name === 'fixture__echo' ? { message: 'one more' } : {}, _meta: { 'io.modelcontextprotocol/protocolVersion': '2026-07-28', 'io.modelcontextprotocol/clientCapabilities': {} } },
      }),
      ...(signal ? { signal } : {}),
    });
  const stop = new AbortController();
  const hanging = [1, 2].map((id) => call(id, 'fixture__hang', stop.signal).then((response) => response.text()).catch(() => 'cancelled'));
  await new Promise((resolve) => setTimeout(resolve, 200));
  const refused = await (await call(3, 'fixture__echo')).text();
  stop.abort();
  await Promise.all(hanging);
  assert.match(refused, /already has 2 calls running \(gateway.maxCallsPerAgent is 2\)/);
  assert.ok(harness.audit.records.some((r) => r.action === 'tools/call' && r.effect === 'deny' && r.rules.includes('limit') && r.principal.agent === 'modern-busy'));
});

test('sessions opened at once, while the upstreams are still starting, cannot slip past the limit together', async () => {
  // A fresh gateway: the first sessions wait for its upstreams to start, the window in which each opening
  // session must already count.
  const cold = await startHarness({
    gateway: { maxSessionsPerAgent: 1, upstreams: { fixture: fixtureUpstream(), second: fixtureUpstream() } },
    policy: { mcp: [{ id: 'all', allow: { tools: ['*'] } }] },
  });
  try {
    const key = cold.agents.add('eager').key;
    const initialize = JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'initialize', params: { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 'raw', version: '1' } } });
    const answers = await Promise.all(
      Array.from({ length: 5 }, () => rawRequest(cold.gateway.url, { headers: { ...JSON_HEADERS, authorization: `Bearer ${key}` }, body: initialize })),
    );
    assert.deepEqual(answers.map((answer) => answer.status).sort(), [200, 503, 503, 503, 503]);
    assert.equal(cold.gateway.status().sessions, 1);
  } finally {
    await cold.close();
  }
});
