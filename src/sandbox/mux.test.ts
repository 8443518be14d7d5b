import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { connect, createServer, type AddressInfo, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { Duplex } from 'node:stream';
import { join } from 'node:path';
import { encodeFrame, FRAME, FrameReader, MAX_FRAME, Mux, WINDOW } from './mux.js';

test('reassembles frames however the bytes are split', () => {
  const wire = Buffer.concat([encodeFrame(FRAME.OPEN, 7), encodeFrame(FRAME.DATA, 7, Buffer.from('hello')), encodeFrame(FRAME.END, 7)]);
  const reader = new FrameReader();
  const seen: string[] = [];
  for (const byte of wire) reader.push(Buffer.from([byte]), (frame) => seen.push(`${frame.type}:${frame.id}:${frame.payload.toString()}`));
  assert.deepEqual(seen, ['1:7:', '2:7:hello', '3:7:']);
});

test('refuses an unknown frame type and an oversized frame', () => {
  assert.throws(() => new FrameReader().push(Buffer.from([99, 0, 0, 0, 1, 0, 0, 0, 0]), () => undefined), /unknown frame type/);
  const header = Buffer.alloc(9);
  header.writeUInt8(FRAME.DATA, 0);
  header.writeUInt32BE(MAX_FRAME + 1, 5);
  assert.throws(() => new FrameReader().push(header, () => undefined), /exceeds/);
});

/** A connected pair of real Unix sockets, standing for the socketpair bwrap passes into the sandbox. */
async function socketPair(): Promise<{ inside: Socket; outside: Socket; done: () => void }> {
  const dir = mkdtempSync(join(tmpdir(), 'gh-mux-'));
  const path = join(dir, 'pair.sock');
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(path, resolve));
  const accepted = new Promise<Socket>((resolve) => server.once('connection', resolve));
  const inside = connect(path);
  const outside = await accepted;
  server.close();
  return { inside, outside, done: () => { inside.destroy(); outside.destroy(); rmSync(dir, { recursive: true, force: true }); } };
}

test('carries 8 MiB both ways through one stream intact, within the credit window', async () => {
  const { inside, outside, done } = await socketPair();
  // Host side: each stream goes to an echo server (standing in for the egress proxy).
  const echo = createServer((socket) => socket.pipe(socket));
  await new Promise<void>((resolve) => echo.listen(0, '127.0.0.1', resolve));
  const hostMux: Mux = new Mux(outside, { onOpen: (id) => hostMux.attach(id, connect((echo.address() as AddressInfo).port, '127.0.0.1')) });
  // Inside: a listener whose connections become streams.
  let next = 1;
  const insideMux = new Mux(inside);
  const bridge = createServer((socket) => {
    const id = next++;
    insideMux.send(FRAME.OPEN, id);
    insideMux.attach(id, socket);
  });
  await new Promise<void>((resolve) => bridge.listen(0, '127.0.0.1', resolve));
  try {
    const payload = randomBytes(8 * 1024 * 1024);
    const client = connect((bridge.address() as AddressInfo).port, '127.0.0.1');
    const received: Buffer[] = [];
    let bytes = 0;
    const finished = new Promise<void>((resolve) => client.on('data', (chunk: Buffer) => {
      received.push(chunk);
      bytes += chunk.length;
      if (bytes >= payload.length) resolve();
    }));
    client.write(payload);
    await finished;
    const digest = (buffer: Buffer) => createHash('sha256').update(buffer).digest('hex');
    assert.equal(digest(Buffer.concat(received)), digest(payload));
    client.destroy();
  } finally {
    bridge.close();
    echo.close();
    done();
  }
});

test('drops the whole channel when the inside ignores its credit window', async () => {
  const { inside, outside, done } = await socketPair();
  let broken: Error | undefined;
  // The destination never accepts a byte. A test double on purpose: a real stalled socket first absorbs
  // megabytes into kernel buffers, which would make this test slow and its outcome depend on sysctls.
  const stalled = new Duplex({ read() {}, write() {} });
  const hostMux: Mux = new Mux(outside, {
    onOpen: (id) => hostMux.attach(id, stalled),
    onBroken: (error) => (broken = error),
  });
  try {
    inside.write(encodeFrame(FRAME.OPEN, 1));
    const chunk = Buffer.alloc(MAX_FRAME);
    // Written before the host can grant anything back: WINDOW + one frame is an overrun.
    for (let sent = 0; sent <= WINDOW; sent += chunk.length) inside.write(encodeFrame(FRAME.DATA, 1, chunk));
    const deadline = Date.now() + 5000;
    while (!broken && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 20));
    assert.match(broken?.message ?? '', /overran its window/);
    assert.equal(hostMux.streams.size, 0);
  } finally {
    done();
  }
});
