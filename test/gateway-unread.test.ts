/**
 * What one agent leaves unread is bounded across all its connections: a real gateway on 127.0.0.1 with the
 * fixture server's `big` tool, and raw sockets as clients that send their calls and never read the answers,
 * over Streamable HTTP sessions, the local socket, the legacy HTTP+SSE stream and 2026-07-28 requests.
 * Each answer here stays far under the 64 MB bound of one response; only the agent's share stops them.
 */
import assert from 'node:assert/strict';
import { connect, type Socket } from 'node:net';
import { after, before, test } from 'node:test';
import type { CallToolResult } from '@modelcontextprotocol/client';
import { fixtureUpstream, JSON_HEADERS, rawRequest, rawSession, startHarness, type Harness } from './gateway-harness.js';

const MB = 1024 * 1024;
/** gateway.maxUnreadBytesPerAgent here: two unread answers of ANSWER fit, a third does not. */
const SHARE = 16 * MB;
const ANSWER = 6 * MB;

let harness: Harness;

before(async () => {
  harness = await startHarness(
    {
      gateway: { maxUnreadBytesPerAgent: SHARE, maxMessageBytes: 2 * SHARE, upstreams: { fixture: fixtureUpstream() } },
      policy: { mcp: [{ id: 'all', allow: { tools: ['*'] } }] },
    },
    undefined,
    { localSocket: true },
  );
});
after(() => harness.close());

/** A client connection that sends what it is given and never reads: it only notices being cut off. */
interface Stalled {
  socket: Socket;
  /** Whether the gateway has closed the connection. */
  cut(): boolean;
}

function stalled(socket: Socket): Stalled {
  let closed = false;
  socket.on('error', () => undefined);
  socket.once('close', () => (closed = true));
  socket.pause();
  return { socket, cut: () => closed };
}

function opened(socket: Socket): Promise<void> {
  return new Promise((resolve, reject) => socket.once('connect', resolve).once('error', reject));
}

function bigCall(id: number, bytes: number): Record<string, unknown> {
  return { jsonrpc: '2.0', id, method: 'tools/call', params: { name: 'fixture__big', arguments: { bytes } } };
}

/** Posts a tools/call of `bytes` on a Streamable HTTP session, on a connection of its own that never reads. */
async function stalledPost(key: string, session: string, id: number, bytes: number): Promise<Stalled> {
  const { port } = new URL(harness.gateway.url);
  const socket = connect(Number(port), '127.0.0.1');
  await opened(socket);
  const body = JSON.stringify(bigCall(id, bytes));
  socket.write(
    `POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nAuthorization: Bearer ${key}\r\nMcp-Session-Id: ${session}\r\n` +
      `Mcp-Protocol-Version: 2025-06-18\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\n` +
      `Content-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`,
  );
  return stalled(socket);
}

/** Calls of the agent the gateway has recorded as done (their answers are written right after). */
function callsDone(agent: string): number {
  return harness.audit.records.filter((r) => r.action === 'tools/call' && r.principal.agent === agent && r.effect === 'allow').length;
}

/** Waits until the agent's `count`th call is done and its answer has had time to be written. */
async function answered(agent: string, count: number): Promise<void> {
  for (let i = 0; i < 300 && callsDone(agent) < count; i += 1) await new Promise((resolve) => setTimeout(resolve, 20));
  assert.ok(callsDone(agent) >= count, `call ${count} of ${agent} was answered`);
  await new Promise((resolve) => setTimeout(resolve, 200));
}

/** Waits (a while at most) for the gateway to close the connections expected to be cut off. */
async function settled(calls: Stalled[], expected: boolean[]): Promise<void> {
  for (let i = 0; i < 100 && calls.some((call, index) => expected[index] && !call.cut()); i += 1) await new Promise((resolve) => setTimeout(resolve, 20));
}

function cutOffs(agent: string): string[] {
  return harness.audit.records.filter((r) => r.action === 'response.cut-off' && r.principal.agent === agent).map((r) => r.reason);
}

test('an agent that leaves answers unread across its sessions is cut off past its share; its sessions and other agents go on', async () => {
  const greedy = harness.agents.add('greedy').key;
  const sessions = [await rawSession(harness.gateway.url, greedy), await rawSession(harness.gateway.url, greedy)];
  const calls: Stalled[] = [];
  for (const [index, session] of [sessions[0]!, sessions[0]!, sessions[1]!, sessions[1]!].entries()) {
    calls.push(await stalledPost(greedy, session, 10 + index, ANSWER));
    await answered('greedy', index + 1);
  }
  await settled(calls, [false, false, true, true]);
  assert.deepEqual(calls.map((call) => call.cut()), [false, false, true, true], 'the two answers that fit the share are held; the ones past it are cut off');
  const reasons = cutOffs('greedy');
  assert.equal(reasons.length, 2, 'each cut-off is recorded');
  assert.match(reasons[0]!, /the agent left \d+ bytes unread across its connections, over gateway\.maxUnreadBytesPerAgent \(16777216\); a Streamable HTTP response was cut off/);

  // The sessions themselves go on: a small answer is never counted.
  const echo = await rawRequest(harness.gateway.url, {
    headers: { ...JSON_HEADERS, authorization: `Bearer ${greedy}`, 'mcp-session-id': sessions[1]!, 'mcp-protocol-version': '2025-06-18' },
    body: JSON.stringify({ jsonrpc: '2.0', id: 20, method: 'tools/call', params: { name: 'fixture__echo', arguments: { message: 'still here' } } }),
  });
  assert.match(echo.body, /still here/);

  // Another agent is not held back by what greedy leaves unread: it gets a large answer whole.
  const bystander = await harness.connect(harness.agents.add('bystander').key);
  const result = (await bystander.callTool({ name: 'fixture__big', arguments: { bytes: ANSWER } })) as CallToolResult;
  assert.equal((result.content[0] as { text: string }).text.length, ANSWER);
  assert.deepEqual(cutOffs('bystander'), []);

  for (const call of calls) call.socket.destroy();
});

test('once an agent\'s stalled connections close, what they held no longer counts: its answers fit its whole share again', async () => {
  const agent = 'returning';
  const key = harness.agents.add(agent).key;
  const session = await rawSession(harness.gateway.url, key);
  const first = [await stalledPost(key, session, 30, ANSWER)];
  await answered(agent, 1);
  first.push(await stalledPost(key, session, 31, ANSWER));
  await answered(agent, 2);
  first.push(await stalledPost(key, session, 32, ANSWER));
  await answered(agent, 3);
  await settled(first, [false, false, true]);
  assert.deepEqual(first.map((call) => call.cut()), [false, false, true]);
  for (const call of first) call.socket.destroy();
  await new Promise((resolve) => setTimeout(resolve, 200));

  // Two answers that together nearly fill the share: any byte still counted from before would cut off the second.
  const almost = Math.floor((SHARE - 256 * 1024) / 2);
  const again = [await stalledPost(key, session, 33, almost)];
  await answered(agent, 4);
  again.push(await stalledPost(key, session, 34, almost));
  await answered(agent, 5);
  assert.deepEqual(again.map((call) => call.cut()), [false, false], 'nothing from the closed connections is still counted');
  assert.equal(cutOffs(agent).length, 1);
  for (const call of again) call.socket.destroy();
});

test('one share across transports: the local socket, the legacy HTTP+SSE stream and a 2026-07-28 response count together', async () => {
  const agent = 'everywhere';
  const key = harness.agents.add(agent).key;

  // The local socket: hello, initialize and the call at once, and nothing read.
  const local = connect(harness.gateway.socketPath!);
  await opened(local);
  const initialize = { jsonrpc: '2.0', id: 1, method: 'initialize', params: { protocolVersion: '2025-11-25', capabilities: {}, clientInfo: { name: 'raw', version: '1' } } };
  local.write(
    [{ gatehouse: 'mcp', authorization: `Bearer ${key}` }, initialize, { jsonrpc: '2.0', method: 'notifications/initialized' }, bigCall(2, ANSWER)]
      .map((line) => `${JSON.stringify(line)}\n`)
      .join(''),
  );
  const overLocal = stalled(local);
  await answered(agent, 1);

  // The legacy stream: read up to the endpoint it names, then never again.
  const { port } = new URL(harness.gateway.url);
  const sse = connect(Number(port), '127.0.0.1');
  await opened(sse);
  sse.write(`GET /sse HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nAuthorization: Bearer ${key}\r\nAccept: text/event-stream\r\n\r\n`);
  let head = '';
  while (!/sessionId=[0-9a-f-]+/.test(head)) head += String(await new Promise((resolve) => sse.once('data', resolve)));
  const overSse = stalled(sse);
  const messages = `${harness.gateway.url.replace(/\/mcp$/, '/messages')}?sessionId=${/sessionId=([0-9a-f-]+)/.exec(head)![1]}`;
  for (const message of [initialize, { jsonrpc: '2.0', method: 'notifications/initialized' }, bigCall(2, ANSWER)]) {
    const posted = await fetch(messages, { method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${key}` }, body: JSON.stringify(message) });
    assert.equal(posted.status, 202);
    await posted.arrayBuffer();
  }
  await answered(agent, 2);

  // A 2026-07-28 request, which needs no session: its answer takes the agent past its share.
  const modern = connect(Number(port), '127.0.0.1');
  await opened(modern);
  const call = bigCall(3, ANSWER);
  (call.params as Record<string, unknown>)._meta = { 'io.modelcontextprotocol/protocolVersion': '2026-07-28', 'io.modelcontextprotocol/clientCapabilities': {} };
  const body = JSON.stringify(call);
  modern.write(
    `POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nAuthorization: Bearer ${key}\r\nMcp-Protocol-Version: 2026-07-28\r\nMcp-Method: tools/call\r\n` +
      `Mcp-Name: fixture__big\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`,
  );
  const overModern = stalled(modern);
  await answered(agent, 3);

  await settled([overLocal, overSse, overModern], [false, false, true]);
  assert.deepEqual([overLocal.cut(), overSse.cut(), overModern.cut()], [false, false, true]);
  assert.match(cutOffs(agent).join('\n'), /over gateway\.maxUnreadBytesPerAgent \(16777216\); a 2026-07-28 response was cut off/);
  for (const connection of [local, sse, modern]) connection.destroy();
});
