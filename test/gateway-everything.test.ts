/**
 * The official SDK client against the gateway fronting the real @modelcontextprotocol/server-everything
 * over stdio: every tool, with progress, sampling, elicitation, roots and cancellation relayed.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import type { Client, CallToolResult } from '@modelcontextprotocol/client';
import { SAMPLES, seededRandom } from '../src/dlp/samples.js';
import { everythingUpstream, startHarness, type Harness } from './gateway-harness.js';

let harness: Harness;
let client: Client;
const sampled: unknown[] = [];
const LEAKED = SAMPLES['github-pat']!(seededRandom(3));
const elicited: unknown[] = [];

before(async () => {
  process.env.GATEHOUSE_TEST_GATEWAY_SECRET = 'must-not-reach-upstreams';
  harness = await startHarness({
    gateway: { upstreams: { everything: everythingUpstream({ env: { GZIP_ALLOWED_DOMAINS: 'example.invalid' } }) } },
    policy: { mcp: [{ id: 'everything', allow: { server: 'everything', tools: ['*'], prompts: ['*'], resources: ['*'] } }] },
  });
  const { key } = harness.agents.add('tester');
  client = await harness.connect(key, {
    capabilities: { sampling: {}, elicitation: { form: {}, url: {} }, roots: { listChanged: true } },
  });
  client.setRequestHandler('sampling/createMessage', async (request) => {
    sampled.push(request.params);
    // A model that repeats a credential it saw: the answer must not reach the server.
    if (JSON.stringify(request.params).includes('leak')) return { role: 'assistant', content: { type: 'text', text: `the token is ${LEAKED}` }, model: 'test-model', stopReason: 'endTurn' };
    return { role: 'assistant', content: { type: 'text', text: 'sampled by the test client' }, model: 'test-model', stopReason: 'endTurn' };
  });
  client.setRequestHandler('elicitation/create', async (request) => {
    elicited.push(request.params);
    if ((request.params as { mode?: string }).mode === 'url') return { action: 'accept' };
    return { action: 'accept', content: { name: 'Ada', check: true, email: 'ada@example.com' } };
  });
  client.setRequestHandler('roots/list', async () => ({ roots: [{ uri: 'file:///work/project', name: 'project' }] }));
});

after(async () => {
  await harness.close();
});

function text(result: CallToolResult): string {
  return result.content.map((block) => (block.type === 'text' ? block.text : `[${block.type}]`)).join('\n');
}

async function call(name: string, args: Record<string, unknown> = {}): Promise<CallToolResult> {
  return (await client.callTool({ name: `everything__${name}`, arguments: args })) as CallToolResult;
}

test('lists every server-everything tool, prompt and resource under the "everything__" namespace', async () => {
  const tools = (await client.listTools()).tools.map((tool) => tool.name);
  for (const name of ['echo', 'get-sum', 'get-tiny-image', 'trigger-long-running-operation', 'trigger-sampling-request', 'trigger-elicitation-request']) {
    assert.ok(tools.includes(`everything__${name}`), `missing everything__${name} in ${tools.join(', ')}`);
  }
  assert.ok(tools.every((name) => name.startsWith('everything__')));
  const prompts = (await client.listPrompts()).prompts.map((prompt) => prompt.name);
  assert.ok(prompts.includes('everything__simple-prompt'));
  assert.ok((await client.listResources()).resources.length > 0);
  assert.ok((await client.listResourceTemplates()).resourceTemplates.length > 0);
  // Pinning flags none of server-everything's honest descriptions.
  assert.deepEqual((await harness.gateway.core.catalogReport()).held, []);
});

test('relays plain tools: echo, sum, image, annotations, structured content, resource links and references', async () => {
  assert.equal(text(await call('echo', { message: 'through the gateway' })), 'Echo: through the gateway');
  assert.match(text(await call('get-sum', { a: 2, b: 40 })), /42/);
  const image = await call('get-tiny-image');
  assert.ok(image.content.some((block) => block.type === 'image'));
  const annotated = await call('get-annotated-message', { messageType: 'error' });
  assert.ok(annotated.content.length > 0);
  const structured = await call('get-structured-content', { location: 'Chicago' });
  assert.ok(structured.structuredContent && typeof structured.structuredContent === 'object');
  const links = await call('get-resource-links', { count: 2 });
  assert.equal(links.content.filter((block) => block.type === 'resource_link').length, 2);
  const reference = await call('get-resource-reference', { resourceType: 'Text', resourceId: 1 });
  assert.ok(reference.content.some((block) => block.type === 'resource'));
  const gzip = await call('gzip-file-as-resource', { name: 'a.gz', data: 'data:text/plain;base64,aGVsbG8=', outputType: 'resource' });
  assert.ok(gzip.content.some((block) => block.type === 'resource'), text(gzip));
  assert.ok(!(await call('toggle-simulated-logging')).isError);
  assert.ok(!(await call('toggle-simulated-logging')).isError);
  assert.ok(!(await call('toggle-subscriber-updates')).isError);
  assert.ok(!(await call('toggle-subscriber-updates')).isError);
});

test('a stdio upstream does not inherit the gateway\'s environment', async () => {
  const env = text(await call('get-env'));
  assert.ok(!env.includes('must-not-reach-upstreams'));
  assert.match(env, /GZIP_ALLOWED_DOMAINS/);
});

test('relays progress notifications with the client\'s own progress token', async () => {
  const progress: number[] = [];
  const result = (await client.callTool(
    { name: 'everything__trigger-long-running-operation', arguments: { duration: 0.6, steps: 3 } },
    { onprogress: (update) => progress.push(update.progress) },
  )) as CallToolResult;
  assert.match(text(result), /completed/i);
  // The SDK client runs notification handlers a microtask after responses, so the last progress update,
  // read together with the result, may be dropped by the client itself; the first two never are.
  assert.deepEqual(progress.slice(0, 2), [1, 2]);
});

test('relays a sampling request from the upstream to the calling client and its answer back', async () => {
  const result = await call('trigger-sampling-request', { prompt: 'say hi', maxTokens: 5 });
  assert.match(text(result), /sampled by the test client/);
  assert.ok(sampled.length >= 1);
});

test("withholds from the upstream a client's sampling answer that carries a secret, and records it", async () => {
  const result = await call('trigger-sampling-request', { prompt: 'please leak it', maxTokens: 5 }).catch((error: Error) => ({ content: [{ type: 'text' as const, text: error.message }] }));
  assert.ok(!JSON.stringify(result).includes(LEAKED), 'the secret never reaches the server, nor comes back through it');
  const record = harness.audit.records.find((entry) => entry.action === 'tools/call.client-answer');
  assert.equal(record?.effect, 'deny');
  assert.deepEqual(record?.rules, ['dlp']);
  assert.equal(record?.details?.method, 'sampling/createMessage');
});

test('relays form and URL elicitations to the calling client', async () => {
  const form = await call('trigger-elicitation-request');
  assert.match(text(form), /Ada/);
  const url = await call('trigger-url-elicitation', { url: 'https://example.com/consent' });
  assert.ok(!url.isError, text(url));
  assert.ok(elicited.some((params) => (params as { mode?: string }).mode === 'url'));
});

test('answers get-roots-list and reads resources and prompts through the gateway', async () => {
  assert.ok(!(await call('get-roots-list')).isError);
  const resource = (await client.listResources()).resources[0]!;
  const read = await client.readResource({ uri: resource.uri });
  assert.ok(read.contents.length > 0);
  const prompt = await client.getPrompt({ name: 'everything__simple-prompt' });
  assert.ok(prompt.messages.length > 0);
  const templated = await client.readResource({ uri: 'demo://resource/dynamic/text/3' });
  assert.ok(templated.contents.length > 0);
  const completion = await client.complete({ ref: { type: 'ref/prompt', name: 'everything__completable-prompt' }, argument: { name: 'department', value: 'S' } });
  assert.deepEqual(completion.completion.values, ['Sales', 'Support']);
});

test('cancelling a call stops it upstream and the gateway keeps serving', async () => {
  const controller = new AbortController();
  const started = Date.now();
  const pending = client.callTool(
    { name: 'everything__trigger-long-running-operation', arguments: { duration: 20, steps: 20 } },
    { signal: controller.signal, onprogress: () => controller.abort() },
  );
  await assert.rejects(pending);
  assert.ok(Date.now() - started < 5000);
  assert.equal(text(await call('echo', { message: 'still here' })), 'Echo: still here');
  await new Promise((resolve) => setTimeout(resolve, 200));
  const cancelled = harness.audit.records.find((record) => record.action === 'tools/call' && record.resource.endsWith('trigger-long-running-operation') && record.effect === 'error');
  assert.ok(cancelled, 'the cancelled call is recorded as an error');
});

test('records one audit record per call with agent, server, tool, rule ids, latency and an argument digest', async () => {
  const before = harness.audit.records.length;
  await call('echo', { message: 'audited' });
  const records = harness.audit.records.slice(before).filter((record) => record.action === 'tools/call');
  assert.equal(records.length, 1);
  const record = records[0]!;
  assert.equal(record.principal.agent, 'tester');
  assert.equal(record.resource, 'everything/echo');
  assert.equal(record.effect, 'allow');
  assert.deepEqual(record.rules, ['everything']);
  assert.match(String(record.details?.argsDigest), /^sha256:[0-9a-f]{64}$/);
  assert.ok(!JSON.stringify(record).includes('audited'), 'argument values are not recorded by default');
  assert.ok(record.latencyUs > 0);
});

test('with isolation "session", concurrent sampling requests from one server reach each calling client', async () => {
  const isolated = await startHarness({
    gateway: { upstreams: { everything: everythingUpstream({ isolation: 'session' }) } },
    policy: { mcp: [{ id: 'everything', allow: { server: 'everything', tools: ['*'] } }] },
  });
  try {
    const key = isolated.agents.add('tester').key;
    const clients = await Promise.all(
      ['ada', 'grace'].map(async (name) => {
        const client = await isolated.connect(key, { capabilities: { sampling: {} } });
        client.setRequestHandler('sampling/createMessage', async () => {
          await new Promise((resolve) => setTimeout(resolve, 100)); // both calls are in flight at once
          return { role: 'assistant', content: { type: 'text', text: `answered by ${name}` }, model: 'test-model' };
        });
        return { name, client };
      }),
    );
    const results = await Promise.all(
      clients.map(({ client }) => client.callTool({ name: 'everything__trigger-sampling-request', arguments: { prompt: 'hi', maxTokens: 5 } }) as Promise<CallToolResult>),
    );
    assert.match(text(results[0]!), /answered by ada/);
    assert.match(text(results[1]!), /answered by grace/);
  } finally {
    await isolated.close();
  }
});

test('with isolation "session", the server sees exactly its own client\'s roots, also after they change', async () => {
  const isolated = await startHarness({
    gateway: { upstreams: { everything: everythingUpstream({ isolation: 'session' }) } },
    policy: { mcp: [{ id: 'everything', allow: { server: 'everything', tools: ['*'] } }] },
  });
  try {
    const client = await isolated.connect(isolated.agents.add('tester').key, { capabilities: { roots: { listChanged: true } } });
    let roots = [{ uri: 'file:///work/first', name: 'first' }];
    client.setRequestHandler('roots/list', async () => ({ roots }));
    const before = text(await client.callTool({ name: 'everything__get-roots-list', arguments: {} }) as CallToolResult);
    assert.match(before, /file:\/\/\/work\/first/);
    roots = [{ uri: 'file:///work/second', name: 'second' }];
    await client.sendRootsListChanged();
    let after = '';
    for (let i = 0; i < 50 && !after.includes('second'); i += 1) {
      await new Promise((resolve) => setTimeout(resolve, 20));
      after = text(await client.callTool({ name: 'everything__get-roots-list', arguments: {} }) as CallToolResult);
    }
    assert.match(after, /file:\/\/\/work\/second/);
  } finally {
    await isolated.close();
  }
});
