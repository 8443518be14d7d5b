/**
 * A tunnel to an IP address that names a server in its TLS ClientHello: the name is judged too, so a host
 * the policy denies by name cannot be reached by dialling its address instead (review M3).
 */
import assert from 'node:assert/strict';
import { connect, createServer, type Server } from 'node:net';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { captureHello, startTestProxy, type TestProxy } from './egress-helpers.js';

describe('egress: server names on tunnels to IP addresses', () => {
  let proxy: TestProxy;
  let sink: Server;
  let port: number;
  let bytes = 0;

  before(async () => {
    sink = createServer((socket) => socket.on('data', (chunk: Buffer) => (bytes += chunk.length)));
    await new Promise<void>((resolve) => sink.listen(0, '127.0.0.1', () => resolve()));
    port = (sink.address() as AddressInfo).port;
    proxy = await startTestProxy(`
network:
  - id: anywhere
    allow: ["*"]
  - id: this-address
    allow: [127.0.0.1]
  - id: paste-sites
    deny: ["**.pastebin.com"]
  - id: no-delete
    deny: [api.example.com]
    methods: [DELETE]
  - id: inspected
    allow: [seen.example.com]
    inspect: true
`);
  });
  after(async () => {
    await proxy.close();
    sink.close();
  });

  /** CONNECT to the address, then send a real ClientHello for `servername`; resolves once the tunnel closes. */
  async function tunnel(servername: string): Promise<void> {
    const hello = await captureHello(servername);
    const socket = connect(proxy.proxy.address.port, '127.0.0.1');
    socket.on('error', () => undefined);
    let answer = '';
    socket.on('data', (chunk: Buffer) => {
      answer += chunk.toString('latin1');
      if (answer.startsWith('HTTP/1.1 200') && answer.includes('\r\n\r\n') && !answer.includes('#sent')) {
        answer += '#sent';
        socket.write(hello);
        setTimeout(() => socket.destroy(), 300);
      }
    });
    socket.write(`CONNECT 127.0.0.1:${port} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nProxy-Authorization: Bearer key-alice\r\n\r\n`);
    await new Promise<void>((resolve) => socket.once('close', () => resolve()));
    await new Promise((r) => setTimeout(r, 100));
  }

  it('refuses a tunnel to an allowed address whose ClientHello names a denied host', async () => {
    bytes = 0;
    await tunnel('www.pastebin.com');
    assert.equal(bytes, 0, 'no byte reached the server');
    assert.ok(proxy.audit.records.some((r) => r.effect === 'deny' && r.rules.includes('paste-sites')), 'the refusal names the rule');
  });

  it('lets the same tunnel through for a name the policy does not deny', async () => {
    bytes = 0;
    await tunnel('fine.example');
    assert.ok(bytes > 0, 'the ClientHello reached the server');
  });

  it('refuses a tunnel to an allowed address whose ClientHello names a host with method or path rules', async () => {
    bytes = 0;
    await tunnel('api.example.com');
    assert.equal(bytes, 0, 'no byte reached the server: DELETE on api.example.com would pass a blind tunnel');
    assert.ok(proxy.audit.records.some((r) => r.effect === 'deny' && r.details?.reasonCode === 'needs-inspection'), 'the refusal says why');
  });

  it('refuses a tunnel to an allowed address whose ClientHello names a host the policy inspects', async () => {
    bytes = 0;
    await tunnel('seen.example.com');
    assert.equal(bytes, 0, 'no byte reached the server uninspected');
  });
});
