/**
 * The gateway's front door with real parts: authentication (agent keys, OAuth JWTs against a JWKS served on
 * 127.0.0.1, anonymous loopback), DNS-rebinding checks, bad input, and policy views per agent.
 */
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { ProtocolError, type CallToolResult } from '@modelcontextprotocol/client';
import { exportJWK, generateKeyPair, SignJWT } from 'jose';
import { JsonlAuditLog } from '../src/audit/jsonl.js';
import { fixtureUpstream, JSON_HEADERS, rawRequest, rawSession, startHarness, type Harness } from './gateway-harness.js';

let harness: Harness;
let aliceKey: string;
let bobKey: string;
let carolKey: string;
let jwks: Server;
let issuer: string;
let privateKey: Awaited<ReturnType<typeof generateKeyPair>>['privateKey'];

before(async () => {
  const pair = await generateKeyPair('ES256');
  privateKey = pair.privateKey;
  const publicJwk = { ...(await exportJWK(pair.publicKey)), kid: 'test-key', alg: 'ES256', use: 'sig' };
  jwks = createServer((req, res) => {
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ keys: [publicJwk] }));
  });
  jwks.listen(0, '127.0.0.1');
  await new Promise((resolve) => jwks.once('listening', resolve));
  issuer = `http://127.0.0.1:${(jwks.address() as AddressInfo).port}`;

  harness = await startHarness({
    agents: { bob: { teams: ['ops'] } },
    gateway: {
      maxMessageBytes: 64 * 1024,
      auth: { oauth: { issuer, jwksUri: `${issuer}/jwks.json`, audience: 'http://127.0.0.1/mcp' } },
      upstreams: { fixture: fixtureUpstream() },
    },
    policy: {
      mcp: [
        { id: 'dev-basic', teams: ['dev'], allow: { server: 'fixture', tools: ['hello', 'echo'] } },
        { id: 'ops-all', teams: ['ops'], allow: { server: 'fixture', tools: ['*'] } },
        { id: 'no-forbidden-echo', deny: { server: 'fixture', tools: ['echo'] }, when: "has(args.message) && args.message.contains('forbidden')" },
        { id: 'acme-only', agents: ['carol'], allow: { server: 'fixture', tools: ['echo'] }, when: "args.message == 'acme'" },
        { id: 'admins-only', agents: ['carol'], allow: { server: 'fixture', tools: ['hello'] }, when: "claims.role == 'admin'" },
        { id: 'admins-read', agents: ['carol'], allow: { server: 'fixture', resources: ['*'] }, when: "claims.role == 'admin'" },
      ],
    },
  });
  aliceKey = harness.agents.add('alice', ['dev']).key;
  carolKey = harness.agents.add('carol').key;
  bobKey = harness.agents.add('bob').key;
});

after(async () => {
  await harness.close();
  jwks.close();
});

async function token(claims: Record<string, unknown>, options: { audience?: string; expiresIn?: string } = {}): Promise<string> {
  return new SignJWT(claims)
    .setProtectedHeader({ alg: 'ES256', kid: 'test-key' })
    .setIssuer(issuer)
    .setAudience(options.audience ?? 'http://127.0.0.1/mcp')
    .setIssuedAt()
    .setExpirationTime(options.expiresIn ?? '5m')
    .sign(privateKey);
}

describe('policy views', () => {
  test('two agents see different tools, each exactly what its teams allow', async () => {
    const alice = await harness.connect(aliceKey);
    const bob = await harness.connect(bobKey);
    const aliceTools = (await alice.listTools()).tools.map((tool) => tool.name).sort();
    const bobTools = (await bob.listTools()).tools.map((tool) => tool.name);
    assert.deepEqual(aliceTools, ['fixture__echo', 'fixture__hello']);
    assert.ok(bobTools.includes('fixture__crash') && bobTools.includes('fixture__hello'));
  });

  test('a call to a hidden tool gets the same error as a call to a missing one, and both are recorded', async () => {
    const alice = await harness.connect(aliceKey);
    const hidden = await alice.callTool({ name: 'fixture__crash', arguments: {} }).catch((error: unknown) => error);
    const missing = await alice.callTool({ name: 'fixture__nothing', arguments: {} }).catch((error: unknown) => error);
    assert.ok(hidden instanceof ProtocolError && missing instanceof ProtocolError);
    assert.equal(hidden.code, missing.code);
    assert.equal(hidden.message.replace('fixture__crash', 'NAME'), missing.message.replace('fixture__nothing', 'NAME'));
    const denials = harness.audit.records.filter((record) => record.action === 'tools/call' && record.effect === 'deny' && record.principal.agent === 'alice');
    assert.ok(denials.some((record) => record.resource === 'fixture/fixture__crash'));
    assert.ok(denials.some((record) => record.resource.endsWith('fixture__nothing')));
  });

  test('an argument condition denies one call and allows another to the same tool', async () => {
    const alice = await harness.connect(aliceKey);
    const allowed = (await alice.callTool({ name: 'fixture__echo', arguments: { message: 'fine' } })) as CallToolResult;
    assert.equal(allowed.isError, undefined);
    const denied = (await alice.callTool({ name: 'fixture__echo', arguments: { message: 'something forbidden' } })) as CallToolResult;
    assert.equal(denied.isError, true);
    assert.match(JSON.stringify(denied.content), /Denied by Gatehouse policy \(no-forbidden-echo\)/);
    const record = harness.audit.records.findLast((r) => r.action === 'tools/call' && r.resource === 'fixture/echo');
    assert.equal(record?.effect, 'deny');
    assert.deepEqual(record?.rules, ['no-forbidden-echo']);
  });
});

describe('conditions on arguments', () => {
  test('lists a tool whose allow depends on its arguments, and decides each call by them', async () => {
    const carol = await harness.connect(carolKey);
    // admins-only depends on identity claims, not arguments, so it is decided (false) already at list time.
    assert.deepEqual((await carol.listTools()).tools.map((tool) => tool.name), ['fixture__echo']);
    const acme = (await carol.callTool({ name: 'fixture__echo', arguments: { message: 'acme' } })) as CallToolResult;
    assert.deepEqual(acme.content, [{ type: 'text', text: 'acme' }]);
    const other = (await carol.callTool({ name: 'fixture__echo', arguments: { message: 'globex' } })) as CallToolResult;
    assert.equal(other.isError, true);
    assert.match(JSON.stringify(other.content), /Denied by Gatehouse policy/);
    const hidden = await carol.callTool({ name: 'fixture__hello', arguments: {} }).catch((error: unknown) => error);
    assert.ok(hidden instanceof ProtocolError && /not found/.test(hidden.message));
  });
});

describe('authentication', () => {
  test('refuses a request without credentials with 401 and a pointer to the protected-resource metadata', async () => {
    const response = await rawRequest(harness.gateway.url, { headers: JSON_HEADERS, body: '{}' });
    assert.equal(response.status, 401);
    assert.match(String(response.headers['www-authenticate']), /^Bearer resource_metadata="http:\/\/127\.0\.0\.1:\d+\/\.well-known\/oauth-protected-resource\/mcp"$/);
    const metadata = await rawRequest(harness.gateway.url.replace(/\/mcp$/, '/.well-known/oauth-protected-resource/mcp'), { method: 'GET' });
    assert.equal(metadata.status, 200);
    assert.deepEqual(JSON.parse(metadata.body).authorization_servers, [issuer]);
  });

  test('refuses a wrong agent key', async () => {
    const wrong = aliceKey.slice(0, -2) + (aliceKey.endsWith('AA') ? 'BB' : 'AA');
    await assert.rejects(harness.connect(wrong));
    const response = await rawRequest(harness.gateway.url, { headers: { ...JSON_HEADERS, authorization: `Bearer ${wrong}` }, body: '{}' });
    assert.equal(response.status, 401);
    assert.match(String(response.headers['www-authenticate']), /error="invalid_token"/);
  });

  test('accepts an OAuth JWT from the configured issuer and takes agent and teams from its claims', async () => {
    const client = await harness.connect(undefined, {}, { authorization: `Bearer ${await token({ sub: 'user-1', azp: 'ide', groups: ['dev'] })}` });
    const tools = (await client.listTools()).tools.map((tool) => tool.name).sort();
    assert.deepEqual(tools, ['fixture__echo', 'fixture__hello']);
    const record = harness.audit.records.findLast((r) => r.action === 'tools/list' && r.principal.agent === 'ide');
    assert.equal(record?.principal.user, 'user-1');
    // One record per list, whichever way the session serves it.
    const listed = () => harness.audit.records.filter((r) => r.action === 'tools/list' && r.principal.agent === 'ide').length;
    const before = listed();
    await client.listTools();
    assert.equal(listed(), before + 1);
  });

  test('refuses a JWT for another audience and an expired JWT', async () => {
    for (const bad of [await token({ azp: 'ide' }, { audience: 'https://other.example/mcp' }), await token({ azp: 'ide' }, { expiresIn: '-1m' })]) {
      const response = await rawRequest(harness.gateway.url, { headers: { ...JSON_HEADERS, authorization: `Bearer ${bad}` }, body: '{}' });
      assert.equal(response.status, 401);
    }
  });

  test('a session belongs to the identity that opened it: another agent gets "Session not found"', async () => {
    const session = await rawSession(harness.gateway.url, aliceKey);
    const response = await rawRequest(harness.gateway.url, {
      headers: { ...JSON_HEADERS, authorization: `Bearer ${bobKey}`, 'mcp-session-id': session, 'mcp-protocol-version': '2025-06-18' },
      body: JSON.stringify({ jsonrpc: '2.0', id: 2, method: 'tools/list' }),
    });
    assert.equal(response.status, 404);
  });

  test('a session belongs to the teams that opened it too: the same agent in other groups gets "Session not found"', async () => {
    const opener = await token({ azp: 'dave', groups: ['blue', 'red'] });
    const session = await rawSession(harness.gateway.url, opener);
    const list = (bearer: string) =>
      rawRequest(harness.gateway.url, {
        headers: { ...JSON_HEADERS, authorization: `Bearer ${bearer}`, 'mcp-session-id': session, 'mcp-protocol-version': '2025-06-18' },
        body: JSON.stringify({ jsonrpc: '2.0', id: 2, method: 'tools/list' }),
      });
    assert.equal((await list(await token({ azp: 'dave', groups: ['blue', 'red'] }))).status, 200);
    for (const groups of [['blue'], ['blue', 'red', 'green'], ['blue', 'green']]) {
      assert.equal((await list(await token({ azp: 'dave', groups }))).status, 404, groups.join());
    }
  });

  test('each request on a session is judged with the claims of the token it carries, not those of the token that opened it', async () => {
    const admin = await token({ azp: 'carol', role: 'admin' });
    const plain = await token({ azp: 'carol', role: 'user' });
    const session = await rawSession(harness.gateway.url, admin);
    const ask = async (bearer: string, id: number, method: string, params: Record<string, unknown>) => {
      const response = await rawRequest(harness.gateway.url, {
        headers: { ...JSON_HEADERS, authorization: `Bearer ${bearer}`, 'mcp-session-id': session, 'mcp-protocol-version': '2025-06-18' },
        body: JSON.stringify({ jsonrpc: '2.0', id, method, params }),
      });
      assert.equal(response.status, 200, response.body);
      return JSON.parse(response.body) as { result?: { tools?: { name: string }[]; content?: unknown; isError?: boolean }; error?: { message: string } };
    };
    const hello = { name: 'fixture__hello', arguments: {} };
    assert.deepEqual((await ask(admin, 2, 'tools/call', hello)).result?.content, [{ type: 'text', text: 'hello world' }]);
    // The same agent with a narrower token, on the session the admin token opened.
    assert.ok(!(await ask(plain, 3, 'tools/list', {})).result?.tools?.some((tool) => tool.name === 'fixture__hello'), 'hidden from the narrower token');
    const refused = await ask(plain, 4, 'tools/call', hello);
    assert.ok(refused.error !== undefined || refused.result?.isError === true, JSON.stringify(refused));
    assert.doesNotMatch(JSON.stringify(refused), /hello world/);
    // And the admin token, still valid, still may.
    assert.deepEqual((await ask(admin, 5, 'tools/call', hello)).result?.content, [{ type: 'text', text: 'hello world' }]);
    // Reads go the SDK server's way, not the calls' own: the same holds there.
    assert.match(JSON.stringify(await ask(admin, 6, 'resources/read', { uri: 'fixture://note' })), /a note/);
    assert.doesNotMatch(JSON.stringify(await ask(plain, 7, 'resources/read', { uri: 'fixture://note' })), /a note/);
  });

  test('anonymous loopback callers get in only when the config allows it', async () => {
    const open = await startHarness({
      gateway: { auth: { allowAnonymousLoopback: true }, upstreams: { fixture: fixtureUpstream() } },
      policy: { mcp: [{ id: 'anon', agents: ['anonymous'], allow: { server: 'fixture', tools: ['hello'] } }] },
    });
    try {
      const client = await open.connect(undefined);
      assert.deepEqual((await client.listTools()).tools.map((tool) => tool.name), ['fixture__hello']);
    } finally {
      await open.close();
    }
    const response = await rawRequest(harness.gateway.url, { headers: JSON_HEADERS, body: '{}' });
    assert.equal(response.status, 401);
  });
});

describe('unauthenticated floods', () => {
  test("records only the first hundred rejections a minute of callers not known, then says the rest are not recorded; a known caller's still are", async () => {
    const flooded = await startHarness({ gateway: { upstreams: { fixture: fixtureUpstream() } }, policy: { mcp: [] } });
    try {
      for (let batch = 0; batch < 3; batch += 1) {
        await Promise.all(Array.from({ length: 50 }, () => rawRequest(flooded.gateway.url, { headers: { ...JSON_HEADERS, authorization: 'Bearer ghk_not-a-key' }, body: '{}' })));
      }
      const rejected = flooded.audit.records.filter((r) => r.action === 'authenticate');
      assert.equal(rejected.length, 101);
      assert.match(rejected.at(-1)!.reason, /not recorded one by one/);
      const key = flooded.agents.add('known').key;
      await rawRequest(flooded.gateway.url, { headers: { ...JSON_HEADERS, authorization: `Bearer ${key}` }, body: '{"jsonrpc":"2.0","id":1,"method":"tools/list"}' });
      assert.ok(flooded.audit.records.some((r) => r.action === 'session.missing' && r.principal.agent === 'known'));
    } finally {
      await flooded.close();
    }
  });
});

describe('DNS rebinding and bad input', () => {
  test('refuses a Host header that is not the gateway\'s own name', async () => {
    const response = await rawRequest(harness.gateway.url, { headers: { ...JSON_HEADERS, host: 'attacker.example:7401', authorization: `Bearer ${aliceKey}` }, body: '{}' });
    assert.equal(response.status, 403);
    assert.match(JSON.parse(response.body).error.message, /Host header/);
  });

  test('refuses a browser Origin that is not allowed', async () => {
    const response = await rawRequest(harness.gateway.url, {
      headers: { ...JSON_HEADERS, origin: 'http://attacker.example', authorization: `Bearer ${aliceKey}` },
      body: '{}',
    });
    assert.equal(response.status, 403);
  });

  test('answers malformed JSON with a JSON-RPC parse error and records it', async () => {
    const response = await rawRequest(harness.gateway.url, { headers: { ...JSON_HEADERS, authorization: `Bearer ${aliceKey}` }, body: '{"jsonrpc":' });
    assert.equal(response.status, 400);
    assert.equal(JSON.parse(response.body).error.code, -32700);
    assert.ok(harness.audit.records.some((r) => r.action === 'request.parse-error' && r.principal.agent === 'alice'));
  });

  test('answers a message over the size limit with 413 before reading it all', async () => {
    const body = JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/list', params: { pad: 'x'.repeat(100 * 1024) } });
    const response = await rawRequest(harness.gateway.url, { headers: { ...JSON_HEADERS, authorization: `Bearer ${aliceKey}` }, body });
    assert.equal(response.status, 413);
    assert.ok(harness.audit.records.some((r) => r.action === 'request.too-large'));
  });

  test('answers an unknown method with -32601 and JSON that is not JSON-RPC with an error, on a live session', async () => {
    const session = await rawSession(harness.gateway.url, aliceKey);
    const headers = { ...JSON_HEADERS, authorization: `Bearer ${aliceKey}`, 'mcp-session-id': session, 'mcp-protocol-version': '2025-06-18' };
    const unknown = await rawRequest(harness.gateway.url, { headers, body: JSON.stringify({ jsonrpc: '2.0', id: 7, method: 'tools/explode' }) });
    assert.match(unknown.body, /-32601/);
    const notRpc = await rawRequest(harness.gateway.url, { headers, body: JSON.stringify({ hello: 'world' }) });
    assert.equal(notRpc.status, 400);
    assert.match(notRpc.body, /"code":-32\d{3}/);
    const noSession = await rawRequest(harness.gateway.url, {
      headers: { ...JSON_HEADERS, authorization: `Bearer ${aliceKey}` },
      body: JSON.stringify({ jsonrpc: '2.0', id: 8, method: 'tools/list' }),
    });
    assert.equal(noSession.status, 400);
    // The session still works after all of that.
    const list = await rawRequest(harness.gateway.url, { headers, body: JSON.stringify({ jsonrpc: '2.0', id: 9, method: 'tools/list' }) });
    assert.match(list.body, /fixture__hello/);
  });
});

describe('response form', () => {
  test('answers a call that sends nothing before its result as plain JSON, and one that logs on the way as an event stream', async () => {
    const session = await rawSession(harness.gateway.url, bobKey);
    const headers = { ...JSON_HEADERS, authorization: `Bearer ${bobKey}`, 'mcp-session-id': session, 'mcp-protocol-version': '2025-06-18' };
    const plain = await rawRequest(harness.gateway.url, {
      headers,
      body: JSON.stringify({ jsonrpc: '2.0', id: 21, method: 'tools/call', params: { name: 'fixture__hello', arguments: { name: 'json' } } }),
    });
    assert.equal(plain.status, 200);
    assert.match(String(plain.headers['content-type']), /^application\/json/);
    assert.equal(plain.headers['mcp-session-id'], session);
    assert.equal(Number(plain.headers['content-length']), Buffer.byteLength(plain.body));
    const reply = JSON.parse(plain.body) as { id: number; result: CallToolResult };
    assert.equal(reply.id, 21);
    assert.deepEqual(reply.result.content, [{ type: 'text', text: 'hello json' }]);

    // The upstream logs twice before it answers: those messages go out first, on an event stream.
    const streamed = await rawRequest(harness.gateway.url, {
      headers,
      body: JSON.stringify({ jsonrpc: '2.0', id: 22, method: 'tools/call', params: { name: 'fixture__log', arguments: {} } }),
    });
    assert.equal(streamed.status, 200);
    assert.match(String(streamed.headers['content-type']), /^text\/event-stream/);
    const events = streamed.body
      .split('\n')
      .filter((line) => line.startsWith('data: '))
      .map((line) => JSON.parse(line.slice(6)) as { id?: number; method?: string; params?: { data?: unknown }; result?: CallToolResult });
    assert.deepEqual(
      events.filter((event) => event.method === 'notifications/message').map((event) => event.params?.data),
      ['fine detail', 'something broke'],
    );
    assert.equal(events.at(-1)?.id, 22);
    assert.deepEqual(events.at(-1)?.result?.content, [{ type: 'text', text: 'logged' }]);
  });
});

describe('audit failure', () => {
  test('once the audit log cannot be written (a real ENOSPC from /dev/full), requests are refused', async () => {
    const failing = await startHarness(
      { gateway: { upstreams: { fixture: fixtureUpstream() } }, policy: { mcp: [{ id: 'all', allow: { server: 'fixture', tools: ['*'] } }] } },
      new JsonlAuditLog('/dev/full'),
    );
    try {
      const client = await failing.connect(failing.agents.add('tester').key);
      await client.listTools(); // its record fails to land
      await new Promise((resolve) => setTimeout(resolve, 50));
      const refused = await client.callTool({ name: 'fixture__hello', arguments: {} }).catch((error: unknown) => error);
      assert.ok(refused instanceof ProtocolError);
      assert.match(refused.message, /audit log cannot be written/);
    } finally {
      await failing.close();
    }
  });
});

describe('startNodeGateway', () => {
  test('starts from a parsed gatehouse.yaml with the node\'s agent keys and pins, and answers a scanned call', async () => {
    const { mkdtempSync, rmSync } = await import('node:fs');
    const { tmpdir } = await import('node:os');
    const { join } = await import('node:path');
    const { parseYaml } = await import('../src/config/load.js');
    const { configSchema } = await import('../src/config/schema.js');
    const { compilePolicy } = await import('../src/policy/index.js');
    const { MemoryAuditLog } = await import('../src/audit/jsonl.js');
    const { openAgentRegistry } = await import('../src/agents/index.js');
    const { startNodeGateway } = await import('../src/gateway/index.js');
    const { Client, StreamableHTTPClientTransport } = await import('@modelcontextprotocol/client');
    const dataDir = mkdtempSync(join(tmpdir(), 'gatehouse-node-gw-'));
    const yaml = [
      'version: 1',
      'agents: { claude: { teams: [dev] } }',
      'gateway:',
      '  listen: 127.0.0.1:0',
      '  upstreams:',
      `    fixture: { command: ${JSON.stringify(process.execPath)}, args: [${JSON.stringify(new URL('./fixtures/fixture-server.js', import.meta.url).pathname)}] }`,
      'policy:',
      '  mcp:',
      '    - { id: dev-echo, teams: [dev], allow: { server: fixture, tools: [echo] } }',
    ].join('\n');
    const config = parseYaml(yaml, 'gatehouse.yaml', configSchema);
    const audit = new MemoryAuditLog();
    const key = openAgentRegistry(dataDir).add('claude').key;
    const gateway = await startNodeGateway({ config, dataDir, policy: { current: compilePolicy(config.policy, { agents: config.agents }) }, audit, node: 'n1' });
    const client = new Client({ name: 't', version: '1' });
    try {
      await client.connect(new StreamableHTTPClientTransport(new URL(gateway.url), { requestInit: { headers: { authorization: `Bearer ${key}` } } }));
      assert.deepEqual((await client.listTools()).tools.map((tool) => tool.name), ['fixture__echo']);
      const result = await client.callTool({ name: 'fixture__echo', arguments: { message: 'from the node' } });
      assert.deepEqual(result.content, [{ type: 'text', text: 'from the node' }]);
      assert.ok(audit.records.some((r) => r.action === 'pin.first-seen'));
      assert.deepEqual(audit.records.findLast((r) => r.action === 'tools/call')?.principal.teams, ['dev']);
    } finally {
      await client.close();
      await gateway.close();
      rmSync(dataDir, { recursive: true, force: true });
    }
  });
});
