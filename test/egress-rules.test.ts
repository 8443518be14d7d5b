/**
 * Rule shapes through real clients: IPv6 literals and the SOCKS5 IPv6 address type (to a server on ::1),
 * method/path rules that need inspection on a host that is not inspected, per-request rate limits inside an
 * inspected tunnel, and a policy reload taking effect for the next connection.
 */
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { CertificateAuthority } from '../src/egress/ca.js';
import { compile, curl, httpsViaProxy, rawExchange, reasonOf, startTestProxy, startTlsEchoServer } from './egress-helpers.js';

describe('egress rule shapes', () => {
  let v6: { server: Server; port: number };
  before(async () => {
    const server = createServer((_request, response) => response.end('hello over IPv6\n'));
    await new Promise<void>((resolve) => server.listen(0, '::1', resolve));
    v6 = { server, port: (server.address() as AddressInfo).port };
  });
  after(() => {
    v6.server.closeAllConnections();
    v6.server.close();
  });

  it('reaches an IPv6 literal the policy names, over HTTP, CONNECT and the SOCKS5 IPv6 address type', async () => {
    const gate = await startTestProxy('network:\n  - id: v6-loopback\n    allow: ["::1"]\n', { settings: { socks: { listen: '127.0.0.1:0' } } });
    try {
      const plain = await curl(['-g', '-x', gate.url, '-U', 'a:key-alice', `http://[::1]:${v6.port}/`]);
      assert.equal(plain.status, 200, plain.body);
      assert.equal(plain.body, 'hello over IPv6\n');
      const tunnel = await curl(['-g', '-p', '-x', gate.url, '-U', 'a:key-alice', `http://[::1]:${v6.port}/`]);
      assert.equal(tunnel.status, 200);
      const socks = await curl(['-g', '-x', `socks5://a:key-alice@127.0.0.1:${gate.proxy.socksAddress?.port}`, `http://[::1]:${v6.port}/`]);
      assert.equal(socks.status, 200, socks.stderr);
      const v4 = await rawExchange(gate.proxy.address.port, 'CONNECT 127.0.0.1:80 HTTP/1.1\r\nHost: x\r\nProxy-Authorization: Bearer key-alice\r\n\r\n');
      assert.equal(reasonOf(v4), 'blocked-address', 'allowing ::1 does not open 127.0.0.1');
    } finally {
      await gate.close();
    }
  });

  it('refuses a CONNECT whose allow depends on method or path rules when the host is not inspected', async () => {
    const policy = `
network:
  - id: api-read
    allow: [api.test]
    methods: [GET]
  - id: loopback-targets
    allow: [127.0.0.1]
    methods: [GET]
`;
    const gate = await startTestProxy(policy, { settings: { resolve: { 'api.test': ['127.0.0.1'] } } });
    try {
      const raw = await rawExchange(gate.proxy.address.port, 'CONNECT api.test:443 HTTP/1.1\r\nHost: api.test:443\r\nProxy-Authorization: Bearer key-alice\r\n\r\n');
      assert.match(raw, /^HTTP\/1\.1 403 /);
      assert.equal(reasonOf(raw), 'needs-inspection');
    } finally {
      await gate.close();
    }
  });

  it('limits requests per agent inside an inspected tunnel with 429', async () => {
    const ca = await CertificateAuthority.create('proxy');
    const publicCa = await CertificateAuthority.create('public');
    const upstream = await startTlsEchoServer(publicCa, 'api.test');
    const gate = await startTestProxy('network:\n  - id: api\n    allow: [api.test]\n    inspect: true\n  - id: lo\n    allow: [127.0.0.1]\n', {
      ca,
      upstreamCa: [publicCa.certificatePem],
      settings: { resolve: { 'api.test': ['127.0.0.1'] }, limits: { requestsPerSecond: 2, connectionsPerSecond: 100 } },
    });
    try {
      // Six at once against a bucket of two: four are refused whatever the machine's speed.
      const results = await Promise.all(
        Array.from({ length: 6 }, (_, i) =>
          httpsViaProxy({ connectTo: { port: gate.proxy.address.port }, proxyAuthorization: 'Bearer key-alice', host: 'api.test', port: upstream.port, ca: ca.certificatePem, path: `/${i}` }),
        ),
      );
      const statuses = results.map((result) => result.status);
      assert.equal(statuses.filter((status) => status === 200).length, 2, statuses.join(','));
      assert.ok(results.filter((result) => result.status === 429).every((result) => result.headers['x-gatehouse-reason'] === 'rate-limited'));
    } finally {
      await gate.close();
      await upstream.close();
    }
  });

  it('applies a reloaded policy to the next connection', async () => {
    const gate = await startTestProxy('network:\n  - id: v6\n    allow: ["::1"]\n');
    try {
      const before = await curl(['-g', '-x', gate.url, '-U', 'a:key-alice', `http://[::1]:${v6.port}/`]);
      assert.equal(before.status, 200);
      gate.holder.current = compile('network:\n  - id: nothing\n    deny: ["::1"]\n');
      const after = await curl(['-g', '-x', gate.url, '-U', 'a:key-alice', `http://[::1]:${v6.port}/`]);
      assert.equal(after.status, 403);
      assert.match(after.body, /nothing/);
    } finally {
      await gate.close();
    }
  });
});
