/**
 * Verify before running: an upstream whose executable, script or npm package does not match its pin is not
 * started; the user gets a clear reason in the list's audit record and in `status`, and the refusal is recorded.
 * Upstream credentials: granted by policy, resolved by the real secrets service, never in the gateway's env.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { test } from 'node:test';
import { openSecrets } from '../src/secrets/index.js';
import { everythingUpstream, fixtureEntry, fixtureUpstream, startHarness } from './gateway-harness.js';

const require = createRequire(import.meta.url);
const fixtureSha = createHash('sha256').update(readFileSync(fixtureEntry)).digest('hex');
const everythingLock = (require('../../node_modules/.package-lock.json') as { packages: Record<string, { version: string; integrity: string }> }).packages[
  'node_modules/@modelcontextprotocol/server-everything'
]!;
const allowAll = { mcp: [{ id: 'all', allow: { tools: ['*'] } }] };

async function toolsWith(upstream: Record<string, unknown>) {
  const harness = await startHarness({ gateway: { upstreams: { pinned: upstream } }, policy: allowAll });
  try {
    const client = await harness.connect(harness.agents.add('tester').key);
    const tools = (await client.listTools()).tools.map((tool) => tool.name);
    return { tools, status: harness.gateway.status().upstreams[0]!, records: harness.audit.records };
  } finally {
    await harness.close();
  }
}

test('starts a stdio upstream whose script matches its pinned SHA-256', async () => {
  const { tools } = await toolsWith(fixtureUpstream({ pin: { sha256: fixtureSha } }));
  assert.ok(tools.includes('pinned__hello'));
});

test('refuses to start a stdio upstream whose script differs from its pinned SHA-256, and records why', async () => {
  const wrong = fixtureSha.replace(/^./, (c) => (c === '0' ? '1' : '0'));
  const { tools, status, records } = await toolsWith(fixtureUpstream({ pin: { sha256: wrong } }));
  assert.deepEqual(tools, []);
  assert.equal(status.state, 'refused');
  assert.match(status.lastError ?? '', new RegExp(`has SHA-256 ${fixtureSha}, not the pinned ${wrong}`));
  const refusal = records.find((r) => r.action === 'pin.refused');
  assert.equal(refusal?.effect, 'deny');
  assert.equal(refusal?.resource, 'pinned');
});

test('checks an npm-launched server against the installed package name, version and registry integrity', async () => {
  const good = await toolsWith(
    everythingUpstream({ pin: { npm: { package: '@modelcontextprotocol/server-everything', version: everythingLock.version, integrity: everythingLock.integrity } } }),
  );
  assert.ok(good.tools.includes('pinned__echo'));
  const wrongVersion = await toolsWith(everythingUpstream({ pin: { npm: { package: '@modelcontextprotocol/server-everything', version: '0.0.1' } } }));
  assert.deepEqual(wrongVersion.tools, []);
  assert.match(wrongVersion.status.lastError ?? '', /installed at version 2026\.8\.31, not the pinned 0\.0\.1/);
  const wrongIntegrity = await toolsWith(
    everythingUpstream({ pin: { npm: { package: '@modelcontextprotocol/server-everything', version: everythingLock.version, integrity: 'sha512-AAAA' } } }),
  );
  assert.deepEqual(wrongIntegrity.tools, []);
  assert.match(wrongIntegrity.status.lastError ?? '', /not the pinned sha512-AAAA/);
});

test('refuses an upstream that pins a container image, since image signatures cannot be verified yet', async () => {
  const { tools, status } = await toolsWith(fixtureUpstream({ pin: { image: { digest: `sha256:${'a'.repeat(64)}` } } }));
  assert.deepEqual(tools, []);
  assert.match(status.lastError ?? '', /container image verification is not available/);
});

test('starts an upstream with a secret in its environment only when a credentials rule grants it to that server', async () => {
  const secrets = openSecrets({ dataDir: '/nonexistent', settings: { providers: { 'fixture-token': { env: 'TEST_FIXTURE_TOKEN', timeoutMs: 5000, cacheTtlSeconds: 0 } }, scanEnvironment: false }, env: { TEST_FIXTURE_TOKEN: 'value-from-the-provider' } });
  const resolveSecret = (name: string) => secrets.resolveSecret(name);
  const upstream = fixtureUpstream({ credentials: [{ secret: 'fixture-token', env: 'FIXTURE_LEAK' }] });
  const granted = await startHarness(
    { gateway: { upstreams: { fixture: upstream } }, policy: { ...allowAll, credentials: [{ id: 'fixture-token', secret: 'fixture-token', servers: ['fixture'] }] } },
    undefined,
    { resolveSecret },
  );
  try {
    const client = await granted.connect(granted.agents.add('tester').key);
    const result = await client.callTool({ name: 'fixture__leak', arguments: {} });
    assert.deepEqual(result.content, [{ type: 'text', text: 'the key is value-from-the-provider' }]);
    const record = granted.audit.records.find((r) => r.action === 'credential.inject');
    assert.equal(record?.effect, 'allow');
    assert.ok(!JSON.stringify(granted.audit.records).includes('value-from-the-provider'), 'the value is never recorded');
  } finally {
    await granted.close();
  }
  const ungranted = await startHarness({ gateway: { upstreams: { fixture: upstream } }, policy: allowAll }, undefined, { resolveSecret });
  try {
    const client = await ungranted.connect(ungranted.agents.add('tester').key);
    assert.deepEqual((await client.listTools()).tools, []);
    assert.match(ungranted.gateway.status().upstreams[0]!.lastError ?? '', /no credentials rule grants to server "fixture"/);
  } finally {
    await ungranted.close();
  }
});
