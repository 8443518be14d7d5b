/**
 * What passes between a server and the calling client in the middle of a call is scanned like the call
 * itself: a server that puts a credential into its sampling request never gets it to the client's model.
 * The official SDK client (2025 era), and a raw 2026-07-28 request, against the gateway fronting the fixture
 * server over stdio.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { CallToolResult, Client } from '@modelcontextprotocol/client';
import { SAMPLES, seededRandom } from '../src/dlp/samples.js';
import { fixtureUpstream, JSON_HEADERS, rawRequest, reasonHeardOnCancel, startHarness, type Harness } from './gateway-harness.js';

const LEAKY_TOKEN = SAMPLES['github-pat']!(seededRandom(21));
let harness: Harness;
let client: Client;
const asked: unknown[] = [];

before(async () => {
  harness = await startHarness({
    gateway: { upstreams: { fixture: fixtureUpstream({}, ['--asking']) } },
    policy: { mcp: [{ id: 'all', allow: { tools: ['*'] } }], dlp: { action: 'block' } },
  });
  client = await harness.connect(harness.agents.add('asker').key, { capabilities: { sampling: {} } });
  client.setRequestHandler('sampling/createMessage', async (request) => {
    asked.push(request.params);
    return { role: 'assistant', content: { type: 'text', text: 'fine' }, model: 'test-model', stopReason: 'endTurn' };
  });
});
after(() => harness.close());

test("withholds from the client a server's sampling request that carries a secret, and records it", async () => {
  const result = (await client.callTool({ name: 'fixture__ask-leaky', arguments: {} })) as CallToolResult;
  assert.ok(!JSON.stringify(asked).includes(LEAKY_TOKEN), "the secret never reached the client's model");
  assert.equal(asked.length, 0, 'the client was not asked at all');
  assert.ok(!JSON.stringify(result).includes('sampled: fine'), 'the server got an error instead of an answer');
  const record = harness.audit.records.find((entry) => entry.action === 'tools/call.server-question');
  assert.equal(record?.effect, 'deny');
  assert.equal(record?.details?.method, 'sampling/createMessage');
});

test("keeps a server's sampling request that carries a secret out of a 2026-07-28 client's input_required", async () => {
  const before = harness.audit.records.length;
  const response = await rawRequest(harness.gateway.url, {
    headers: { ...JSON_HEADERS, authorization: `Bearer ${harness.agents.add('modern-asker').key}`, 'mcp-protocol-version': '2026-07-28', 'mcp-method': 'tools/call', 'mcp-name': 'fixture__ask-leaky' },
    body: JSON.stringify({
      jsonrpc: '2.0',
      id: 1,
      method: 'tools/call',
      params: { name: 'fixture__ask-leaky', arguments: {}, _meta: { 'io.modelcontextprotocol/protocolVersion': '2026-07-28', 'io.modelcontextprotocol/clientCapabilities': { sampling: {} } } },
    }),
  });
  assert.ok(!response.body.includes(LEAKY_TOKEN), 'the secret is not in what the client gets');
  assert.doesNotMatch(response.body, /input_required/, 'there is no question left to ask');
  const record = harness.audit.records.slice(before).find((entry) => entry.action === 'tools/call.server-question');
  assert.equal(record?.effect, 'deny');
});

test("withholds from the server a client's refusal of its request that carries a secret, and records it", async () => {
  const token = SAMPLES['github-pat']!(seededRandom(33));
  const refusing = await harness.connect(harness.agents.add('refuser').key, { capabilities: { sampling: {} } });
  refusing.setRequestHandler('sampling/createMessage', async () => {
    throw new Error(`cannot sample, my key ${token} is expired`);
  });
  const result = (await refusing.callTool({ name: 'fixture__ask-refused', arguments: {} })) as CallToolResult;
  const text = (result.content[0] as { text: string }).text;
  assert.match(text, /^refused: Withheld by Gatehouse: the client's answer to sampling\/createMessage contained a secret/);
  const record = harness.audit.records.findLast((entry) => entry.action === 'tools/call.client-answer');
  assert.equal(record?.effect, 'deny');
  assert.ok(!JSON.stringify(harness.audit.records).includes(token));
});

test("never hands the server a client's own words as the reason it cancelled a call", async () => {
  const token = SAMPLES['github-pat']!(seededRandom(34));
  const heard = await reasonHeardOnCancel(client, `stop, and here is ${token}`);
  assert.match(heard, /^reason: /, 'the server heard that the call was cancelled, not what the client wrote');
  assert.ok(!JSON.stringify(harness.audit.records).includes(token));
});

test("drops a server's progress message and log line that carry a secret, relays the clean ones, and records it", async () => {
  const logged: string[] = [];
  client.setNotificationHandler('notifications/message', (notification) => void logged.push(String(notification.params.data)));
  await client.setLoggingLevel('debug');
  const progress: string[] = [];
  const result = (await client.callTool({ name: 'fixture__report-leaky', arguments: {} }, { onprogress: (step) => void progress.push(step.message ?? '') })) as CallToolResult;
  assert.equal((result.content[0] as { text: string }).text, 'reported');
  for (let i = 0; i < 50 && logged.length === 0; i++) await new Promise((resolve) => setTimeout(resolve, 20));
  assert.deepEqual(logged, ['plain failure']);
  assert.deepEqual(progress, ['half way'], 'the clean step arrives, the leaky one never reaches the client');
  const withheld = harness.audit.records.filter((entry) => entry.action === 'tools/call.server-notice' && entry.effect === 'deny');
  assert.deepEqual(withheld.map((entry) => entry.details?.method).sort(), ['notifications/message', 'notifications/progress']);
  assert.ok(!JSON.stringify(harness.audit.records).includes(LEAKY_TOKEN));
});

test('records only the first findings in a flood of leaky log lines, and withholds them all', async () => {
  const logged: string[] = [];
  client.setNotificationHandler('notifications/message', (notification) => void logged.push(String(notification.params.data)));
  await client.setLoggingLevel('debug');
  const before = harness.audit.records.length;
  await client.callTool({ name: 'fixture__report-leaky', arguments: { times: 40 } });
  for (let i = 0; i < 50 && !logged.includes('plain failure'); i++) await new Promise((resolve) => setTimeout(resolve, 20));
  assert.deepEqual(logged, ['plain failure'], 'every leaky line was withheld');
  const notices = harness.audit.records.slice(before).filter((entry) => entry.action === 'tools/call.server-notice');
  assert.equal(notices.length, 11, 'ten findings, then one record saying the rest go unrecorded');
  assert.match(notices.at(-1)!.reason, /not recorded one by one/);
});

describe('an upstream with a connection of its own per session (isolation: session)', () => {
  let isolated: Harness;
  let own: Client;
  const ownAsked: unknown[] = [];
  before(async () => {
    isolated = await startHarness({
      gateway: { upstreams: { fixture: fixtureUpstream({ isolation: 'session' }, ['--asking']) } },
      policy: { mcp: [{ id: 'all', allow: { tools: ['*'] } }], dlp: { action: 'block' } },
    });
    own = await isolated.connect(isolated.agents.add('isolated-asker').key, { capabilities: { sampling: {} } });
    own.setRequestHandler('sampling/createMessage', async (request) => {
      ownAsked.push(request.params);
      return { role: 'assistant', content: { type: 'text', text: 'fine' }, model: 'test-model', stopReason: 'endTurn' };
    });
  });
  after(() => isolated.close());

  test("withholds a server's sampling request that carries a secret within a call", async () => {
    const result = (await own.callTool({ name: 'fixture__ask-leaky', arguments: {} })) as CallToolResult;
    assert.equal(ownAsked.length, 0, "the secret never reached the client's model");
    assert.ok(!JSON.stringify(result).includes('sampled: fine'));
    const record = isolated.audit.records.find((entry) => entry.action === 'tools/call.server-question');
    assert.equal(record?.effect, 'deny');
  });

  test("withholds a server's sampling request that carries a secret outside any call, and records it", async () => {
    const result = (await own.callTool({ name: 'fixture__ask-leaky-later', arguments: {} })) as CallToolResult;
    assert.equal((result.content[0] as { text: string }).text, 'will ask later');
    let record: (typeof isolated.audit.records)[number] | undefined;
    for (let i = 0; i < 100 && !record; i++) {
      await new Promise((resolve) => setTimeout(resolve, 20));
      record = isolated.audit.records.find((entry) => entry.action === 'upstream.server-question');
    }
    assert.equal(record?.effect, 'deny');
    assert.equal(record?.details?.method, 'sampling/createMessage');
    assert.equal(ownAsked.length, 0, "the secret never reached the client's model");
    assert.ok(!JSON.stringify(isolated.audit.records).includes(LEAKY_TOKEN));
  });
});
