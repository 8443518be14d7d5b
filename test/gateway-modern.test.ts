/**
 * The 2026-07-28 protocol era end to end: modern clients (stateless, `server/discover`, per-request envelope)
 * against the gateway, and a modern-only upstream written with the v2 SDK behind it, including an
 * `input_required` elicitation relayed to a 2025-era client.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { after, before, describe, test } from 'node:test';
import { Client, SSEClientTransport, type CallToolResult } from '@modelcontextprotocol/client';
import { fixtureUpstream, JSON_HEADERS, rawRequest, startHarness, type Harness } from './gateway-harness.js';

const modernEntry = new URL('./fixtures/modern-server.js', import.meta.url).pathname;
const allowAll = { mcp: [{ id: 'all', allow: { tools: ['*'], prompts: ['*'] } }] };
const MODERN = { versionNegotiation: { mode: { pin: '2026-07-28' } } } as const;

function text(result: CallToolResult): string {
  return result.content.map((block) => (block.type === 'text' ? block.text : '')).join('');
}

describe('the 2026-07-28 era', () => {
  let upstream: ChildProcess;
  let upstreamUrl: string;
  let harness: Harness;
  let key: string;

  before(async () => {
    upstream = spawn(process.execPath, [modernEntry], { stdio: ['ignore', 'pipe', 'inherit'] });
    upstreamUrl = await new Promise<string>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('the modern fixture did not start')), 10_000);
      upstream.stdout!.once('data', (chunk: Buffer) => {
        clearTimeout(timer);
        resolve(chunk.toString().trim());
      });
    });
    harness = await startHarness({
      gateway: { upstreams: { modern: { url: upstreamUrl, allowPrivateAddress: true }, fixture: fixtureUpstream() } },
      policy: allowAll,
    });
    key = harness.agents.add('tester').key;
  });
  after(async () => {
    await harness.close();
    upstream.kill('SIGKILL');
  });

  test('a modern client lists and calls through the gateway without a session', async () => {
    const client = await harness.connect(key, MODERN);
    assert.equal(client.getNegotiatedProtocolVersion(), '2026-07-28');
    const tools = (await client.listTools()).tools.map((tool) => tool.name);
    assert.ok(tools.includes('fixture__echo') && tools.includes('modern__echo'));
    const result = (await client.callTool({ name: 'fixture__echo', arguments: { message: 'stateless' } })) as CallToolResult;
    assert.equal(text(result), 'stateless');
    const record = harness.audit.records.findLast((r) => r.action === 'tools/call');
    assert.match(record?.principal.session ?? '', /^stateless-/);
    assert.equal(record?.principal.agent, 'tester');
  });

  test('a modern client listening with subscriptions/listen hears tools list_changed', async () => {
    const client = await harness.connect(key, MODERN);
    let changed = 0;
    client.setNotificationHandler('notifications/tools/list_changed', () => {
      changed += 1;
    });
    const subscription = await client.listen({ toolsListChanged: true });
    try {
      harness.gateway.core.invalidate('tools');
      for (let i = 0; i < 50 && changed === 0; i += 1) await new Promise((resolve) => setTimeout(resolve, 20));
      assert.equal(changed, 1);
    } finally {
      await subscription.close();
    }
  });

  test('checks the mirrored Mcp-* headers of a modern request against its body (-32020 on a mismatch)', async () => {
    const body = JSON.stringify({
      jsonrpc: '2.0',
      id: 1,
      method: 'tools/list',
      params: { _meta: { 'io.modelcontextprotocol/protocolVersion': '2026-07-28', 'io.modelcontextprotocol/clientCapabilities': {} } },
    });
    const headers = { ...JSON_HEADERS, authorization: `Bearer ${key}`, 'mcp-protocol-version': '2026-07-28' };
    const matching = await rawRequest(harness.gateway.url, { headers: { ...headers, 'mcp-method': 'tools/list' }, body });
    assert.equal(matching.status, 200);
    assert.match(matching.body, /fixture__echo/);
    const mismatched = await rawRequest(harness.gateway.url, { headers: { ...headers, 'mcp-method': 'tools/call' }, body });
    assert.equal(mismatched.status, 400);
    assert.match(mismatched.body, /-32020/);
    const unauthenticated = await rawRequest(harness.gateway.url, { headers: { ...JSON_HEADERS, 'mcp-protocol-version': '2026-07-28', 'mcp-method': 'tools/list' }, body });
    assert.equal(unauthenticated.status, 401);
  });

  test('the gateway negotiates the modern era with a modern-only upstream and relays calls to it', async () => {
    const client = await harness.connect(key);
    const result = (await client.callTool({ name: 'modern__echo', arguments: { message: 'hi' } })) as CallToolResult;
    assert.equal(text(result), 'modern: hi');
    const status = harness.gateway.status().upstreams.find((u) => u.name === 'modern');
    assert.equal(status?.protocol, '2026-07-28');
    const modernClient = await harness.connect(key, MODERN);
    assert.equal(text((await modernClient.callTool({ name: 'modern__echo', arguments: { message: 'both ends' } })) as CallToolResult), 'modern: both ends');
  });

  test('an input_required elicitation from a modern upstream reaches a 2025-era client as elicitation/create', async () => {
    const client = await harness.connect(key, { capabilities: { elicitation: { form: {} } } });
    const asked: string[] = [];
    client.setRequestHandler('elicitation/create', async (request) => {
      asked.push((request.params as { message: string }).message);
      return { action: 'accept', content: { confirm: true } };
    });
    const result = (await client.callTool({ name: 'modern__confirm', arguments: { action: 'deploy' } })) as CallToolResult;
    assert.equal(text(result), 'confirmed: deploy');
    assert.deepEqual(asked, ['Really deploy?']);
  });

  test("a modern upstream's input_required during prompts/get reaches a modern client as input_required", async () => {
    const client = await harness.connect(key, { ...MODERN, capabilities: { elicitation: { form: {} } } });
    const asked: string[] = [];
    client.setRequestHandler('elicitation/create', async (request) => {
      asked.push((request.params as { message: string }).message);
      return { action: 'accept', content: { audience: 'the board' } };
    });
    const prompt = await client.getPrompt({ name: 'modern__briefing', arguments: { topic: 'egress' } });
    assert.deepEqual(asked, ['Who is the briefing on egress for?']);
    assert.deepEqual(prompt.messages.map((message) => (message.content.type === 'text' ? message.content.text : '')), ['Brief the board on egress.']);
    const final = harness.audit.records.findLast((r) => r.action === 'prompts/get');
    const rounds = harness.audit.records.filter((r) => r.correlationId === final?.correlationId).map((r) => r.action);
    assert.deepEqual(rounds, ['prompts/get.input-required', 'prompts/get.input-response', 'prompts/get']);
  });
});

describe('the deprecated HTTP+SSE transport', () => {
  let harness: Harness;
  let key: string;
  before(async () => {
    harness = await startHarness({ gateway: { upstreams: { fixture: fixtureUpstream() } }, policy: allowAll });
    key = harness.agents.add('old-client').key;
  });
  after(() => harness.close());

  test('an old client connects over GET /sse and POST /messages, lists and calls, as its own agent', async () => {
    const url = new URL(harness.gateway.url.replace(/\/mcp$/, '/sse'));
    const headers = { authorization: `Bearer ${key}` };
    const client = new Client({ name: 'old', version: '1' });
    await client.connect(
      new SSEClientTransport(url, {
        requestInit: { headers },
        eventSourceInit: { fetch: (input, init) => fetch(input, { ...init, headers: { ...(init?.headers as Record<string, string>), ...headers } }) },
      }),
    );
    try {
      assert.ok((await client.listTools()).tools.some((tool) => tool.name === 'fixture__hello'));
      const result = (await client.callTool({ name: 'fixture__echo', arguments: { message: 'over sse' } })) as CallToolResult;
      assert.equal(text(result), 'over sse');
      assert.equal(harness.audit.records.findLast((r) => r.action === 'tools/call')?.principal.agent, 'old-client');
    } finally {
      await client.close();
    }
  });

  test('refuses /sse without credentials', async () => {
    const response = await fetch(harness.gateway.url.replace(/\/mcp$/, '/sse'));
    assert.equal(response.status, 401);
    await response.body?.cancel();
  });
});
