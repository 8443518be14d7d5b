/**
 * requireApproval: an allowed call that the policy says needs a person is put to the client as an MCP
 * elicitation showing the exact arguments and their digest; it runs only on an explicit approval, and is
 * denied when the person declines or the client cannot elicit. Also server-filesystem behind the gateway.
 */
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { CallToolResult } from '@modelcontextprotocol/client';
import { digestOf } from '../src/gateway/index.js';
import { filesystemEntry, fixtureUpstream, rawRequest, startHarness, type Harness } from './gateway-harness.js';

function text(result: CallToolResult): string {
  return result.content.map((block) => (block.type === 'text' ? block.text : '')).join('');
}

describe('requireApproval through elicitation', () => {
  let harness: Harness;
  let key: string;

  before(async () => {
    harness = await startHarness({
      gateway: { upstreams: { fixture: fixtureUpstream() } },
      policy: {
        mcp: [
          { id: 'read', allow: { server: 'fixture', tools: ['hello'] } },
          { id: 'echo-needs-a-person', allow: { server: 'fixture', tools: ['echo'] }, requireApproval: true },
        ],
      },
    });
    key = harness.agents.add('tester').key;
  });
  after(() => harness.close());

  test('asks the person with the exact arguments and their digest, and runs the call once approved', async () => {
    const asked: { message: string }[] = [];
    const client = await harness.connect(key, { capabilities: { elicitation: { form: {} } } });
    client.setRequestHandler('elicitation/create', async (request) => {
      asked.push(request.params as { message: string });
      return { action: 'accept', content: { approve: true } };
    });
    const result = (await client.callTool({ name: 'fixture__echo', arguments: { message: 'ship it' } })) as CallToolResult;
    assert.equal(text(result), 'ship it');
    assert.equal(asked.length, 1);
    assert.match(asked[0]!.message, /"message": "ship it"/);
    assert.ok(asked[0]!.message.includes(digestOf({ message: 'ship it' })));
    const approval = harness.audit.records.findLast((r) => r.action === 'approval');
    assert.equal(approval?.effect, 'allow');
    assert.equal(approval?.details?.argsDigest, digestOf({ message: 'ship it' }));
    // A call that needs no approval asks nobody.
    await client.callTool({ name: 'fixture__hello', arguments: {} });
    assert.equal(asked.length, 1);
  });

  test('does not run the call when the person declines', async () => {
    const client = await harness.connect(key, { capabilities: { elicitation: { form: {} } } });
    client.setRequestHandler('elicitation/create', async () => ({ action: 'decline' }));
    const result = (await client.callTool({ name: 'fixture__echo', arguments: { message: 'ship it' } })) as CallToolResult;
    assert.equal(result.isError, true);
    assert.match(text(result), /declined/);
    assert.equal(harness.audit.records.findLast((r) => r.action === 'tools/call')?.effect, 'deny');
  });

  test('asks a 2026-07-28 client through input_required and runs the call on its retry with the approval', async () => {
    const asked: string[] = [];
    const client = await harness.connect(key, { capabilities: { elicitation: { form: {} } }, versionNegotiation: { mode: { pin: '2026-07-28' } } });
    client.setRequestHandler('elicitation/create', async (request) => {
      asked.push((request.params as { message: string }).message);
      return { action: 'accept', content: { approve: true } };
    });
    const result = (await client.callTool({ name: 'fixture__echo', arguments: { message: 'modern ship' } })) as CallToolResult;
    assert.equal(text(result), 'modern ship');
    assert.equal(asked.length, 1);
    assert.ok(asked[0]!.includes(digestOf({ message: 'modern ship' })));
    const declining = await harness.connect(key, { capabilities: { elicitation: { form: {} } }, versionNegotiation: { mode: { pin: '2026-07-28' } } });
    declining.setRequestHandler('elicitation/create', async () => ({ action: 'decline' }));
    const declined = (await declining.callTool({ name: 'fixture__echo', arguments: { message: 'modern ship' } })) as CallToolResult;
    assert.equal(declined.isError, true);
    assert.match(text(declined), /declined/);
  });

  /** One 2026-07-28 tools/call to fixture__echo, sent raw so a test can replay its request state. */
  async function modernEcho(agentKey: string, args: Record<string, unknown>, extra: Record<string, unknown> = {}) {
    const headers = { 'content-type': 'application/json', accept: 'application/json, text/event-stream', authorization: `Bearer ${agentKey}`, 'mcp-protocol-version': '2026-07-28', 'mcp-method': 'tools/call', 'mcp-name': 'fixture__echo' };
    const response = await rawRequest(harness.gateway.url, {
      headers,
      body: JSON.stringify({
        jsonrpc: '2.0',
        id: 1,
        method: 'tools/call',
        params: { name: 'fixture__echo', arguments: args, ...extra, _meta: { 'io.modelcontextprotocol/protocolVersion': '2026-07-28', 'io.modelcontextprotocol/clientCapabilities': { elicitation: { form: {} } } } },
      }),
    });
    return (JSON.parse(response.body) as { result: { resultType?: string; requestState: string; content?: { text: string }[] } }).result;
  }
  const approval = { 'gatehouse-approval': { action: 'accept', content: { approve: true } } };

  test('refuses a 2026-07-28 retry whose approval state was made for other arguments', async () => {
    const first = await modernEcho(key, { message: 'harmless' });
    assert.equal(first.resultType, 'input_required');
    // The state minted for "harmless" does not approve "rm -rf": the gateway asks again instead of running it.
    const swapped = await modernEcho(key, { message: 'rm -rf' }, { inputResponses: approval, requestState: first.requestState });
    assert.equal(swapped.resultType, 'input_required');
    const honest = await modernEcho(key, { message: 'harmless' }, { inputResponses: approval, requestState: first.requestState });
    assert.equal(honest.content?.[0]!.text, 'harmless');
  });

  test('honours a 2026-07-28 approval once, only for the agent it was asked for, and never in a session', async () => {
    const asked = await modernEcho(key, { message: 'deploy once' });
    const replay = { inputResponses: approval, requestState: asked.requestState };
    // Another agent holding the state and the answer is asked again, and nothing runs.
    const other = harness.agents.add('bystander').key;
    assert.equal((await modernEcho(other, { message: 'deploy once' }, replay)).resultType, 'input_required');
    // So is a 2025-era session that sends them along: its approval is asked within the call, and it cannot elicit.
    const session = await harness.connect(other);
    const inSession = (await session.callTool({ name: 'fixture__echo', arguments: { message: 'deploy once' }, ...replay } as never)) as CallToolResult;
    assert.equal(inSession.isError, true);
    assert.match(text(inSession), /needs a person's approval/);
    // The agent it was asked for runs the call once ...
    assert.equal((await modernEcho(key, { message: 'deploy once' }, replay)).content?.[0]!.text, 'deploy once');
    // ... and the same approval sent again is refused: a person approved one call, not a standing permission.
    const again = await modernEcho(key, { message: 'deploy once' }, replay);
    assert.equal(again.resultType, 'input_required');
    assert.equal(again.content, undefined);
    const refused = harness.audit.records.findLast((r) => r.action === 'approval');
    assert.equal(refused?.effect, 'deny');
    assert.match(refused?.reason ?? '', /already used/);
  });

  test('denies the call when the client cannot elicit', async () => {
    const client = await harness.connect(key);
    const result = (await client.callTool({ name: 'fixture__echo', arguments: { message: 'ship it' } })) as CallToolResult;
    assert.equal(result.isError, true);
    assert.match(text(result), /needs a person's approval/);
  });
});

describe('server-filesystem behind the gateway', () => {
  let harness: Harness;
  let root: string;

  before(async () => {
    root = mkdtempSync(join(tmpdir(), 'gatehouse-fs-'));
    mkdirSync(join(root, 'docs'));
    writeFileSync(join(root, 'docs', 'readme.txt'), 'hello from the workspace\n');
    harness = await startHarness({
      gateway: { upstreams: { fs: { command: process.execPath, args: [filesystemEntry, root] } } },
      policy: {
        mcp: [
          { id: 'fs-read', allow: { server: 'fs', tools: ['read_text_file', 'list_directory', 'list_allowed_directories'] } },
          { id: 'no-env-files', deny: { server: 'fs', tools: ['read_text_file'] }, when: "has(args.path) && args.path.endsWith('.env')" },
        ],
      },
    });
  });
  after(async () => {
    await harness.close();
    rmSync(root, { recursive: true, force: true });
  });

  test('shows only the read tools the policy allows and reads through them', async () => {
    const client = await harness.connect(harness.agents.add('reader').key);
    const tools = (await client.listTools()).tools.map((tool) => tool.name).sort();
    assert.deepEqual(tools, ['fs__list_allowed_directories', 'fs__list_directory', 'fs__read_text_file']);
    const read = (await client.callTool({ name: 'fs__read_text_file', arguments: { path: join(root, 'docs', 'readme.txt') } })) as CallToolResult;
    assert.match(text(read), /hello from the workspace/);
    const listing = (await client.callTool({ name: 'fs__list_directory', arguments: { path: root } })) as CallToolResult;
    assert.match(text(listing), /docs/);
    const write = await client.callTool({ name: 'fs__write_file', arguments: { path: join(root, 'x'), content: 'no' } }).catch((error: unknown) => error);
    assert.match(String(write), /not found/);
    const env = (await client.callTool({ name: 'fs__read_text_file', arguments: { path: join(root, '.env') } })) as CallToolResult;
    assert.equal(env.isError, true);
    assert.match(text(env), /no-env-files/);
  });
});
