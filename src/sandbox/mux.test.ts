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

test('an honest sender whose reads do not line up with the window never overruns it, however long the destination stalls', async () => {
  const { inside, outside, done } = await socketPair();
  let broken: Error | undefined;
  // The source hands out reads of 60,000 bytes, as a socket would (its reads never line up with the window);
  // the destination inside never accepts a byte (a program that stopped reading, or is exiting).
  let produced = 0;
  const source = new Duplex({
    read() {
      produced += 60_000;
      if (produced < 8 * WINDOW) this.push(Buffer.alloc(60_000, 1));
    },
    write(_chunk, _encoding, callback) {
      callback();
    },
  });
  const stalled = new Duplex({ read() {}, write() {} });
  const hostMux: Mux = new Mux(outside, { onOpen: (id) => hostMux.attach(id, source) });
  const insideMux = new Mux(inside, { onBroken: (error) => (broken = error) });
  try {
    insideMux.send(FRAME.OPEN, 1);
    insideMux.attach(1, stalled);
    await new Promise((resolve) => setTimeout(resolve, 500));
    assert.equal(broken, undefined, `the channel broke: ${broken?.message}`);
    assert.ok(produced < 4 * WINDOW, 'the sender stopped reading at its window');
  } finally {
    done();
  }
});

test('a stream that ends while its tail waits for credit delivers every byte, then its end', async () => {
  const { inside, outside, done } = await socketPair();
  const total = 3 * WINDOW + 12_345;
  let produced = 0;
  const source = new Duplex({
    read() {
      if (produced >= total) return void this.push(null);
      const size = Math.min(60_000, total - produced);
      produced += size;
      this.push(Buffer.alloc(size, 2));
    },
    write(_chunk, _encoding, callback) {
      callback();
    },
  });
  // A slow destination: each write is accepted a moment later, so the window fills and tails are held.
  let received = 0;
  const ended = new Promise<void>((resolve) => {
    const slow = new Duplex({
      read() {},
      write(chunk: Buffer, _encoding, callback) {
        received += chunk.length;
        setTimeout(callback, 1);
      },
      final(callback) {
        callback();
        resolve();
      },
    });
    const insideMux = new Mux(inside);
    insideMux.send(FRAME.OPEN, 1);
    insideMux.attach(1, slow);
  });
  const hostMux: Mux = new Mux(outside, { onOpen: (id) => hostMux.attach(id, source) });
  try {
    await ended;
    assert.equal(received, total);
  } finally {
    done();
  }
});
