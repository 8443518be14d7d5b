/**
 * Gatehouse's end of the bridge channel: where each stream the inside opens is carried. The inside is
 * treated as hostile, so a stream naming a listener it was not given is refused and reported.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { connect, createServer, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { bridgeChannel } from './bubblewrap.js';
import { encodeFrame, FRAME, FrameReader, LISTENER } from './mux.js';
import type { SandboxSpec } from './types.js';

/** A channel whose inside end the test drives frame by frame; `spec` may name sockets in `dir`. */
async function withChannel(
  spec: (dir: string) => Partial<SandboxSpec>,
  body: (context: { dir: string; inside: Socket; frames: () => Promise<{ type: number; id: number; payload: string }>; denied: string[] }) => Promise<void>,
): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'gh-channel-'));
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(join(dir, 'pair.sock'), resolve));
  const accepted = new Promise<Socket>((resolve) => server.once('connection', resolve));
  const inside = connect(join(dir, 'pair.sock'));
  const outside = await accepted;
  server.close();
  const denied: string[] = [];
  const full = { command: ['true'], view: { allow: [], deny: [] }, home: dir, cwd: dir, ...spec(dir), onConnectionDenied: (event: { reason: string }) => void denied.push(event.reason) } as unknown as SandboxSpec;
  bridgeChannel(outside, full, () => outside.destroy());
  const queue: { type: number; id: number; payload: string }[] = [];
  const waiters: ((frame: { type: number; id: number; payload: string }) => void)[] = [];
  const reader = new FrameReader();
  inside.on('data', (chunk: Buffer) =>
    reader.push(chunk, (frame) => {
      const plain = { type: frame.type, id: frame.id, payload: frame.payload.toString() };
      const waiter = waiters.shift();
      if (waiter) waiter(plain);
      else queue.push(plain);
    }),
  );
  const frames = () => new Promise<{ type: number; id: number; payload: string }>((resolve) => (queue.length > 0 ? resolve(queue.shift()!) : waiters.push(resolve)));
  try {
    await body({ dir, inside, frames, denied });
  } finally {
    inside.destroy();
    outside.destroy();
    rmSync(dir, { recursive: true, force: true });
  }
}

test('a stream from the gateway listener reaches the gateway socket; one naming no known listener is refused and reported', async () => {
  await withChannel(
    (dir) => ({ gatewaySocket: join(dir, 'mcp.sock') }),
    async ({ dir, inside, frames, denied }) => {
      const gateway = createServer((socket) => socket.end('gateway says hi'));
      await new Promise<void>((resolve) => gateway.listen(join(dir, 'mcp.sock'), resolve));
      try {
        inside.write(encodeFrame(FRAME.OPEN, 1, Buffer.from(LISTENER.gateway)));
        assert.deepEqual(await frames(), { type: FRAME.DATA, id: 1, payload: 'gateway says hi' });
        inside.write(encodeFrame(FRAME.OPEN, 2, Buffer.from('docker')));
        let frame = await frames();
        while (frame.id !== 2) frame = await frames();
        assert.deepEqual(frame, { type: FRAME.CLOSE, id: 2, payload: 'unknown bridge listener' });
        assert.deepEqual(denied, ['unknown bridge listener']);
      } finally {
        gateway.close();
      }
    },
  );
});

test('without a gateway for the sandbox, a stream claiming the gateway listener is refused and reported', async () => {
  await withChannel(
    () => ({}),
    async ({ inside, frames, denied }) => {
      inside.write(encodeFrame(FRAME.OPEN, 1, Buffer.from(LISTENER.gateway)));
      assert.deepEqual(await frames(), { type: FRAME.CLOSE, id: 1, payload: 'no MCP gateway for this sandbox' });
      assert.deepEqual(denied, ['no MCP gateway for this sandbox']);
    },
  );
});
