import assert from 'node:assert/strict';
import { mkdtempSync, statSync, writeFileSync } from 'node:fs';
import { spawn } from 'node:child_process';
import { createServer, request as httpRequest } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { pino } from 'pino';
import { openAgentRegistry } from '../src/agents/index.js';
import { auditDir } from '../src/audit/index.js';
import { lastLines } from '../src/audit/reader.js';
import { startNode, type RunningNode } from '../src/node/daemon.js';

const policyV1 = `version: 1
node:
  name: test-node
agents:
  ci-bot: { teams: [ci] }
policy:
  network:
    - id: github
      allow: [api.github.com]
      ports: [443]
    - id: internal
      allow: [10.20.0.0/16]
      teams: [ci]
    - id: no-loopback
      deny: [127.0.0.0/8]
    - id: paste-sites
      deny: ["**.pastebin.com"]
`;

async function call(url: string, method: string, path: string, body?: string, headers: Record<string, string> = {}): Promise<{ status: number; json: any }> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(`${url}${path}`, { method, headers: { 'content-type': 'application/json', ...headers } }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, json: JSON.parse(Buffer.concat(chunks).toString() || 'null') }));
    });
    req.on('error', reject);
    if (body !== undefined) req.write(body);
    req.end();
  });
}

async function waitFor(check: () => Promise<boolean>, what: string): Promise<void> {
  const deadline = Date.now() + 5000;
  while (Date.now() < deadline) {
    if (await check()) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  assert.fail(`timed out waiting for ${what}`);
}

function curl(args: string[]): Promise<{ status: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn('curl', ['-sS', '--max-time', '10', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => (stdout += c));
    child.stderr.on('data', (c: Buffer) => (stderr += c));
    child.on('exit', (code) => resolve({ status: code ?? -1, stdout, stderr }));
  });
}

describe('node: decision API over HTTP', () => {
  let node: RunningNode;
  let dir: string;
  let configPath: string;

  const auditRecords = (): any[] => lastLines(auditDir(join(dir, 'data')), 10_000).map((line) => JSON.parse(line));

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'gh-node-'));
    configPath = join(dir, 'gatehouse.yaml');
    writeFileSync(configPath, policyV1);
    node = await startNode({ configPath, dataDir: join(dir, 'data'), logger: pino({ level: 'silent' }), apiListen: '127.0.0.1:0', gatewayListen: '127.0.0.1:0', egressListen: '127.0.0.1:0' });
  });
  after(async () => node.close());

  it('creates the data dir private to its user', () => {
    assert.equal(statSync(join(dir, 'data')).mode & 0o777, 0o700);
    assert.equal(statSync(join(dir, 'data', 'keys', 'node.key')).mode & 0o777, 0o600);
  });

  it('answers health checks', async () => {
    const { status, json } = await call(node.api.url, 'GET', '/healthz');
    assert.equal(status, 200);
    assert.equal(json.status, 'ok');
  });

  it('decides network requests, with team scope from the agents section', async () => {
    const allowed = await call(node.api.url, 'POST', '/v1/decide', JSON.stringify({ surface: 'network', agent: 'dev', host: 'api.github.com', port: 443 }));
    assert.equal(allowed.status, 200);
    assert.equal(allowed.json.effect, 'allow');
    assert.deepEqual(allowed.json.rules, ['github']);
    const internal = await call(node.api.url, 'POST', '/v1/decide', JSON.stringify({ surface: 'network', agent: 'ci-bot', host: '10.20.1.1', port: 5432 }));
    assert.equal(internal.json.effect, 'allow');
    const denied = await call(node.api.url, 'POST', '/v1/decide', JSON.stringify({ surface: 'network', agent: 'dev', host: '0x7f.1', port: 80 }));
    assert.equal(denied.json.effect, 'deny');
    assert.deepEqual(denied.json.rules, ['no-loopback']);
    assert.equal(typeof denied.json.latencyUs, 'number');
  });

  it('writes one audit record per decision', async () => {
    const correlationId = 'test-correlation-1';
    await call(node.api.url, 'POST', '/v1/decide', JSON.stringify({ surface: 'network', agent: 'dev', host: 'evil.example', port: 443, correlationId }));
    await waitFor(async () => auditRecords().some((r) => r.correlationId === correlationId), 'the audit record');
    const records = auditRecords();
    const record = records.find((r) => r.correlationId === correlationId);
    assert.equal(record.effect, 'deny');
    assert.equal(record.surface, 'network');
    assert.equal(record.resource, 'evil.example:443');
    assert.equal(record.principal.agent, 'dev');
    assert.equal(record.node, 'test-node');
    assert.equal(record.policy.digest, node.holder.current.digest);
  });

  it('refuses malformed requests with one clear sentence', async () => {
    const badJson = await call(node.api.url, 'POST', '/v1/decide', '{"surface":');
    assert.equal(badJson.status, 400);
    assert.equal(badJson.json.error.message, 'the request body is not valid JSON');
    const typo = await call(node.api.url, 'POST', '/v1/decide', JSON.stringify({ surface: 'mcp', server: 'fs', tool_name: 'x' }));
    assert.equal(typo.status, 400);
    assert.match(typo.json.error.message, /unknown field "tool_name"/);
    const surface = await call(node.api.url, 'POST', '/v1/decide', JSON.stringify({ surface: 'dns' }));
    assert.match(surface.json.error.message, /"surface"/);
  });

  it('refuses a request whose Host header is not loopback (DNS rebinding)', async () => {
    const { status, json } = await call(node.api.url, 'GET', '/v1/policy', undefined, { host: 'evil.example' });
    assert.equal(status, 403);
    assert.equal(json.error.code, 'host_not_allowed');
  });

  it('runs the MCP gateway, which refuses an unauthenticated client by default', async () => {
    assert.ok(node.gateway, 'the gateway runs');
    assert.match(node.gateway.url, /^http:\/\/127\.0\.0\.1:\d+\/mcp$/);
    const response = await fetch(node.gateway!.url, {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream' },
      body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'initialize', params: { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 't', version: '1' } } }),
    });
    assert.equal(response.status, 401);
  });

  it('runs the egress proxy: an agent with its key reaches an allowed server, and is refused elsewhere', async () => {
    assert.ok(node.egress, 'the egress proxy runs');
    const target = createServer((_req, res) => res.end('hello through the node'));
    await new Promise<void>((r) => target.listen(0, '127.0.0.1', () => r()));
    const port = (target.address() as AddressInfo).port;
    try {
      // The policy names the loopback address explicitly: only that lifts the proxy's default block.
      writeFileSync(configPath, policyV1.replace('    - id: no-loopback\n      deny: [127.0.0.0/8]\n', `    - id: local-test\n      allow: [127.0.0.1]\n      ports: [${port}]\n`));
      await waitFor(async () => node.holder.current.document.network.some((r) => r.id === 'local-test'), 'the reload');
      const key = openAgentRegistry(join(dir, 'data')).add('dev').key;
      const proxy = `http://127.0.0.1:${node.egress!.address.port}`;
      const scansSoFar = async (): Promise<number> => {
        const metrics = await (await fetch(`${node.api.url}/metrics`)).text();
        return Number(/gatehouse_scan_latency_seconds_count\{surface="network"\} (\d+)/.exec(metrics)?.[1] ?? 0);
      };
      const scansBefore = await scansSoFar();
      const allowed = await curl(['-x', proxy, '--proxy-user', `dev:${key}`, `http://127.0.0.1:${port}/`]);
      assert.equal(allowed.stdout, 'hello through the node', allowed.stderr);
      const denied = await curl(['-x', proxy, '--proxy-user', `dev:${key}`, '-o', '/dev/null', '-w', '%{http_code}', 'http://pastebin.com/']);
      assert.equal(denied.stdout, '403', 'a host denied by name is refused before any DNS lookup');
      const anonymous = await curl(['-x', proxy, '-o', '/dev/null', '-w', '%{http_code}', `http://127.0.0.1:${port}/`]);
      assert.equal(anonymous.stdout, '407');
      // The proxy scanned the one request it could read (URL, header names and values: one scan), and /metrics
      // shows how long that took.
      assert.equal((await scansSoFar()) - scansBefore, 1, 'one scan latency is reported per request, on the network surface');
      const metrics = await (await fetch(`${node.api.url}/metrics`)).text();
      assert.match(metrics, /gatehouse_decisions_total\{effect="allow",surface="network"\} \d+/);
    } finally {
      target.close();
      writeFileSync(configPath, policyV1);
    }
  });

  it('reports the active policy version and digest', async () => {
    const { json } = await call(node.api.url, 'GET', '/v1/policy');
    assert.equal(json.version, node.holder.current.version);
    assert.match(json.digest, /^sha256:[0-9a-f]{64}$/);
  });

  it('keeps the old policy when the new one is invalid, and records both outcomes', async () => {
    const before = node.holder.current.version;
    writeFileSync(configPath, policyV1.replace('ports: [443]', 'ports: [443]\n      prots: [1]'));
    const refused = await node.reload();
    assert.equal(refused.ok, false);
    assert.match(refused.error ?? '', /gatehouse\.yaml:\d+:\d+: policy\.network\[0\]\.prots: unknown key/);
    assert.equal(node.holder.current.version, before);
    const still = await call(node.api.url, 'POST', '/v1/decide', JSON.stringify({ surface: 'network', host: 'api.github.com', port: 443 }));
    assert.equal(still.json.effect, 'allow');

    // A valid change is picked up by the file watcher, without calling reload.
    writeFileSync(configPath, policyV1.replace('allow: [api.github.com]', 'allow: [api.github.com, registry.npmjs.org]'));
    await waitFor(async () => node.holder.current.version !== before, 'the watcher to reload');
    const npm = await call(node.api.url, 'POST', '/v1/decide', JSON.stringify({ surface: 'network', host: 'registry.npmjs.org', port: 443 }));
    assert.equal(npm.json.effect, 'allow');

    const records = auditRecords();
    const reloads = records.filter((r) => r.action === 'policy.reload');
    assert.ok(reloads.some((r) => r.effect === 'error' && /keeping/.test(r.reason)), 'the refused reload is audited');
    assert.ok(reloads.some((r) => r.effect === 'info' && r.policy.version === node.holder.current.version), 'the accepted reload is audited');
  });
});
