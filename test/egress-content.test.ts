/**
 * What the inspecting proxy does to request content on its way out, seen from the upstream server: real
 * values arrive byte-exact, placeholders survive redaction to be swapped, secrets do not. Real clients (curl
 * through a session, as the sandbox's bridge connects it) and real HTTPS servers on loopback.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { createScanner } from '../src/dlp/index.js';
import { checksummedToken, seededRandom } from '../src/dlp/samples.js';
import { CertificateAuthority } from '../src/egress/ca.js';
import type { EgressSession } from '../src/egress/index.js';
import { PlaceholderRegistry } from '../src/secrets/placeholders.js';
import { bridgeToSession, compile, curl, httpsViaProxy, startTestProxy, startTlsEchoServer, type TestProxy } from './egress-helpers.js';

const policy = (dlpAction: string): string => `
network:
  - id: inspected
    allow: [api.test, www.test, stream.test]
    inspect: true
  - id: loopback-targets
    allow: [127.0.0.1]
credentials:
  - id: unicode
    secret: unicode-password
    hosts: [api.test]
  - id: deploy
    secret: deploy-key
    hosts: [api.test]
  - id: url-reserved
    secret: url-reserved-password
    hosts: [api.test]
dlp:
  action: ${dlpAction}
`;

describe('egress request content', () => {
  const dir = mkdtempSync(join(tmpdir(), 'gatehouse-content-'));
  const caFile = join(dir, 'proxy-ca.pem');
  let gate: TestProxy;
  let api: Awaited<ReturnType<typeof startTlsEchoServer>>;
  /** Streams back, as server-sent events, a real value it learnt earlier (no Content-Length). */
  let stream: { port: number; close(): void };
  let session: EgressSession;
  let bridge: Awaited<ReturnType<typeof bridgeToSession>>;
  const placeholders = new PlaceholderRegistry();
  // Two-, three- and four-byte UTF-8 characters (ü, €, ☃, 𝄞): none of them fits in latin1 as one byte.
  const realUnicode = 'Kennwort7f3a9c8d2e1bXy-schlüssel€☃𝄞';
  const realDeployKey = checksummedToken('ghp_', seededRandom(21));
  // Every character that means something in a URL: path and query separators, the fragment, parameter
  // delimiters, an escape that is not one, a space, and a plus that form decoding would read as a space.
  const realReserved = 'Zq8mN3vR7tY2kL9/pw?rd#1&x=2%41 b+c';
  let proxyCaPem = '';
  const grant = (secret: string) => {
    const found = gate.holder.current.grants({ agent: 'alice' }).find((g) => g.secret === secret);
    assert.ok(found, `a grant for ${secret}`);
    return found;
  };

  before(async () => {
    const proxyCa = await CertificateAuthority.create('Test proxy CA');
    const publicCa = await CertificateAuthority.create('Test public CA');
    writeFileSync(caFile, proxyCa.certificatePem);
    proxyCaPem = proxyCa.certificatePem;
    api = await startTlsEchoServer(publicCa, 'api.test');
    const pair = await publicCa.issue('stream.test');
    const streamServer = createHttpsServer({ cert: pair.certificate, key: pair.key }, (_request, response) => {
      response.writeHead(200, { 'content-type': 'text/event-stream' });
      response.write(`data: first ${realDeployKey}\n\n`);
      setTimeout(() => response.end(`data: second ${realDeployKey}\n\n`), 50);
    });
    await new Promise<void>((resolve) => streamServer.listen(0, '127.0.0.1', resolve));
    stream = {
      port: (streamServer.address() as AddressInfo).port,
      close: () => {
        streamServer.closeAllConnections();
        streamServer.close();
      },
    };
    gate = await startTestProxy(policy('block'), {
      ca: proxyCa,
      upstreamCa: [publicCa.certificatePem],
      scanner: createScanner(),
      placeholders,
      settings: { resolve: { 'api.test': ['127.0.0.1'], 'www.test': ['127.0.0.1'], 'stream.test': ['127.0.0.1'] } },
    });
    session = await gate.proxy.openSession({ agent: 'alice' }, 'sess-c');
    bridge = await bridgeToSession(session.socketPath);
  });
  after(async () => {
    await bridge.close();
    await gate.close();
    await api.close();
    stream.close();
    rmSync(dir, { recursive: true, force: true });
  });

  const viaSession = (args: string[]): ReturnType<typeof curl> => curl(['--cacert', caFile, '-x', `http://127.0.0.1:${bridge.port}`, ...args]);

  it('swaps in a real value with multi-byte UTF-8 characters byte-exact in the body', async () => {
    const placeholder = placeholders.issue('sess-c', grant('unicode-password'), realUnicode);
    const bodyFile = join(dir, 'unicode-body.json');
    // The agent's own non-ASCII text around the placeholder must pass untouched as well.
    writeFileSync(bodyFile, `{"password":"${placeholder.value}","note":"naïve ☃ café"}`);
    const result = await viaSession(['-X', 'POST', '--data-binary', `@${bodyFile}`, `https://api.test:${api.port}/v1/login`]);
    assert.equal(result.status, 200, result.stderr + result.body);
    const seen = api.requests.at(-1);
    assert.equal(seen?.url, '/v1/login');
    assert.deepEqual(seen.bodyBytes, Buffer.from(`{"password":"${realUnicode}","note":"naïve ☃ café"}`, 'utf8'));
  });

  it('swaps in a real value with multi-byte UTF-8 characters byte-exact in a header', async () => {
    const placeholder = placeholders.issue('sess-c', grant('unicode-password'), realUnicode);
    const result = await viaSession(['-H', `X-Password: ${placeholder.value}`, `https://api.test:${api.port}/v1/header`]);
    assert.equal(result.status, 200, result.stderr + result.body);
    const seen = api.requests.at(-1);
    assert.equal(seen?.url, '/v1/header');
    const header = seen.rawHeaders[seen.rawHeaders.findIndex((name) => name.toLowerCase() === 'x-password') + 1];
    assert.deepEqual(Buffer.from(header ?? '', 'latin1'), Buffer.from(realUnicode, 'utf8'), 'the header carries the value as UTF-8 bytes');
  });

  it('swaps a real value with multi-byte UTF-8 characters into a URL as percent-encoded UTF-8', async () => {
    const placeholder = placeholders.issue('sess-c', grant('unicode-password'), realUnicode);
    const result = await viaSession([`https://api.test:${api.port}/v1/query?password=${placeholder.value}&x=1`]);
    assert.equal(result.status, 200, result.stderr + result.body);
    const seen = api.requests.at(-1);
    assert.equal(seen?.url, `/v1/query?password=${encodeURIComponent(realUnicode)}&x=1`);
    assert.equal(new URL(seen.url, 'https://api.test').searchParams.get('password'), realUnicode);
  });

  it('swaps a real value with URL-reserved characters into a query percent-encoded, so it stays one value', async () => {
    const placeholder = placeholders.issue('sess-c', grant('url-reserved-password'), realReserved);
    // The client encodes the placeholder as it would any value (it holds "/", "?", "#", "&", "%", " ", "+" too).
    const sent = encodeURIComponent(placeholder.value);
    const result = await httpsViaProxy({ connectTo: { path: session.socketPath }, host: 'api.test', port: api.port, ca: proxyCaPem, path: `/v1/query?password=${sent}&x=1` });
    assert.equal(result.status, 200, result.body);
    const seen = api.requests.at(-1);
    const encoded = 'Zq8mN3vR7tY2kL9%2Fpw%3Frd%231%26x%3D2%2541%20b%2Bc';
    assert.equal(seen?.url, `/v1/query?password=${encoded}&x=1`);
    const url = new URL(seen.url, 'https://api.test');
    assert.equal(url.searchParams.get('password'), realReserved);
    assert.equal(url.searchParams.get('x'), '1', 'the parameter after the secret is still its own');
    // The server quoted the URL back: the agent reads its placeholder there, not the secret.
    assert.ok(!result.body.includes(encoded) && !result.body.includes(realReserved), result.body);
    assert.ok(result.body.includes(`password=${sent}`), result.body);
  });

  it('swaps a real value with URL-reserved characters into a path segment percent-encoded, so it stays one segment', async () => {
    // With a "/" too: encoded, it stays inside the segment, and the real value's "/" is encoded again.
    const real = 'Zq8mN3vR7tY2kL9;pw/rd?x#1&x=2%41 b+c';
    const placeholder = placeholders.issue('sess-c', grant('url-reserved-password'), real);
    const result = await httpsViaProxy({ connectTo: { path: session.socketPath }, host: 'api.test', port: api.port, ca: proxyCaPem, path: `/v1/users/${encodeURIComponent(placeholder.value)}/keys` });
    assert.equal(result.status, 200, result.body);
    const seen = api.requests.at(-1);
    assert.equal(seen?.url, '/v1/users/Zq8mN3vR7tY2kL9%3Bpw%2Frd%3Fx%231%26x%3D2%2541%20b%2Bc/keys');
    assert.deepEqual(new URL(seen.url, 'https://api.test').pathname.split('/').map(decodeURIComponent), ['', 'v1', 'users', real, 'keys']);
  });

  it('swaps a placeholder the client left unencoded in a query, percent-encoding the real value', async () => {
    const placeholder = placeholders.issue('sess-c', grant('url-reserved-password'), 'Zq8mN3vR7tY2kL9/a?b');
    assert.match(placeholder.value, /\/.*\?/, 'the placeholder keeps the "/" and "?" a query may carry as they are');
    const result = await httpsViaProxy({ connectTo: { path: session.socketPath }, host: 'api.test', port: api.port, ca: proxyCaPem, path: `/v1/raw?token=${placeholder.value}&x=1` });
    assert.equal(result.status, 200, result.body);
    assert.equal(api.requests.at(-1)?.url, '/v1/raw?token=Zq8mN3vR7tY2kL9%2Fa%3Fb&x=1');
  });

  it('in redact mode, redacts a real secret but still swaps the placeholder beside it', async () => {
    const previous = gate.holder.current;
    gate.holder.current = compile(policy('redact'));
    try {
      const placeholder = placeholders.issue('sess-c', grant('deploy-key'), realDeployKey);
      // The placeholder is shaped like the real key, so a fresh scan would take it for a leak.
      assert.ok(createScanner().scan(placeholder.value).length > 0, 'the placeholder looks like a secret to the scanner');
      const leaked = checksummedToken('ghp_', seededRandom(33));
      const result = await viaSession(['-X', 'POST', '--data-binary', `deploy=${placeholder.value}&leak=${leaked}`, `https://api.test:${api.port}/v1/deploy`]);
      assert.equal(result.status, 200, result.stderr + result.body);
      const seen = api.requests.at(-1);
      assert.equal(seen?.url, '/v1/deploy');
      assert.ok(seen.body.startsWith(`deploy=${realDeployKey}&leak=`), `the real key arrived: ${seen.body}`);
      assert.ok(!seen.body.includes(leaked), 'the other secret was redacted');
      assert.match(seen.body, /REDACTED/);
      assert.equal(Number(seen.headers['content-length']), seen.bodyBytes.length);
    } finally {
      gate.holder.current = previous;
    }
  });

  it('gives the agent back its placeholder where the server reflects the real value', async () => {
    const placeholder = placeholders.issue('sess-c', grant('deploy-key'), realDeployKey);
    // --compressed asks for gzip; the proxy asks the server for a plain body instead, so it can mask it.
    const result = await viaSession(['--compressed', '-X', 'POST', '--data-binary', `deploy=${placeholder.value}`, `https://api.test:${api.port}/v1/echo`]);
    assert.equal(result.status, 200, result.stderr + result.body);
    assert.equal(api.requests.at(-1)?.body, `deploy=${realDeployKey}`, 'the server got the real value');
    assert.equal(api.requests.at(-1)?.headers['accept-encoding'], 'identity');
    assert.ok(!result.body.includes(realDeployKey), 'the agent never reads the real value');
    const echoed = JSON.parse(result.body) as { body: string };
    assert.equal(echoed.body, `deploy=${placeholder.value}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
    const record = gate.audit.records.find((r) => r.action === 'request' && r.resource === `https://api.test:${api.port}/v1/echo`);
    assert.equal(record?.details?.masked, 1);
  });

  it('masks a real value in a streamed response piece by piece, and it still streams', async () => {
    const placeholder = placeholders.issue('sess-c', grant('deploy-key'), realDeployKey);
    const result = await viaSession(['-N', `https://stream.test:${stream.port}/events`]);
    assert.equal(result.status, 200, result.stderr + result.body);
    assert.equal(result.headers['transfer-encoding'], 'chunked', 'not held back to be measured');
    assert.equal(result.body, `data: first ${placeholder.value}\n\ndata: second ${placeholder.value}\n\n`);
  });
});
