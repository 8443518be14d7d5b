/**
 * Direct tools/call and tools/list on a session, with a real SDK server behind it and a stand-in for the core:
 * the answers a client sees for bad params, bad results, upstream errors, cancellation, log levels and lists.
 */
import assert from 'node:assert/strict';
import { beforeEach, test } from 'node:test';
import { ProtocolError, Server, type JSONRPCMessage, type Transport, type TransportSendOptions } from '@modelcontextprotocol/server';
import { serveDirectly } from './direct-calls.js';
import type { GatewayCore } from './gateway.js';
import type { CallBinding } from './upstream.js';

let sent: { message: JSONRPCMessage; options?: TransportSendOptions }[];
let transport: Transport;
/** What the stand-in core does with a call. */
let behaviour: (binding: CallBinding, signal: AbortSignal) => Promise<unknown>;
let calls: number;
/** What the stand-in core lists, and how often it was asked (each list is one audit record). */
let tools: Record<string, unknown>[];
let lists: number;

beforeEach(async () => {
  sent = [];
  calls = 0;
  lists = 0;
  tools = [];
  transport = {
    start: async () => undefined,
    close: async () => transport.onclose?.(),
    send: async (message, options) => void sent.push({ message, ...(options ? { options } : {}) }),
  };
  const server = new Server({ name: 'test', version: '1' }, { capabilities: { tools: {}, logging: {} } });
  await server.connect(transport);
  const core = {
    callTool: async (_caller: unknown, _name: string, _args: unknown, binding: CallBinding, options: { signal: AbortSignal }) => {
      calls += 1;
      return behaviour(binding, options.signal);
    },
    listTools: async () => {
      lists += 1;
      return tools;
    },
  } as unknown as GatewayCore;
  serveDirectly(server, transport, core, { session: 's1', agent: 'a' });
  transport.onmessage!({ jsonrpc: '2.0', id: 0, method: 'initialize', params: { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 'c', version: '1' } } });
  await settle();
  sent = [];
});

const settle = () => new Promise((resolve) => setTimeout(resolve, 10));

async function callTool(id: number, params: unknown): Promise<JSONRPCMessage | undefined> {
  transport.onmessage!({ jsonrpc: '2.0', id, method: 'tools/call', params } as JSONRPCMessage);
  await settle();
  return sent.find((entry) => 'id' in entry.message && entry.message.id === id)?.message;
}

test('refuses invalid params with -32602 without calling the core', async () => {
  behaviour = async () => ({ content: [] });
  for (const params of [undefined, { arguments: {} }, { name: 'x', arguments: [1] }, { name: 'x', _meta: { progressToken: 1.5 } }]) {
    const answer = await callTool(1, params);
    assert.equal((answer as { error?: { code: number } }).error?.code, -32602, JSON.stringify(params));
  }
  assert.equal(calls, 0);
});

test('answers a well-formed result, gives a result without content an empty list, and refuses a malformed one', async () => {
  behaviour = async () => ({ content: [{ type: 'text', text: 'ok' }], isError: false });
  assert.deepEqual(await callTool(2, { name: 'x', arguments: {} }), { jsonrpc: '2.0', id: 2, result: { content: [{ type: 'text', text: 'ok' }], isError: false } });
  behaviour = async () => ({ structuredContent: { n: 1 } });
  assert.deepEqual(await callTool(3, { name: 'x' }), { jsonrpc: '2.0', id: 3, result: { structuredContent: { n: 1 }, content: [] } });
  behaviour = async () => ({ content: [{ text: 'no type' }] });
  assert.match(JSON.stringify(await callTool(4, { name: 'x' })), /-32602.*Invalid tools\/call result/);
});

test('passes an error\'s code and message on, in the 2025 form', async () => {
  behaviour = async () => {
    throw new ProtocolError(-32002, 'Resource gone');
  };
  assert.deepEqual((await callTool(5, { name: 'x' }) as { error: unknown }).error, { code: -32602, message: 'Resource gone' });
  behaviour = async () => {
    throw new Error('upstream exploded');
  };
  assert.deepEqual((await callTool(6, { name: 'x' }) as { error: unknown }).error, { code: -32603, message: 'upstream exploded' });
});

test('a cancelled call is aborted and gets no answer', async () => {
  let aborted = false;
  behaviour = (_binding, signal) =>
    new Promise((resolve) => {
      signal.addEventListener('abort', () => {
        aborted = true;
        resolve({ content: [] });
      });
    });
  transport.onmessage!({ jsonrpc: '2.0', id: 7, method: 'tools/call', params: { name: 'x' } });
  await settle();
  transport.onmessage!({ jsonrpc: '2.0', method: 'notifications/cancelled', params: { requestId: 7, reason: 'user' } });
  await settle();
  assert.equal(aborted, true);
  assert.equal(sent.filter((entry) => 'id' in entry.message && entry.message.id === 7).length, 0);
});

test('log messages during a call respect the session\'s logging/setLevel and travel with the call', async () => {
  transport.onmessage!({ jsonrpc: '2.0', id: 8, method: 'logging/setLevel', params: { level: 'warning' } });
  await settle();
  behaviour = async (binding) => {
    await binding.notify({ method: 'notifications/message', params: { level: 'debug', data: 'detail' } });
    await binding.notify({ method: 'notifications/message', params: { level: 'error', data: 'broke' } });
    return { content: [] };
  };
  await callTool(9, { name: 'x' });
  const logs = sent.filter((entry) => 'method' in entry.message && entry.message.method === 'notifications/message');
  assert.deepEqual(
    logs.map((entry) => [(entry.message as unknown as { params: { data: string } }).params.data, entry.options?.relatedRequestId]),
    [['broke', 9]],
  );
});

async function listTools(id: number, params?: unknown): Promise<JSONRPCMessage | undefined> {
  transport.onmessage!({ jsonrpc: '2.0', id, method: 'tools/list', ...(params !== undefined ? { params } : {}) } as JSONRPCMessage);
  await settle();
  return sent.find((entry) => 'id' in entry.message && entry.message.id === id)?.message;
}

test('answers tools/list with the core\'s list, asking the core once per list, and refuses invalid params', async () => {
  tools = Object.freeze([{ name: 'a__echo', inputSchema: { type: 'object' }, outputSchema: { type: 'object', properties: { n: { type: 'number' } } } }]) as never;
  assert.deepEqual(await listTools(10), { jsonrpc: '2.0', id: 10, result: { tools } });
  assert.deepEqual(await listTools(11, { cursor: 'ignored' }), { jsonrpc: '2.0', id: 11, result: { tools } });
  assert.equal(lists, 2);
  for (const params of [[1], { cursor: 5 }, { _meta: 'x' }]) {
    assert.equal((await listTools(12, params) as { error?: { code: number } }).error?.code, -32602, JSON.stringify(params));
  }
  assert.equal(lists, 2);
});

test('a listed tool whose outputSchema is not an object reaches a 2025 client wrapped, as the SDK server does, from one list', async () => {
  tools = Object.freeze([
    { name: 'a__count', inputSchema: { type: 'object' }, outputSchema: { type: 'integer' } },
    { name: 'a__echo', inputSchema: { type: 'object' } },
  ]) as never;
  const answer = (await listTools(13)) as unknown as { result: { tools: { name: string; outputSchema?: unknown }[] } };
  assert.deepEqual(answer.result.tools[0]!.outputSchema, { type: 'object', properties: { result: { type: 'integer' } }, required: ['result'] });
  assert.equal(answer.result.tools[1]!.outputSchema, undefined);
  assert.equal(lists, 1);
});
