import assert from 'node:assert/strict';
import { createServer, type AddressInfo } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import { describe, it } from 'node:test';
import { readClientHelloSni } from './client-hello.js';

/** Captures the first bytes a real node TLS client sends (its ClientHello) for a given server name. */
async function captureHello(servername: string | undefined): Promise<Buffer> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  const captured = new Promise<Buffer>((resolve) => {
    server.once('connection', (socket) => {
      let data = Buffer.alloc(0);
      socket.on('data', (chunk: Buffer) => {
        data = Buffer.concat([data, chunk]);
        if (readClientHelloSni(data).kind !== 'incomplete') {
          socket.destroy();
          resolve(data);
        }
      });
    });
  });
  const client = tlsConnect({ host: '127.0.0.1', port, ...(servername ? { servername } : {}), rejectUnauthorized: false });
  client.on('error', () => undefined);
  const hello = await captured;
  client.destroy();
  server.close();
  return hello;
}

describe('ClientHello server name', () => {
  it('reads the server name a real TLS client sends', async () => {
    assert.deepEqual(readClientHelloSni(await captureHello('api.example.test')), { kind: 'sni', name: 'api.example.test' });
  });

  it('reports a ClientHello without a server name', async () => {
    // node sends no SNI when connecting to an IP address without a servername.
    assert.deepEqual(readClientHelloSni(await captureHello(undefined)), { kind: 'none' });
  });

  it('waits for the rest of a record split across reads, and never reads past a lying length', async () => {
    const hello = await captureHello('split.test');
    assert.deepEqual(readClientHelloSni(hello.subarray(0, 3)), { kind: 'incomplete' });
    assert.deepEqual(readClientHelloSni(hello.subarray(0, hello.length - 1)), { kind: 'incomplete' });
    const lying = Buffer.from(hello);
    lying.writeUInt16BE(0xffff, 5 + 4 + 2 + 32 + 1 + (lying[5 + 4 + 2 + 32] ?? 0)); // cipher_suites length past the end
    assert.deepEqual(readClientHelloSni(lying), { kind: 'not-tls' });
  });

  it('says not-tls for other protocols', () => {
    assert.deepEqual(readClientHelloSni(Buffer.from('SSH-2.0-OpenSSH_9.2\r\n')), { kind: 'not-tls' });
    assert.deepEqual(readClientHelloSni(Buffer.from('GET / HTTP/1.1\r\n')), { kind: 'not-tls' });
  });
});
