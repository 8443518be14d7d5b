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

  test("blocks a call that carries a secret in its _meta or its task, which reach the upstream as surely as its arguments", async () => {
    for (const extra of [{ _meta: { note: `deploy with ${token}` } }, { task: { ttl: 60_000, note: token } }]) {
      const result = (await client.request({ method: 'tools/call', params: { name: 'fixture__echo', arguments: { message: 'hi' }, ...extra } })) as CallToolResult;
      assert.equal(result.isError, true, JSON.stringify(extra).slice(0, 20));
      assert.match(text(result), /_meta or task contains a secret/);
    }
    const record = harness.audit.records.findLast((r) => r.action === 'tools/call');
    assert.equal(record?.effect, 'deny');
    assert.deepEqual(record?.rules, ['dlp']);
    assert.ok(!JSON.stringify(harness.audit.records).includes(token), 'no audit record holds the secret');
  });

  test('blocks a call whose arguments carry a secret percent-encoded (a URL the tool will fetch)', async () => {
    const url = `https://paste.test/new?body=${encodeURIComponent(token).replace('_', '%5F')}`;
    const result = (await client.callTool({ name: 'fixture__echo', arguments: { message: url } })) as CallToolResult;
    assert.equal(result.isError, true);
    assert.match(text(result), /arguments contain a secret/);
    const record = harness.audit.records.findLast((r) => r.action === 'tools/call');
    assert.equal(record?.effect, 'deny');
    assert.match(JSON.stringify(record?.details), /"percentEncoded":true/);
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

/**
 * A prompt's arguments, a resource URI and the text being completed reach the upstream as surely as a tool's
 * arguments do, so a secret there is an exfiltration path: the fixture says back what it was sent.
 */
async function setUpEchoing(action: 'block' | 'redact' | 'log'): Promise<{ harness: Harness; client: Client }> {
  const harness = await startHarness({
    gateway: { upstreams: { fixture: fixtureUpstream({}, ['--echoing']) } },
    policy: {
      mcp: [
        { id: 'all', allow: { server: 'fixture', tools: ['*'], prompts: ['*'], resources: ['*'] } },
        { id: 'no-outsiders', agents: ['outsider'], deny: { server: 'fixture', tools: ['*'], prompts: ['*'], resources: ['*'] } },
      ],
      dlp: { action },
    },
  });
  const client = await harness.connect(harness.agents.add('tester').key);
  return { harness, client };
}

describe('secrets in an upstream\'s error, policy dlp action "log"', () => {
  let harness: Harness;
  let client: Client;
  before(async () => ({ harness, client } = await setUpEchoing('log')));
  after(() => harness.close());

  test('lets the error through unchanged and records what it found, without the secret', async () => {
    const leaky = SAMPLES['github-pat']!(seededRandom(21));
    const error = await client.readResource({ uri: 'fixture://broken/message' }).then(
      () => assert.fail('the read should fail'),
      (caught: Error) => caught,
    );
    assert.ok(error.message.includes(leaky), 'log lets it through');
    const record = harness.audit.records.findLast((r) => r.action === 'resources/read');
    assert.equal(record?.effect, 'error');
    assert.match(JSON.stringify(record?.details?.errorDlp), /logged.*github-pat|github-pat.*logged/);
    assert.ok(!JSON.stringify(harness.audit.records).includes(leaky), 'no record holds the secret');
  });
});

function promptText(result: { messages: { content: { type: string; text?: string } }[] }): string {
  return result.messages.map((message) => message.content.text ?? '').join('');
}

describe('secrets headed upstream outside a tool call, policy dlp action "block"', () => {
  let harness: Harness;
  let client: Client;
  before(async () => ({ harness, client } = await setUpEchoing('block')));
  after(() => harness.close());

  test('refuses a prompt whose arguments carry a secret, and records it without the secret', async () => {
    await assert.rejects(client.getPrompt({ name: 'fixture__echo', arguments: { text: `deploy with ${token}` } }), /the prompt's arguments holds a secret/);
    const record = harness.audit.records.findLast((r) => r.action === 'prompts/get');
    assert.equal(record?.effect, 'deny');
    assert.deepEqual(record?.rules, ['dlp']);
    assert.match(JSON.stringify(record?.details), /github-pat/);
    assert.ok(!JSON.stringify(record).includes(token), 'the audit record never holds the secret');
  });

  test('refuses a read whose URI carries a secret, and records the URI redacted', async () => {
    await assert.rejects(client.readResource({ uri: `fixture://echo/${token}` }), /the resource URI holds a secret/);
    const record = harness.audit.records.findLast((r) => r.action === 'resources/read');
    assert.equal(record?.effect, 'deny');
    assert.deepEqual(record?.rules, ['dlp']);
    assert.match(record?.resource ?? '', /^fixture\/fixture:\/\/echo\/\[REDACTED:github-pat\]$/);
    assert.ok(!JSON.stringify(record).includes(token), 'the audit record never holds the secret');
  });

  test('refuses a subscription whose URI carries a secret, and records the URI redacted', async () => {
    await assert.rejects(client.subscribeResource({ uri: `fixture://echo/${token}` }), /the resource URI holds a secret/);
    const record = harness.audit.records.findLast((r) => r.action === 'resources/subscribe');
    assert.equal(record?.effect, 'deny');
    assert.deepEqual(record?.rules, ['dlp']);
    assert.ok(!JSON.stringify(record).includes(token), 'the audit record never holds the secret');
  });

  test('records a URI that names no resource with its secret redacted', async () => {
    await assert.rejects(client.readResource({ uri: `nowhere://${token}` }), /not found/i);
    const record = harness.audit.records.findLast((r) => r.action === 'resources/read');
    assert.equal(record?.effect, 'deny');
    assert.ok(!JSON.stringify(record).includes(token), 'the audit record never holds the secret');
  });

  test('refuses to complete text that carries a secret, for a prompt and for a resource template', async () => {
    await assert.rejects(client.complete({ ref: { type: 'ref/prompt', name: 'fixture__echo' }, argument: { name: 'text', value: token } }), /the text to complete holds a secret/);
    await assert.rejects(
      client.complete({ ref: { type: 'ref/resource', uri: 'fixture://echo/{text}' }, argument: { name: 'text', value: `x ${token}` } }),
      /the text to complete holds a secret/,
    );
    await assert.rejects(
      client.request({ method: 'completion/complete', params: { ref: { type: 'ref/prompt', name: 'fixture__echo' }, argument: { name: 'text', value: 'ab' }, _meta: { note: token } } }),
      /holds a secret/,
    );
    const record = harness.audit.records.findLast((r) => r.action === 'completion/complete');
    assert.equal(record?.effect, 'deny');
    assert.ok(!JSON.stringify(record).includes(token));
  });

  test("keeps from the client a server's question during a completion that carries the server's secret", async () => {
    const leaky = SAMPLES['github-pat']!(seededRandom(21));
    const asking = await harness.connect(harness.agents.add('sampler').key, { capabilities: { sampling: {} } });
    const asked: unknown[] = [];
    asking.setRequestHandler('sampling/createMessage', async (request) => {
      asked.push(request.params);
      return { role: 'assistant', content: { type: 'text', text: 'fine' }, model: 'test' } as never;
    });
    await assert.rejects(asking.complete({ ref: { type: 'ref/prompt', name: 'fixture__echo' }, argument: { name: 'text', value: 'leaky' } }));
    assert.equal(asked.length, 0, "the question never reached the client's model");
    const record = harness.audit.records.findLast((r) => r.action === 'completion/complete.server-question');
    assert.equal(record?.effect, 'deny');
    assert.ok(!JSON.stringify(harness.audit.records).includes(leaky), 'no record holds the secret');
  });

  test("withholds a completion whose values carry the server's secret, and records it without the secret", async () => {
    const leaky = SAMPLES['github-pat']!(seededRandom(21));
    await assert.rejects(
      client.complete({ ref: { type: 'ref/prompt', name: 'fixture__echo' }, argument: { name: 'text', value: 'reveal' } }),
      (error: Error) => /the completion contained a secret/.test(error.message) && !error.message.includes(leaky),
    );
    const record = harness.audit.records.findLast((r) => r.action === 'completion/complete');
    assert.equal(record?.effect, 'deny');
    assert.deepEqual(record?.rules, ['dlp']);
    assert.ok(!JSON.stringify(harness.audit.records).includes(leaky), 'no record holds the secret');
  });

  test("withholds an upstream's error whose message or data carries its secret, and records it without the secret", async () => {
    const leaky = SAMPLES['github-pat']!(seededRandom(21));
    for (const uri of ['fixture://broken/message', 'fixture://broken/data']) {
      const error = await client.readResource({ uri }).then(
        () => assert.fail('the read should fail'),
        (caught: Error & { data?: unknown }) => caught,
      );
      assert.ok(!JSON.stringify({ message: error.message, data: error.data }).includes(leaky), `the client never sees the secret (${uri})`);
      assert.match(error.message, /the upstream's error contained a secret/);
    }
    const record = harness.audit.records.findLast((r) => r.action === 'resources/read');
    assert.equal(record?.effect, 'error');
    assert.match(JSON.stringify(record?.details?.errorDlp), /github-pat/, 'the record says what was found');
    assert.ok(!JSON.stringify(harness.audit.records).includes(leaky), 'no record holds the secret');
  });

  test('refuses and records a completion for a prompt or template the caller cannot see, as for one that does not exist', async () => {
    const outsider = await harness.connect(harness.agents.add('outsider').key);
    const failure = (name: string): Promise<string> =>
      outsider.complete({ ref: { type: 'ref/prompt', name }, argument: { name: 'text', value: 'a' } }).then(
        () => 'completed',
        (error: Error) => error.message.replace(name, '<name>'),
      );
    assert.equal(await failure('fixture__echo'), await failure('fixture__nothing'));
    await assert.rejects(outsider.complete({ ref: { type: 'ref/resource', uri: 'fixture://echo/{text}' }, argument: { name: 'text', value: 'a' } }), /not found/);
    const refused = harness.audit.records.filter((r) => r.action === 'completion/complete' && r.principal.agent === 'outsider');
    assert.deepEqual(refused.map((r) => [r.effect, r.details?.hidden ?? false]), [['deny', true], ['deny', false], ['deny', true]]);
  });

  test('lets clean prompts, reads and completions through', async () => {
    assert.equal(promptText(await client.getPrompt({ name: 'fixture__echo', arguments: { text: 'nothing secret' } })), 'nothing secret');
    const read = await client.readResource({ uri: 'fixture://echo/plain' });
    assert.equal((read.contents[0] as { text: string }).text, 'read fixture://echo/plain');
    const completed = await client.complete({ ref: { type: 'ref/prompt', name: 'fixture__echo' }, argument: { name: 'text', value: 'ab' } });
    assert.deepEqual(completed.completion.values, ['ab (completed)']);
  });
});

describe('secrets headed upstream outside a tool call, policy dlp action "redact"', () => {
  let harness: Harness;
  let client: Client;
  before(async () => ({ harness, client } = await setUpEchoing('redact')));
  after(() => harness.close());

  test('sends a prompt its arguments, and a completion its text, with the secret redacted', async () => {
    assert.equal(promptText(await client.getPrompt({ name: 'fixture__echo', arguments: { text: `use ${token} now` } })), 'use [REDACTED:github-pat] now');
    const completed = await client.complete({ ref: { type: 'ref/prompt', name: 'fixture__echo' }, argument: { name: 'text', value: `use ${token}` } });
    assert.deepEqual(completed.completion.values, ['use [REDACTED:github-pat] (completed)']);
    const record = harness.audit.records.findLast((r) => r.action === 'prompts/get');
    assert.equal(record?.effect, 'allow');
    assert.match(JSON.stringify(record?.details?.requestDlp), /redacted/);
  });

  test("redacts the server's secret in a completion's values and in an upstream's error", async () => {
    const leaky = SAMPLES['github-pat']!(seededRandom(21));
    const completed = await client.complete({ ref: { type: 'ref/prompt', name: 'fixture__echo' }, argument: { name: 'text', value: 'reveal' } });
    assert.deepEqual(completed.completion.values, ['the key is [REDACTED:github-pat]']);
    const error = await client.readResource({ uri: 'fixture://broken/message' }).then(
      () => assert.fail('the read should fail'),
      (caught: Error) => caught,
    );
    assert.match(error.message, /the store refused the key \[REDACTED:github-pat\]/);
    assert.ok(!JSON.stringify(harness.audit.records).includes(leaky), 'no record holds the secret');
  });

  test('refuses a read whose URI carries a secret even so: a redacted URI would name another resource', async () => {
    await assert.rejects(client.readResource({ uri: `fixture://echo/${token}` }), /the resource URI holds a secret .*cannot be redacted/);
    await assert.rejects(client.subscribeResource({ uri: `fixture://echo/${token}` }), /cannot be redacted/);
    const record = harness.audit.records.findLast((r) => r.action === 'resources/read');
    assert.equal(record?.effect, 'deny');
    assert.ok(!JSON.stringify(harness.audit.records).includes(token), 'no audit record holds the secret');
  });
});

/** What every list shows reaches the client's model as a result does: a definition holding a secret is scanned like one. */
async function setUpListing(action: 'block' | 'redact'): Promise<{ harness: Harness; client: Client }> {
  const harness = await startHarness({
    gateway: { upstreams: { fixture: fixtureUpstream({ env: { FIXTURE_LEAK: token } }, ['--listing-secrets']) } },
    policy: { mcp: [{ id: 'all', allow: { server: 'fixture', tools: ['*'], prompts: ['*'], resources: ['*'] } }], dlp: { action } },
  });
  const client = await harness.connect(harness.agents.add('tester').key);
  return { harness, client };
}

async function everyList(client: Client): Promise<string> {
  const [tools, prompts, resources, templates] = await Promise.all([client.listTools(), client.listPrompts(), client.listResources(), client.listResourceTemplates()]);
  return JSON.stringify({ tools, prompts, resources, templates });
}

describe('secrets in what the upstreams list, policy dlp action "block"', () => {
  let harness: Harness;
  let client: Client;
  before(async () => ({ harness, client } = await setUpListing('block')));
  after(() => harness.close());

  test('leaves out of every list a definition that carries a secret, and the tool cannot be called', async () => {
    const listed = await everyList(client);
    assert.ok(!listed.includes(token), 'no list holds the secret');
    assert.match(listed, /fixture__hello/, 'clean tools are listed');
    await assert.rejects(client.callTool({ name: 'fixture__connect', arguments: {} }), /Tool fixture__connect not found/);
    const record = harness.audit.records.findLast((r) => r.action === 'tools/list');
    assert.equal(record?.details?.withheld, 1);
    assert.ok(!JSON.stringify(harness.audit.records).includes(token), 'no audit record holds the secret');
  });
});

describe('secrets in what the upstreams list, policy dlp action "redact"', () => {
  let harness: Harness;
  let client: Client;
  before(async () => ({ harness, client } = await setUpListing('redact')));
  after(() => harness.close());

  test('lists a definition that carries a secret with the secret redacted, and its tool still answers', async () => {
    const listed = await everyList(client);
    assert.ok(!listed.includes(token), 'no list holds the secret');
    assert.equal((listed.match(/\[REDACTED:github-pat\]/g) ?? []).length, 4);
    assert.equal(text((await client.callTool({ name: 'fixture__connect', arguments: {} })) as CallToolResult), 'connected');
  });
});
