/**
 * `schemes:` rules and tunnels. A tunnel the proxy inspects is https; one it does not inspect has no scheme
 * until the client's first bytes show a TLS ClientHello, and is then decided again as https. Real clients
 * (curl over CONNECT and SOCKS5, node's TLS client) and real servers on loopback.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { connect, createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { CertificateAuthority } from '../src/egress/ca.js';
import { captureHello, curl, startEchoServer, startTestProxy, startTlsEchoServer, type TestProxy } from './egress-helpers.js';

/** Loopback is reachable without a scheme only on the ports the plain-bytes cases use; over TLS, on any. */
const policy = (plainPorts: number[]): string => `
network:
  - id: tls-only
    allow: [tls.test]
    schemes: [https]
  - id: no-tls-to-legacy
    deny: [legacy.test]
    schemes: [https]
  - id: legacy
    allow: [legacy.test]
  - id: inspected-https
    allow: [seen.test]
    schemes: [https]
    inspect: true
  - id: loopback-targets
    allow: [127.0.0.1]
    ports: [${plainPorts.join(', ')}]
  - id: loopback-tls
    allow: [127.0.0.1]
    schemes: [https]
`;

describe('egress schemes on tunnels', () => {
  const dir = mkdtempSync(join(tmpdir(), 'gatehouse-schemes-'));
  const publicCaFile = join(dir, 'public-ca.pem');
  const proxyCaFile = join(dir, 'proxy-ca.pem');
  let gate: TestProxy;
  let tls: Awaited<ReturnType<typeof startTlsEchoServer>>;
  let legacyTls: Awaited<ReturnType<typeof startTlsEchoServer>>;
  let seen: Awaited<ReturnType<typeof startTlsEchoServer>>;
  let plain: Awaited<ReturnType<typeof startEchoServer>>;
  /** Reached only as tls.test, whose rule names https. */
  let plainTls: Awaited<ReturnType<typeof startEchoServer>>;
  const plainRequests: string[] = [];
  /** A TCP server that only counts the bytes it receives. */
  let sink: { server: Server; port: number; bytes: number; sockets: Set<Socket> };

  before(async () => {
    const publicCa = await CertificateAuthority.create('Test public CA');
    const proxyCa = await CertificateAuthority.create('Test proxy CA');
    writeFileSync(publicCaFile, publicCa.certificatePem);
    writeFileSync(proxyCaFile, proxyCa.certificatePem);
    tls = await startTlsEchoServer(publicCa, 'tls.test');
    legacyTls = await startTlsEchoServer(publicCa, 'legacy.test');
    seen = await startTlsEchoServer(publicCa, 'seen.test');
    plain = await startEchoServer((request) => {
      plainRequests.push(`${request.headers.host} ${request.url}`);
      return false;
    });
    plainTls = await startEchoServer((request) => {
      plainRequests.push(`${request.headers.host} ${request.url}`);
      return false;
    });
    const sockets = new Set<Socket>();
    const server = createServer((socket) => {
      sockets.add(socket);
      socket.on('data', (chunk: Buffer) => (sink.bytes += chunk.length));
      socket.on('error', () => undefined);
      socket.once('close', () => sockets.delete(socket));
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    sink = { server, port: (server.address() as AddressInfo).port, bytes: 0, sockets };
    const names = ['tls.test', 'legacy.test', 'seen.test'];
    gate = await startTestProxy(policy([plain.port, legacyTls.port, sink.port]), {
      ca: proxyCa,
      upstreamCa: [publicCa.certificatePem],
      settings: { resolve: Object.fromEntries(names.map((name) => [name, ['127.0.0.1']])) },
    });
  });
  after(async () => {
    await gate.close();
    await Promise.all([tls.close(), legacyTls.close(), seen.close(), plain.close(), plainTls.close()]);
    for (const socket of sink.sockets) socket.destroy();
    sink.server.close();
    rmSync(dir, { recursive: true, force: true });
  });

  const settle = (): Promise<void> => new Promise((resolve) => setTimeout(resolve, 100));
  const connectRecord = (resource: string) => gate.audit.records.filter((r) => r.action === 'connect' && r.resource === resource).at(-1);

  it('allows an uninspected CONNECT that only an https rule allows, once the client begins with TLS', async () => {
    const result = await curl(['--cacert', publicCaFile, '-x', gate.url, '-U', 'a:key-alice', `https://tls.test:${tls.port}/over-tls`]);
    assert.equal(result.status, 200, result.stderr + result.body);
    assert.equal(tls.requests.at(-1)?.url, '/over-tls');
    await settle();
    const record = connectRecord(`tls.test:${tls.port}`);
    assert.equal(record?.effect, 'allow');
    assert.ok(record?.rules.includes('tls-only'), `rules ${record?.rules}`);
    assert.equal(record?.details?.scheme, 'https');
    assert.equal(record?.details?.sni, 'tls.test');
    assert.equal(record?.details?.inspected, false);
  });

  it('allows the same over SOCKS5', async () => {
    const result = await curl(['--cacert', publicCaFile, '-x', `socks5h://a:key-alice@127.0.0.1:${gate.proxy.address.port}`, `https://tls.test:${tls.port}/over-socks`]);
    assert.equal(result.status, 200, result.stderr + result.body);
    assert.equal(tls.requests.at(-1)?.url, '/over-socks');
  });

  it('closes a tunnel an https rule allowed when the client speaks plain HTTP in it, before a byte reaches the server', async () => {
    const result = await curl(['-p', '-x', gate.url, '-U', 'a:key-alice', `http://tls.test:${plainTls.port}/not-tls`]);
    assert.notEqual(result.code, 0, 'curl got no answer inside the tunnel');
    assert.deepEqual(plainRequests, []);
    await settle();
    const record = connectRecord(`tls.test:${plainTls.port}`);
    assert.equal(record?.effect, 'deny');
    assert.equal(record?.details?.reasonCode, 'needs-tls');
  });

  it('refuses TLS to a host whose https a rule denies, while plain bytes in the same kind of tunnel pass', async () => {
    const plainTunnel = await curl(['-p', '-x', gate.url, '-U', 'a:key-alice', `http://legacy.test:${plain.port}/plain`]);
    assert.equal(plainTunnel.status, 200, plainTunnel.stderr);
    assert.deepEqual(plainRequests, [`legacy.test:${plain.port} /plain`]);
    const before = legacyTls.requests.length;
    const tlsTunnel = await curl(['--cacert', publicCaFile, '-x', gate.url, '-U', 'a:key-alice', `https://legacy.test:${legacyTls.port}/tls`]);
    assert.notEqual(tlsTunnel.code, 0);
    assert.equal(legacyTls.requests.length, before, 'nothing reached the server over TLS');
    await settle();
    const record = connectRecord(`legacy.test:${legacyTls.port}`);
    assert.equal(record?.effect, 'deny');
    assert.equal(record?.details?.reasonCode, 'policy-denied');
    assert.deepEqual(record?.rules, ['no-tls-to-legacy']);
    assert.equal(record?.details?.scheme, 'https');
  });

  it('matches schemes: [https] for an inspected tunnel', async () => {
    const result = await curl(['--cacert', proxyCaFile, '-x', gate.url, '-U', 'a:key-alice', `https://seen.test:${seen.port}/inspected`]);
    assert.equal(result.status, 200, result.stderr + result.body);
    await settle();
    const record = gate.audit.records.find((r) => r.action === 'request' && r.resource === `https://seen.test:${seen.port}/inspected`);
    assert.equal(record?.effect, 'allow');
    assert.ok(record?.rules.includes('inspected-https'), `rules ${record?.rules}`);
  });

  it('judges a ClientHello even when it arrives in one write with more than 20 KB behind it', async () => {
    const hello = await captureHello('elsewhere.test');
    const socket = connect(gate.proxy.address.port, '127.0.0.1');
    const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
    socket.on('error', () => undefined);
    let answer = '';
    socket.on('data', (chunk: Buffer) => {
      answer += chunk.toString('latin1');
      if (answer.includes('\r\n\r\n') && !answer.includes('sent')) {
        answer += 'sent';
        socket.write(Buffer.concat([hello, Buffer.alloc(30 * 1024, 0x41)]));
      }
    });
    socket.write(`CONNECT legacy.test:${sink.port} HTTP/1.1\r\nHost: legacy.test:${sink.port}\r\nProxy-Authorization: Bearer key-alice\r\n\r\n`);
    const timer = setTimeout(() => socket.destroy(), 3_000);
    await closed;
    clearTimeout(timer);
    assert.match(answer, /^HTTP\/1\.1 200 /);
    assert.equal(sink.bytes, 0, 'no byte reached the server');
    await settle();
    const record = connectRecord(`legacy.test:${sink.port}`);
    assert.equal(record?.details?.reasonCode, 'sni-mismatch');
  });
});
