/**
 * Request smuggling through the forward proxy: a body the proxy streams (no scanner, no placeholders, as
 * for `gatehouse run` without credential grants) must reach the upstream framed, so its bytes can never be
 * read as a second request that skipped the method and path rules.
 */
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { rawExchange, startTestProxy, type TestProxy } from './egress-helpers.js';

describe('egress: request smuggling', () => {
  let upstream: Server;
  let port: number;
  let proxy: TestProxy;
  const seen: string[] = [];

  before(async () => {
    upstream = createServer((request, response) => {
      seen.push(`${request.method} ${request.url}`);
      request.resume();
      request.on('end', () => response.end(`hello from ${request.method} ${request.url}`));
    });
    await new Promise<void>((resolve) => upstream.listen(0, '127.0.0.1', () => resolve()));
    port = (upstream.address() as AddressInfo).port;
    proxy = await startTestProxy(`
network:
  - id: public-reads
    allow: [127.0.0.1]
    methods: [GET]
    paths: ["/public/**"]
`);
  });
  after(async () => {
    await proxy.close();
    upstream.close();
  });

  const hidden = 'DELETE /admin HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n';

  it('re-frames a chunked GET body, so a request hidden in it never reaches the upstream', async () => {
    seen.length = 0;
    const chunk = hidden.length.toString(16);
    const raw = await rawExchange(
      proxy.proxy.address.port,
      `GET http://127.0.0.1:${port}/public/x HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nProxy-Authorization: Bearer key-alice\r\nTransfer-Encoding: chunked\r\n\r\n${chunk}\r\n${hidden}\r\n0\r\n\r\n`,
    );
    assert.match(raw, /^HTTP\/1\.1 200/);
    await new Promise((r) => setTimeout(r, 200));
    assert.deepEqual(seen, ['GET /public/x']);
  });

  it('does not let "Connection: content-length" strip the body length', async () => {
    seen.length = 0;
    const raw = await rawExchange(
      proxy.proxy.address.port,
      `GET http://127.0.0.1:${port}/public/y HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nProxy-Authorization: Bearer key-alice\r\nConnection: content-length\r\nContent-Length: ${hidden.length}\r\n\r\n${hidden}`,
    );
    assert.match(raw, /^HTTP\/1\.1 200/);
    await new Promise((r) => setTimeout(r, 200));
    assert.deepEqual(seen, ['GET /public/y']);
  });

  it('still refuses the hidden request when sent openly', async () => {
    const raw = await rawExchange(proxy.proxy.address.port, `DELETE http://127.0.0.1:${port}/admin HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nProxy-Authorization: Bearer key-alice\r\nContent-Length: 0\r\n\r\n`);
    assert.match(raw, /^HTTP\/1\.1 403/);
  });
});
