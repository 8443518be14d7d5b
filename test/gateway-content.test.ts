/**
 * Content defence through the gateway with the real scanner: a secret in a call's arguments, a secret in
 * a result, and the block / redact / log choice the policy makes.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { CallToolResult, Client } from '@modelcontextprotocol/client';
import { SAMPLES, seededRandom } from '../src/dlp/samples.js';
import { fixtureUpstream, startHarness, type Harness } from './gateway-harness.js';

const token = SAMPLES['github-pat']!(seededRandom(7));
const allowAll = [{ id: 'all', allow: { server: 'fixture', tools: ['*'] } }];

async function setUp(action: 'block' | 'redact' | 'log'): Promise<{ harness: Harness; client: Client }> {
  const harness = await startHarness({
    gateway: { upstreams: { fixture: fixtureUpstream({ env: { FIXTURE_LEAK: token } }) } },
    policy: { mcp: allowAll, dlp: { action } },
  });
  const client = await harness.connect(harness.agents.add('tester').key);
  return { harness, client };
}

function text(result: CallToolResult): string {
  return result.content.map((block) => (block.type === 'text' ? block.text : '')).join('');
}

describe('policy dlp action "block"', () => {
  let harness: Harness;
  let client: Client;
  before(async () => ({ harness, client } = await setUp('block')));
  after(() => harness.close());

  test('blocks a call whose arguments carry a secret before it reaches the upstream, and records the finding', async () => {
    const result = (await client.callTool({ name: 'fixture__echo', arguments: { message: `deploy with ${token}` } })) as CallToolResult;
    assert.equal(result.isError, true);
    assert.match(text(result), /arguments contain a secret/);
    assert.ok(!text(result).includes(token));
    const record = harness.audit.records.findLast((r) => r.action === 'tools/call');
    assert.equal(record?.effect, 'deny');
    assert.deepEqual(record?.rules, ['dlp']);
    assert.match(JSON.stringify(record?.details), /github-pat/);
    assert.ok(!JSON.stringify(record).includes(token), 'the audit record never holds the secret');
  });

  test('withholds a result that carries a secret', async () => {
    const result = (await client.callTool({ name: 'fixture__leak', arguments: {} })) as CallToolResult;
    assert.equal(result.isError, true);
    assert.ok(!JSON.stringify(result).includes(token));
    assert.match(text(result), /result contained a secret/);
  });

  test('lets clean calls through', async () => {
    const result = (await client.callTool({ name: 'fixture__echo', arguments: { message: 'nothing secret here' } })) as CallToolResult;
    assert.equal(text(result), 'nothing secret here');
  });
});

describe('policy dlp action "redact"', () => {
  let harness: Harness;
  let client: Client;
  before(async () => ({ harness, client } = await setUp('redact')));
  after(() => harness.close());

  test('redacts the secret in the arguments on the way up and in the result on the way back', async () => {
    const echoed = (await client.callTool({ name: 'fixture__echo', arguments: { message: `token ${token} end` } })) as CallToolResult;
    assert.equal(text(echoed), 'token [REDACTED:github-pat] end');
    const leaked = (await client.callTool({ name: 'fixture__leak', arguments: {} })) as CallToolResult;
    assert.equal(text(leaked), 'the key is [REDACTED:github-pat]');
  });
});

describe('policy dlp action "log"', () => {
  let harness: Harness;
  let client: Client;
  before(async () => ({ harness, client } = await setUp('log')));
  after(() => harness.close());

  test('forwards the content unchanged and records what it found', async () => {
    const leaked = (await client.callTool({ name: 'fixture__leak', arguments: {} })) as CallToolResult;
    assert.equal(text(leaked), `the key is ${token}`);
    const record = harness.audit.records.findLast((r) => r.action === 'tools/call');
    assert.equal(record?.effect, 'allow');
    assert.match(JSON.stringify(record?.details?.resultDlp), /logged/);
  });
});
