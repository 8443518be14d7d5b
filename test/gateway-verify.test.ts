/**
 * Verify before running: an upstream whose executable, script or npm package does not match its pin is not
 * started; the user gets a clear reason in the list's audit record and in `status`, and the refusal is recorded.
 * Upstream credentials: granted by policy, resolved by the real secrets service, never in the gateway's env.
 */
import assert from 'node:assert/strict';
import { createHash, createSign, generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createRequire } from 'node:module';
import { after, describe, test } from 'node:test';
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

describe('container image pins (cosign-compatible signatures, locally generated keys)', () => {
  const dir = mkdtempSync(join(tmpdir(), 'gatehouse-cosign-'));
  const digest = `sha256:${createHash('sha256').update('an image manifest').digest('hex')}`;
  const signer = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const stranger = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const write = (name: string, content: string | Buffer): string => {
    writeFileSync(join(dir, name), content);
    return join(dir, name);
  };
  /** What `cosign sign --key … --output-payload --output-signature` writes: simple-signing JSON and a base64 signature. */
  const signed = (forDigest: string, key = signer.privateKey) => {
    const payload = JSON.stringify({ critical: { identity: { 'docker-reference': 'example/server' }, image: { 'docker-manifest-digest': forDigest }, type: 'cosign container image signature' }, optional: null });
    const name = `${forDigest.slice(7, 15)}-${Math.random().toString(36).slice(2, 8)}`;
    return { payload: write(`${name}.payload`, payload), signature: write(`${name}.sig`, createSign('sha256').update(payload).sign(key).toString('base64')) };
  };
  const publicKey = write('cosign.pub', signer.publicKey.export({ type: 'spki', format: 'pem' }) as string);
  // Stands in for "docker run example/server@<digest>": the fixture ignores the extra argument.
  const runs = (image: string) => [fixtureEntry, '--image', image];
  after(() => rmSync(dir, { recursive: true, force: true }));

  test('starts an upstream whose image signature verifies against a configured key and names the digest it runs', async () => {
    const { tools } = await toolsWith({ command: process.execPath, args: runs(`example/server@${digest}`), pin: { image: { digest, publicKeys: [publicKey], ...signed(digest) } } });
    assert.ok(tools.includes('pinned__hello'));
  });

  test('refuses a signature by a key that is not configured', async () => {
    const { tools, status } = await toolsWith({ command: process.execPath, args: runs(`example/server@${digest}`), pin: { image: { digest, publicKeys: [publicKey], ...signed(digest, stranger.privateKey) } } });
    assert.deepEqual(tools, []);
    assert.match(status.lastError ?? '', /does not verify against any of the 1 configured public key/);
  });

  test('refuses a valid signature over another digest, and a command that does not run the pinned digest', async () => {
    const other = `sha256:${'b'.repeat(64)}`;
    const wrongDigest = await toolsWith({ command: process.execPath, args: runs(`example/server@${digest}`), pin: { image: { digest, publicKeys: [publicKey], ...signed(other) } } });
    assert.match(wrongDigest.status.lastError ?? '', new RegExp(`signature is for image ${other}, not the pinned ${digest}`));
    const byTag = await toolsWith({ command: process.execPath, args: runs('example/server:latest'), pin: { image: { digest, publicKeys: [publicKey], ...signed(digest) } } });
    assert.match(byTag.status.lastError ?? '', /does not run the image by its pinned digest/);
    assert.deepEqual([...wrongDigest.tools, ...byTag.tools], []);
  });
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
