import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, test } from 'node:test';
import { ProtocolError, SdkError, SdkErrorCode, SdkHttpError, type JSONRPCMessage } from '@modelcontextprotocol/client';
import { upstreamDialer } from './dial.js';
import { HttpUpstreamTransport } from './http-upstream.js';

const seen: { headers: Record<string, unknown>; body: { id: number | string; method: string; params?: Record<string, unknown> } }[] = [];
/** Answers held back by `silent`, to be sent late. */
const held: (() => void)[] = [];
const server = createServer((req, res) => {
  let text = '';
  req.on('data', (chunk: Buffer) => (text += chunk.toString()));
  req.on('end', () => {
    const body = JSON.parse(text) as { id: number | string; method: string; params?: Record<string, unknown> };
    seen.push({ headers: req.headers, body });
    if (body.id === undefined) return void res.writeHead(202).end();
    const answer = JSON.stringify({ jsonrpc: '2.0', id: body.id, result: { method: body.method } });
    if (body.method === 'silent') return void held.push(() => res.writeHead(200, { 'content-type': 'application/json' }).end(answer));
    if (body.method === 'error') {
      return void res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ jsonrpc: '2.0', id: body.id, error: { code: -32602, message: 'no such thing', data: { what: 1 } } }));
    }
    if (body.method === 'tagged') {
      return void res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ jsonrpc: '2.0', id: body.id, result: { resultType: 'complete', content: [] } }));
    }
    if (body.method === 'json') return void res.writeHead(200, { 'content-type': 'application/json' }).end(answer);
    if (body.method === 'stream') {
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      // Progress and result in one write, split mid-event across a second, with CRLF line ends and a comment.
      const progress = JSON.stringify({ jsonrpc: '2.0', method: 'notifications/progress', params: { progressToken: 1, progress: 1 } });
      const events = `: keep-alive\r\nevent: message\r\nid: 1\r\ndata: ${progress}\r\n\r\nevent: message\ndata: ${answer}\n\n`;
      res.write(events.slice(0, events.length - 10));
      setTimeout(() => res.end(events.slice(events.length - 10)), 10);
      return;
    }
    if (body.method === 'huge') return void res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ jsonrpc: '2.0', id: body.id, result: { pad: 'x'.repeat(5000) } }));
    res.writeHead(404, { 'content-type': 'application/json' }).end('{"jsonrpc":"2.0","id":null,"error":{"code":-32001,"message":"Session not found"}}');
  });
});

let transport: HttpUpstreamTransport;
const received: JSONRPCMessage[] = [];
const errors: Error[] = [];

before(async () => {
  server.listen(0, '127.0.0.1');
  await new Promise((resolve) => server.once('listening', resolve));
  const url = new URL(`http://127.0.0.1:${(server.address() as AddressInfo).port}/mcp`);
  transport = new HttpUpstreamTransport(url, {}, upstreamDialer(true, { connectMs: 5000, exchangeMs: 5000, maxBytes: 1000 }), { 'x-injected': 'credential' }, 1000);
  transport.onmessage = (message) => {
    if (!transport.answered(message)) received.push(message);
  };
  transport.onerror = (error) => errors.push(error);
  await transport.start();
  transport.setProtocolVersion('2025-06-18');
});
after(async () => {
  await transport.close();
  server.closeAllConnections();
  server.close();
});

async function until(count: number): Promise<void> {
  while (received.length < count) await new Promise((resolve) => setTimeout(resolve, 5));
}

test('sends a request with the upstream\'s headers and the protocol version, and delivers a JSON answer', async () => {
  await transport.send({ jsonrpc: '2.0', id: 1, method: 'json' });
  await until(1);
  assert.deepEqual(received.at(-1), { jsonrpc: '2.0', id: 1, result: { method: 'json' } });
  const headers = seen.at(-1)!.headers;
  assert.equal(headers['x-injected'], 'credential');
  assert.equal(headers['mcp-protocol-version'], '2025-06-18');
  assert.match(String(headers.accept), /application\/json/);
  assert.match(String(headers.accept), /text\/event-stream/);
});

test('delivers the messages of an event stream in order, across split writes and CRLF line ends', async () => {
  const start = received.length;
  await transport.send({ jsonrpc: '2.0', id: 2, method: 'stream' });
  await until(start + 2);
  assert.deepEqual(
    received.slice(start).map((message) => ('method' in message ? message.method : message.id)),
    ['notifications/progress', 2],
  );
});

test('an HTTP error is the SDK\'s error with its status (a 404 says the session is gone), and an answer over the size limit is refused', async () => {
  await assert.rejects(transport.send({ jsonrpc: '2.0', id: 3, method: 'missing' }), (error: unknown) => error instanceof SdkHttpError && error.status === 404);
  await assert.rejects(transport.send({ jsonrpc: '2.0', id: 4, method: 'huge' }), /over the limit of 1000 bytes/);
});

test('request: the answer comes back by its id and never reaches the SDK; progress and logs on the way still do', async () => {
  const start = received.length;
  assert.deepEqual(await transport.request({ method: 'json' }, { timeoutMs: 5000 }), { method: 'json' });
  assert.match(String(seen.at(-1)!.body.id), /^gatehouse-/);
  assert.deepEqual(await transport.request({ method: 'stream' }, { timeoutMs: 5000 }), { method: 'stream' });
  assert.deepEqual(
    received.slice(start).map((message) => ('method' in message ? message.method : message.id)),
    ['notifications/progress'],
  );
});

test('request: an error answer is a ProtocolError with its code and data; a 2026 resultType is dropped as the SDK drops it', async () => {
  await assert.rejects(transport.request({ method: 'error' }, { timeoutMs: 5000 }), (error: unknown) => {
    return error instanceof ProtocolError && error.code === -32602 && /no such thing/.test(error.message) && (error.data as { what?: number }).what === 1;
  });
  assert.deepEqual(await transport.request({ method: 'tagged' }, { timeoutMs: 5000 }), { content: [] });
});

test('request: one that times out or is cancelled fails, the upstream is told with notifications/cancelled, and its late answer goes nowhere', async () => {
  const start = received.length;
  await assert.rejects(transport.request({ method: 'silent' }, { timeoutMs: 100 }), (error: unknown) => error instanceof SdkError && /timed out/.test(error.message));
  const timedOut = seen.findLast((entry) => entry.body.method === 'silent')!.body.id;
  const cancelling = new AbortController();
  const cancelled = transport.request({ method: 'silent' }, { timeoutMs: 5000, signal: cancelling.signal });
  await new Promise((resolve) => setTimeout(resolve, 50));
  cancelling.abort('the client says: my key is ghp_notarealone');
  await assert.rejects(cancelled, /the request was cancelled/);
  const cancelledId = seen.findLast((entry) => entry.body.method === 'silent')!.body.id;
  for (let i = 0; i < 50 && seen.filter((entry) => entry.body.method === 'notifications/cancelled').length < 2; i++) await new Promise((resolve) => setTimeout(resolve, 10));
  assert.deepEqual(
    seen.filter((entry) => entry.body.method === 'notifications/cancelled').map((entry) => entry.body.params),
    [
      { requestId: timedOut, reason: 'Request timed out' },
      { requestId: cancelledId, reason: 'the request was cancelled' },
    ],
  );
  for (const answer of held.splice(0)) answer();
  await new Promise((resolve) => setTimeout(resolve, 50));
  assert.equal(received.length, start, 'the late answers were dropped');
  assert.deepEqual(errors, []);
});

test('request: closing the connection fails the requests still waiting', async () => {
  const url = new URL(`http://127.0.0.1:${(server.address() as AddressInfo).port}/mcp`);
  const own = new HttpUpstreamTransport(url, {}, upstreamDialer(true, { connectMs: 5000, exchangeMs: 5000, maxBytes: 1000 }), {}, 1000);
  own.onmessage = (message) => void own.answered(message);
  await own.start();
  own.setProtocolVersion('2025-06-18');
  const waiting = own.request({ method: 'silent' }, { timeoutMs: 5000 });
  const failed = assert.rejects(waiting, (error: unknown) => error instanceof SdkError && error.code === SdkErrorCode.ConnectionClosed);
  await new Promise((resolve) => setTimeout(resolve, 50));
  await own.close();
  await failed;
});
