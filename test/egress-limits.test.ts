/**
 * Limits a user notices: per-agent rate limits, the inspection size limit (block or pass uninspected, as the
 * policy says, and recorded either way), idle and total timeouts on tunnels, backpressure (a client that does
 * not read stops the upstream instead of filling the proxy's memory), and failing closed without audit.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect, createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { after, before, describe, it } from 'node:test';
import type { AuditLog } from '../src/audit/record.js';
import { createScanner } from '../src/dlp/index.js';
import { curl, rawExchange, reasonOf, startEchoServer, startTestProxy } from './egress-helpers.js';

const POLICY = (onTooLarge: 'block' | 'allow'): string => `
network:
  - id: api
    allow: [api.test]
  - id: loopback-targets
    allow: [127.0.0.1]
dlp:
  action: block
  onTooLarge: ${onTooLarge}
`;
const resolve = { 'api.test': ['127.0.0.1'] };

/** Opens a CONNECT tunnel over TCP (or a session's Unix socket) and returns the socket once the proxy said 200. */
function openTunnel(proxy: number | string, target: string): Promise<Socket> {
  return new Promise((resolvePromise, reject) => {
    const where = typeof proxy === 'number' ? { port: proxy, host: '127.0.0.1' } : { path: proxy };
    const socket = connect(where, () => socket.write(`CONNECT ${target} HTTP/1.1\r\nHost: ${target}\r\nProxy-Authorization: Bearer key-alice\r\n\r\n`));
    socket.once('data', (chunk: Buffer) => {
      const text = chunk.toString('latin1');
      const end = text.indexOf('\r\n\r\n');
      if (!text.startsWith('HTTP/1.1 200') || end < 0) return reject(new Error(text));
      // Tunnel bytes may arrive in the same chunk as the proxy's answer.
      socket.pause();
      if (chunk.length > end + 4) socket.unshift(chunk.subarray(end + 4));
      resolvePromise(socket);
    });
    socket.once('error', reject);
  });
}

async function tcpServer(onConnection: (socket: Socket) => void): Promise<{ server: Server; port: number }> {
  const server = createServer(onConnection);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { server, port: (server.address() as AddressInfo).port };
}

/** Writes the pieces `next` hands out (until it returns undefined) as fast as the socket takes them, then ends it. */
function pump(socket: Socket, next: () => Buffer | undefined): void {
  socket.on('error', () => undefined);
  const write = (): void => {
    for (let piece = next(); piece !== undefined; piece = next()) {
      if (!socket.write(piece)) {
        socket.once('drain', write);
        return;
      }
    }
    socket.end();
  };
  write();
}

describe('egress limits', () => {
  let echo: Awaited<ReturnType<typeof startEchoServer>>;
  before(async () => {
    echo = await startEchoServer();
  });
  after(async () => echo.close());

  it('limits connections per agent with 429 rate-limited, without affecting other agents', async () => {
    const gate = await startTestProxy(POLICY('block'), { settings: { resolve, limits: { connectionsPerSecond: 3 } } });
    try {
      // Ten at once: the bucket holds three, and refills far too slowly to matter within one burst.
      const burst = await Promise.all(
        Array.from({ length: 10 }, (_, i) =>
          rawExchange(gate.proxy.address.port, `GET http://api.test:${echo.port}/${i} HTTP/1.1\r\nHost: api.test:${echo.port}\r\nProxy-Authorization: Bearer key-alice\r\nConnection: close\r\n\r\n`),
        ),
      );
      const statuses = burst.map((raw) => Number(/^HTTP\/1\.1 (\d{3})/.exec(raw)?.[1]));
      assert.equal(statuses.filter((status) => status === 200).length, 3, statuses.join(','));
      assert.equal(statuses.filter((status) => status === 429).length, 7, statuses.join(','));
      assert.ok(burst.filter((raw) => raw.startsWith('HTTP/1.1 429')).every((raw) => reasonOf(raw) === 'rate-limited'));
      const bob = await curl(['-x', gate.url, '-U', 'b:key-bob', `http://api.test:${echo.port}/bob`]);
      assert.equal(bob.status, 200, 'another agent has its own budget');
    } finally {
      await gate.close();
    }
  });

  it('bounds the tunnels one agent holds open at once; a closed tunnel frees its slot; other agents are unaffected', async () => {
    const gate = await startTestProxy(POLICY('block'), { settings: { resolve, limits: { maxTunnelsPerAgent: 2 } } });
    const target = `api.test:${echo.port}`;
    try {
      const first = await openTunnel(gate.proxy.address.port, target);
      const second = await openTunnel(gate.proxy.address.port, target);
      const third = await rawExchange(gate.proxy.address.port, `CONNECT ${target} HTTP/1.1\r\nHost: ${target}\r\nProxy-Authorization: Bearer key-alice\r\n\r\n`);
      assert.match(third, /^HTTP\/1\.1 429/);
      assert.equal(reasonOf(third), 'rate-limited');
      assert.match(third, /already holds 2 open tunnels/);
      const bob = await rawExchange(gate.proxy.address.port, `CONNECT ${target} HTTP/1.1\r\nHost: ${target}\r\nProxy-Authorization: Bearer key-bob\r\n\r\n`, 500);
      assert.match(bob, /^HTTP\/1\.1 200/, 'another agent has its own slots');
      first.destroy();
      await new Promise((resolvePromise) => setTimeout(resolvePromise, 100));
      const again = await openTunnel(gate.proxy.address.port, target);
      again.destroy();
      second.destroy();
    } finally {
      await gate.close();
    }
  });

  it('bounds the plain-HTTP requests one agent holds in flight as it bounds tunnels, so held bodies cannot pile up', async () => {
    const gate = await startTestProxy(POLICY('block'), { scanner: createScanner(), settings: { resolve, limits: { maxTunnelsPerAgent: 2 } } });
    const url = `http://api.test:${echo.port}/upload`;
    // Headers and the first bytes of a large body: the proxy holds what it read while it waits for the rest.
    const started = `POST ${url} HTTP/1.1\r\nHost: api.test:${echo.port}\r\nProxy-Authorization: Bearer key-alice\r\nContent-Length: 1000000\r\n\r\n${'x'.repeat(1000)}`;
    const open: Socket[] = [];
    try {
      for (let i = 0; i < 2; i++) {
        const socket = connect(gate.proxy.address.port, '127.0.0.1');
        socket.on('error', () => undefined);
        socket.write(started);
        open.push(socket);
      }
      await new Promise((resolvePromise) => setTimeout(resolvePromise, 200));
      const third = await rawExchange(gate.proxy.address.port, started.replace(/Content-Length: \d+/, 'Content-Length: 1000'), 1000);
      assert.match(third, /^HTTP\/1\.1 429/);
      assert.equal(reasonOf(third), 'rate-limited');
      for (const socket of open) socket.destroy();
      await new Promise((resolvePromise) => setTimeout(resolvePromise, 100));
      const after = await curl(['-x', gate.url, '-U', 'a:key-alice', '--data-binary', 'ok', url]);
      assert.equal(after.status, 200, 'a finished request frees its slot');
      const again = await curl(['-x', gate.url, '-U', 'a:key-alice', url]);
      assert.equal(again.status, 200);
    } finally {
      for (const socket of open) socket.destroy();
      await gate.close();
    }
  });

  it('blocks a body over the inspection limit with 413 when the policy says block', async () => {
    const gate = await startTestProxy(POLICY('block'), { scanner: createScanner(), settings: { resolve, limits: { maxInspectedBytes: 1024 } } });
    try {
      const result = await curl(['-x', gate.url, '-U', 'a:key-alice', '--data-binary', 'x'.repeat(5000), `http://api.test:${echo.port}/upload`]);
      assert.equal(result.status, 413);
      assert.equal(result.headers['x-gatehouse-reason'], 'body-too-large');
      const small = await curl(['-x', gate.url, '-U', 'a:key-alice', '--data-binary', 'x'.repeat(500), `http://api.test:${echo.port}/upload`]);
      assert.equal(small.status, 200);
    } finally {
      await gate.close();
    }
  });

  it('passes a body over the limit uninspected when the policy says allow, and records that it did', async () => {
    const gate = await startTestProxy(POLICY('allow'), { scanner: createScanner(), settings: { resolve, limits: { maxInspectedBytes: 1024 } } });
    try {
      const body = 'y'.repeat(200_000);
      const bodyDir = mkdtempSync(join(tmpdir(), 'gatehouse-body-'));
      const file = join(bodyDir, 'body');
      writeFileSync(file, body);
      const result = await curl(['-x', gate.url, '-U', 'a:key-alice', '--data-binary', `@${file}`, `http://api.test:${echo.port}/big`]);
      rmSync(bodyDir, { recursive: true, force: true });
      assert.equal(result.status, 200);
      assert.equal((JSON.parse(result.body) as { body: string }).body, body, 'the whole body arrived intact');
      const record = gate.audit.records.find((r) => r.resource.endsWith('/big'));
      assert.match(String(record?.details?.uninspected), /passed uninspected/);
    } finally {
      await gate.close();
    }
  });

  it('lets the server speak first through a tunnel (an ssh banner), also where the first client bytes are checked', async () => {
    const banner = await tcpServer((socket) => {
      socket.on('error', () => undefined);
      socket.write('SSH-2.0-OpenSSH_9.2 test\r\n');
    });
    const gate = await startTestProxy(POLICY('block'), { settings: { resolve } });
    try {
      const tunnel = await openTunnel(gate.proxy.address.port, `127.0.0.1:${banner.port}`);
      const named = await openTunnel(gate.proxy.address.port, `api.test:${banner.port}`).catch((error: Error) => assert.fail(error.message));
      for (const socket of [tunnel, named]) {
        const line = await new Promise<string>((resolve) => {
          socket.once('data', (chunk: Buffer) => resolve(chunk.toString()));
          socket.resume();
        });
        assert.match(line, /^SSH-2\.0-/);
        socket.destroy();
      }
    } finally {
      await gate.close();
      banner.server.close();
    }
  });

  it('closes an idle tunnel and records why', async () => {
    const quiet = await tcpServer(() => undefined);
    const gate = await startTestProxy(POLICY('block'), { settings: { limits: { idleTimeoutMs: 300 } } });
    try {
      const started = Date.now();
      const tunnel = await openTunnel(gate.proxy.address.port, `127.0.0.1:${quiet.port}`);
      await new Promise((r) => tunnel.once('close', r));
      assert.ok(Date.now() - started < 3_000);
      await new Promise((r) => setTimeout(r, 50));
      assert.equal(gate.audit.records.find((r) => r.action === 'connect')?.details?.ended, 'idle-timeout');
    } finally {
      await gate.close();
      quiet.server.close();
    }
  });

  it('answers 502 when the server of a plain request stays silent past the idle timeout, and records it', async () => {
    const quiet = await tcpServer(() => undefined);
    const gate = await startTestProxy(POLICY('block'), { settings: { limits: { idleTimeoutMs: 300 } } });
    try {
      const target = `127.0.0.1:${quiet.port}`;
      const started = Date.now();
      const raw = await rawExchange(gate.proxy.address.port, `GET http://${target}/slow HTTP/1.1\r\nHost: ${target}\r\nProxy-Authorization: Bearer key-alice\r\nConnection: close\r\n\r\n`, 5_000);
      assert.match(raw, /^HTTP\/1\.1 502 /);
      assert.equal(reasonOf(raw), 'upstream-unreachable');
      assert.match(raw, /ETIMEDOUT/);
      assert.ok(Date.now() - started < 3_000, 'the idle timeout ends the wait, not the client');
      await new Promise((r) => setTimeout(r, 50));
      assert.equal(gate.audit.records.find((r) => r.action === 'request')?.details?.reasonCode, 'upstream-unreachable');
    } finally {
      await gate.close();
      quiet.server.close();
    }
  });

  it('answers 502 when a body streaming through uninspected stops arriving for the idle timeout', async () => {
    // The server reads and never answers; the client sends part of a body over the inspection limit, then stops.
    const quiet = await tcpServer((socket) => socket.resume());
    const gate = await startTestProxy(POLICY('allow'), { scanner: createScanner(), settings: { resolve, limits: { maxInspectedBytes: 1024, idleTimeoutMs: 300 } } });
    try {
      const target = `api.test:${quiet.port}`;
      const head = `POST http://${target}/upload HTTP/1.1\r\nHost: ${target}\r\nProxy-Authorization: Bearer key-alice\r\nContent-Length: 100000\r\nConnection: close\r\n\r\n`;
      const started = Date.now();
      const raw = await rawExchange(gate.proxy.address.port, Buffer.concat([Buffer.from(head), Buffer.alloc(4096, 0x61)]), 5_000);
      assert.match(raw, /^HTTP\/1\.1 502 /);
      assert.match(raw, /ETIMEDOUT/);
      assert.ok(Date.now() - started < 3_000, 'the idle timeout ends the wait, not the client');
    } finally {
      await gate.close();
      quiet.server.close();
    }
  });

  it('keeps a tunnel open while the server keeps sending, however short the idle timeout', async () => {
    const chatty = await tcpServer((socket) => {
      const timer = setInterval(() => socket.write('tick\n'), 20);
      setTimeout(() => {
        clearInterval(timer);
        socket.end('bye\n');
      }, 900);
      socket.on('error', () => clearInterval(timer));
    });
    const gate = await startTestProxy(POLICY('block'), { settings: { limits: { idleTimeoutMs: 200 } } });
    try {
      const tunnel = await openTunnel(gate.proxy.address.port, `127.0.0.1:${chatty.port}`);
      let text = '';
      tunnel.on('data', (chunk: Buffer) => (text += chunk.toString()));
      tunnel.resume();
      await new Promise((r) => tunnel.once('end', r));
      assert.match(text, /bye\n$/, 'the server finished on its own terms');
      tunnel.destroy();
    } finally {
      await gate.close();
      chatty.server.close();
    }
  });

  it('closes a busy tunnel at the total timeout', async () => {
    const chatty = await tcpServer((socket) => {
      const timer = setInterval(() => socket.write('tick\n'), 20);
      socket.on('close', () => clearInterval(timer));
      socket.on('error', () => undefined);
    });
    const gate = await startTestProxy(POLICY('block'), { settings: { limits: { totalTimeoutMs: 400, idleTimeoutMs: 10_000 } } });
    try {
      const tunnel = await openTunnel(gate.proxy.address.port, `127.0.0.1:${chatty.port}`);
      tunnel.resume();
      await new Promise((r) => tunnel.once('close', r));
      await new Promise((r) => setTimeout(r, 50));
      assert.equal(gate.audit.records.find((r) => r.action === 'connect')?.details?.ended, 'total-timeout');
    } finally {
      await gate.close();
      chatty.server.close();
    }
  });

  it('applies backpressure: a client that does not read stops the upstream instead of filling the proxy', async () => {
    const total = 128 * 1024 * 1024;
    let accepted = 0;
    const chunk = Buffer.alloc(64 * 1024, 1);
    const flood = await tcpServer((socket) =>
      pump(socket, () => {
        if (accepted >= total) return undefined;
        accepted += chunk.length;
        return chunk;
      }),
    );
    const gate = await startTestProxy(POLICY('block'));
    try {
      const tunnel = await openTunnel(gate.proxy.address.port, `127.0.0.1:${flood.port}`);
      tunnel.pause();
      await new Promise((r) => setTimeout(r, 700));
      // Kernel socket buffers on both hops plus one stream buffer in the proxy: a few MB, not the whole flood.
      assert.ok(accepted < 48 * 1024 * 1024, `the upstream could only hand over ${(accepted / 1048576).toFixed(1)} MB while nobody read`);
      let received = 0;
      tunnel.on('data', (chunk: Buffer) => (received += chunk.length));
      tunnel.resume();
      await new Promise((r) => tunnel.once('end', r));
      assert.equal(received, total, `every byte arrived once the client read (${received} of ${total})`);
      tunnel.destroy();
    } finally {
      await gate.close();
      flood.server.close();
    }
  });

  it('delivers a large download through a tunnel byte for byte, however unevenly the client reads', async () => {
    // Distinct bytes everywhere (a counter per 4-byte word, written in uneven pieces), so a piece repeated,
    // lost or overwritten while the proxy reuses its read buffers changes the digest.
    const total = 48 * 1024 * 1024;
    const source = Buffer.allocUnsafe(total);
    for (let word = 0; word < total / 4; word++) source.writeUInt32LE(word, word * 4);
    const flood = await tcpServer((socket) => {
      let sent = 0;
      pump(socket, () => {
        if (sent >= total) return undefined;
        const size = Math.min(total - sent, 1 + ((sent * 7919) % (3 * 1024 * 1024)));
        sent += size;
        return source.subarray(sent - size, sent);
      });
    });
    const gate = await startTestProxy(POLICY('block'));
    try {
      // A session's Unix socket has small kernel buffers, so the proxy's writes to the client often stay
      // queued while it reads on: the case where reusing a buffer too early would show.
      const session = await gate.proxy.openSession({ agent: 'alice' }, 'sess-bytes');
      const tunnel = await openTunnel(session.socketPath, `127.0.0.1:${flood.port}`);
      const digest = createHash('sha256');
      let received = 0;
      let pauses = 0;
      tunnel.on('data', (chunk: Buffer) => {
        digest.update(chunk);
        received += chunk.length;
        // Stall now and then, so the proxy's queue fills and its reads stop and start again.
        if (received > (pauses + 1) * 4 * 1024 * 1024) {
          pauses += 1;
          tunnel.pause();
          setTimeout(() => tunnel.resume(), 20);
        }
      });
      tunnel.resume();
      await new Promise((r) => tunnel.once('end', r));
      tunnel.destroy();
      assert.equal(received, total);
      assert.equal(digest.digest('hex'), createHash('sha256').update(source).digest('hex'), 'the bytes arrived unchanged and in order');
    } finally {
      await gate.close();
      flood.server.close();
    }
  });

  it('refuses new connections with 503 once the audit log cannot be written (fail closed)', async () => {
    // A test double: a log whose disk has failed. Nothing on this machine can make a real file fail on demand.
    const broken: AuditLog = { append: () => Promise.reject(new Error('disk full')), close: () => Promise.resolve() };
    const gate = await startTestProxy(POLICY('block'), { audit: broken, settings: { resolve } });
    try {
      await curl(['-x', gate.url, '-U', 'a:key-alice', `http://api.test:${echo.port}/first`]);
      const next = await curl(['-x', gate.url, '-U', 'a:key-alice', `http://api.test:${echo.port}/second`]);
      assert.equal(next.status, 503);
      assert.equal(next.headers['x-gatehouse-reason'], 'audit-unavailable');
    } finally {
      await gate.close();
    }
  });
});
