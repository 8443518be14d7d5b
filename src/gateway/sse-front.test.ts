/**
 * The deprecated HTTP+SSE transport on a real node:http server, with a raw socket as the client.
 */
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { connect, type AddressInfo } from 'node:net';
import { test } from 'node:test';
import { LegacySseTransport } from './sse-front.js';
import { STREAM_UNREAD_LIMIT } from './unread.js';

test('closes the session of a client that stops reading its stream once it leaves the limit unread', async () => {
  let transport: LegacySseTransport | undefined;
  let closed = false;
  const server = createServer((_req, res) => {
    transport = new LegacySseTransport(res, '/messages');
    transport.onclose = () => (closed = true);
    void transport.start();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  // A client that reads the stream's first event and then nothing more.
  const socket = connect(port, '127.0.0.1');
  socket.on('error', () => undefined);
  try {
    await new Promise((resolve) => socket.once('connect', resolve));
    socket.write(`GET /sse HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nAccept: text/event-stream\r\n\r\n`);
    await new Promise((resolve) => socket.once('data', resolve));
    socket.pause();
    const data = 'x'.repeat(256 * 1024);
    let sent = 0;
    while (!closed && sent < 2 * STREAM_UNREAD_LIMIT) {
      await transport!.send({ jsonrpc: '2.0', method: 'notifications/message', params: { level: 'info', data } }).catch(() => undefined);
      sent += data.length;
      await new Promise((resolve) => setImmediate(resolve));
    }
    assert.ok(closed, `the session was still open after ${sent} bytes the client never read`);
    assert.ok(sent > STREAM_UNREAD_LIMIT, 'it was cut at the limit, not before');
    await assert.rejects(transport!.send({ jsonrpc: '2.0', method: 'notifications/message', params: { level: 'info', data: 'late' } }), /closed/);
  } finally {
    socket.destroy();
    server.close();
  }
});
