/**
 * The session transport on a real node:http server, with a stand-in for the SDK server behind it:
 * `echo` answers at once, `chatty` logs before it answers, `wait` answers only when the test says so.
 */
import assert from 'node:assert/strict';
import { createServer, request, type ServerResponse } from 'node:http';
import { connect, type AddressInfo } from 'node:net';
import { after, before, beforeEach, test } from 'node:test';
import type { JSONRPCMessage, RequestId } from '@modelcontextprotocol/server';
import { HttpSessionTransport } from './session-transport.js';
import { STREAM_UNREAD_LIMIT } from './unread.js';

let transport: HttpSessionTransport;
let terminated = 0;
const waiting: RequestId[] = [];
/** What `list` answers with; frozen, as the gateway's list views are. */
let list: readonly unknown[] = Object.freeze([{ name: 'one', schema: { type: 'object' } }]);
let url: string;

/** The response of the latest POST, as the server holds it. */
let lastPost: ServerResponse | undefined;

const server = createServer((req, res) => {
  if (req.method === 'POST') lastPost = res;
  const chunks: Buffer[] = [];
  req.on('data', (chunk: Buffer) => chunks.push(chunk));
  req.on('end', () => transport.handle(req, res, chunks.length ? JSON.parse(Buffer.concat(chunks).toString('utf8')) : undefined));
});

function serve(message: JSONRPCMessage): void {
  if (!('method' in message) || !('id' in message)) return;
  const answer = { jsonrpc: '2.0' as const, id: message.id, result: { said: message.method } };
  if (message.method === 'wait') return void waiting.push(message.id);
  if (message.method === 'list') return void setImmediate(() => void transport.send({ jsonrpc: '2.0', id: message.id, result: { items: list, nextCursor: undefined, total: list.length } }));
  if (message.method === 'chatty') {
    void transport.send({ jsonrpc: '2.0', method: 'notifications/message', params: { level: 'info', data: 'working' } }, { relatedRequestId: message.id });
  }
  setImmediate(() => void transport.send(answer));
}

before(async () => {
  server.listen(0, '127.0.0.1');
  await new Promise((resolve) => server.once('listening', resolve));
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/mcp`;
});
after(() => server.close());

beforeEach(async () => {
  transport = new HttpSessionTransport('session-1', () => (terminated += 1));
  transport.onmessage = serve;
  await transport.start();
  const opened = await post({ jsonrpc: '2.0', id: 0, method: 'initialize', params: {} });
  assert.equal(opened.status, 200);
});

const HEADERS = { 'content-type': 'application/json', accept: 'application/json, text/event-stream', 'mcp-protocol-version': '2025-06-18' };

function send(
  method: string,
  body?: unknown,
  headers: Record<string, string> = HEADERS,
  onResponse?: (abort: () => void) => void,
): Promise<{ status: number; type: string; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request(url, { method, headers }, (res) => {
      onResponse?.(() => req.destroy());
      let text = '';
      res.on('data', (chunk: Buffer) => (text += chunk.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, type: String(res.headers['content-type'] ?? ''), body: text }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(body === undefined ? undefined : JSON.stringify(body));
  });
}

const post = (body: unknown, headers?: Record<string, string>) => send('POST', body, headers);

function events(body: string): JSONRPCMessage[] {
  return body
    .split('\n')
    .filter((line) => line.startsWith('data: '))
    .map((line) => JSON.parse(line.slice(6)) as JSONRPCMessage);
}

test('answers a request that sends nothing first as application/json, and a batch as one JSON array in order', async () => {
  const single = await post({ jsonrpc: '2.0', id: 1, method: 'echo' });
  assert.match(single.type, /^application\/json/);
  assert.deepEqual(JSON.parse(single.body), { jsonrpc: '2.0', id: 1, result: { said: 'echo' } });
  const batch = await post([
    { jsonrpc: '2.0', id: 2, method: 'echo' },
    { jsonrpc: '2.0', method: 'notifications/initialized' },
    { jsonrpc: '2.0', id: 'three', method: 'echo' },
  ]);
  assert.match(batch.type, /^application\/json/);
  assert.deepEqual(
    (JSON.parse(batch.body) as { id: RequestId }[]).map((answer) => answer.id),
    [2, 'three'],
  );
});

test('turns the answer into an event stream when a related message must go before it', async () => {
  const chatty = await post({ jsonrpc: '2.0', id: 4, method: 'chatty' });
  assert.match(chatty.type, /^text\/event-stream/);
  const sent = events(chatty.body);
  assert.deepEqual(
    sent.map((message) => ('method' in message ? message.method : message.id)),
    ['notifications/message', 4],
  );
});

test('refuses bad input with HTTP errors carrying JSON-RPC errors, and keeps serving', async () => {
  const notAccepted = await post({ jsonrpc: '2.0', id: 5, method: 'echo' }, { ...HEADERS, accept: 'application/json' });
  assert.equal(notAccepted.status, 406);
  const notRpc = await post({ jsonrpc: '2.0', id: 5, method: 'echo', extra: true });
  assert.equal(notRpc.status, 400);
  assert.equal(JSON.parse(notRpc.body).error.code, -32700);
  const again = await post({ jsonrpc: '2.0', id: 6, method: 'initialize', params: {} });
  assert.equal(again.status, 400);
  assert.match(again.body, /already initialized/);
  const oldVersion = await post({ jsonrpc: '2.0', id: 7, method: 'echo' }, { ...HEADERS, 'mcp-protocol-version': '1999-01-01' });
  assert.equal(oldVersion.status, 400);
  assert.match(oldVersion.body, /Unsupported protocol version/);
  const empty = await post([]);
  assert.equal(empty.status, 400);
  assert.equal((await post({ jsonrpc: '2.0', id: 8, method: 'echo' })).status, 200);
});

test('refuses a request whose id is already in flight', async () => {
  const first = post({ jsonrpc: '2.0', id: 9, method: 'wait' });
  while (waiting.length === 0) await new Promise((resolve) => setImmediate(resolve));
  const duplicate = await post({ jsonrpc: '2.0', id: 9, method: 'echo' });
  assert.equal(duplicate.status, 400);
  assert.match(duplicate.body, /already in flight/);
  await transport.send({ jsonrpc: '2.0', id: waiting.pop()!, result: {} });
  assert.deepEqual(JSON.parse((await first).body), { jsonrpc: '2.0', id: 9, result: {} });
});

test('a request whose client went away keeps its id until it is answered; the answer is dropped', async () => {
  const req = request(url, { method: 'POST', headers: HEADERS });
  req.on('error', () => undefined);
  req.end(JSON.stringify({ jsonrpc: '2.0', id: 11, method: 'wait' }));
  while (waiting.length === 0) await new Promise((resolve) => setImmediate(resolve));
  req.destroy();
  await new Promise((resolve) => setTimeout(resolve, 50));
  // Were the id free, this request would be handed the answer of the one still running.
  assert.equal((await post({ jsonrpc: '2.0', id: 11, method: 'echo' })).status, 400);
  await transport.send({ jsonrpc: '2.0', id: waiting.pop()!, result: { stale: true } });
  assert.deepEqual(JSON.parse((await post({ jsonrpc: '2.0', id: 11, method: 'echo' })).body), { jsonrpc: '2.0', id: 11, result: { said: 'echo' } });
});

test('GET opens one stream for messages outside any request; a second GET is refused with 409', async () => {
  let stream = '';
  const opened = new Promise<void>((resolve) => {
    const req = request(url, { method: 'GET', headers: { accept: 'text/event-stream', 'mcp-protocol-version': '2025-06-18' } }, (res) => {
      assert.match(String(res.headers['content-type']), /^text\/event-stream/);
      res.on('data', (chunk: Buffer) => {
        stream += chunk.toString();
        if (stream.includes('list_changed')) req.destroy();
      });
      res.on('close', () => resolve());
      resolve();
    });
    req.on('error', () => undefined);
    req.end();
  });
  await opened;
  assert.equal((await send('GET', undefined, { accept: 'text/event-stream' })).status, 409);
  await transport.send({ jsonrpc: '2.0', method: 'notifications/tools/list_changed' });
  while (!stream.includes('list_changed')) await new Promise((resolve) => setTimeout(resolve, 5));
  assert.deepEqual(events(stream), [{ jsonrpc: '2.0', method: 'notifications/tools/list_changed' }]);
});

test('cuts off a GET stream whose client stops reading once it leaves the limit unread; the session goes on', async () => {
  // A raw socket that sends its GET and never reads again: what it leaves unread piles up in the gateway.
  const { port } = new URL(url);
  const socket = connect(Number(port), '127.0.0.1');
  socket.on('error', () => undefined);
  await new Promise((resolve) => socket.once('connect', resolve));
  socket.write(`GET /mcp HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nAccept: text/event-stream\r\nMcp-Protocol-Version: 2025-06-18\r\n\r\n`);
  await new Promise((resolve) => socket.once('data', resolve));
  socket.pause();
  const openStream = (): Promise<number> =>
    new Promise((resolve) => {
      const req = request(url, { method: 'GET', headers: { accept: 'text/event-stream', 'mcp-protocol-version': '2025-06-18' } }, (res) => {
        req.destroy();
        resolve(res.statusCode ?? 0);
      });
      req.on('error', () => undefined);
      req.end();
    });
  try {
    assert.equal(await openStream(), 409, 'the stalled stream holds the one GET stream of the session');
    const data = 'x'.repeat(256 * 1024);
    for (let sent = 0; sent < 2 * STREAM_UNREAD_LIMIT; sent += data.length) {
      await transport.send({ jsonrpc: '2.0', method: 'notifications/message', params: { level: 'info', data } });
      await new Promise((resolve) => setImmediate(resolve));
    }
    // Cut off, the stalled stream no longer holds the session's GET stream: a new one opens.
    assert.equal(await openStream(), 200);
  } finally {
    socket.destroy();
  }
});

test('answers too big to hold for the JSON form go as an event stream, and a client that reads gets them all in order', async () => {
  const ids = Array.from({ length: 40 }, (_, index) => 100 + index);
  const answered = post(ids.map((id) => ({ jsonrpc: '2.0', id, method: 'wait' })));
  while (waiting.length < ids.length) await new Promise((resolve) => setImmediate(resolve));
  const data = 'x'.repeat(1024 * 1024);
  for (const id of waiting.splice(0)) await transport.send({ jsonrpc: '2.0', id, result: { data } });
  const answer = await answered;
  assert.match(answer.type, /^text\/event-stream/);
  const sent = events(answer.body);
  assert.deepEqual(sent.map((message) => (message as { id: RequestId }).id), ids);
  assert.ok(sent.every((message) => (message as unknown as { result: { data: string } }).result.data.length === data.length));
});

test('cuts off a POST whose client never reads its answers once they leave the limit unread, as a stream is', async () => {
  // A raw socket that posts a batch and never reads: answers held for the JSON form, or written and left unread,
  // pile up in the gateway.
  const { port } = new URL(url);
  const socket = connect(Number(port), '127.0.0.1');
  socket.on('error', () => undefined);
  await new Promise((resolve) => socket.once('connect', resolve));
  const body = JSON.stringify(Array.from({ length: 100 }, (_, index) => ({ jsonrpc: '2.0', id: 200 + index, method: 'wait' })));
  const head = `POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nMcp-Protocol-Version: 2025-06-18\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n`;
  socket.write(head + body);
  socket.pause();
  try {
    while (waiting.length < 100) await new Promise((resolve) => setImmediate(resolve));
    const held = lastPost!;
    const data = 'x'.repeat(1024 * 1024);
    for (const id of waiting.splice(0)) {
      await transport.send({ jsonrpc: '2.0', id, result: { data } });
      await new Promise((resolve) => setImmediate(resolve));
    }
    assert.equal(held.destroyed, true, `the unread answer is cut off, not held (${held.writableLength} bytes waiting)`);
  } finally {
    socket.destroy();
  }
});

test('a request for the client outside its requests fails at once when it keeps no GET stream open', async () => {
  await assert.rejects(transport.send({ jsonrpc: '2.0', id: 'ask-1', method: 'sampling/createMessage', params: {} }), /no stream open/);
  // A notification has nowhere to go either, and is dropped, as the spec allows.
  await transport.send({ jsonrpc: '2.0', method: 'notifications/tools/list_changed' });
});

test('DELETE ends the session: open requests get an error, and later ones 404', async () => {
  const open = post({ jsonrpc: '2.0', id: 12, method: 'wait' });
  while (waiting.length === 0) await new Promise((resolve) => setImmediate(resolve));
  waiting.length = 0;
  const before = terminated;
  assert.equal((await send('DELETE', undefined, HEADERS)).status, 200);
  assert.equal(terminated, before + 1);
  const answer = JSON.parse((await open).body) as { id: number; error: { message: string } };
  assert.equal(answer.id, 12);
  assert.match(answer.error.message, /session was closed/);
  assert.equal((await post({ jsonrpc: '2.0', id: 13, method: 'echo' })).status, 404);
});

test('a frozen list in a result is sent as its JSON, alone and in a batch, and a new list as the new JSON', async () => {
  const first = await post({ jsonrpc: '2.0', id: 14, method: 'list' });
  assert.deepEqual(JSON.parse(first.body), { jsonrpc: '2.0', id: 14, result: { items: [{ name: 'one', schema: { type: 'object' } }], total: 1 } });
  const batch = await post([
    { jsonrpc: '2.0', id: 15, method: 'list' },
    { jsonrpc: '2.0', id: 16, method: 'echo' },
  ]);
  assert.deepEqual(
    (JSON.parse(batch.body) as { result: unknown }[]).map((answer) => answer.result),
    [{ items: [{ name: 'one', schema: { type: 'object' } }], total: 1 }, { said: 'echo' }],
  );
  list = Object.freeze([{ name: 'two' }, { name: 'three' }]);
  const second = await post({ jsonrpc: '2.0', id: 17, method: 'list' });
  assert.deepEqual(JSON.parse(second.body), { jsonrpc: '2.0', id: 17, result: { items: [{ name: 'two' }, { name: 'three' }], total: 2 } });
});

test('a request that stays silent past the keep-alive interval is answered on an event stream with keep-alive comments', async () => {
  const quiet = new HttpSessionTransport('session-2', undefined, 30);
  quiet.onmessage = (message) => {
    if ('id' in message && 'method' in message) setTimeout(() => void quiet.send({ jsonrpc: '2.0', id: message.id, result: { late: true } }), 100);
  };
  transport = quiet;
  assert.equal((await post({ jsonrpc: '2.0', id: 0, method: 'initialize', params: {} })).status, 200);
  const slow = await post({ jsonrpc: '2.0', id: 18, method: 'slow' });
  assert.match(slow.type, /^text\/event-stream/);
  assert.match(slow.body, /^: keepalive\n\n/);
  assert.deepEqual(events(slow.body), [{ jsonrpc: '2.0', id: 18, result: { late: true } }]);
});
