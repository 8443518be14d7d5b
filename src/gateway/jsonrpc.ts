/**
 * The JSON-RPC 2.0 envelope of an MCP message, checked by hand with the rules of the SDK's
 * `JSONRPCMessageSchema`: `jsonrpc: "2.0"`, a string or integer id, a string method with object params,
 * an object result, or an error with an integer code and a string message, and no other keys. What a
 * method's params or result hold is left to the SDK's per-method schemas, which check every message anyway;
 * this check is the transports' (HTTP front and stdio upstreams), at a fraction of the cost of the schema,
 * which ran a second full zod pass over every message.
 */
import type { JSONRPCMessage } from '@modelcontextprotocol/server';

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function isId(value: unknown): boolean {
  return typeof value === 'string' || (typeof value === 'number' && Number.isSafeInteger(value));
}

function keyCount(value: object): number {
  let count = 0;
  for (const _key in value) count += 1;
  return count;
}

export function isJsonRpcMessage(value: unknown): value is JSONRPCMessage {
  if (!isObject(value) || value.jsonrpc !== '2.0') return false;
  let keys = 1;
  if (value.id !== undefined) {
    if (!isId(value.id)) return false;
    keys += 1;
  }
  if (value.method !== undefined) {
    if (typeof value.method !== 'string') return false;
    if (value.params !== undefined) {
      const params = value.params;
      if (!isObject(params)) return false;
      const meta = params._meta;
      if (meta !== undefined && (!isObject(meta) || (meta.progressToken !== undefined && !isId(meta.progressToken)))) return false;
      keys += 1;
    }
    return keyCount(value) === keys + 1;
  }
  if (value.result !== undefined) return value.id !== undefined && isObject(value.result) && keyCount(value) === keys + 1;
  if (value.error !== undefined) {
    const error = value.error;
    return isObject(error) && Number.isSafeInteger(error.code) && typeof error.message === 'string' && keyCount(value) === keys + 1;
  }
  return false;
}
