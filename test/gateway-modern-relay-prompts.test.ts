/**
 * A 2026-07-28 client getting a prompt or reading a resource whose upstream (the fixture server, 2025 era,
 * over stdio) asks the client something while it builds the answer: the gateway answers `input_required`,
 * keeps the upstream request parked, and hands the retry's answers to it, as it does for tools/call. Its
 * request state is bound to the caller, the method, the prompt or URI and the arguments, and used once.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { GetPromptResult, ReadResourceResult } from '@modelcontextprotocol/client';
import { SAMPLES, seededRandom } from '../src/dlp/samples.js';
import { fixtureUpstream, JSON_HEADERS, rawRequest, startHarness, type Harness } from './gateway-harness.js';

const MODERN = { versionNegotiation: { mode: { pin: '2026-07-28' } } } as const;
const INPUT_MS = 1500;
const CAPABILITIES = { roots: {}, sampling: {}, elicitation: { form: {} } };
const sampled = { role: 'assistant', content: { type: 'text', text: 'tea is calm' }, model: 'test-model', stopReason: 'endTurn' };
const greeted = { action: 'accept', content: { name: 'Ada' } };

interface RawOutcome {
  result?: {
    resultType?: string;
    requestState?: string;
    inputRequests?: Record<string, { method: string; params?: Record<string, unknown> }>;
    messages?: { content: { text: string } }[];
    contents?: { text: string }[];
    content?: { text: string }[];
  };
  error?: { code: number; message: string };
}

/** One raw 2026-07-28 request, so a test can replay, forge or re-target its request state. */
async function modernRequest(url: string, key: string, method: string, params: Record<string, unknown>, extra: Record<string, unknown> = {}): Promise<RawOutcome> {
  const name = method === 'resources/read' ? params.uri : params.name;
  const response = await rawRequest(url, {
    headers: { ...JSON_HEADERS, authorization: `Bearer ${key}`, 'mcp-protocol-version': '2026-07-28', 'mcp-method': method, 'mcp-name': String(name) },
    body: JSON.stringify({
      jsonrpc: '2.0',
      id: 1,
      method,
      params: { ...params, ...extra, _meta: { 'io.modelcontextprotocol/protocolVersion': '2026-07-28', 'io.modelcontextprotocol/clientCapabilities': CAPABILITIES } },
    }),
  });
  return JSON.parse(response.body) as RawOutcome;
}

/** The retry of an `input_required` outcome, answering its one question with `answer`. */
function retryOf(first: RawOutcome, answer: unknown): Record<string, unknown> {
  assert.equal(first.result?.resultType, 'input_required', JSON.stringify(first));
  const [question] = Object.keys(first.result!.inputRequests!);
  return { inputResponses: { [question!]: answer }, requestState: first.result!.requestState };
}

describe('a 2026-07-28 client and an upstream that asks it something during prompts/get or resources/read', () => {
  let harness: Harness;
  let key: string;
  const greeting = { name: 'fixture__ask-greeting', arguments: { tone: 'warm' } };
  const request = (agentKey: string, method: string, params: Record<string, unknown>, extra?: Record<string, unknown>) => modernRequest(harness.gateway.url, agentKey, method, params, extra);

  before(async () => {
    harness = await startHarness({
      gateway: { upstreams: { fixture: fixtureUpstream({ timeouts: { inputMs: INPUT_MS } }, ['--asking']) } },
      policy: { mcp: [{ id: 'all', allow: { tools: ['*'], prompts: ['*'], resources: ['*'] } }], dlp: { action: 'block' } },
    });
    key = harness.agents.add('reader').key;
  });
  after(() => harness.close());

  test('relays an elicitation of prompts/get to the client and its answer back, auditing each round under one correlation id', async () => {
    const client = await harness.connect(key, { ...MODERN, capabilities: { elicitation: { form: {} } } });
    const asked: string[] = [];
    client.setRequestHandler('elicitation/create', async (request) => {
      asked.push((request.params as { message: string }).message);
      return greeted as never;
    });
    const prompt = (await client.getPrompt(greeting)) as GetPromptResult;
    assert.deepEqual(asked, ['Who should the prompt address?']);
    assert.deepEqual(prompt.messages.map((message) => (message.content.type === 'text' ? message.content.text : '')), ['Greet Ada in a warm tone.']);
    const final = harness.audit.records.findLast((r) => r.action === 'prompts/get');
    assert.equal(final?.effect, 'allow');
    assert.equal(final?.resource, 'fixture/ask-greeting');
    assert.equal(final?.details?.inputRounds, 1);
    const rounds = harness.audit.records.filter((r) => r.correlationId === final?.correlationId);
    assert.deepEqual(rounds.map((r) => r.action), ['prompts/get.input-required', 'prompts/get.input-response', 'prompts/get']);
    assert.deepEqual(rounds[0]?.details?.requests, ['elicitation/create']);
  });

  test('relays a sampling request of resources/read to the client and its answer back, auditing each round', async () => {
    const client = await harness.connect(key, { ...MODERN, capabilities: { sampling: {} } });
    const asked: string[] = [];
    client.setRequestHandler('sampling/createMessage', async (request) => {
      asked.push(JSON.stringify(request.params.messages));
      return sampled as never;
    });
    const read = (await client.readResource({ uri: 'fixture://asked/tea' })) as ReadResourceResult;
    assert.equal(asked.length, 1);
    assert.match(asked[0]!, /write a line about tea/);
    assert.deepEqual(read.contents.map((content) => ('text' in content ? content.text : '')), ['sampled: tea is calm']);
    const final = harness.audit.records.findLast((r) => r.action === 'resources/read');
    assert.equal(final?.effect, 'allow');
    assert.equal(final?.resource, 'fixture/fixture://asked/tea');
    const rounds = harness.audit.records.filter((r) => r.correlationId === final?.correlationId).map((r) => r.action);
    assert.deepEqual(rounds, ['resources/read.input-required', 'resources/read.input-response', 'resources/read']);
  });

  test('refuses a forged, foreign, re-targeted or replayed prompt state with one error, and builds the prompt for the honest retry once', async () => {
    const first = await request(key, 'prompts/get', greeting);
    assert.deepEqual(Object.values(first.result?.inputRequests ?? {}).map((question) => question.method), ['elicitation/create']);
    const answer = retryOf(first, greeted);
    const refusedWith = async (outcome: Promise<RawOutcome>) => {
      const { error, result } = await outcome;
      assert.equal(error?.code, -32602, JSON.stringify(result));
      return error!.message;
    };
    const state = answer.requestState as string;
    const forged = await refusedWith(request(key, 'prompts/get', greeting, { ...answer, requestState: `${state.slice(0, -2)}AA` }));
    assert.match(forged, /requestState/);
    const other = harness.agents.add('bystander').key;
    assert.equal(await refusedWith(request(other, 'prompts/get', greeting, answer)), forged);
    assert.equal(await refusedWith(request(key, 'prompts/get', { ...greeting, arguments: { tone: 'cold' } }, answer)), forged);
    const honest = await request(key, 'prompts/get', greeting, answer);
    assert.equal(honest.result?.messages?.[0]?.content.text, 'Greet Ada in a warm tone.', JSON.stringify(honest));
    assert.equal(await refusedWith(request(key, 'prompts/get', greeting, answer)), forged);
  });

  test('refuses a state on another URI or another method, and the refused state still resumes its own request', async () => {
    const refused = async (method: string, params: Record<string, unknown>, answer: Record<string, unknown>) => {
      const outcome = await request(key, method, params, answer);
      assert.equal(outcome.error?.code, -32602, `${method}: ${JSON.stringify(outcome)}`);
      assert.match(outcome.error!.message, /Invalid requestState/);
    };
    const tea = { uri: 'fixture://asked/tea' };
    const askTwice = { name: 'fixture__ask-twice', arguments: {} };
    // One parked request at a time: the fixture's questions can only be tied to a request while it is alone.
    const read = retryOf(await request(key, 'resources/read', tea), sampled);
    await refused('resources/read', { uri: 'fixture://asked/coffee' }, read);
    await refused('prompts/get', greeting, read);
    await refused('tools/call', askTwice, read);
    assert.equal((await request(key, 'resources/read', tea, read)).result?.contents?.[0]?.text, 'sampled: tea is calm');

    const prompt = retryOf(await request(key, 'prompts/get', greeting), greeted);
    await refused('prompts/get', { name: 'fixture__ask-farewell', arguments: { tone: 'warm' } }, prompt);
    await refused('tools/call', askTwice, prompt);
    await refused('resources/read', tea, prompt);
    assert.equal((await request(key, 'prompts/get', greeting, prompt)).result?.messages?.[0]?.content.text, 'Greet Ada in a warm tone.');

    // A tool of the prompt's very name and arguments: only the method tells the two states apart.
    const twin = retryOf(await request(key, 'tools/call', greeting), greeted);
    await refused('prompts/get', greeting, twin);
    assert.equal((await request(key, 'tools/call', greeting, twin)).result?.content?.[0]?.text, 'greeted Ada in a warm tone');
    const twinPrompt = retryOf(await request(key, 'prompts/get', greeting), greeted);
    await refused('tools/call', greeting, twinPrompt);
    assert.equal((await request(key, 'prompts/get', greeting, twinPrompt)).result?.messages?.[0]?.content.text, 'Greet Ada in a warm tone.');

    const call = retryOf(await request(key, 'tools/call', askTwice), { roots: [{ uri: 'file:///work/tea' }] });
    await refused('prompts/get', greeting, call);
    await refused('resources/read', tea, call);
    const secondRound = await request(key, 'tools/call', askTwice, call);
    const called = await request(key, 'tools/call', askTwice, retryOf(secondRound, sampled));
    assert.equal(called.result?.content?.[0]?.text, 'roots: file:///work/tea; sampled: tea is calm', JSON.stringify(called));
  });

  test("keeps a server's question that carries a secret out of input_required, and records it", async () => {
    // The fixture's own credential (seed 21), put into its question when the topic is `leaky`. A secret in
    // the URI itself never reaches the upstream (gateway-content.test.ts).
    const secret = SAMPLES['github-pat']!(seededRandom(21));
    const outcome = await request(key, 'resources/read', { uri: 'fixture://asked/leaky' });
    assert.ok(!JSON.stringify(outcome).includes(secret), JSON.stringify(outcome));
    assert.notEqual(outcome.result?.resultType, 'input_required', 'there is no question left to ask');
    const record = harness.audit.records.findLast((r) => r.action === 'resources/read.server-question');
    assert.equal(record?.effect, 'deny');
    assert.equal(record?.details?.method, 'sampling/createMessage');
  });

  test('withholds from the upstream a client answer that carries a secret', async () => {
    const secret = SAMPLES['github-pat']!(seededRandom(12));
    const first = await request(key, 'resources/read', { uri: 'fixture://asked/keys' });
    const outcome = await request(key, 'resources/read', { uri: 'fixture://asked/keys' }, retryOf(first, { ...sampled, content: { type: 'text', text: `use ${secret}` } }));
    assert.ok(!JSON.stringify(outcome).includes(secret), JSON.stringify(outcome));
    assert.ok(outcome.error, 'the read fails: its upstream got an error instead of the answer');
    const record = harness.audit.records.findLast((r) => r.action === 'resources/read.input-response');
    assert.equal(record?.effect, 'deny');
    assert.deepEqual(record?.rules, ['dlp']);
    assert.match(JSON.stringify(record?.details), /github-pat/);
    assert.equal(harness.audit.records.findLast((r) => r.action === 'resources/read')?.effect, 'error');
  });

  test('cancels an abandoned parked prompt upstream after the input timeout, records it, and refuses its state after', async () => {
    const first = await request(key, 'prompts/get', greeting);
    const fixture = () => harness.gateway.status().upstreams.find((u) => u.name === 'fixture');
    assert.equal(fixture()?.inFlight, 1, 'the upstream request stays open while the client is asked');
    await new Promise((resolve) => setTimeout(resolve, INPUT_MS + 500));
    assert.equal(fixture()?.inFlight, 0, 'the upstream request was cancelled');
    const record = harness.audit.records.findLast((r) => r.action === 'prompts/get');
    assert.equal(record?.effect, 'error');
    assert.match(record?.reason ?? '', /did not answer .* within 1500 ms; the call was cancelled upstream/);
    const late = await request(key, 'prompts/get', greeting, retryOf(first, greeted));
    assert.equal(late.error?.code, -32602);
  });

  test('a 2025-era client is still sent the upstream\'s requests during prompts/get and resources/read', async () => {
    const client = await harness.connect(key, { capabilities: { sampling: {}, elicitation: { form: {} } } });
    client.setRequestHandler('elicitation/create', async () => greeted as never);
    client.setRequestHandler('sampling/createMessage', async () => sampled as never);
    const prompt = (await client.getPrompt(greeting)) as GetPromptResult;
    assert.equal(prompt.messages[0]?.content.type === 'text' && prompt.messages[0].content.text, 'Greet Ada in a warm tone.');
    const read = (await client.readResource({ uri: 'fixture://asked/tea' })) as ReadResourceResult;
    assert.equal(read.contents[0] && 'text' in read.contents[0] && read.contents[0].text, 'sampled: tea is calm');
  });

  test("withholds from a 2025-era client a server's question during resources/read that carries a secret", async () => {
    const secret = SAMPLES['github-pat']!(seededRandom(21));
    const client = await harness.connect(key, { capabilities: { sampling: {} } });
    const asked: unknown[] = [];
    client.setRequestHandler('sampling/createMessage', async (request) => {
      asked.push(request.params);
      return sampled as never;
    });
    await assert.rejects(client.readResource({ uri: 'fixture://asked/leaky' }));
    assert.equal(asked.length, 0, "the question never reached the client's model");
    assert.ok(!JSON.stringify(harness.audit.records).includes(secret), 'no record holds the secret');
    const record = harness.audit.records.findLast((r) => r.action === 'resources/read.server-question');
    assert.equal(record?.effect, 'deny');
    assert.equal(record?.details?.method, 'sampling/createMessage');
  });
});

describe('prompts and reads a 2026-07-28 agent leaves parked', () => {
  let harness: Harness;
  before(async () => {
    harness = await startHarness({
      gateway: { maxSessionsPerAgent: 1, upstreams: { fixture: fixtureUpstream({ timeouts: { inputMs: 60_000 } }, ['--asking']) } },
      policy: { mcp: [{ id: 'all', allow: { tools: ['*'], prompts: ['*'], resources: ['*'] } }] },
    });
  });
  after(() => harness.close());

  test('count with parked tool calls against gateway.maxSessionsPerAgent', async () => {
    const key = harness.agents.add('parker').key;
    const send = (method: string, params: Record<string, unknown>) => modernRequest(harness.gateway.url, key, method, params);
    assert.equal((await send('tools/call', { name: 'fixture__ask-twice', arguments: {} })).result?.resultType, 'input_required');
    for (const [method, params] of [
      ['prompts/get', { name: 'fixture__ask-greeting', arguments: { tone: 'warm' } }],
      ['resources/read', { uri: 'fixture://asked/tea' }],
    ] as const) {
      const refused = await send(method, params);
      assert.match(refused.error?.message ?? '', /this agent already has 1 request waiting for its answers \(gateway.maxSessionsPerAgent is 1\)/, JSON.stringify(refused));
      const record = harness.audit.records.findLast((r) => r.action === method);
      assert.equal(record?.effect, 'deny');
      assert.deepEqual(record?.rules, ['limit']);
    }
  });
});
