/**
 * An agent inside `gatehouse run` reaches the node's MCP gateway: the official SDK client launches
 * `gatehouse run -- gatehouse mcp` as its stdio server, so the bridge itself runs in the sandbox, and its
 * calls land in the node's audit log under the agent its key names. What the sandbox gets is the gateway's
 * HTTP endpoint at http://127.0.0.1:7401/mcp, the URL it has outside, on a socket of the run's own whose
 * keyless callers are the run's agent; and nothing else: not the node's sockets, not the data dir, not an
 * anonymous session. Real node, CLI, bwrap, fixture MCP server and audit log, as root and unprivileged.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { Client, type CallToolResult } from '@modelcontextprotocol/client';
import { StdioClientTransport } from '@modelcontextprotocol/client/stdio';
import { assertCheckoutReadable, cleanup, collectOutput, hasBwrap, identities, mkdirOwned, scratch, skipWithoutBwrap, writeOwned, type Identity } from './sandbox-helpers.js';

const main = new URL('../src/cli/main.js', import.meta.url).pathname;
const fixtureServer = new URL('./fixtures/fixture-server.js', import.meta.url).pathname;
/** The compiled checkout and its node_modules: the CLI and the fixture server run from here, inside sandboxes. */
const checkout = new URL('../..', import.meta.url).pathname.replace(/\/$/, '');

function environment(dir: string, extra: Record<string, string> = {}): Record<string, string> {
  return { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: join(dir, 'home'), GATEHOUSE_HOME: join(dir, 'data'), LANG: 'C.UTF-8', ...extra };
}

/** `node <cli> ARGS` as the identity: the command and its arguments. */
function asIdentity(identity: Identity, args: string[]): [string, string[]] {
  return identity.user
    ? ['setpriv', ['--reuid', String(identity.user.uid), '--regid', String(identity.user.gid), '--clear-groups', '--', process.execPath, main, ...args]]
    : [process.execPath, [main, ...args]];
}

function spawnAs(identity: Identity, dir: string, args: string[], extra: Record<string, string> = {}): ChildProcessWithoutNullStreams {
  const [command, commandArgs] = asIdentity(identity, args);
  return spawn(command, commandArgs, { cwd: dir, env: environment(dir, extra), stdio: 'pipe' });
}

function run(identity: Identity, dir: string, args: string[], extra: Record<string, string> = {}): Promise<{ status: number | null; stdout: string; stderr: string }> {
  return collectOutput(spawnAs(identity, dir, args, extra));
}

/** The SDK client whose stdio server is `gatehouse run --agent coder -- node <cli> mcp`. */
function sandboxedBridge(identity: Identity, dir: string, extra: Record<string, string>): { client: Client; transport: StdioClientTransport; stderr: () => string } {
  const [command, args] = asIdentity(identity, ['run', '--agent', 'coder', '--', process.execPath, main, 'mcp']);
  const transport = new StdioClientTransport({ command, args, cwd: dir, env: environment(dir, extra), stderr: 'pipe' });
  let stderr = '';
  transport.stderr?.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  return { client: new Client({ name: 'sandboxed-agent', version: '1.0.0' }), transport, stderr: () => stderr };
}

interface Record_ {
  surface: string;
  action: string;
  effect: string;
  resource: string;
  reason: string;
  principal: { agent?: string };
}

function auditRecords(dir: string): Record_[] {
  const auditDir = join(dir, 'data', 'audit');
  return readdirSync(auditDir)
    .filter((name) => name.endsWith('.jsonl'))
    .flatMap((name) => readFileSync(join(auditDir, name), 'utf8').split('\n').filter(Boolean).map((line) => JSON.parse(line) as Record_));
}

function text(result: CallToolResult): string {
  return result.content.map((block) => (block.type === 'text' ? block.text : `[${block.type}]`)).join('\n');
}

/** A program for inside the sandbox: what it can reach of the gateway, printed one finding per line. */
const PROBE = `
const net = require('node:net');
const tryUnix = (path) => new Promise((resolve) => {
  const socket = net.connect(path);
  socket.once('connect', () => { socket.destroy(); resolve('connected'); });
  socket.once('error', (error) => resolve(error.code));
});
// An MCP client's first request, over plain HTTP as an HTTP-configured client (Claude Code, Cursor) sends it.
const initialize = async (authorization) => {
  const headers = { 'content-type': 'application/json', accept: 'application/json, text/event-stream' };
  if (authorization) headers.authorization = authorization;
  const body = JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'initialize', params: { protocolVersion: '2025-11-25', capabilities: {}, clientInfo: { name: 'probe', version: '1' } } });
  try {
    const response = await fetch('http://127.0.0.1:7401/mcp', { method: 'POST', headers, body });
    const answer = await response.json();
    return response.status + ' ' + (response.headers.get('mcp-session-id') ? 'session ' : '') + (answer.error?.message ?? answer.result?.serverInfo?.name);
  } catch (error) {
    return error.cause?.code ?? error.message;
  }
};
(async () => {
  console.log('url:' + (process.env.GATEHOUSE_GATEWAY_URL ?? ''));
  console.log('host-socket:' + (await tryUnix(process.argv[1] + '/mcp.sock')));
  console.log('data-dir:' + require('node:fs').readdirSync(process.argv[1]).join(','));
  console.log('no-key:' + (await initialize('')));
  console.log('bad-key:' + (await initialize('Bearer ghk_notakey')));
  console.log('key:' + (await initialize('Bearer ' + process.env.GATEHOUSE_AGENT_KEY)));
})();
`;

for (const identity of identities()) {
  describe(`an agent in gatehouse run reaches the node's MCP gateway, as ${identity.name}`, { skip: skipWithoutBwrap }, () => {
    let dir: string;
    let key: string;

    before(async () => {
      assertCheckoutReadable(identity);
      assert.ok(hasBwrap, 'bwrap is required (GATEHOUSE_REQUIRE_SANDBOX=1): apt-get install bubblewrap');
      dir = scratch(identity, 'run-mcp');
      mkdirOwned(identity, join(dir, 'data'));
      mkdirOwned(identity, join(dir, 'home'));
      // Anonymous loopback callers are allowed, to show that reaching the gateway from the sandbox is not one.
      const config = `version: 1
gateway:
  auth: { apiKeys: true, allowAnonymousLoopback: true }
  upstreams:
    fixture: { command: "${process.execPath}", args: ["${fixtureServer}"] }
sandbox:
  env: [GATEHOUSE_AGENT_KEY]
policy:
  filesystem:
    - id: workspace
      allow: { paths: ["./"], access: rw }
    - id: checkout
      allow: { paths: ["${checkout}"], access: ro }
  mcp:
    - id: fixture
      allow: { server: fixture, tools: [echo] }
`;
      writeOwned(identity, join(dir, 'data', 'gatehouse.yaml'), config, 0o644);
      const added = await run(identity, dir, ['agent', 'add', 'coder', '--json']);
      assert.equal(added.status, 0, added.stderr);
      key = (JSON.parse(added.stdout) as { key: string }).key;
    });
    after(() => cleanup(dir));

    test('without a node, a run has no gateway variable and nothing listens on the gateway port', async () => {
      const result = await run(identity, dir, ['run', '--', process.execPath, '-e', PROBE, join(dir, 'data')]);
      assert.equal(result.status, 0, result.stderr);
      assert.match(result.stdout, /^url:$/m);
      assert.match(result.stdout, /^no-key:ECONNREFUSED$/m);
    });

    describe('while a node serves the gateway', () => {
      let node: ChildProcessWithoutNullStreams;
      let nodeOutput = '';
      let nodeExited: Promise<unknown>;

      before(async () => {
        node = spawnAs(identity, dir, ['node', '--api', '127.0.0.1:0', '--gateway', '127.0.0.1:0', '--egress', '127.0.0.1:0']);
        node.stdout.setEncoding('utf8').on('data', (chunk: string) => (nodeOutput += chunk));
        node.stderr.setEncoding('utf8').on('data', (chunk: string) => (nodeOutput += chunk));
        nodeExited = new Promise((resolve) => node.once('exit', resolve));
        const deadline = Date.now() + 20000;
        while (!existsSync(join(dir, 'data', 'node.sock')) || !existsSync(join(dir, 'data', 'mcp.sock'))) {
          assert.ok(Date.now() < deadline && node.exitCode === null, `the node did not start: ${nodeOutput}`);
          await new Promise((resolve) => setTimeout(resolve, 50));
        }
      });
      after(async () => {
        node.kill('SIGTERM');
        await nodeExited;
      });

      test('the SDK client, through gatehouse mcp inside the sandbox, lists and calls tools; the node records the call by the agent', async () => {
        const { client, transport, stderr } = sandboxedBridge(identity, dir, { GATEHOUSE_AGENT_KEY: key });
        try {
          await client.connect(transport);
          const tools = (await client.listTools()).tools.map((tool) => tool.name);
          assert.deepEqual(tools, ['fixture__echo']);
          const result = (await client.callTool({ name: 'fixture__echo', arguments: { message: 'from inside the sandbox' } })) as CallToolResult;
          assert.equal(text(result), 'from inside the sandbox');
        } catch (error) {
          assert.fail(`${String(error)}\nrun's stderr: ${stderr()}\nnode: ${nodeOutput}`);
        } finally {
          await client.close();
        }
        const records = auditRecords(dir);
        const call = records.find((record) => record.action === 'tools/call' && record.resource === 'fixture/echo');
        assert.ok(call, 'the call is in the node\'s audit log');
        assert.equal(call.effect, 'allow');
        assert.equal(call.principal.agent, 'coder');
        const launch = records.findLast((record) => record.action === 'sandbox.launch' && record.resource.endsWith(' mcp'));
        assert.ok(launch, 'the sandboxed bridge\'s launch is in the node\'s log');
      });

      test('without a key the sandbox is the run\'s agent, as on its egress socket; a wrong key is refused', async () => {
        const keyless = sandboxedBridge(identity, dir, {});
        try {
          await keyless.client.connect(keyless.transport);
          const result = (await keyless.client.callTool({ name: 'fixture__echo', arguments: { message: 'no key needed' } })) as CallToolResult;
          assert.equal(text(result), 'no key needed');
        } catch (error) {
          assert.fail(`${String(error)}\nrun's stderr: ${keyless.stderr()}\nnode: ${nodeOutput}`);
        } finally {
          await keyless.client.close();
        }
        const keylessCall = auditRecords(dir).findLast((record) => record.action === 'tools/call' && record.resource === 'fixture/echo');
        assert.equal(keylessCall?.principal.agent, 'coder');

        const calls = (): number => auditRecords(dir).filter((record) => record.action === 'tools/call').length;
        const before = calls();
        const wrong = sandboxedBridge(identity, dir, { GATEHOUSE_AGENT_KEY: 'ghk_notavalidkey' });
        await assert.rejects(async () => {
          await wrong.client.connect(wrong.transport);
          await wrong.client.callTool({ name: 'fixture__echo', arguments: { message: 'wrong key' } });
        });
        await wrong.client.close();
        assert.match(wrong.stderr(), /the agent API key is not valid/);
        assert.ok(auditRecords(dir).some((record) => record.action === 'authenticate' && record.effect === 'deny'), 'the gateway recorded the refusal');
        assert.equal(calls(), before, 'no call reached the gateway\'s tools');
      });

      test('an HTTP MCP client inside finds the gateway at its usual URL as the run\'s agent; the sandbox reaches nothing else of it, and is never anonymous', async () => {
        const socketMode = statSync(join(dir, 'data', 'mcp.sock')).mode;
        const result = await run(identity, dir, ['run', '--agent', 'coder', '--', process.execPath, '-e', PROBE, join(dir, 'data')], { GATEHOUSE_AGENT_KEY: key });
        const anonymous = await run(identity, dir, ['run', '--', process.execPath, '-e', PROBE, join(dir, 'data')]);
        assert.equal(result.status, 0, result.stderr);
        assert.match(result.stdout, /^url:http:\/\/127\.0\.0\.1:7401\/mcp$/m);
        // seccomp refuses AF_UNIX sockets, and the data dir is an empty mask.
        assert.match(result.stdout, /^host-socket:(EACCES|ENOENT)$/m);
        assert.match(result.stdout, /^data-dir:$/m);
        // Without a key the caller is the run's agent; a wrong key is still refused.
        assert.match(result.stdout, /^no-key:200 session gatehouse$/m);
        assert.match(result.stdout, /^bad-key:401 the agent API key is not valid/m);
        assert.match(result.stdout, /^key:200 session gatehouse$/m);
        // A run that names no agent gives no identity: the config lets anonymous loopback callers in over TCP,
        // and from the sandbox nobody is one.
        assert.equal(anonymous.status, 0, anonymous.stderr);
        assert.match(anonymous.stdout, /^no-key:401 this gateway needs credentials/m);
        assert.equal(statSync(join(dir, 'data', 'mcp.sock')).mode, socketMode, 'the socket is untouched');
      });
    });
  });
}
