/**
 * Sessions are a shared resource: one agent's key may hold only its share of them, so it cannot lock every
 * other agent out of the gateway.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { fixtureUpstream, startHarness, type Harness } from './gateway-harness.js';

let harness: Harness;
let greedy: string;
let other: string;

before(async () => {
  harness = await startHarness({
    gateway: { maxSessionsPerAgent: 2, upstreams: { fixture: fixtureUpstream() } },
    policy: { mcp: [{ id: 'all', allow: { tools: ['*'] } }] },
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
