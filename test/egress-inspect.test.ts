/**
 * TLS inspection with real clients (curl, undici's ProxyAgent, node's TLS client) and real HTTPS servers on
 * loopback. A test "public" CA signs the upstream servers' certificates and is configured as trusted for
 * upstreams; clients trust the proxy's own CA, generated into a temporary data dir.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fetch as undiciFetch, ProxyAgent } from 'undici';
import { createScanner } from '../src/dlp/index.js';
import { checksummedToken, seededRandom } from '../src/dlp/samples.js';
import { CertificateAuthority } from '../src/egress/ca.js';
import { PlaceholderRegistry } from '../src/secrets/placeholders.js';
import { compile, curl, httpsViaProxy, startTestProxy, startTlsEchoServer, type TestProxy } from './egress-helpers.js';

const policy = (dlpAction: string): string => `
network:
  - id: inspected
    allow: [api.test, www.test, bad.test, pinned.test]
    inspect: true
  - id: loopback-targets
    allow: [127.0.0.1]
  - id: no-delete
    deny: [api.test]
    methods: [DELETE]
  - id: no-admin
    deny: [api.test]
    paths: ["/admin/**"]
credentials:
  - id: gh
    secret: github-token
    hosts: [api.test]
    header: "Authorization: Bearer {secret}"
  - id: deploy
    secret: deploy-key
    hosts: [api.test]
dlp:
  action: ${dlpAction}
`;

describe('egress TLS inspection', () => {
  const dir = mkdtempSync(join(tmpdir(), 'gatehouse-inspect-'));
  const caFile = join(dir, 'proxy-ca.pem');
  const publicCaFile = join(dir, 'public-ca.pem');
  let proxyCa: CertificateAuthority;
  let publicCa: CertificateAuthority;
  let servers: Record<'api' | 'www' | 'bad' | 'pinned', Awaited<ReturnType<typeof startTlsEchoServer>>>;
  let gate: TestProxy;
  const placeholders = new PlaceholderRegistry();
  const realDeployKey = checksummedToken('ghp_', seededRandom(7));

  before(async () => {
    proxyCa = await CertificateAuthority.loadOrCreate(join(dir, 'data'));
    publicCa = await CertificateAuthority.create('Test public CA');
    const untrusted = await CertificateAuthority.create('Untrusted CA');
    servers = {
      api: await startTlsEchoServer(publicCa, 'api.test'),
      www: await startTlsEchoServer(publicCa, 'www.test'),
      bad: await startTlsEchoServer(untrusted, 'bad.test'),
      pinned: await startTlsEchoServer(publicCa, 'pinned.test'),
    };
    writeFileSync(caFile, proxyCa.certificatePem);
    writeFileSync(publicCaFile, publicCa.certificatePem);
    gate = await startTestProxy(policy('block'), {
      ca: proxyCa,
      upstreamCa: [publicCa.certificatePem],
      scanner: createScanner(),
      placeholders,
      resolveSecret: (name) => (name === 'github-token' ? 'real-gh-token' : name === 'deploy-key' ? realDeployKey : undefined),
      settings: {
        resolve: { 'api.test': ['127.0.0.1'], 'www.test': ['127.0.0.1'], 'bad.test': ['127.0.0.1'], 'pinned.test': ['127.0.0.1'] },
        passThrough: ['pinned.test'],
      },
    });
  });
  after(async () => {
    await gate.close();
    await Promise.all(Object.values(servers).map((server) => server.close()));
    rmSync(dir, { recursive: true, force: true });
  });

  const viaCurl = (args: string[]): ReturnType<typeof curl> => curl(['--cacert', caFile, '-x', gate.url, '-U', 'alice:key-alice', ...args]);

  it('inspects an allowed HTTPS request, injects the credential header and records the request', async () => {
    // The agent's own Authorization (here a real-looking token) is replaced, so it is neither scanned nor sent.
    const agentToken = checksummedToken('ghp_', seededRandom(11));
    const result = await viaCurl(['-H', `Authorization: Bearer ${agentToken}`, `https://api.test:${servers.api.port}/v1/repos?page=2`]);
    assert.equal(result.status, 200, result.stderr + result.body);
    const seen = servers.api.requests.at(-1);
    assert.equal(seen?.url, '/v1/repos?page=2');
    assert.equal(seen.headers.authorization, 'Bearer real-gh-token', 'the grant overwrote the header');
    // The server echoed what it got; the agent reads the injected value redacted.
    const echoed = JSON.parse(result.body) as { headers: Record<string, string> };
    assert.equal(echoed.headers.authorization, 'Bearer [REDACTED:github-token]');
    await new Promise((resolve) => setTimeout(resolve, 100));
    const record = gate.audit.records.find((r) => r.action === 'request' && r.resource === `https://api.test:${servers.api.port}/v1/repos`);
    assert.equal(record?.effect, 'allow');
    assert.equal(record?.details?.method, 'GET');
    assert.equal(record?.details?.inspected, true);
    assert.deepEqual(record?.details?.injected, ['gh']);
    assert.ok(!JSON.stringify(gate.audit.records).includes('real-gh-token'), 'no secret in any record');
    const connect = gate.audit.records.find((r) => r.action === 'connect' && r.resource === `api.test:${servers.api.port}`);
    assert.equal(connect?.details?.inspected, true);
    assert.equal(connect?.details?.sni, 'api.test');
  });

  it('applies method and path rules inside the tunnel', async () => {
    const deleted = await viaCurl(['-X', 'DELETE', `https://api.test:${servers.api.port}/v1/repos/x`]);
    assert.equal(deleted.status, 403);
    assert.equal(deleted.headers['x-gatehouse-reason'], 'policy-denied');
    assert.match(deleted.body, /no-delete/);
    const admin = await viaCurl([`https://api.test:${servers.api.port}/admin/../admin/users`]);
    assert.equal(admin.status, 403);
    assert.match(admin.body, /no-admin/);
    assert.ok(!servers.api.requests.some((r) => r.method === 'DELETE' || r.url.startsWith('/admin')), 'nothing denied reached the server');
  });

  it('forwards an encoded slash inside a segment (GitLab project ids), but decides the path both ways', async () => {
    const project = await viaCurl([`https://api.test:${servers.api.port}/api/v4/projects/group%2fproject`]);
    assert.equal(project.status, 200, project.body);
    assert.equal(servers.api.requests.at(-1)?.url, '/api/v4/projects/group%2Fproject');
    // A server that decodes %2F would route these to /admin/users: denied, and nothing reaches it.
    for (const path of ['/admin%2fusers', '/public%2F..%2Fadmin%2Fusers', '/x/y%2F..%2F..%2Fadmin/users']) {
      const tricked = await viaCurl(['--path-as-is', `https://api.test:${servers.api.port}${path}`]);
      assert.equal(tricked.status, 403, `${path}: ${tricked.body}`);
      assert.match(tricked.body, /no-admin/);
      assert.match(tricked.body, /read as a server may read it \(\/admin\/users\)/);
    }
    assert.ok(!servers.api.requests.some((r) => /admin/i.test(r.url)), 'nothing denied reached the server');
  });

  it('decides a double-encoded path as a server that decodes twice would read it', async () => {
    // `%252e%252e` is `%2e%2e` to a server that decodes once, and `..` to one that decodes twice: /admin/users.
    for (const path of ['/public/%252e%252e/admin/users', '/public/%25252e%25252e/admin/users', '/public%252F..%252Fadmin/users', '/%2561dmin/users']) {
      const tricked = await viaCurl(['--path-as-is', `https://api.test:${servers.api.port}${path}`]);
      assert.equal(tricked.status, 403, `${path}: ${tricked.body}`);
      assert.match(tricked.body, /no-admin/);
    }
    // Five layers deep is no path anyone means; a double-encoded "\\" is refused as the single one is.
    const deep = await viaCurl(['--path-as-is', `https://api.test:${servers.api.port}/public/%25252525252e/x`]);
    assert.equal(deep.status, 400, deep.body);
    const backslash = await viaCurl(['--path-as-is', `https://api.test:${servers.api.port}/public/..%255cadmin/users`]);
    assert.equal(backslash.status, 400, backslash.body);
    assert.ok(!servers.api.requests.some((r) => /admin/i.test(r.url)), 'nothing denied reached the server');
    // An encoded "%" that no reading turns into a denied path goes through as it came.
    const percent = await viaCurl([`https://api.test:${servers.api.port}/v1/100%2541`]);
    assert.equal(percent.status, 200, percent.body);
    assert.equal(servers.api.requests.at(-1)?.url, '/v1/100%2541');
  });

  it('refuses a Host header that differs from the CONNECT target (fronting)', async () => {
    const result = await viaCurl(['-H', 'Host: www.test', `https://api.test:${servers.api.port}/`]);
    assert.equal(result.status, 403);
    assert.equal(result.headers['x-gatehouse-reason'], 'host-mismatch');
  });

  it('denies a CONNECT whose SNI differs from the target', async () => {
    await assert.rejects(
      httpsViaProxy({ connectTo: { port: gate.proxy.address.port }, proxyAuthorization: 'Bearer key-alice', host: 'api.test', port: servers.api.port, servername: 'www.test', ca: proxyCa.certificatePem }),
    );
    await new Promise((resolve) => setTimeout(resolve, 100));
    const record = gate.audit.records.find((r) => r.action === 'connect' && r.details?.reasonCode === 'sni-mismatch');
    assert.ok(record, 'the refused tunnel is recorded with its reason');
    assert.equal(record.effect, 'deny');
  });

  it('closes a pass-through tunnel whose TLS names another host than the CONNECT (no fronting without inspection)', async () => {
    await assert.rejects(
      httpsViaProxy({ connectTo: { port: gate.proxy.address.port }, proxyAuthorization: 'Bearer key-alice', host: 'pinned.test', port: servers.pinned.port, servername: 'api.test', ca: publicCa.certificatePem }),
    );
    await new Promise((resolve) => setTimeout(resolve, 100));
    const record = gate.audit.records.find((r) => r.action === 'connect' && r.resource === `pinned.test:${servers.pinned.port}` && r.details?.reasonCode === 'sni-mismatch');
    assert.ok(record, 'the tunnel is recorded as refused for its SNI');
    assert.equal(record.details?.inspected, false);
  });

  it('records a refused tunnel when the client speaks no TLS to an inspected host', async () => {
    const result = await curl(['-p', '-x', gate.url, '-U', 'alice:key-alice', `http://www.test:${servers.www.port}/plain-inside`]);
    assert.notEqual(result.code, 0, 'curl got no HTTP answer inside the tunnel');
    await new Promise((resolve) => setTimeout(resolve, 100));
    const record = gate.audit.records.find((r) => r.action === 'connect' && r.resource === `www.test:${servers.www.port}` && r.effect === 'deny');
    assert.equal(record?.details?.reasonCode, 'bad-request');
    assert.equal(servers.www.requests.length, 0);
  });

  it('answers 502 when the upstream certificate does not verify', async () => {
    const result = await viaCurl([`https://bad.test:${servers.bad.port}/`]);
    assert.equal(result.status, 502);
    assert.equal(result.headers['x-gatehouse-reason'], 'upstream-certificate');
    assert.equal(servers.bad.requests.length, 0);
  });

  it('tunnels pass-through hosts without inspection: the client sees the server’s own certificate', async () => {
    const direct = await curl(['--cacert', publicCaFile, '-x', gate.url, '-U', 'alice:key-alice', `https://pinned.test:${servers.pinned.port}/pinned`]);
    assert.equal(direct.status, 200, direct.stderr);
    const viaProxyCa = await viaCurl([`https://pinned.test:${servers.pinned.port}/pinned`]);
    assert.notEqual(viaProxyCa.code, 0, 'the proxy CA did not sign what the client saw');
  });

  it('blocks a secret in a request body and records the finding without the secret', async () => {
    const secret = checksummedToken('ghp_', seededRandom(99));
    const before = servers.api.requests.length;
    const result = await viaCurl(['-X', 'POST', '--data-binary', `{"note":"token ${secret}"}`, `https://api.test:${servers.api.port}/v1/notes`]);
    assert.equal(result.status, 403);
    assert.equal(result.headers['x-gatehouse-reason'], 'secret-detected');
    assert.equal(servers.api.requests.length, before, 'the body never reached the server');
    assert.ok(!JSON.stringify(gate.audit.records).includes(secret));
    const record = gate.audit.records.find((r) => r.details?.reasonCode === 'secret-detected');
    assert.ok(Array.isArray(record?.details?.findings));
  });

  it('blocks a secret a JSON body hides behind \\u escapes, which the server reads as the secret itself', async () => {
    const secret = checksummedToken('ghp_', seededRandom(98));
    const hidden = `\\u0067${secret.slice(1)}`;
    assert.equal((JSON.parse(`"${hidden}"`) as string), secret, 'a JSON parser reads the escape as the secret');
    const before = servers.api.requests.length;
    const result = await viaCurl(['-X', 'POST', '-H', 'content-type: application/json', '--data-binary', `{"note":"token ${hidden}"}`, `https://api.test:${servers.api.port}/v1/notes`]);
    assert.equal(result.status, 403);
    assert.equal(result.headers['x-gatehouse-reason'], 'secret-detected');
    assert.equal(servers.api.requests.length, before, 'the body never reached the server');

    const deep = join(dir, 'deep.json');
    writeFileSync(deep, `${'['.repeat(100_000)}"${hidden}"${']'.repeat(100_000)}`);
    const nested = await viaCurl(['-X', 'POST', '--data-binary', `@${deep}`, `https://api.test:${servers.api.port}/v1/notes`]);
    assert.equal(nested.status, 400, 'nesting too deep to write back is not passed unscanned');
    assert.equal(servers.api.requests.length, before);
  });

  it('blocks a secret sent as a header name, where no value holds it', async () => {
    const secret = checksummedToken('ghp_', seededRandom(97));
    const before = servers.api.requests.length;
    const result = await viaCurl(['-H', `${secret}: 1`, `https://api.test:${servers.api.port}/v1/notes`]);
    assert.equal(result.status, 403);
    assert.equal(result.headers['x-gatehouse-reason'], 'secret-detected');
    assert.equal(servers.api.requests.length, before, 'the request never reached the server');
  });

  it('swaps a session placeholder for the real secret on the way to a host its grant names', async () => {
    const grant = gate.holder.current.grants({ agent: 'alice' }).find((g) => g.secret === 'deploy-key');
    assert.ok(grant);
    const placeholder = placeholders.issue('sess-p', grant, realDeployKey);
    const session = await gate.proxy.openSession({ agent: 'alice' }, 'sess-p');
    try {
      const result = await httpsViaProxy({
        connectTo: { path: session.socketPath },
        host: 'api.test',
        port: servers.api.port,
        ca: proxyCa.certificatePem,
        method: 'POST',
        path: '/v1/deploy',
        headers: { 'x-deploy-key': placeholder.value, 'content-type': 'application/json' },
        body: JSON.stringify({ key: placeholder.value }),
      });
      assert.equal(result.status, 200, result.body);
      const seen = servers.api.requests.at(-1);
      assert.equal(seen?.headers['x-deploy-key'], realDeployKey);
      assert.equal((JSON.parse(seen.body) as { key: string }).key, realDeployKey);
      // The echo reflects the real value; the agent reads its placeholder instead.
      assert.ok(!result.body.includes(realDeployKey) && result.body.includes(placeholder.value));

      const exfiltration = await httpsViaProxy({
        connectTo: { path: session.socketPath },
        host: 'www.test',
        port: servers.www.port,
        ca: proxyCa.certificatePem,
        method: 'POST',
        path: '/collect',
        body: `stolen=${placeholder.value}`,
      });
      assert.equal(exfiltration.status, 403);
      assert.equal(exfiltration.headers['x-gatehouse-reason'], 'placeholder-exfiltration');
      assert.equal(servers.www.requests.length, 0);
      const record = gate.audit.records.find((r) => r.details?.reasonCode === 'placeholder-exfiltration');
      assert.equal(record?.principal.session, 'sess-p');
      assert.deepEqual(record?.rules, ['deploy']);
      assert.deepEqual(record?.details?.attemptedExfiltration, { secret: 'deploy-key', rule: 'deploy', session: 'sess-p' });
      assert.ok(!JSON.stringify(gate.audit.records).includes(realDeployKey), 'the real value is in no record');
    } finally {
      await session.close();
    }
  });

  it('works for node fetch through undici’s ProxyAgent', async () => {
    const dispatcher = new ProxyAgent({ uri: gate.url, token: 'Bearer key-alice', requestTls: { ca: proxyCa.certificatePem } });
    try {
      const response = await undiciFetch(`https://api.test:${servers.api.port}/v1/fetch`, { dispatcher });
      assert.equal(response.status, 200);
      const seen = (await response.json()) as { url: string };
      assert.equal(seen.url, '/v1/fetch');
      const denied = await undiciFetch(`https://api.test:${servers.api.port}/v1/x`, { dispatcher, method: 'DELETE' });
      assert.equal(denied.status, 403);
      assert.equal(denied.headers.get('x-gatehouse-reason'), 'policy-denied');
    } finally {
      await dispatcher.close();
    }
  });

  it('redacts instead of blocking when the reloaded policy says redact', async () => {
    const previous = gate.holder.current;
    gate.holder.current = compile(policy('redact'));
    try {
      const secret = checksummedToken('ghp_', seededRandom(5));
      const result = await viaCurl(['-X', 'POST', '--data-binary', `token=${secret}`, `https://api.test:${servers.api.port}/v1/notes`]);
      assert.equal(result.status, 200);
      const seen = JSON.parse(result.body) as { body: string; headers: Record<string, string> };
      assert.ok(!seen.body.includes(secret), 'the server never saw the secret');
      assert.match(seen.body, /REDACTED/);
      assert.equal(Number(seen.headers['content-length']), Buffer.byteLength(seen.body));

      const escaped = checksummedToken('ghp_', seededRandom(6));
      const json = await viaCurl(['-X', 'POST', '--data-binary', `{"note":"token \\u0067${escaped.slice(1)}","n":1}`, `https://api.test:${servers.api.port}/v1/notes`]);
      assert.equal(json.status, 200);
      const sent = (JSON.parse(json.body) as { body: string }).body;
      const read = JSON.parse(sent) as { note: string; n: number };
      assert.ok(!read.note.includes(escaped), 'the server never read the secret');
      assert.match(read.note, /REDACTED/);
      assert.equal(read.n, 1, 'the rest of the JSON is kept');

      const named = checksummedToken('ghp_', seededRandom(4));
      const header = await viaCurl(['-H', `${named}: 1`, '-H', 'x-kept: yes', `https://api.test:${servers.api.port}/v1/notes`]);
      assert.equal(header.status, 200);
      const headers = (JSON.parse(header.body) as { headers: Record<string, string> }).headers;
      assert.ok(!JSON.stringify(headers).toLowerCase().includes(named.toLowerCase()), 'the header named by the secret is dropped');
      assert.equal(headers['x-kept'], 'yes');
    } finally {
      gate.holder.current = previous;
    }
  });
});
