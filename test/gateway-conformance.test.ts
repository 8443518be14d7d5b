/**
 * Official tools against the gateway: the MCP conformance suite (@modelcontextprotocol/conformance, server
 * mode) against the gateway fronting server-everything, and the MCP Inspector CLI driving the gateway through
 * the `gatehouse mcp` stdio bridge. Both need Node 22, so they run under `npx -y -p node@22` (downloaded from
 * the npm registry on first use and cached); node is never a dependency of this project.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { createServer } from 'node:net';
import { after, before, test } from 'node:test';
import { everythingEntry, fixtureUpstream, startHarness, type Harness } from './gateway-harness.js';

const expectedFailures = new URL('../../test/fixtures/conformance-expected-failures.yaml', import.meta.url).pathname;
const cli = new URL('../src/cli/main.js', import.meta.url).pathname;
const allowAll = { mcp: [{ id: 'all', allow: { tools: ['*'], prompts: ['*'], resources: ['*'] } }] };

let upstream: ChildProcess;
let harness: Harness;

async function freePort(): Promise<number> {
  const server = createServer();
  server.listen(0, '127.0.0.1');
  await new Promise((resolve) => server.once('listening', resolve));
  const port = (server.address() as { port: number }).port;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

/** Runs a command to completion without blocking this process (the gateway under test lives here). */
async function run(command: string, args: string[], timeoutMs: number): Promise<{ code: number | null; output: string }> {
  const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, NO_COLOR: '1' } });
  let output = '';
  child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
  child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
  const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
  const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
  clearTimeout(timer);
  return { code, output };
}

before(async () => {
  const port = await freePort();
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
  harness = await startHarness({
    gateway: {
      // The suite connects without credentials; names stay as server-everything has them (prefix "").
      auth: { allowAnonymousLoopback: true },
      upstreams: { everything: { url: `http://127.0.0.1:${port}/mcp`, allowPrivateAddress: true, prefix: '' }, fixture: fixtureUpstream() },
    },
    policy: allowAll,
  });
});

after(async () => {
  await harness.close();
  upstream.kill('SIGKILL');
});

test('the gateway passes every conformance scenario server-everything passes (baseline: test/fixtures/conformance-expected-failures.yaml)', { timeout: 600_000 }, async () => {
  const { code, output } = await run(
    'npx',
    ['-y', '-p', 'node@22', '-p', '@modelcontextprotocol/conformance', 'conformance', 'server', '--url', harness.gateway.url, '--expected-failures', expectedFailures],
    540_000,
  );
  assert.match(output, /Baseline check passed/, output.slice(-3000));
  assert.equal(code, 0);
  assert.match(output, /dns-rebinding-protection: 2 passed, 0 failed/);
});

test('the MCP Inspector CLI lists and calls tools through the gatehouse mcp stdio bridge', { timeout: 600_000 }, async () => {
  const key = harness.agents.add('inspector').key;
  const inspector = ['-y', '-p', 'node@22', '-p', '@modelcontextprotocol/inspector', 'mcp-inspector', '--cli', '-e', `GATEHOUSE_AGENT_KEY=${key}`];
  const bridge = [process.execPath, cli, 'mcp', '--url', harness.gateway.url];
  const listed = await run('npx', [...inspector, ...bridge, '--method', 'tools/list'], 540_000);
  assert.equal(listed.code, 0, listed.output.slice(-2000));
  assert.match(listed.output, /"name": "fixture__echo"/);
  const called = await run('npx', [...inspector, ...bridge, '--method', 'tools/call', '--tool-name', 'fixture__echo', '--tool-arg', 'message=inspected'], 540_000);
  assert.equal(called.code, 0, called.output.slice(-2000));
  assert.match(called.output, /"text": "inspected"/);
  assert.ok(harness.audit.records.some((r) => r.action === 'tools/call' && r.principal.agent === 'inspector'));
});
