/**
 * Tunnels that carry plain HTTP (CONNECT with curl --proxytunnel, SOCKS5, raw sockets): every request on
 * them is read, its Host must be the tunnel's target, and it is decided and recorded like a plain request.
 * Passed on blind, a tunnel opened for one host could ask the server behind it for any other host it
 * serves (fronting). Other protocols still pass as bytes.
 */
import assert from 'node:assert/strict';
import { createServer as createHttpServer, type IncomingMessage } from 'node:http';
import { connect, createServer, type AddressInfo, type Socket } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { createScanner } from '../src/dlp/index.js';
import { checksummedToken, seededRandom } from '../src/dlp/samples.js';
import { readHttpStart } from '../src/egress/first-bytes.js';
import { curl, reasonOf, startEchoServer, startTestProxy, type TestProxy, waitFor } from './egress-helpers.js';

const POLICY = `
network:
  - id: api
    allow: [api.test]
  - id: plain-denied
    deny: [secure-only.test]
    schemes: [http]
  - id: secure-only-any
    allow: [secure-only.test]
  - id: loopback-targets
    allow: [127.0.0.1]
`;

/** Opens a CONNECT tunnel through the proxy as alice, then writes `bytes` and collects the answer until close. */
function throughTunnel(proxyPort: number, target: string, bytes: string, timeoutMs = 3_000): Promise<string> {
  return new Promise((resolve) => {
    const socket: Socket = connect(proxyPort, '127.0.0.1');
    let data = '';
    let open = false;
    const timer = setTimeout(() => socket.destroy(), timeoutMs);
    socket.on('connect', () => socket.write(`CONNECT ${target} HTTP/1.1\r\nHost: ${target}\r\nProxy-Authorization: Bearer key-alice\r\n\r\n`));
    socket.on('data', (chunk: Buffer) => {
      data += chunk.toString('latin1');
      if (!open && data.includes('\r\n\r\n')) {
        open = true;
        assert.match(data, /^HTTP\/1\.1 200 /, data);
        // What follows the proxy's answer is the server's already (a protocol where the server speaks first).
        data = data.slice(data.indexOf('\r\n\r\n') + 4);
        socket.write(bytes);
      }
    });
    socket.on('error', () => undefined);
    socket.on('close', () => {
      clearTimeout(timer);
      resolve(data);
    });
  });
}

describe('plain HTTP inside a tunnel', () => {
  let echo: Awaited<ReturnType<typeof startEchoServer>>;
  const seen: { url: string | undefined; host: string | undefined }[] = [];
  let gate: TestProxy;
  const resolve = { 'api.test': ['127.0.0.1'], 'secure-only.test': ['127.0.0.1'] };

  before(async () => {
    echo = await startEchoServer((request: IncomingMessage) => {
      seen.push({ url: request.url, host: request.headers.host });
      return false;
    });
    gate = await startTestProxy(POLICY, { scanner: createScanner(), settings: { resolve, socks: { listen: '127.0.0.1:0' } } });
  });
  after(async () => {
    await gate.close();
    await echo.close();
  });

  it('forwards a request whose Host is the CONNECT target, and records it beside the tunnel', async () => {
    const result = await curl(['-p', '-x', gate.url, '-U', 'alice:key-alice', `http://api.test:${echo.port}/inside?q=1`]);
    assert.equal(result.status, 200, result.stderr + result.body);
    assert.equal((JSON.parse(result.body) as { url: string }).url, '/inside?q=1');
    const request = gate.audit.records.find((r) => r.action === 'request' && r.resource === `http://api.test:${echo.port}/inside`);
    assert.ok(request, 'the request inside the tunnel has a record');
    assert.equal(request.effect, 'allow');
    assert.equal(request.details?.method, 'GET');
    await waitFor(() => gate.audit.records.some((r) => r.action === 'connect' && r.correlationId === request.details?.tunnel));
    const tunnel = gate.audit.records.find((r) => r.correlationId === request.details?.tunnel);
    assert.equal(tunnel?.details?.scheme, 'http');
    assert.equal(tunnel?.details?.requests, 1);
  });

  it('refuses a request naming another Host than the CONNECT target (fronting), and sends it nowhere', async () => {
    const before = seen.length;
    const result = await curl(['-p', '-x', gate.url, '-U', 'alice:key-alice', '-H', 'Host: internal-admin.test', `http://api.test:${echo.port}/fronted`]);
    assert.equal(result.status, 403, result.stderr + result.body);
    assert.equal(result.headers['x-gatehouse-reason'], 'host-mismatch');
    assert.equal(seen.length, before, 'the server behind the tunnel saw nothing');
  });

  it('checks every request on a kept-alive tunnel, not just the first', async () => {
    const before = seen.length;
    const target = `api.test:${echo.port}`;
    const raw = await throughTunnel(
      gate.proxy.address.port,
      target,
      `GET /first HTTP/1.1\r\nHost: ${target}\r\n\r\nGET /second HTTP/1.1\r\nHost: internal-admin.test\r\nConnection: close\r\n\r\n`,
    );
    assert.match(raw, /^HTTP\/1\.1 200 /, raw.slice(0, 200));
    assert.equal(reasonOf(raw.slice(raw.indexOf('HTTP/1.1', 10))), 'host-mismatch', raw);
    assert.deepEqual(seen.slice(before).map((s) => s.url), ['/first']);
  });

  it('applies a rule that denies plain http to a host the tunnel was allowed to', async () => {
    const before = seen.length;
    const result = await curl(['-p', '-x', gate.url, '-U', 'alice:key-alice', `http://secure-only.test:${echo.port}/`]);
    assert.equal(result.status, 403, result.stderr + result.body);
    assert.equal(result.headers['x-gatehouse-reason'], 'policy-denied');
    assert.match(result.body, /plain-denied/);
    assert.equal(seen.length, before);
  });

  it('reads HTTP inside a SOCKS5 tunnel the same way', async () => {
    const socks = `socks5h://alice:key-alice@127.0.0.1:${gate.proxy.socksAddress!.port}`;
    const ok = await curl(['-x', socks, `http://api.test:${echo.port}/via-socks`]);
    assert.equal(ok.status, 200, ok.stderr + ok.body);
    const before = seen.length;
    const fronted = await curl(['-x', socks, '-H', 'Host: internal-admin.test', `http://api.test:${echo.port}/via-socks`]);
    assert.equal(fronted.status, 403, fronted.stderr + fronted.body);
    assert.equal(fronted.headers['x-gatehouse-reason'], 'host-mismatch');
    assert.equal(seen.length, before);
  });

  it('carries a WebSocket upgrade (ws://) after checking its request, and refuses a fronted one and any other protocol', async () => {
    const upgrades: (string | undefined)[] = [];
    const server = createHttpServer();
    server.on('upgrade', (request: IncomingMessage, socket: Socket) => {
      upgrades.push(request.headers.host);
      socket.end('HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n');
    });
    await new Promise<void>((done) => server.listen(0, '127.0.0.1', done));
    try {
      const target = `api.test:${(server.address() as AddressInfo).port}`;
      const upgrade = (host: string, protocol = 'websocket') =>
        `GET /socket HTTP/1.1\r\nHost: ${host}\r\nUpgrade: ${protocol}\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n`;
      const raw = await throughTunnel(gate.proxy.address.port, target, upgrade(target));
      assert.match(raw, /^HTTP\/1\.1 101 /, raw);
      const fronted = await throughTunnel(gate.proxy.address.port, target, upgrade('internal-admin.test'));
      assert.equal(reasonOf(fronted), 'host-mismatch', fronted);
      assert.deepEqual(upgrades, [target], 'the fronted upgrade reached no server');
      // Its URL and headers are scanned like any request's: a token in them never reaches the server.
      const token = checksummedToken('ghp_', seededRandom(7));
      const leaking = await throughTunnel(gate.proxy.address.port, target, upgrade(target).replace('\r\n\r\n', `\r\nAuthorization: token ${token}\r\n\r\n`));
      assert.equal(reasonOf(leaking), 'secret-detected', leaking);
      const inQuery = await throughTunnel(gate.proxy.address.port, target, upgrade(target).replace('/socket', `/socket?t=${encodeURIComponent(token)}`));
      assert.equal(reasonOf(inQuery), 'secret-detected', inQuery);
      // A body would never be read once the connection is upgraded, so never judged: refused.
      const withBody = await throughTunnel(gate.proxy.address.port, target, upgrade(target).replace('\r\n\r\n', '\r\nContent-Length: 5\r\n\r\n'));
      assert.equal(reasonOf(withBody), 'bad-request', withBody);
      // Another protocol's bytes could not be read: h2c would carry HTTP/2 requests past the path rules.
      for (const protocol of ['h2c', 'H2C', 'websocket, h2c', 'echo']) {
        const other = await throughTunnel(gate.proxy.address.port, target, upgrade(target, protocol).replace('\r\n\r\n', '\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n'));
        assert.match(other, /^HTTP\/1\.1 501 /, `${protocol}: ${other}`);
        assert.equal(reasonOf(other), 'unsupported', other);
      }
      assert.deepEqual(upgrades, [target], 'no refused upgrade reached the server');
      await waitFor(() => gate.audit.records.some((r) => r.resource === `http://${target}/socket` && r.details?.upgrade === 'websocket' && r.details?.ended !== undefined));
      await waitFor(() => gate.audit.records.some((r) => r.details?.upgrade === 'h2c' && r.details?.reasonCode === 'unsupported'));
    } finally {
      server.close();
    }
  });

  it('refuses HTTP/2 with prior knowledge (the h2c preface), whose requests it cannot read, and sends the server nothing', async () => {
    let received = 0;
    const server = createServer((socket) => socket.on('data', (chunk: Buffer) => (received += chunk.length)));
    await new Promise<void>((done) => server.listen(0, '127.0.0.1', done));
    try {
      const target = `api.test:${(server.address() as AddressInfo).port}`;
      const raw = await throughTunnel(gate.proxy.address.port, target, 'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00');
      assert.match(raw, /^HTTP\/1\.1 400 /, raw);
      assert.equal(reasonOf(raw), 'bad-request', raw);
      assert.equal(received, 0, 'nothing reached the server');
    } finally {
      server.close();
    }
  });

  it("records a request it cannot parse under the tunnel's caller and beside the tunnel's record", async () => {
    const target = `api.test:${echo.port}`;
    const raw = await throughTunnel(gate.proxy.address.port, target, `GET /x HTTP/1.1\r\nHost: ${target}\r\nnot a header\r\n\r\n`);
    assert.equal(reasonOf(raw), 'bad-request', raw);
    await waitFor(() => gate.audit.records.some((r) => r.action === 'request' && r.resource === `http://${target}` && r.details?.reasonCode === 'bad-request'));
    const record = gate.audit.records.find((r) => r.action === 'request' && r.resource === `http://${target}` && r.details?.reasonCode === 'bad-request');
    assert.equal(record?.principal.agent, 'alice');
    await waitFor(() => gate.audit.records.some((r) => r.action === 'connect' && r.correlationId === record?.details?.tunnel));
  });

  it('refuses an HTTP/0.9 request line, whose path would pass the path rules unread', async () => {
    const before = seen.length;
    const raw = await throughTunnel(gate.proxy.address.port, `api.test:${echo.port}`, 'GET /inside\r\n');
    assert.equal(raw, '', 'the tunnel is closed');
    assert.equal(seen.length, before, 'nothing reached the server');
    await waitFor(() => gate.audit.records.some((r) => r.action === 'connect' && r.resource === `api.test:${echo.port}` && r.reason?.includes('HTTP/0.9') === true));
  });

  it('still passes a protocol that is not HTTP as bytes, both ways', async () => {
    const banner = createServer((socket) => {
      socket.write('SSH-2.0-Test\r\n');
      socket.on('data', (data: Buffer) => socket.end(`echo:${data.toString()}`));
    });
    await new Promise<void>((done) => banner.listen(0, '127.0.0.1', done));
    try {
      const port = (banner.address() as AddressInfo).port;
      const raw = await throughTunnel(gate.proxy.address.port, `api.test:${port}`, 'SSH-2.0-Client 1.0\r\n');
      assert.equal(raw, 'SSH-2.0-Test\r\necho:SSH-2.0-Client 1.0\r\n');
    } finally {
      banner.close();
    }
  });
});

describe('readHttpStart', () => {
  const read = (text: string | Buffer) => readHttpStart(typeof text === 'string' ? Buffer.from(text, 'latin1') : text);

  it('finds a request line, however a lenient server might still read it', () => {
    for (const text of ['GET / HTTP/1.1\r\n', 'GET / HTTP/1.1', '\r\n\r\nPOST /x HTTP/1.0\r\n', 'get / http/1.1\n', 'GET\t/ HTTP/1.1\r\n', 'PRI * HTTP/2.0\r\n', 'GET /\xff\x00 HTTP/1.1\r\n', ' GET / HTTP/1.1\r\n']) {
      assert.equal(read(text), 'http', JSON.stringify(text));
    }
  });

  it('tells an HTTP/0.9 request line apart', () => {
    for (const text of ['GET /admin\r\n', 'GET /\n', '\r\nGET /a?b=c \r\n']) assert.equal(read(text), 'http/0.9', JSON.stringify(text));
  });

  it('waits for more while the bytes can still become one', () => {
    for (const text of ['', 'G', 'GET', 'GET /path', '\r\n', 'GET /a-long-path-without-a-version-yet']) {
      assert.equal(read(text), 'incomplete', JSON.stringify(text));
    }
  });

  it('lets other protocols go at once: binary, Redis, an SSH banner, SMTP', () => {
    for (const text of [Buffer.from([0, 0, 0, 8, 4, 210, 22, 47]), '*1\r\n$4\r\nPING\r\n', 'SSH-2.0-OpenSSH_9.2p1 Debian\r\n', 'EHLO client.test\r\n', 'GET somekey\r\n', `${'A'.repeat(40)} / HTTP/1.1\r\n`]) {
      assert.equal(read(text), 'other', JSON.stringify(text.toString()));
    }
  });
});
