/**
 * Upstreams that misbehave, with real processes: one that crashes, one that writes garbage to stdout, one
 * that hangs, one that changes a tool mid-session, a client that disconnects mid-call, and remote
 * Streamable HTTP upstreams (server-everything in its streamableHttp mode, and the fixture, on 127.0.0.1).
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { createServer } from 'node:net';
import { after, before, describe, test } from 'node:test';
import type { CallToolResult, Client } from '@modelcontextprotocol/client';
import { SAMPLES, seededRandom } from '../src/dlp/samples.js';
import { everythingEntry, fixtureOverHttp, fixtureUpstream, JSON_HEADERS, rawRequest, rawSession, reasonHeardOnCancel, startHarness, type Harness } from './gateway-harness.js';

const token = SAMPLES['github-pat']!(seededRandom(5));
const allowAll = { mcp: [{ id: 'all', allow: { tools: ['*'], prompts: ['*'], resources: ['*'] } }] };

describe('a stdio upstream that misbehaves', () => {
  let harness: Harness;
  let key: string;
  let client: Client;

  before(async () => {
    harness = await startHarness({
      gateway: { timeouts: { callMs: 1000, maxCallMs: 3000 }, maxMessageBytes: 256 * 1024, upstreams: { fixture: fixtureUpstream({ env: { FIXTURE_LEAK: token } }, ['--churning']) } },
      policy: allowAll,
    });
    key = harness.agents.add('tester').key;
    client = await harness.connect(key);
  });
  after(() => harness.close());

  test('a crash fails the call with a JSON-RPC error, is counted and recorded, and the next call restarts it', async () => {
    await assert.rejects(client.callTool({ name: 'fixture__crash', arguments: {} }));
    const status = harness.gateway.status().upstreams.find((u) => u.name === 'fixture')!;
    assert.equal(status.restarts, 1);
    assert.equal(status.state, 'crashed');
    assert.match(status.lastError ?? '', /closed unexpectedly/);
    assert.ok(harness.audit.records.some((r) => r.action === 'upstream.crash' && r.resource === 'fixture'));
    const again = (await client.callTool({ name: 'fixture__hello', arguments: { name: 'again' } })) as CallToolResult;
    assert.deepEqual(again.content, [{ type: 'text', text: 'hello again' }]);
    assert.equal(harness.gateway.status().upstreams[0]!.state, 'ready');
  });

  test('garbage on the upstream\'s stdout is skipped and recorded; the call still answers', async () => {
    const result = (await client.callTool({ name: 'fixture__garbage', arguments: {} })) as CallToolResult;
    assert.deepEqual(result.content, [{ type: 'text', text: 'after garbage' }]);
    assert.ok(harness.gateway.status().upstreams[0]!.garbageLines >= 1);
    assert.ok(harness.audit.records.some((r) => r.action === 'upstream.garbage'));
  });

  test('a flood of garbage is counted, but only its first lines are recorded, each with any secret redacted', async () => {
    const before = harness.audit.records.length;
    const counted = harness.gateway.status().upstreams[0]!.garbageLines;
    const result = (await client.callTool({ name: 'fixture__garbage', arguments: { lines: 200 } })) as CallToolResult;
    assert.deepEqual(result.content, [{ type: 'text', text: 'after garbage' }]);
    for (let i = 0; i < 50 && harness.gateway.status().upstreams[0]!.garbageLines < counted + 200; i++) await new Promise((resolve) => setTimeout(resolve, 20));
    assert.equal(harness.gateway.status().upstreams[0]!.garbageLines, counted + 200);
    const recorded = harness.audit.records.slice(before).filter((r) => r.action === 'upstream.garbage');
    assert.ok(recorded.length >= 1 && recorded.length <= 11, `${recorded.length} garbage records`);
    assert.match(recorded.at(-1)!.reason, /not recorded one by one/);
    assert.match(recorded[0]!.reason, /\[REDACTED:github-pat\]/);
    assert.ok(!JSON.stringify(harness.audit.records).includes(token), 'no audit record holds the secret');
  });

  test('a hanging upstream times out with an error while other calls keep working', async () => {
    const started = Date.now();
    const hanging = client.callTool({ name: 'fixture__hang', arguments: {} });
    const other = await harness.connect(key);
    const quick = (await other.callTool({ name: 'fixture__hello', arguments: {} })) as CallToolResult;
    assert.deepEqual(quick.content, [{ type: 'text', text: 'hello world' }]);
    await assert.rejects(hanging, /timed out|timeout/i);
    assert.ok(Date.now() - started < 2500);
    assert.ok(harness.audit.records.some((r) => r.action === 'tools/call' && r.resource === 'fixture/hang' && r.effect === 'error'));
  });

  test('an upstream message over the size limit is dropped and the call fails instead of the gateway', async () => {
    await assert.rejects(client.callTool({ name: 'fixture__big', arguments: { bytes: 400 * 1024 } }));
    const fine = (await client.callTool({ name: 'fixture__big', arguments: { bytes: 10 } })) as CallToolResult;
    assert.deepEqual(fine.content, [{ type: 'text', text: 'x'.repeat(10) }]);
  });

  test('a client that disconnects mid-call does not disturb the gateway; the call is recorded', async () => {
    const session = await rawSession(harness.gateway.url, key);
    const { request } = await import('node:http');
    const url = new URL(harness.gateway.url);
    await new Promise<void>((resolve) => {
      const req = request({
        host: url.hostname,
        port: url.port,
        path: url.pathname,
        method: 'POST',
        headers: { ...JSON_HEADERS, authorization: `Bearer ${key}`, 'mcp-session-id': session, 'mcp-protocol-version': '2025-06-18' },
      });
      req.on('error', () => resolve());
      req.end(JSON.stringify({ jsonrpc: '2.0', id: 5, method: 'tools/call', params: { name: 'fixture__hang', arguments: {} } }));
      setTimeout(() => {
        req.destroy();
        resolve();
      }, 200);
    });
    const result = (await client.callTool({ name: 'fixture__hello', arguments: {} })) as CallToolResult;
    assert.deepEqual(result.content, [{ type: 'text', text: 'hello world' }]);
    await new Promise((resolve) => setTimeout(resolve, 1200));
    const recorded = harness.audit.records.filter((r) => r.resource === 'fixture/hang' && r.principal.session === session);
    assert.equal(recorded.length, 1);
  });

  test('a tool that changes mid-session sends list_changed to the client, and the changed tool is held (pinned)', async () => {
    let notified = false;
    const watcher = await harness.connect(key);
    watcher.setNotificationHandler('notifications/tools/list_changed', () => {
      notified = true;
    });
    await watcher.listTools();
    await watcher.callTool({ name: 'fixture__rug-pull', arguments: {} });
    for (let i = 0; i < 50 && !notified; i += 1) await new Promise((resolve) => setTimeout(resolve, 20));
    assert.ok(notified, 'the client heard list_changed');
    const tools = (await watcher.listTools()).tools.map((tool) => tool.name);
    assert.ok(tools.includes('fixture__echo') && !tools.includes('fixture__hello'));
  });

  test('an upstream announcing list changes in a loop reaches a client as one notice at once and at most one more per interval', async () => {
    let notices = 0;
    const watcher = await harness.connect(key);
    watcher.setNotificationHandler('notifications/tools/list_changed', () => {
      notices += 1;
    });
    await watcher.listTools();
    // Clear of the interval of any earlier notice.
    await new Promise((resolve) => setTimeout(resolve, 300));
    await watcher.callTool({ name: 'fixture__churn', arguments: { times: 50 } });
    await new Promise((resolve) => setTimeout(resolve, 600));
    assert.ok(notices >= 1 && notices <= 2, `${notices} notices for 50 changes`);
    assert.ok((await watcher.listTools()).tools.some((tool) => tool.name === 'fixture__churn'), 'the list is still served');
  });
});

describe('lifecycle', () => {
  test('starts an upstream on first use, stops it after the idle timeout, and starts it again when needed', async () => {
    const harness = await startHarness({ gateway: { timeouts: { idleMs: 300 }, upstreams: { fixture: fixtureUpstream() } }, policy: allowAll });
    try {
      assert.equal(harness.gateway.status().upstreams[0]!.state, 'idle', 'nothing starts before it is needed');
      const client = await harness.connect(harness.agents.add('tester').key);
      await client.callTool({ name: 'fixture__hello', arguments: {} });
      const pid = harness.gateway.status().upstreams[0]!.pid!;
      assert.equal(harness.gateway.status().upstreams[0]!.state, 'ready');
      for (let i = 0; i < 50 && harness.gateway.status().upstreams[0]!.state !== 'idle'; i += 1) await new Promise((resolve) => setTimeout(resolve, 20));
      assert.equal(harness.gateway.status().upstreams[0]!.state, 'idle');
      const gone = () => {
        try {
          process.kill(pid, 0);
          return false;
        } catch {
          return true;
        }
      };
      for (let i = 0; i < 100 && !gone(); i += 1) await new Promise((resolve) => setTimeout(resolve, 20));
      assert.ok(gone(), 'the idle process is gone');
      const again = (await client.callTool({ name: 'fixture__hello', arguments: {} })) as CallToolResult;
      assert.equal(text(again), 'hello world');
      assert.equal(harness.gateway.status().upstreams[0]!.restarts, 0, 'an idle stop is not a crash');
    } finally {
      await harness.close();
    }
  });
});

describe('logging', () => {
  test('relays an upstream\'s log messages during a call to the calling session, at the level it set', async () => {
    const harness = await startHarness({ gateway: { upstreams: { fixture: fixtureUpstream() } }, policy: allowAll });
    try {
      const client = await harness.connect(harness.agents.add('tester').key);
      await expectLogRelayed(client);
    } finally {
      await harness.close();
    }
  });
});

describe('resource subscriptions', () => {
  test('a subscribed session hears notifications/resources/updated; after unsubscribing it does not', async () => {
    const harness = await startHarness({ gateway: { upstreams: { fixture: fixtureUpstream() } }, policy: allowAll });
    try {
      const key = harness.agents.add('tester').key;
      const subscriber = await harness.connect(key);
      const bystander = await harness.connect(key);
      const heard: string[] = [];
      let bystanderHeard = 0;
      subscriber.setNotificationHandler('notifications/resources/updated', (n) => void heard.push(n.params.uri));
      bystander.setNotificationHandler('notifications/resources/updated', () => void (bystanderHeard += 1));
      await subscriber.subscribeResource({ uri: 'fixture://note' });
      assert.equal(text(await bystander.callTool({ name: 'fixture__touch', arguments: {} }) as CallToolResult), 'notified');
      for (let i = 0; i < 50 && heard.length === 0; i += 1) await new Promise((resolve) => setTimeout(resolve, 20));
      assert.deepEqual(heard, ['fixture://note']);
      assert.equal(bystanderHeard, 0);
      await subscriber.unsubscribeResource({ uri: 'fixture://note' });
      assert.equal(text(await bystander.callTool({ name: 'fixture__touch', arguments: {} }) as CallToolResult), 'nobody subscribed');
      await assert.rejects(subscriber.subscribeResource({ uri: 'fixture://missing' }), /not found/);
    } finally {
      await harness.close();
    }
  });
});

describe('resource subscriptions with a connection of its own per session (isolation: session)', () => {
  test('a session subscribes over its own connection and hears its updates; another session\'s connection is its own', async () => {
    const harness = await startHarness({ gateway: { upstreams: { fixture: fixtureUpstream({ isolation: 'session' }) } }, policy: allowAll });
    try {
      const key = harness.agents.add('tester').key;
      const subscriber = await harness.connect(key);
      const other = await harness.connect(key);
      const heard: string[] = [];
      let otherHeard = 0;
      subscriber.setNotificationHandler('notifications/resources/updated', (n) => void heard.push(n.params.uri));
      other.setNotificationHandler('notifications/resources/updated', () => void (otherHeard += 1));
      await subscriber.subscribeResource({ uri: 'fixture://note' });
      // Each session's server holds only that session's subscriptions.
      assert.equal(text((await subscriber.callTool({ name: 'fixture__subscriptions', arguments: {} })) as CallToolResult), '1 subscribed');
      assert.equal(text((await other.callTool({ name: 'fixture__touch', arguments: {} })) as CallToolResult), 'nobody subscribed');
      assert.equal(text((await subscriber.callTool({ name: 'fixture__touch', arguments: {} })) as CallToolResult), 'notified');
      for (let i = 0; i < 50 && heard.length === 0; i += 1) await new Promise((resolve) => setTimeout(resolve, 20));
      assert.deepEqual(heard, ['fixture://note']);
      assert.equal(otherHeard, 0);
      await subscriber.unsubscribeResource({ uri: 'fixture://note' });
      assert.equal(text((await subscriber.callTool({ name: 'fixture__subscriptions', arguments: {} })) as CallToolResult), '0 subscribed');
    } finally {
      await harness.close();
    }
  });
});

describe('resource subscriptions a client could pile up', () => {
  let harness: Harness;
  let key: string;
  before(async () => {
    harness = await startHarness({ gateway: { upstreams: { fixture: fixtureUpstream({}, ['--echoing']) } }, policy: allowAll });
    key = harness.agents.add('tester').key;
  });
  after(() => harness.close());

  async function subscribed(): Promise<string> {
    const checker = await harness.connect(key);
    return text((await checker.callTool({ name: 'fixture__subscriptions', arguments: {} })) as CallToolResult);
  }

  test('a session that ends while its subscription is being made does not stay subscribed', async () => {
    const session = await rawSession(harness.gateway.url, key);
    const headers = { ...JSON_HEADERS, authorization: `Bearer ${key}`, 'mcp-session-id': session, 'mcp-protocol-version': '2025-06-18' };
    const subscribing = rawRequest(harness.gateway.url, { headers, body: JSON.stringify({ jsonrpc: '2.0', id: 2, method: 'resources/subscribe', params: { uri: 'fixture://echo/slow' } }) });
    await new Promise((resolve) => setTimeout(resolve, 100));
    await rawRequest(harness.gateway.url, { method: 'DELETE', headers });
    await subscribing;
    // The upstream takes 300 ms to subscribe; the gateway then learns the session is gone.
    await new Promise((resolve) => setTimeout(resolve, 500));
    assert.doesNotMatch(await subscribed(), /slow/);
  });

  test('one session may hold only so many subscriptions; the rest are refused and recorded', async () => {
    const client = await harness.connect(key);
    const outcomes = [];
    for (let batch = 0; batch < 11; batch += 1) {
      outcomes.push(...(await Promise.allSettled(Array.from({ length: 100 }, (_, i) => client.subscribeResource({ uri: `fixture://echo/${batch}-${i}` })))));
    }
    const refused = outcomes.filter((outcome) => outcome.status === 'rejected');
    assert.equal(refused.length, 100);
    assert.match(String((refused[0] as PromiseRejectedResult).reason), /already holds 1000 subscriptions/);
    assert.ok(harness.audit.records.some((r) => r.action === 'resources/subscribe' && r.effect === 'deny' && r.rules.includes('limit')));
    await (client.transport as unknown as { terminateSession(): Promise<void> }).terminateSession();
    for (let i = 0; i < 50 && (await subscribed()) !== '0 subscribed'; i += 1) await new Promise((resolve) => setTimeout(resolve, 20));
    assert.equal(await subscribed(), '0 subscribed', "the session's subscriptions end with it");
  });
});

describe('a remote Streamable HTTP upstream', () => {
  let upstream: ChildProcess;
  let port: number;

  async function startUpstream(): Promise<void> {
    upstream = spawn(process.execPath, [everythingEntry, 'streamableHttp'], { env: { ...process.env, PORT: String(port) }, stdio: ['ignore', 'ignore', 'pipe'] });
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('server-everything did not start')), 10_000);
      upstream.stderr!.on('data', (chunk: Buffer) => {
        if (chunk.toString().includes('listening')) {
          clearTimeout(timer);
          resolve();
        }
      });
    });
  }

  async function restartUpstream(): Promise<void> {
    const exited = new Promise((resolve) => upstream.once('exit', resolve));
    upstream.kill('SIGKILL');
    await exited;
    await startUpstream();
  }

  before(async () => {
    port = await freePort();
    await startUpstream();
  });
  after(() => {
    upstream.kill('SIGKILL');
  });

  test('relays calls to server-everything over Streamable HTTP when private addresses are allowed for it', async () => {
    const harness = await startHarness({
      gateway: { upstreams: { remote: { url: `http://127.0.0.1:${port}/mcp`, allowPrivateAddress: true } } },
      policy: allowAll,
    });
    try {
      const client = await harness.connect(harness.agents.add('tester').key);
      const result = (await client.callTool({ name: 'remote__echo', arguments: { message: 'over http' } })) as CallToolResult;
      assert.deepEqual(result.content, [{ type: 'text', text: 'Echo: over http' }]);
      const progress: number[] = [];
      await client.callTool({ name: 'remote__trigger-long-running-operation', arguments: { duration: 0.3, steps: 2 } }, { onprogress: (p) => progress.push(p.progress) });
      assert.deepEqual(progress.slice(0, 1), [1]);
    } finally {
      await harness.close();
    }
  });

  test('starts a new upstream session transparently when the remote server forgot ours (it restarted)', async () => {
    const harness = await startHarness({
      gateway: { upstreams: { remote: { url: `http://127.0.0.1:${port}/mcp`, allowPrivateAddress: true } } },
      policy: allowAll,
    });
    try {
      const client = await harness.connect(harness.agents.add('tester').key);
      assert.equal(text((await client.callTool({ name: 'remote__echo', arguments: { message: 'before' } })) as CallToolResult), 'Echo: before');
      await restartUpstream();
      assert.equal(text((await client.callTool({ name: 'remote__echo', arguments: { message: 'after' } })) as CallToolResult), 'Echo: after');
      assert.ok(harness.audit.records.some((r) => r.action === 'upstream.reinitialise'));
    } finally {
      await harness.close();
    }
  });

  test('refuses a remote upstream on a loopback address unless allowed, with a clear reason', async () => {
    const harness = await startHarness({ gateway: { upstreams: { remote: { url: `http://127.0.0.1:${port}/mcp` } } }, policy: allowAll });
    try {
      const client = await harness.connect(harness.agents.add('tester').key);
      assert.deepEqual((await client.listTools()).tools, []);
      const status = harness.gateway.status().upstreams[0]!;
      assert.match(status.lastError ?? '', /not a public address/);
      const listed = harness.audit.records.findLast((r) => r.action === 'tools/list');
      assert.match(JSON.stringify(listed?.details?.unavailable), /allowPrivateAddress/);
    } finally {
      await harness.close();
    }
  });
});

describe('a remote upstream that misbehaves (the fixture over Streamable HTTP)', () => {
  // A remote call with no progress to relay skips the SDK client's request pipeline (HttpUpstreamTransport.request):
  // these hold it to what that pipeline does for the call.
  let upstream: { url: string; close(): void };
  let harness: Harness;
  let client: Client;

  before(async () => {
    upstream = await fixtureOverHttp({ FIXTURE_LEAK: `the key is ${token}` });
    harness = await startHarness({
      gateway: { timeouts: { callMs: 1000, maxCallMs: 3000 }, upstreams: { fixture: { url: upstream.url, allowPrivateAddress: true } } },
      policy: { ...allowAll, dlp: { action: 'block' } },
    });
    client = await harness.connect(harness.agents.add('tester').key);
  });
  after(async () => {
    await harness.close();
    upstream.close();
  });

  test('a hanging call times out with an error and is recorded, while other calls keep working', async () => {
    const started = Date.now();
    const hanging = client.callTool({ name: 'fixture__hang', arguments: {} });
    const quick = (await client.callTool({ name: 'fixture__hello', arguments: {} })) as CallToolResult;
    assert.equal(text(quick), 'hello world');
    await assert.rejects(hanging, /timed out/i);
    assert.ok(Date.now() - started < 2500);
    assert.ok(harness.audit.records.some((r) => r.action === 'tools/call' && r.resource === 'fixture/hang' && r.effect === 'error'));
  });

  test("a cancelled call is cancelled upstream with the gateway's reason, never the client's words", async () => {
    assert.equal(await reasonHeardOnCancel(client, `stop, and here is ${token}`), 'reason: the request was cancelled');
  });

  test('a result holding a secret is withheld, and so recorded', async () => {
    const leaked = (await client.callTool({ name: 'fixture__leak', arguments: {} })) as CallToolResult;
    assert.equal(leaked.isError, true);
    assert.match(text(leaked), /result contained a secret/);
    const record = harness.audit.records.findLast((r) => r.action === 'tools/call' && r.resource === 'fixture/leak');
    assert.equal(record?.effect, 'deny');
    assert.deepEqual(record?.rules, ['dlp']);
    assert.ok(!JSON.stringify(harness.audit.records).includes(token));
  });

  test("relays the upstream's log messages during a call to the calling session, at the level it set", async () => {
    await expectLogRelayed(client);
  });
});

/** The fixture's log tool, called at level "error": the call's log message reaches this client, at that level. */
async function expectLogRelayed(client: Client): Promise<void> {
  const heard: string[] = [];
  client.setNotificationHandler('notifications/message', (n) => void heard.push(`${n.params.level}: ${String(n.params.data)}`));
  await client.setLoggingLevel('error');
  assert.equal(text((await client.callTool({ name: 'fixture__log', arguments: {} })) as CallToolResult), 'logged');
  for (let i = 0; i < 25 && heard.length === 0; i += 1) await new Promise((resolve) => setTimeout(resolve, 20));
  assert.deepEqual(heard, ['error: something broke']);
}

function text(result: CallToolResult): string {
  return result.content.map((block) => (block.type === 'text' ? block.text : '')).join('');
}

async function freePort(): Promise<number> {
  const server = createServer();
  server.listen(0, '127.0.0.1');
  await new Promise((resolve) => server.once('listening', resolve));
  const port = (server.address() as { port: number }).port;
  await new Promise((resolve) => server.close(resolve));
  return port;
}


