import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parseJSONRPCMessage } from '@modelcontextprotocol/server';
import { isJsonRpcMessage } from './jsonrpc.js';

const samples: unknown[] = [
  { jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 'x', arguments: {} } },
  { jsonrpc: '2.0', id: 'a', method: 'ping' },
  { jsonrpc: '2.0', method: 'notifications/initialized' },
  { jsonrpc: '2.0', method: 'notifications/progress', params: { progressToken: 'p', progress: 1 } },
  { jsonrpc: '2.0', id: 1, method: 'x', params: { _meta: { progressToken: 7, other: true } } },
  { jsonrpc: '2.0', id: 1, result: {} },
  { jsonrpc: '2.0', id: 1, result: { content: [], _meta: {} } },
  { jsonrpc: '2.0', id: 1, error: { code: -32601, message: 'Method not found' } },
  { jsonrpc: '2.0', error: { code: -32700, message: 'Parse error', data: 'x' } },
  // Refused by the SDK's schema, and so here:
  { jsonrpc: '2.0', id: 1, method: 'x', extra: 1 },
  { jsonrpc: '2.0', id: 1.5, method: 'x' },
  { jsonrpc: '2.0', id: null, method: 'x' },
  { jsonrpc: '2.0', id: null, error: { code: 1, message: 'm' } },
  { jsonrpc: '1.0', id: 1, method: 'x' },
  { jsonrpc: '2.0', id: 1, method: 5 },
  { jsonrpc: '2.0', id: 1, method: 'x', params: [1, 2] },
  { jsonrpc: '2.0', id: 1, method: 'x', params: { _meta: { progressToken: 1.5 } } },
  { jsonrpc: '2.0', id: 1, method: 'x', params: { _meta: 'no' } },
  { jsonrpc: '2.0', result: {} },
  { jsonrpc: '2.0', id: 1, result: [] },
  { jsonrpc: '2.0', id: 1, result: {}, error: { code: 1, message: 'm' } },
  { jsonrpc: '2.0', id: 1, error: { code: 1.5, message: 'm' } },
  { jsonrpc: '2.0', id: 1, error: { code: 1 } },
  { jsonrpc: '2.0', id: 1 },
  { jsonrpc: '2.0', id: 1, method: 'x', result: {} },
  [{ jsonrpc: '2.0', id: 1, method: 'x' }],
  null,
  'text',
  { hello: 'world' },
];

test('accepts exactly the messages the SDK\'s JSON-RPC message schema accepts', () => {
  for (const sample of samples) {
    let sdk: boolean;
    try {
      parseJSONRPCMessage(sample);
      sdk = true;
    } catch {
      sdk = false;
    }
    assert.equal(isJsonRpcMessage(sample), sdk, JSON.stringify(sample));
  }
});
