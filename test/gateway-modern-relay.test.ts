/**
 * A 2026-07-28 client calling a tool of a 2025-era upstream (the real server-everything over stdio) that asks
 * the client something mid-call: the gateway answers `input_required`, keeps the upstream call parked, and
 * hands the retry's answers to it. Its request state is bound to the caller, tool and arguments, used once.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { CallToolResult } from '@modelcontextprotocol/client';
import { SAMPLES, seededRandom } from '../src/dlp/samples.js';
import { everythingUpstream, fixtureUpstream, JSON_HEADERS, rawRequest, startHarness, type Harness } from './gateway-harness.js';

const MODERN = { versionNegotiation: { mode: { pin: '2026-07-28' } } } as const;
const INPUT_MS = 1500;
const sampled = { role: 'assistant', content: { type: 'text', text: 'sampled by the modern client' }, model: 'test-model', stopReason: 'endTurn' };

function text(result: CallToolResult): string {
  return result.content.map((block) => (block.type === 'text' ? block.text : '')).join('');
}

interface RawOutcome {
  result?: { resultType?: string; requestState?: string; inputRequests?: Record<string, { method: string }>; content?: { text: string }[]; isError?: boolean };
  error?: { code: number; message: string };
}

/** One raw 2026-07-28 tools/call, so a test can replay, forge or abandon its request state. */
async function modernCallTo(
url: string,
  agentKey: string,
  name: string,
  args: Record<string, unknown>,
  extra: Record<string, unknown> = {},
  capabilities: Record<string, unknown> = { sampling: {}, elicitation: { form: {} } },
): Promise<RawOutcome> {
  const response = await rawRequest(url, {
    headers: { ...JSON_HEADERS, authorization: `Bearer ${agentKey}`, 'mcp-protocol-version': '2026-07-28', 'mcp-method': 'tools/call', 'mcp-name': name },
    body: JSON.stringify({
      jsonrpc: '2.0',
      id: 1,
      method: 'tools/call',
      params: {
        name,
        arguments: args,
        ...extra,
        _meta: { 'io.modelcontextprotocol/protocolVersion': '2026-07-28', 'io.modelcontextprotocol/clientCapabilities': capabilities },
      },
    }),
  });
  return JSON.parse(response.body) as RawOutcome;
}

describe('a 2026-07-28 client and a 2025-era upstream that asks the client mid-call', () => {
  let harness: Harness;
  let key: string;

  before(async () => {
    harness = await startHarness({
      gateway: { upstreams: { everything: everythingUpstream({ timeouts: { inputMs: INPUT_MS } }), fixture: fixtureUpstream({}, ['--asking']) } },
      policy: { mcp: [{ id: 'all', allow: { tools: ['*'] } }], dlp: { action: 'block' } },
    });
    key = harness.agents.add('tester').key;
  });
  after(() => harness.close());

  const modernCall = (agentKey: string, name: string, args: Record<string, unknown>, extra?: Record<string, unknown>, capabilities?: Record<string, unknown>) =>
    modernCallTo(harness.gateway.url, agentKey, name, args, extra, capabilities);

  test('relays a sampling request to the client and its answer back, auditing each round under one correlation id', async () => {
    const client = await harness.connect(key, { ...MODERN, capabilities: { sampling: {} } });
    const prompts: string[] = [];
    client.setRequestHandler('sampling/createMessage', async (request) => {
      prompts.push(JSON.stringify(request.params.messages));
      return sampled as never;
    });
    const result = (await client.callTool({ name: 'everything__trigger-sampling-request', arguments: { prompt: 'say hi', maxTokens: 5 } })) as CallToolResult;
    assert.match(text(result), /sampled by the modern client/);
    assert.equal(prompts.length, 1);
    assert.match(prompts[0]!, /say hi/);
    const final = harness.audit.records.findLast((r) => r.action === 'tools/call');
    assert.equal(final?.effect, 'allow');
    const rounds = harness.audit.records.filter((r) => r.correlationId === final?.correlationId).map((r) => r.action);
    assert.deepEqual(rounds, ['tools/call.input-required', 'tools/call.input-response', 'tools/call']);
  });

  test('relays a form elicitation to the client and its answer back', async () => {
    const client = await harness.connect(key, { ...MODERN, capabilities: { elicitation: { form: {} } } });
    client.setRequestHandler('elicitation/create', async () => ({ action: 'accept', content: { name: 'Ada', check: true, email: 'ada@example.com' } }));
    const result = (await client.callTool({ name: 'everything__trigger-elicitation-request', arguments: {} })) as CallToolResult;
    assert.ok(!result.isError, text(result));
    assert.match(text(result), /Ada/);
  });

  test('asks round after round when the upstream asks again, roots first and then sampling', async () => {
    const client = await harness.connect(key, { ...MODERN, capabilities: { roots: {}, sampling: {} } });
    client.setRequestHandler('roots/list', async () => ({ roots: [{ uri: 'file:///work/modern', name: 'modern' }] }));
    client.setRequestHandler('sampling/createMessage', async () => ({ ...sampled, content: { type: 'text', text: 'teal' } }) as never);
    const result = (await client.callTool({ name: 'fixture__ask-twice', arguments: {} })) as CallToolResult;
    assert.equal(text(result), 'roots: file:///work/modern; sampled: teal');
    const final = harness.audit.records.findLast((r) => r.action === 'tools/call');
    const asked = harness.audit.records.filter((r) => r.correlationId === final?.correlationId && r.action === 'tools/call.input-required');
    assert.deepEqual(asked.map((r) => r.details?.requests), [['roots/list'], ['sampling/createMessage']]);
    assert.equal(final?.details?.inputRounds, 2);
  });

  test('refuses upstream a question the client did not declare it can answer, instead of failing the whole call', async () => {
    const outcome = await modernCall(key, 'everything__trigger-sampling-request', { prompt: 'no sampling', maxTokens: 5 }, {}, { elicitation: { form: {} } });
    assert.equal(outcome.error, undefined, JSON.stringify(outcome));
    assert.equal(outcome.result?.isError, true);
    assert.match(outcome.result?.content?.map((block) => block.text).join('') ?? '', /did not declare the sampling capability/);
  });

  test('refuses a forged, foreign, re-targeted or replayed request state with one error, and runs the honest retry once', async () => {
    const args = { prompt: 'state', maxTokens: 5 };
    const first = await modernCall(key, 'everything__trigger-sampling-request', args);
    assert.equal(first.result?.resultType, 'input_required');
    const [question, request] = Object.entries(first.result!.inputRequests!)[0]!;
    assert.equal(request.method, 'sampling/createMessage');
    const state = first.result!.requestState!;
    const answer = { inputResponses: { [question]: sampled }, requestState: state };
    const refusedWith = async (outcome: Promise<RawOutcome>) => {
      const { error } = await outcome;
      assert.equal(error?.code, -32602);
      return error!.message;
    };
    const forged = await refusedWith(modernCall(key, 'everything__trigger-sampling-request', args, { ...answer, requestState: `${state.slice(0, -2)}AA` }));
    const other = harness.agents.add('bystander').key;
    assert.equal(await refusedWith(modernCall(other, 'everything__trigger-sampling-request', args, answer)), forged);
    assert.equal(await refusedWith(modernCall(key, 'everything__trigger-sampling-request', { ...args, prompt: 'something else' }, answer)), forged);
    const honest = await modernCall(key, 'everything__trigger-sampling-request', args, answer);
    assert.match(honest.result?.content?.map((block) => block.text).join('') ?? '', /sampled by the modern client/, JSON.stringify(honest));
    assert.equal(await refusedWith(modernCall(key, 'everything__trigger-sampling-request', args, answer)), forged);
  });

  test('withholds from the upstream a client answer that carries a secret', async () => {
    const secret = SAMPLES['github-pat']!(seededRandom(11));
    const first = await modernCall(key, 'everything__trigger-sampling-request', { prompt: 'leak', maxTokens: 5 });
    const [question] = Object.keys(first.result!.inputRequests!);
    const leaking = { ...sampled, content: { type: 'text', text: `here is ${secret}` } };
    const outcome = await modernCall(key, 'everything__trigger-sampling-request', { prompt: 'leak', maxTokens: 5 }, {
      inputResponses: { [question!]: leaking },
      requestState: first.result!.requestState,
    });
    assert.ok(!JSON.stringify(outcome).includes(secret));
    const record = harness.audit.records.findLast((r) => r.action === 'tools/call.input-response');
    assert.equal(record?.effect, 'deny');
    assert.deepEqual(record?.rules, ['dlp']);
    assert.match(JSON.stringify(record?.details), /github-pat/);
  });

  test('cancels an abandoned parked call upstream after the input timeout, records it, and refuses its state after', async () => {
    const args = { prompt: 'abandon', maxTokens: 5 };
    const first = await modernCall(key, 'everything__trigger-sampling-request', args);
    assert.equal(first.result?.resultType, 'input_required');
    const everything = () => harness.gateway.status().upstreams.find((u) => u.name === 'everything');
    assert.equal(everything()?.inFlight, 1, 'the upstream call stays open while the client is asked');
    await new Promise((resolve) => setTimeout(resolve, INPUT_MS + 500));
    assert.equal(everything()?.inFlight, 0, 'the upstream call was cancelled');
    const record = harness.audit.records.findLast((r) => r.action === 'tools/call');
    assert.equal(record?.effect, 'error');
    assert.match(record?.reason ?? '', /did not answer .* within 1500 ms; the call was cancelled upstream/);
    const [question] = Object.keys(first.result!.inputRequests!);
    const late = await modernCall(key, 'everything__trigger-sampling-request', args, { inputResponses: { [question!]: sampled }, requestState: first.result!.requestState });
    assert.equal(late.error?.code, -32602);
  });
});

describe('calls a 2026-07-28 agent leaves parked', () => {
  let harness: Harness;
  before(async () => {
    harness = await startHarness({
      gateway: { maxSessionsPerAgent: 1, upstreams: { everything: everythingUpstream({ timeouts: { inputMs: INPUT_MS } }) } },
      policy: { mcp: [{ id: 'all', allow: { tools: ['*'] } }] },
    });
  });
  after(() => harness.close());

  test('are bounded by gateway.maxSessionsPerAgent; an abandoned call frees its place', async () => {
    const key = harness.agents.add('parker').key;
    const call = (prompt: string) => modernCallTo(harness.gateway.url, key, 'everything__trigger-sampling-request', { prompt, maxTokens: 5 });
    assert.equal((await call('first')).result?.resultType, 'input_required');
    const second = await call('second');
    assert.equal(second.result?.isError, true);
    assert.match(second.result?.content?.[0]?.text ?? '', /Refused by Gatehouse: this agent already has 1 request waiting for its answers \(gateway.maxSessionsPerAgent is 1\)/);
    assert.equal(harness.audit.records.findLast((r) => r.action === 'tools/call')?.effect, 'deny');
    await new Promise((resolve) => setTimeout(resolve, INPUT_MS + 500));
    assert.equal((await call('third')).result?.resultType, 'input_required', 'the abandoned call no longer counts');
  });
});
