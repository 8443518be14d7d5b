/**
 * What an agent reads back when an allowed server reflects a real value the proxy put into its request: its
 * placeholder (or a redaction, for a credential header it never held), however the server frames, encodes
 * or splits the response. Real clients (curl through a session, as the sandbox's bridge connects it, and
 * through the TCP listener with an agent key) and a real HTTPS server on loopback that misbehaves on purpose.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer as createHttpsServer } from 'node:https';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { brotliCompressSync, brotliDecompressSync, gunzipSync, gzipSync, inflateSync } from 'node:zlib';
import { checksummedToken, seededRandom } from '../src/dlp/samples.js';
import { CertificateAuthority } from '../src/egress/ca.js';
import type { EgressSession } from '../src/egress/index.js';
import { PlaceholderRegistry } from '../src/secrets/placeholders.js';
import { bridgeToSession, curl, startTestProxy, type CurlResult, type TestProxy } from './egress-helpers.js';

const POLICY = `
network:
  - id: reflect
    allow: [reflect.test]
    inspect: true
  - id: loopback-targets
    allow: [127.0.0.1]
credentials:
  - id: deploy
    secret: deploy-key
    hosts: [reflect.test]
  - id: gh
    secret: github-token
    hosts: [reflect.test]
    header: "Authorization: Bearer {secret}"
`;

/** What the mask window is about: bodies over this many bytes were once passed on as they came. */
const INSPECTED_LIMIT = 64 * 1024;

/** What the reflecting server learnt from a request: the body and the Authorization header it was sent. */
function reflected(request: IncomingMessage, body: Buffer): string {
  return `body=${body.toString('utf8')} authorization=${request.headers.authorization ?? ''}`;
}

const wait = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Every reading of a response an agent could make: the bytes as they came, and decoded by each coding a
 * client knows (whatever the headers claim), and reversed (the test server's own made-up coding).
 */
function readings(result: CurlResult): string[] {
  const bytes = Buffer.from(result.body, 'latin1');
  const out = [result.statusLine, bytes.toString('utf8'), Buffer.from(bytes).reverse().toString('utf8'), ...Object.entries(result.headers).flat(), result.stderr];
  for (const decode of [gunzipSync, brotliDecompressSync, inflateSync]) {
    try {
      out.push(decode(bytes).toString('utf8'));
    } catch {
      // Not in that coding.
    }
  }
  return out;
}

describe('egress response masking', () => {
  const dir = mkdtempSync(join(tmpdir(), 'gatehouse-mask-'));
  const caFile = join(dir, 'proxy-ca.pem');
  const placeholders = new PlaceholderRegistry();
  const realDeployKey = checksummedToken('ghp_', seededRandom(41));
  const realGithubToken = checksummedToken('ghp_', seededRandom(42));
  let gate: TestProxy;
  let session: EgressSession;
  let bridge: Awaited<ReturnType<typeof bridgeToSession>>;
  let reflect: { port: number; close(): void };
  let deployPlaceholder = '';

  const routes: Record<string, (request: IncomingMessage, response: ServerResponse, body: Buffer) => Promise<void> | void> = {
    // Compressed although the proxy asked for identity.
    '/gzip': (request, response, body) => {
      const compressed = gzipSync(reflected(request, body));
      response.writeHead(200, { 'content-type': 'text/plain', 'content-encoding': 'gzip', 'content-length': compressed.length });
      response.end(compressed);
    },
    '/br': (request, response, body) => {
      const compressed = brotliCompressSync(reflected(request, body));
      response.writeHead(200, { 'content-type': 'text/plain', 'content-encoding': 'br', 'content-length': compressed.length });
      response.end(compressed);
    },
    // A transfer coding other than chunked: the proxy drops Transfer-Encoding (hop-by-hop), so the agent
    // would get the gzip bytes with nothing saying so.
    '/transfer-gzip': (request, response, body) => {
      response.writeHead(200, { 'content-type': 'text/plain', 'transfer-encoding': 'gzip, chunked' });
      response.end(gzipSync(reflected(request, body)));
    },
    // Labelled gzip, sent plain: a client that reads it as it is would see the value.
    '/false-gzip': (request, response, body) => {
      const text = reflected(request, body);
      response.writeHead(200, { 'content-type': 'text/plain', 'content-encoding': 'gzip', 'content-length': Buffer.byteLength(text) });
      response.end(text);
    },
    // A coding no proxy knows (here: the bytes reversed), which an agent could still undo.
    '/odd-coding': (request, response, body) => {
      const coded = Buffer.from(reflected(request, body), 'utf8').reverse();
      response.writeHead(200, { 'content-type': 'text/plain', 'content-encoding': 'x-reverse', 'content-length': coded.length });
      response.end(coded);
    },
    // Over the inspected size, the real value at the very end and cut in two between writes.
    '/large': async (request, response, body) => {
      const tail = Buffer.from(reflected(request, body), 'utf8');
      const filler = Buffer.alloc(4 * INSPECTED_LIMIT, 'x');
      const at = filler.length + tail.indexOf(realDeployKey) + 10;
      const whole = Buffer.concat([filler, tail]);
      response.writeHead(200, { 'content-type': 'text/plain', 'content-length': whole.length });
      response.write(whole.subarray(0, at));
      await wait(50);
      response.end(whole.subarray(at));
    },
    // A stream (no length), the real value cut in two between its pieces.
    '/split-stream': async (request, response, body) => {
      const text = Buffer.from(reflected(request, body), 'utf8');
      const at = text.indexOf(realDeployKey) + 10;
      response.writeHead(200, { 'content-type': 'text/event-stream' });
      response.write(text.subarray(0, at));
      await wait(50);
      response.end(text.subarray(at));
    },
    // The value as a header name and as the reason phrase (headers' values were already masked).
    '/head-echo': (request, response, body) => {
      const value = /deploy=(\S+)/.exec(body.toString('utf8'))?.[1] ?? '';
      response.setHeader(value, 'seen');
      response.writeHead(200, `OK ${value}`, { 'content-type': 'text/plain', 'content-length': 2 });
      response.end('ok');
    },
    '/authorization-echo': (request, response, body) => {
      const text = reflected(request, body);
      response.writeHead(200, { 'content-type': 'text/plain', 'x-seen-authorization': request.headers.authorization ?? '', 'content-length': Buffer.byteLength(text) });
      response.end(text);
    },
  };

  before(async () => {
    const proxyCa = await CertificateAuthority.create('Test proxy CA');
    const publicCa = await CertificateAuthority.create('Test public CA');
    writeFileSync(caFile, proxyCa.certificatePem);
    const pair = await publicCa.issue('reflect.test');
    const server = createHttpsServer({ cert: pair.certificate, key: pair.key }, (request, response) => {
      const chunks: Buffer[] = [];
      request.on('data', (chunk: Buffer) => chunks.push(chunk));
      request.on('end', () => {
        const route = routes[(request.url ?? '').split('?')[0] as string];
        if (!route) {
          response.writeHead(404).end();
          return;
        }
        void route(request, response, Buffer.concat(chunks));
      });
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    reflect = {
      port: (server.address() as AddressInfo).port,
      close: () => {
        server.closeAllConnections();
        server.close();
      },
    };
    gate = await startTestProxy(POLICY, {
      ca: proxyCa,
      upstreamCa: [publicCa.certificatePem],
      placeholders,
      resolveSecret: (name) => (name === 'deploy-key' ? realDeployKey : name === 'github-token' ? realGithubToken : undefined),
      settings: { resolve: { 'reflect.test': ['127.0.0.1'] }, limits: { maxInspectedBytes: INSPECTED_LIMIT } },
    });
    session = await gate.proxy.openSession({ agent: 'alice' }, 'sess-mask');
    bridge = await bridgeToSession(session.socketPath);
    const grant = gate.holder.current.grants({ agent: 'alice' }).find((g) => g.secret === 'deploy-key');
    assert.ok(grant);
    deployPlaceholder = placeholders.issue('sess-mask', grant, realDeployKey).value;
  });
  after(async () => {
    await bridge.close();
    await gate.close();
    reflect.close();
    rmSync(dir, { recursive: true, force: true });
  });

  /** The agent in its session sends its placeholder to `path`; the server gets the real value and reflects it. */
  const sendPlaceholder = (path: string, extra: string[] = []): Promise<CurlResult> =>
    curl(['--cacert', caFile, '-x', `http://127.0.0.1:${bridge.port}`, ...extra, '--data-binary', `deploy=${deployPlaceholder}`, `https://reflect.test:${reflect.port}${path}`]);

  const assertNeverRead = (result: CurlResult, ...reals: string[]): void => {
    for (const reading of readings(result)) for (const real of reals) assert.ok(!reading.includes(real), `the agent can read a real value: ${reading.slice(0, 300)}`);
  };

  const recordFor = async (path: string): Promise<Record<string, unknown> | undefined> => {
    await wait(100);
    return gate.audit.records.findLast((r) => r.action === 'request' && r.resource === `https://reflect.test:${reflect.port}${path}`)?.details;
  };

  it('masks a real value in a gzip body the server sent although the proxy asked for identity', async () => {
    const result = await sendPlaceholder('/gzip');
    assert.equal(result.status, 200, result.stderr + result.body);
    assertNeverRead(result, realDeployKey, realGithubToken);
    assert.equal(result.headers['content-encoding'], undefined, 'the agent gets the body decoded');
    assert.equal(result.body, `body=deploy=${deployPlaceholder} authorization=Bearer [REDACTED:github-token]`);
    assert.equal((await recordFor('/gzip'))?.masked, 2);
  });

  it('masks a real value in a brotli body the server sent although the proxy asked for identity', async () => {
    const result = await sendPlaceholder('/br');
    assert.equal(result.status, 200, result.stderr + result.body);
    assertNeverRead(result, realDeployKey, realGithubToken);
    assert.equal(result.body, `body=deploy=${deployPlaceholder} authorization=Bearer [REDACTED:github-token]`);
  });

  it('masks a real value in a body sent with a gzip transfer coding', async () => {
    const result = await sendPlaceholder('/transfer-gzip');
    assert.equal(result.status, 200, result.stderr + result.body);
    assertNeverRead(result, realDeployKey, realGithubToken);
    assert.equal(result.body, `body=deploy=${deployPlaceholder} authorization=Bearer [REDACTED:github-token]`);
  });

  it('refuses a response in a content coding the proxy cannot read, with a reason and a record', async () => {
    const result = await sendPlaceholder('/odd-coding');
    assert.equal(result.status, 502, result.body);
    assert.equal(result.headers['x-gatehouse-reason'], 'response-unmaskable');
    assert.match(result.body, /x-reverse/);
    assertNeverRead(result, realDeployKey, realGithubToken);
    const record = await recordFor('/odd-coding');
    assert.equal(record?.reasonCode, 'response-unmaskable');
    // A HEAD has no body to mask: its headers pass, coding and all.
    const head = await curl(['--cacert', caFile, '-x', `http://127.0.0.1:${bridge.port}`, '-I', `https://reflect.test:${reflect.port}/gzip`]);
    assert.equal(head.status, 200, head.stderr + head.body);
    assert.equal(head.headers['content-encoding'], 'gzip');
  });

  it('refuses a response labelled gzip whose body does not decode, with a reason and a record', async () => {
    const result = await sendPlaceholder('/false-gzip');
    assert.equal(result.status, 502, result.body);
    assert.equal(result.headers['x-gatehouse-reason'], 'response-unmaskable');
    assert.match(result.body, /gzip-coded response body did not decode/);
    assertNeverRead(result, realDeployKey, realGithubToken);
    assert.equal((await recordFor('/false-gzip'))?.reasonCode, 'response-unmaskable');
  });

  it('masks a real value at the end of a body over the inspected size, cut in two between writes', async () => {
    const result = await sendPlaceholder('/large');
    assert.equal(result.status, 200, result.stderr);
    assertNeverRead(result, realDeployKey, realGithubToken);
    assert.ok(result.body.endsWith(`body=deploy=${deployPlaceholder} authorization=Bearer [REDACTED:github-token]`), result.body.slice(-200));
    assert.equal(result.body.length, 4 * INSPECTED_LIMIT + `body=deploy=${deployPlaceholder} authorization=Bearer [REDACTED:github-token]`.length);
  });

  it('masks a real value cut in two between the pieces of a streamed response', async () => {
    const result = await sendPlaceholder('/split-stream', ['-N']);
    assert.equal(result.status, 200, result.stderr);
    assert.equal(result.headers['transfer-encoding'], 'chunked');
    assertNeverRead(result, realDeployKey, realGithubToken);
    assert.equal(result.body, `body=deploy=${deployPlaceholder} authorization=Bearer [REDACTED:github-token]`);
  });

  it('masks a real value a server puts in a header name or its reason phrase', async () => {
    const result = await sendPlaceholder('/head-echo');
    assert.equal(result.status, 200, result.stderr + result.body);
    assert.ok(!result.statusLine.includes(realDeployKey), result.statusLine);
    assert.equal(result.statusLine, `HTTP/1.1 200 OK ${deployPlaceholder}`);
    assert.ok(!Object.keys(result.headers).includes(realDeployKey.toLowerCase()), Object.keys(result.headers).join(', '));
    assert.equal(result.headers[deployPlaceholder.toLowerCase()], 'seen');
  });

  it('redacts an injected credential a server reflects to a caller who holds no placeholder for it', async () => {
    // Through the TCP listener with an agent key: no session, so no placeholders at all.
    const result = await curl(['--cacert', caFile, '-x', gate.url, '-U', 'alice:key-alice', `https://reflect.test:${reflect.port}/authorization-echo`]);
    assert.equal(result.status, 200, result.stderr + result.body);
    assertNeverRead(result, realGithubToken);
    assert.equal(result.headers['x-seen-authorization'], 'Bearer [REDACTED:github-token]');
    assert.equal(result.body, 'body= authorization=Bearer [REDACTED:github-token]');
  });
});
