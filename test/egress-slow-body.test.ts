/**
 * Slow request bodies (slowloris on the body): the proxy holds a body it inspects, so a client that sends
 * its headers and then trickles or stalls must be cut off at a deadline, not hold the proxy's sockets.
 */
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { createScanner } from '../src/dlp/index.js';
import { rawExchange, reasonOf, startTestProxy, type TestProxy } from './egress-helpers.js';

describe('egress: slow request bodies', () => {
  let upstream: Server;
  let port: number;
  let proxy: TestProxy;
  let received = 0;

  before(async () => {
    upstream = createServer((request, response) => {
      received += 1;
      request.resume();
      request.on('end', () => response.end('ok'));
    });
    await new Promise<void>((resolve) => upstream.listen(0, '127.0.0.1', () => resolve()));
    port = (upstream.address() as AddressInfo).port;
    // With a scanner the proxy reads the whole body before forwarding it.
    proxy = await startTestProxy('network:\n  - id: local\n    allow: [127.0.0.1]\n', {
      scanner: createScanner({}),
      settings: { limits: { headerTimeoutMs: 300 } },
    });
  });
  after(async () => {
    await proxy.close();
    upstream.close();
  });

  it('answers 408 to a body that stops arriving, and forwards nothing', async () => {
    const started = Date.now();
    const raw = await rawExchange(
      proxy.proxy.address.port,
      `POST http://127.0.0.1:${port}/upload HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nProxy-Authorization: Bearer key-alice\r\nContent-Length: 100\r\n\r\nonly ten b`,
      2000,
    );
    assert.match(raw, /^HTTP\/1\.1 408/);
    assert.equal(reasonOf(raw), 'body-timeout');
    assert.ok(Date.now() - started < 1900, 'refused at the deadline, not when the client gave up');
    assert.equal(received, 0);
  });

  it('still forwards a body that arrives in time', async () => {
    const raw = await rawExchange(
      proxy.proxy.address.port,
      `POST http://127.0.0.1:${port}/upload HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nProxy-Authorization: Bearer key-alice\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello`,
    );
    assert.match(raw, /^HTTP\/1\.1 200/);
  });
});
