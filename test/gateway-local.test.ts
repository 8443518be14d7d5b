/**
 * The gateway's local socket (`<data-dir>/mcp.sock`) and `gatehouse mcp`, the stdio bridge that prefers it:
 * the official SDK client launches the real bridge as its stdio server, in front of the gateway fronting the
 * real server-everything; raw connections show what the socket refuses.
 */
import assert from 'node:assert/strict';
import { existsSync, statSync, writeFileSync } from 'node:fs';
import { spawn, spawnSync } from 'node:child_process';
import { request as httpRequest, type IncomingMessage } from 'node:http';
import { connect, createServer, type AddressInfo, type Socket } from 'node:net';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { Client, type CallToolResult } from '@modelcontextprotocol/client';
import { StdioClientTransport } from '@modelcontextprotocol/client/stdio';
import { everythingUpstream, fixtureUpstream, JSON_HEADERS, startHarness, type Harness } from './gateway-harness.js';

const cli = new URL('../src/cli/main.js', import.meta.url).pathname;

let harness: Harness;
let key: string;
let socketPath: string;

before(async () => {
  harness = await startHarness(
    {
      gateway: { maxMessageBytes: 64 * 1024, maxSessionsPerAgent: 4, upstreams: { everything: everythingUpstream(), fixture: fixtureUpstream() } },
      policy: {
        mcp: [
          { id: 'everything', allow: { server: 'everything', tools: ['*'], prompts: ['*'], resources: ['*'] } },
          { id: 'fixture', allow: { server: 'fixture', tools: ['echo', 'hang'] } },
          { id: 'no-forbidden', deny: { server: 'fixture', tools: ['echo'] }, when: "args.message == 'forbidden'" },
        ],
      },
    },
    undefined,
    { localSocket: true },
  );
  key = harness.agents.add('stdio-agent').key;
  socketPath = join(harness.dataDir, 'mcp.sock');
});

after(async () => {
  await harness.close();
});

/** The SDK client with the real `gatehouse mcp` as its stdio server, on the harness's data dir. */
async function bridged(env: Record<string, string>, options: ConstructorParameters<typeof Client>[1] = {}, config?: string) {
  let stderr = '';
  const transport = new StdioClientTransport({
    command: process.execPath,
    // No config names a gateway: the bridge can only have reached one through the data dir's socket.
    args: [cli, '--data-dir', harness.dataDir, ...(config ? ['--config', config] : ['--config', join(harness.dataDir, 'none.yaml')]), 'mcp'],
    env: { PATH: process.env.PATH ?? '', ...env },
    stderr: 'pipe',
  });
  transport.stderr?.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const client = new Client({ name: 'stdio-client', version: '1.0.0' }, options);
  return { client, transport, stderr: () => stderr };
}

function text(result: CallToolResult): string {
  return result.content.map((block) => (block.type === 'text' ? block.text : `[${block.type}]`)).join('\n');
}

test('gatehouse mcp reaches the gateway over the node\'s local socket: lists, calls, denials, sampling and progress, all recorded', async () => {
  writeFileSync(join(harness.dataDir, 'none.yaml'), 'version: 1\ngateway:\n  listen: 127.0.0.1:9\n');
  assert.equal(statSync(socketPath).mode & 0o777, 0o600);
  const { client, transport, stderr } = await bridged({ GATEHOUSE_AGENT_KEY: key }, { capabilities: { sampling: {} } });
  client.setRequestHandler('sampling/createMessage', async () => ({ role: 'assistant', content: { type: 'text', text: 'sampled over the socket' }, model: 'test-model' }));
  await client.connect(transport);
  try {
    const tools = (await client.listTools()).tools.map((tool) => tool.name);
    assert.ok(tools.includes('fixture__echo') && tools.includes('everything__echo'), tools.join(', '));
    assert.ok(!tools.includes('fixture__crash'), 'a tool the policy does not allow is not listed');
    assert.ok(!tools.includes('fixture__hello'), 'a tool the policy does not allow is not listed');
    assert.equal(text((await client.callTool({ name: 'fixture__echo', arguments: { message: 'over the socket' } })) as CallToolResult), 'over the socket');
    const denied = (await client.callTool({ name: 'fixture__echo', arguments: { message: 'forbidden' } })) as CallToolResult;
    assert.match(text(denied), /Denied by Gatehouse policy \(no-forbidden\)/);
    const sampled = (await client.callTool({ name: 'everything__trigger-sampling-request', arguments: { prompt: 'hi', maxTokens: 5 } })) as CallToolResult;
    assert.match(text(sampled), /sampled over the socket/);
    const progress: number[] = [];
    await client.callTool({ name: 'everything__trigger-long-running-operation', arguments: { duration: 0.3, steps: 3 } }, { onprogress: (p) => progress.push(p.progress) });
    // The SDK client handles a notification a microtask after a response read in the same chunk, by when the
    // call's progress handler is gone; on a loaded machine the last step can share a read with the result
    // however the gateway spaces them. The steps before it cannot.
    assert.deepEqual(progress.slice(0, 2), [1, 2]);
  } finally {
    await client.close();
  }
  const calls = harness.audit.records.filter((record) => record.action === 'tools/call' && record.principal.agent === 'stdio-agent');
  assert.ok(calls.some((record) => record.effect === 'allow' && record.resource.includes('echo')));
  assert.ok(calls.some((record) => record.effect === 'deny' && record.rules.includes('no-forbidden')));
  assert.equal(stderr(), '');
  // The session ended with the connection.
  for (let i = 0; i < 50 && harness.gateway.status().sessions > 0; i += 1) await new Promise((resolve) => setTimeout(resolve, 20));
  assert.equal(harness.gateway.status().sessions, 0);
});

test('a wrong key is refused at the socket: the client\'s first request gets the reason, and the refusal is recorded', async () => {
  const { client, transport, stderr } = await bridged({ GATEHOUSE_AGENT_KEY: 'ghk_not-a-real-key' });
  await assert.rejects(client.connect(transport), /refused this bridge/);
  await client.close().catch(() => undefined);
  assert.match(stderr(), /the gateway refused this bridge/);
  assert.ok(harness.audit.records.some((record) => record.action === 'authenticate' && record.effect === 'deny' && /local socket/.test(record.reason ?? '')));
});

test('a 2026-07-28 client through the bridge is carried over HTTP, which serves stateless requests', async () => {
  const config = join(harness.dataDir, 'modern.yaml');
  writeFileSync(config, `version: 1\ngateway:\n  listen: ${new URL(harness.gateway.url).host}\n`);
  const { client, transport } = await bridged({ GATEHOUSE_AGENT_KEY: key }, { versionNegotiation: { mode: { pin: '2026-07-28' } } } as never, config);
  await client.connect(transport);
  try {
    assert.equal(client.getNegotiatedProtocolVersion(), '2026-07-28');
    assert.equal(text((await client.callTool({ name: 'fixture__echo', arguments: { message: 'modern' } })) as CallToolResult), 'modern');
  } finally {
    await client.close();
  }
});

/** A raw connection to the socket: lines in, lines out. */
async function raw(): Promise<{ socket: Socket; send(line: string): void; next(): Promise<Record<string, unknown>>; closed: Promise<void> }> {
  const socket = connect(socketPath);
  await new Promise((resolve, reject) => socket.once('connect', resolve).once('error', reject));
  const lines: string[] = [];
  const waiting: ((line: string) => void)[] = [];
  let buffer = '';
  socket.on('data', (chunk: Buffer) => {
    buffer += chunk.toString();
    for (let newline = buffer.indexOf('\n'); newline !== -1; newline = buffer.indexOf('\n')) {
      const line = buffer.slice(0, newline);
      buffer = buffer.slice(newline + 1);
      const waiter = waiting.shift();
      if (waiter) waiter(line);
      else lines.push(line);
    }
  });
  const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
  return {
    socket,
    send: (line) => void socket.write(`${line}\n`),
    next: () => {
      const line = lines.shift();
      return line !== undefined ? Promise.resolve(JSON.parse(line)) : new Promise((resolve) => waiting.push((l) => resolve(JSON.parse(l))));
    },
    closed,
  };
}

const INITIALIZE = JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'initialize', params: { protocolVersion: '2025-11-25', capabilities: {}, clientInfo: { name: 'raw', version: '1' } } });

test('the socket refuses a connection without a proper hello, and says so', async () => {
  const bad = await raw();
  bad.send(INITIALIZE);
  assert.match(String((await bad.next()).error), /first line must be \{"gatehouse":"mcp","authorization":"Bearer <agent key>"\}/);
  await bad.closed;
});

test('bad lines on an open session each get a JSON-RPC error and a record, and the session goes on', async () => {
  const link = await raw();
  // Everything is sent at once: nothing after the hello is read before the answer to it.
  link.send(JSON.stringify({ gatehouse: 'mcp', authorization: `Bearer ${key}` }));
  link.send(JSON.stringify({ jsonrpc: '2.0', id: 7, method: 'tools/list' }));
  link.send(INITIALIZE);
  assert.deepEqual(await link.next(), { ok: true });
  const early = await link.next();
  assert.equal(early.id, 7);
  assert.match(String((early.error as { message: string }).message), /not initialized/);
  assert.equal((await link.next()).id, 1);
  link.send(JSON.stringify({ jsonrpc: '2.0', method: 'notifications/initialized' }));

  const before = harness.audit.records.length;
  link.send('{not json');
  assert.deepEqual((await link.next()).error, { code: -32700, message: 'Parse error: a line is not valid JSON' });
  link.send(JSON.stringify([{ jsonrpc: '2.0', id: 2, method: 'tools/list' }]));
  assert.match(String(((await link.next()).error as { message: string }).message), /batches are not part of MCP over stdio/);
  link.send(JSON.stringify({ jsonrpc: '2.0', id: 3, method: 'tools/call', params: { name: 'fixture__echo', arguments: { message: 'x'.repeat(70 * 1024) } } }));
  assert.match(String(((await link.next()).error as { message: string }).message), /over the limit of 65536 bytes/);
  link.send(JSON.stringify({ jsonrpc: '2.0', id: 4, method: 'nonsense/method' }));
  assert.equal(((await link.next()).error as { code: number }).code, -32601);
  link.send(JSON.stringify({ jsonrpc: '2.0', id: 5, method: 'tools/call', params: { name: 'fixture__echo', arguments: { message: 'still here' } } }));
  const answer = await link.next();
  assert.equal(answer.id, 5);
  assert.equal((answer.result as CallToolResult).content[0]?.type === 'text' && ((answer.result as CallToolResult).content[0] as { text: string }).text, 'still here');
  const recorded = harness.audit.records.slice(before).map((record) => record.action);
  for (const action of ['request.parse-error', 'request.rejected', 'request.too-large']) assert.ok(recorded.includes(action), `${action} in ${recorded.join(', ')}`);
  link.socket.end();
  await link.closed;
});

test('the socket counts toward the agent\'s session limit', async () => {
  const links = await Promise.all(Array.from({ length: 5 }, () => raw()));
  for (const link of links) link.send(JSON.stringify({ gatehouse: 'mcp', authorization: `Bearer ${key}` }));
  const answers = await Promise.all(links.map((link) => link.next()));
  assert.equal(answers.filter((answer) => answer.ok === true).length, 4);
  assert.match(String(answers.find((answer) => answer.ok === false)?.error), /already has 4 open sessions/);
  for (const link of links) link.socket.destroy();
});

test('a client that disconnects mid-call ends its session and the call is cancelled and recorded; other sessions go on', async () => {
  const link = await raw();
  link.send(JSON.stringify({ gatehouse: 'mcp', authorization: `Bearer ${key}` }));
  link.send(INITIALIZE);
  assert.deepEqual(await link.next(), { ok: true });
  assert.equal((await link.next()).id, 1);
  link.send(JSON.stringify({ jsonrpc: '2.0', method: 'notifications/initialized' }));
  const sessionsBefore = harness.gateway.status().sessions;
  link.send(JSON.stringify({ jsonrpc: '2.0', id: 2, method: 'tools/call', params: { name: 'fixture__hang', arguments: {} } }));
  await new Promise((resolve) => setTimeout(resolve, 200));
  link.socket.destroy();
  for (let i = 0; i < 50 && harness.gateway.status().sessions >= sessionsBefore; i += 1) await new Promise((resolve) => setTimeout(resolve, 20));
  assert.equal(harness.gateway.status().sessions, sessionsBefore - 1);

  const { client, transport } = await bridged({ GATEHOUSE_AGENT_KEY: key });
  await client.connect(transport);
  try {
    assert.equal(text((await client.callTool({ name: 'fixture__echo', arguments: { message: 'unaffected' } })) as CallToolResult), 'unaffected');
  } finally {
    await client.close();
  }
  let hung: AuditRecordLike | undefined;
  for (let i = 0; i < 50 && !hung; i += 1) {
    hung = harness.audit.records.find((record) => record.resource === 'fixture/hang') as AuditRecordLike | undefined;
    if (!hung) await new Promise((resolve) => setTimeout(resolve, 40));
  }
  assert.ok(hung, 'the abandoned call has its record');
});

type AuditRecordLike = { resource: string; reason?: string };

test('the local socket never takes an anonymous caller, even where HTTP lets anonymous loopback callers in; a run\'s socket is its agent', async () => {
  const open = await startHarness({ gateway: { auth: { allowAnonymousLoopback: true }, upstreams: { fixture: fixtureUpstream() } } }, undefined, { localSocket: true });
  try {
    for (const authorization of [undefined, '', 'Bearer ', 'Bearer']) {
      const socket = connect(join(open.dataDir, 'mcp.sock'));
      let answer = '';
      const first = new Promise<string>((resolve) =>
        socket.on('data', (chunk: Buffer) => {
          answer += chunk.toString();
          if (answer.includes('\n')) resolve(answer.slice(0, answer.indexOf('\n')));
        }),
      );
      socket.write(`${JSON.stringify({ gatehouse: 'mcp', ...(authorization !== undefined ? { authorization } : {}) })}\n${INITIALIZE}\n`);
      const reply = JSON.parse(await first) as { ok: boolean; error?: string };
      socket.destroy();
      assert.equal(reply.ok, false, `authorization ${JSON.stringify(authorization)}: ${answer}`);
      assert.ok(reply.error, 'the refusal says why');
    }
    assert.equal(open.audit.records.filter((record) => record.action === 'authenticate' && record.effect === 'deny').length, 3);
    // A run's own HTTP socket: keyless callers are the run's agent, and only when the run names one.
    const overSocket = (socketPath: string, path: string, authorization?: string, extra: { body?: string; headers?: Record<string, string> } = {}) =>
      new Promise<{ status: number; body: string; session?: string }>((resolve, reject) => {
        const headers = { host: '127.0.0.1:7401', ...JSON_HEADERS, ...(authorization ? { authorization } : {}), ...extra.headers };
        const req = httpRequest({ socketPath, path, method: path === '/mcp' ? 'POST' : 'GET', headers }, (res: IncomingMessage) => {
          let body = '';
          res.on('data', (chunk: Buffer) => (body += chunk.toString()));
          const session = res.headers['mcp-session-id'];
          res.on('end', () => resolve({ status: res.statusCode ?? 0, body, ...(typeof session === 'string' ? { session } : {}) }));
        });
        req.on('error', reject);
        req.end(path === '/mcp' ? (extra.body ?? INITIALIZE) : undefined);
      });
    const run = await open.gateway.listenForRun({ agent: 'runner', user: 'ada' });
    const nobody = await open.gateway.listenForRun({ user: 'ada' });
    try {
      const keyless = await overSocket(run.socketPath, '/mcp');
      assert.equal(keyless.status, 200, keyless.body);
      const onSession = { 'mcp-session-id': keyless.session!, 'mcp-protocol-version': '2025-11-25' };
      await overSocket(run.socketPath, '/mcp', undefined, { headers: onSession, body: JSON.stringify({ jsonrpc: '2.0', method: 'notifications/initialized' }) });
      const listed = await overSocket(run.socketPath, '/mcp', undefined, { headers: onSession, body: JSON.stringify({ jsonrpc: '2.0', id: 2, method: 'tools/list' }) });
      assert.equal(listed.status, 200, listed.body);
      assert.ok(open.audit.records.some((record) => record.action === 'tools/list' && record.principal.agent === 'runner'), 'the session is the run\'s agent');
      assert.equal((await overSocket(run.socketPath, '/mcp', 'Bearer ghk_wrong_key')).status, 401);
      assert.equal((await overSocket(run.socketPath, '/status')).status, 403);
      // A run that names no agent gives no identity, and its callers are not anonymous loopback callers.
      assert.equal((await overSocket(nobody.socketPath, '/mcp')).status, 401);
    } finally {
      await run.close();
      await nobody.close();
    }
    assert.equal(existsSync(run.socketPath), false, 'the socket goes with the run');
    assert.equal(open.audit.records.filter((record) => (record.action === 'tools/list' || record.action === 'initialize') && record.principal.agent !== 'runner').length, 0);
  } finally {
    await open.close();
  }
});

test('a client that does not open with initialize, sent to the socket, is told it needs the HTTP endpoint', () => {
  const discover = JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'server/discover', params: {} });
  const result = spawnSync(process.execPath, [cli, 'mcp', '--url', `unix:${socketPath}`], {
    input: `${discover}\n`,
    env: { PATH: process.env.PATH ?? '', GATEHOUSE_AGENT_KEY: key },
    encoding: 'utf8',
    timeout: 20_000,
  });
  const answer = JSON.parse(result.stdout.trim()) as { id: number; error: { message: string } };
  assert.equal(answer.id, 1);
  assert.match(answer.error.message, /serves 2025-era sessions, which open with initialize; this client needs the gateway's HTTP endpoint/);
  assert.match(result.stderr, /needs the gateway's HTTP endpoint/);
});

test('over HTTP, a line that is JSON but not a message gets an error, and the bridge goes on', async () => {
  const initialize = JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'initialize', params: { protocolVersion: '2025-11-25', capabilities: {}, clientInfo: { name: 'raw', version: '1' } } });
  // Not spawnSync: the gateway answering it runs in this process.
  const child = spawn(process.execPath, [cli, 'mcp', '--url', harness.gateway.url], { env: { PATH: process.env.PATH ?? '', GATEHOUSE_AGENT_KEY: key } });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
  child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  child.stdin.write(`5\n${initialize}\n`);
  for (let i = 0; i < 200 && !stdout.includes('"id":1'); i += 1) await new Promise((resolve) => setTimeout(resolve, 25));
  child.stdin.end();
  const status = await new Promise((resolve) => child.once('exit', resolve));
  assert.equal(status, 0, stderr);
  const answers = stdout.trim().split('\n').map((line) => JSON.parse(line) as { id: unknown; error?: { code: number }; result?: unknown });
  assert.deepEqual(answers[0], { jsonrpc: '2.0', id: null, error: { code: -32600, message: 'Invalid Request: a line is not a JSON-RPC message' } });
  assert.ok(answers.some((answer) => answer.id === 1 && answer.result !== undefined), stdout);
});
