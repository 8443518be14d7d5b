/**
 * WebSockets through TLS inspection (wss://) and in plain tunnels (ws://), every message read on its way:
 * undici's WebSocket client and a raw TLS client through a session's tunnel, a WebSocket server on loopback that does its own handshake and
 * framing (nothing shared with the proxy's codec), and the audit records the proxy writes.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer as createHttpServer, type IncomingHttpHeaders, type IncomingMessage, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo, Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { connect as tlsConnect, type TLSSocket } from 'node:tls';
import { ProxyAgent, WebSocket } from 'undici';
import type { AuditRecord } from '../src/audit/record.js';
import { createScanner } from '../src/dlp/index.js';
import { checksummedToken, seededRandom } from '../src/dlp/samples.js';
import { CertificateAuthority } from '../src/egress/ca.js';
import type { EgressSession } from '../src/egress/index.js';
import { PlaceholderRegistry } from '../src/secrets/placeholders.js';
import { bridgeToSession, compile, connectTunnel, startTestProxy, type TestProxy, waitFor } from './egress-helpers.js';

const policy = (dlpAction: string): string => `
network:
  - id: inspected
    allow: [ws.test, other.test, bad.test]
    inspect: true
  - id: loopback-targets
    allow: [127.0.0.1]
  - id: no-admin
    deny: [ws.test]
    paths: ["/admin/**"]
credentials:
  - id: deploy
    secret: deploy-key
    hosts: [ws.test]
  - id: gh
    secret: github-token
    hosts: [ws.test]
    header: "Authorization: Bearer {secret}"
dlp:
  action: ${dlpAction}
`;

// ---- A WebSocket codec of the test's own (RFC 6455), so the proxy's is not checked against itself. ----

interface TestFrame {
  fin: boolean;
  opcode: number;
  masked: boolean;
  payload: Buffer;
}

function encodeTestFrame(opcode: number, payload: Buffer | string, options: { fin?: boolean; masked?: boolean } = {}): Buffer {
  const data = Buffer.from(payload);
  const masked = options.masked ?? true;
  const length = data.length < 126 ? Buffer.from([data.length]) : data.length < 65536 ? Buffer.from([126, data.length >> 8, data.length & 0xff]) : Buffer.alloc(9, 0);
  if (length.length === 9) {
    length[0] = 127;
    length.writeBigUInt64BE(BigInt(data.length), 1);
  }
  const first = Buffer.from([((options.fin ?? true) ? 0x80 : 0) | opcode]);
  const second = length;
  if (masked) second[0] = (second[0] as number) | 0x80;
  if (!masked) return Buffer.concat([first, second, data]);
  const key = Buffer.from([0x37, 0xfa, 0x21, 0x3d]);
  return Buffer.concat([first, second, key, Buffer.from(data.map((byte, i) => byte ^ (key[i % 4] as number)))]);
}

/** Whole frames at the start of `buffer`, and what is left. */
function decodeTestFrames(buffer: Buffer): { frames: TestFrame[]; rest: Buffer } {
  const frames: TestFrame[] = [];
  let at = 0;
  for (;;) {
    if (buffer.length - at < 2) break;
    const first = buffer[at] as number;
    const second = buffer[at + 1] as number;
    let length = second & 0x7f;
    let offset = at + 2;
    if (length === 126) {
      if (buffer.length < offset + 2) break;
      length = buffer.readUInt16BE(offset);
      offset += 2;
    } else if (length === 127) {
      if (buffer.length < offset + 8) break;
      length = Number(buffer.readBigUInt64BE(offset));
      offset += 8;
    }
    const masked = (second & 0x80) !== 0;
    const key = masked ? buffer.subarray(offset, offset + 4) : undefined;
    if (masked) offset += 4;
    if (buffer.length < offset + length) break;
    const raw = buffer.subarray(offset, offset + length);
    frames.push({ fin: (first & 0x80) !== 0, opcode: first & 0x0f, masked, payload: key ? Buffer.from(raw.map((byte, i) => byte ^ (key[i % 4] as number))) : Buffer.from(raw) });
    at = offset + length;
  }
  return { frames, rest: buffer.subarray(at) };
}

interface WsServer {
  port: number;
  upgrades: { url: string; headers: IncomingHttpHeaders }[];
  /** Whole messages the server received (fragments joined), as text. */
  messages: string[];
  /** Every frame the server received. */
  frames: TestFrame[];
  /** Set once `/flood` stopped sending: how much it sent, and whether its peer stopped reading. */
  flood?: { sent: number; stalled: boolean };
  close(): Promise<void>;
}

/**
 * A WebSocket echo server for `name`, over TLS with a certificate from `ca`, in the clear without one: answers
 * `/forbidden` with 403, echoes each message as `echo:<message>`, answers "whoami" with the Authorization it
 * was sent, and answers a close with a close.
 */
async function startWebSocketServer(ca: CertificateAuthority | undefined, name: string): Promise<WsServer> {
  const notFound = (_request: IncomingMessage, response: ServerResponse): void => void response.writeHead(404).end();
  const pair = ca ? await ca.issue(name) : undefined;
  const server = pair ? createHttpsServer({ cert: pair.certificate, key: pair.key }, notFound) : createHttpServer(notFound);
  const state: WsServer = { port: 0, upgrades: [], messages: [], frames: [], close: async () => undefined };
  const sockets = new Set<Socket>();
  server.on('upgrade', (request, socket: Socket, head: Buffer) => {
    sockets.add(socket);
    socket.on('error', () => undefined);
    state.upgrades.push({ url: request.url ?? '', headers: request.headers });
    if (request.url?.startsWith('/forbidden')) {
      socket.end('HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\nContent-Length: 24\r\n\r\nserver-secret-403-body\r\n');
      return;
    }
    const accept = createHash('sha1').update(`${request.headers['sec-websocket-key']}258EAFA5-E914-47DA-95CA-C5AB0DC85B11`).digest('base64');
    socket.write(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${accept}\r\n\r\n`);
    if (request.url === '/flood') return flood(socket, state);
    let buffered: Buffer = Buffer.from(head);
    let message: Buffer[] = [];
    socket.on('data', (chunk: Buffer) => {
      const { frames, rest } = decodeTestFrames(Buffer.concat([buffered, chunk]));
      buffered = rest;
      for (const frame of frames) {
        state.frames.push(frame);
        if (frame.opcode === 0x8) {
          socket.end(encodeTestFrame(0x8, frame.payload.subarray(0, 2), { masked: false }));
          return;
        }
        if (frame.opcode === 0x9) socket.write(encodeTestFrame(0xa, frame.payload, { masked: false }));
        if (frame.opcode >= 0x8) continue;
        message.push(frame.payload);
        if (!frame.fin) continue;
        const text = Buffer.concat(message).toString('utf8');
        message = [];
        state.messages.push(text);
        const answer = text === 'whoami' ? `auth:${request.headers.authorization ?? '-'}` : `echo:${text}`;
        socket.write(encodeTestFrame(0x1, answer, { masked: false }));
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  state.port = (server.address() as AddressInfo).port;
  state.close = () =>
    new Promise<void>((resolve) => {
      for (const socket of sockets) socket.destroy();
      server.closeAllConnections();
      server.close(() => resolve());
    });
  return state;
}

const FLOOD_LIMIT = 128 * 1024 * 1024;

/** Sends 256 KB messages as fast as the socket takes them, up to 128 MB; stops when a second passes without a drain. */
function flood(socket: Socket, state: WsServer): void {
  const frame = encodeTestFrame(0x2, Buffer.alloc(256 * 1024, 7), { masked: false });
  let sent = 0;
  const pump = (): void => {
    while (sent < FLOOD_LIMIT) {
      sent += frame.length;
      if (!socket.write(frame)) {
        const stalled = setTimeout(() => (state.flood = { sent, stalled: true }), 1_000);
        socket.once('drain', () => {
          clearTimeout(stalled);
          pump();
        });
        return;
      }
    }
    state.flood = { sent, stalled: false };
  };
  pump();
}

interface RawWebSocket {
  /** The proxy's answer head to the upgrade. */
  head: string;
  status: number;
  socket: TLSSocket;
  send(bytes: Buffer): void;
  /** Frames received so far, after the head. */
  frames(): TestFrame[];
  closed: Promise<void>;
}

/** A WebSocket upgrade written by hand, through a CONNECT tunnel on `proxyPort`, over TLS to the proxy. */
async function rawWebSocket(proxyPort: number, host: string, port: number, ca: string, path: string, upgrade = 'websocket'): Promise<RawWebSocket> {
  const tunnel = await connectTunnel({ port: proxyPort }, host, port);
  const socket = tlsConnect({ socket: tunnel, servername: host, ca, ALPNProtocols: ['http/1.1'] });
  socket.on('error', () => undefined);
  await new Promise<void>((resolve, reject) => {
    socket.once('secureConnect', resolve);
    socket.once('error', reject);
  });
  socket.write(
    `GET ${path} HTTP/1.1\r\nHost: ${host}:${port}\r\nUpgrade: ${upgrade}\r\nConnection: Upgrade\r\n` +
      'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n',
  );
  let received = Buffer.alloc(0);
  const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
  const head = await new Promise<string>((resolve) => {
    const timer = setTimeout(() => resolve(received.toString('latin1')), 5_000);
    socket.on('data', (chunk: Buffer) => {
      received = Buffer.concat([received, chunk]);
    });
    const check = (): void => {
      const end = received.indexOf('\r\n\r\n');
      if (end < 0) return;
      clearTimeout(timer);
      socket.off('data', check);
      const text = received.toString('latin1', 0, end + 4);
      received = received.subarray(end + 4);
      resolve(text);
    };
    socket.on('data', check);
    void closed.then(() => {
      clearTimeout(timer);
      resolve(received.toString('latin1'));
    });
  });
  return {
    head,
    status: Number(/^HTTP\/1\.1 (\d{3})/.exec(head)?.[1] ?? 0),
    socket,
    send: (bytes) => socket.write(bytes),
    frames: () => decodeTestFrames(received).frames,
    closed,
  };
}

interface Opened {
  socket: WebSocket;
  received: string[];
  closed: Promise<{ code: number; reason: string }>;
}

/** Opens a WebSocket with undici's client through `dispatcher`; rejects when the upgrade fails. */
function openWebSocket(url: string, dispatcher: ProxyAgent): Promise<Opened> {
  return new Promise((resolve, reject) => {
    const socket = new WebSocket(url, { dispatcher });
    const received: string[] = [];
    const closed = new Promise<{ code: number; reason: string }>((resolveClosed) => {
      socket.addEventListener('close', (event) => resolveClosed({ code: event.code, reason: event.reason }));
    });
    socket.addEventListener('message', (event) => received.push(String(event.data)));
    socket.addEventListener('open', () => resolve({ socket, received, closed }));
    socket.addEventListener('error', () => reject(new Error(`the WebSocket to ${url} failed`)));
  });
}

/**
 * Sends a message carrying `secret` and expects the proxy to close the WebSocket with 1008 before the server
 * sees it, and to record a denial that never holds the secret. The record, for more checks.
 */
async function expectSecretClosed(client: Opened, server: WsServer, secret: string, recordOf: () => Promise<AuditRecord>): Promise<AuditRecord> {
  client.socket.send(`here is my token ${secret}`);
  const closed = await client.closed;
  assert.equal(closed.code, 1008);
  assert.equal(closed.reason, 'Gatehouse: secret-detected');
  assert.ok(!server.messages.some((m) => m.includes(secret)), 'the secret never reached the server');
  const record = await recordOf();
  assert.equal(record.effect, 'deny');
  assert.equal(record.details?.reasonCode, 'secret-detected');
  assert.ok(!JSON.stringify(record).includes(secret), 'the record never holds the secret');
  return record;
}

describe('egress WebSockets through TLS inspection', () => {
  const dir = mkdtempSync(join(tmpdir(), 'gatehouse-ws-'));
  let gate: TestProxy;
  let ws: WsServer;
  /** A host no credential grant names. */
  let other: WsServer;
  /** A host whose certificate no trusted CA signed. */
  let bad: WsServer;
  let session: EgressSession;
  let bridge: Awaited<ReturnType<typeof bridgeToSession>>;
  let dispatcher: ProxyAgent;
  let proxyCaPem = '';
  const placeholders = new PlaceholderRegistry();
  const realDeployKey = checksummedToken('ghp_', seededRandom(31));
  /** A secret the agent holds no placeholder for: the kind of thing a scan exists to stop. */
  const leaked = checksummedToken('ghp_', seededRandom(32));

  before(async () => {
    const proxyCa = await CertificateAuthority.create('Test proxy CA');
    const publicCa = await CertificateAuthority.create('Test public CA');
    proxyCaPem = proxyCa.certificatePem;
    ws = await startWebSocketServer(publicCa, 'ws.test');
    other = await startWebSocketServer(publicCa, 'other.test');
    bad = await startWebSocketServer(await CertificateAuthority.create('Untrusted CA'), 'bad.test');
    gate = await startTestProxy(policy('block'), {
      ca: proxyCa,
      upstreamCa: [publicCa.certificatePem],
      scanner: createScanner(),
      placeholders,
      resolveSecret: (name) => (name === 'github-token' ? 'real-gh-token-0123456789' : name === 'deploy-key' ? realDeployKey : undefined),
      settings: { resolve: { 'ws.test': ['127.0.0.1'], 'other.test': ['127.0.0.1'], 'bad.test': ['127.0.0.1'] } },
    });
    session = await gate.proxy.openSession({ agent: 'alice' }, 'sess-ws');
    bridge = await bridgeToSession(session.socketPath);
    dispatcher = new ProxyAgent({ uri: `http://127.0.0.1:${bridge.port}`, requestTls: { ca: proxyCaPem } });
  });
  after(async () => {
    await dispatcher.close();
    await bridge.close();
    await gate.close();
    await ws.close();
    await other.close();
    await bad.close();
    rmSync(dir, { recursive: true, force: true });
  });

  const grant = (secret: string) => {
    const found = gate.holder.current.grants({ agent: 'alice' }).find((g) => g.secret === secret);
    assert.ok(found, `a grant for ${secret}`);
    return found;
  };

  /** Opens a WebSocket with undici's client through the session; rejects when the upgrade fails. */
  const open = (url: string, via: ProxyAgent = dispatcher): Promise<Opened> => openWebSocket(url, via);

  const raw = (host: 'ws.test' | 'other.test' | 'bad.test', path: string, upgrade?: string): Promise<RawWebSocket> =>
    rawWebSocket(bridge.port, host, { 'ws.test': ws, 'other.test': other, 'bad.test': bad }[host].port, proxyCaPem, path, upgrade);

  /** The record of the WebSocket at `path`, once the connection ended. */
  const recordOf = async (path: string): Promise<AuditRecord> => {
    let found: AuditRecord | undefined;
    await waitFor(() => (found = gate.audit.records.find((r) => r.resource.endsWith(path) && r.details?.upgrade === 'websocket' && (r.details?.ended !== undefined || r.effect === 'deny'))) !== undefined);
    return found!;
  };

  it('relays messages both ways through inspection, and records the connection', async () => {
    const client = await open(`wss://ws.test:${ws.port}/chat/round-trip`);
    client.socket.send('hello through the proxy');
    await waitFor(() => client.received.length === 1);
    assert.equal(client.received[0], 'echo:hello through the proxy');
    assert.ok(ws.messages.includes('hello through the proxy'));
    client.socket.close(1000, 'done');
    assert.equal((await client.closed).code, 1000);
    const record = await recordOf('/chat/round-trip');
    assert.equal(record.effect, 'allow');
    assert.equal(record.resource, `https://ws.test:${ws.port}/chat/round-trip`);
    assert.equal(record.details?.messagesUp, 1);
    assert.equal(record.details?.messagesDown, 1);
    assert.equal(record.details?.address, '127.0.0.1');
    assert.equal(record.details?.status, 101);
    assert.ok((record.details?.bytesUp as number) > 0 && (record.details?.bytesDown as number) > 0);
  });

  it('does not let the client negotiate an extension: the server sees no Sec-WebSocket-Extensions', async () => {
    const client = await open(`wss://ws.test:${ws.port}/chat/extensions`);
    client.socket.close();
    await client.closed;
    const upgrade = ws.upgrades.find((u) => u.url === '/chat/extensions');
    assert.ok(upgrade, 'the upgrade reached the server');
    assert.equal(upgrade.headers['sec-websocket-extensions'], undefined);
    const record = await recordOf('/chat/extensions');
    // undici offers permessage-deflate; the record says it was not forwarded.
    assert.match(String(record.details?.extensions), /not forwarded \(permessage-deflate/);
  });

  it('closes with 1008 a message that carries a secret, which never reaches the server, and records why', async () => {
    const record = await expectSecretClosed(await open(`wss://ws.test:${ws.port}/chat/leak`), ws, leaked, () => recordOf('/chat/leak'));
    assert.equal(record.details?.closeCode, 1008);
    assert.match(record.reason, /closed the WebSocket \(1008\)/);
    assert.equal((record.details?.findings as { rule: string; message: number }[])[0]?.message, 1);
  });

  it('forwards a message redacted under dlp.action redact', async () => {
    const blocking = gate.holder.current;
    gate.holder.current = compile(policy('redact'));
    try {
      const client = await open(`wss://ws.test:${ws.port}/chat/redact`);
      client.socket.send(`token=${leaked}; keep this`);
      await waitFor(() => client.received.length === 1);
      const seen = ws.messages.at(-1) ?? '';
      assert.ok(!seen.includes(leaked), 'the server got no secret');
      assert.match(seen, /^token=.*REDACTED.*; keep this$/);
      // Recorded at once, while the WebSocket is still open: it may stay open for hours.
      await waitFor(() => gate.audit.records.some((r) => r.action === 'message' && r.resource.endsWith('/chat/redact') && r.details?.message === 1 && r.details?.redacted === true));
      const message = gate.audit.records.find((r) => r.action === 'message' && r.resource.endsWith('/chat/redact'));
      assert.equal((message?.details?.findings as { rule: string }[])[0]?.rule, 'github-pat');
      assert.ok(!JSON.stringify(message).includes(leaked), 'the record never holds the secret');
      client.socket.close();
      await client.closed;
      const record = await recordOf('/chat/redact');
      assert.equal(record.effect, 'allow');
      assert.equal(record.details?.redactedMessages, 1);
    } finally {
      gate.holder.current = blocking;
    }
  });

  it('catches a secret split across fragments of one message', async () => {
    const client = await raw('ws.test', '/chat/fragments');
    assert.equal(client.status, 101, client.head);
    const cut = 14;
    client.send(encodeTestFrame(0x1, `token ${leaked.slice(0, cut)}`, { fin: false }));
    client.send(encodeTestFrame(0x0, `${leaked.slice(cut)} end`, { fin: true }));
    await client.closed;
    const close = client.frames().find((frame) => frame.opcode === 0x8);
    assert.equal(close?.payload.readUInt16BE(0), 1008);
    assert.ok(!ws.frames.some((frame) => frame.payload.toString('latin1').includes(leaked.slice(0, cut))), 'no fragment reached the server');
    assert.equal((await recordOf('/chat/fragments')).details?.reasonCode, 'secret-detected');
  });

  it("swaps this session's placeholder into a message, and masks the real value in the server's echo", async () => {
    const placeholder = placeholders.issue('sess-ws', grant('deploy-key'), realDeployKey);
    const client = await open(`wss://ws.test:${ws.port}/chat/placeholder`);
    client.socket.send(`deploy with ${placeholder.value}`);
    await waitFor(() => client.received.length === 1);
    assert.equal(ws.messages.at(-1), `deploy with ${realDeployKey}`, 'the server got the real value');
    assert.equal(client.received[0], `echo:deploy with ${placeholder.value}`, 'the agent reads its placeholder back');
    // The credential header the grant injects into the upgrade is masked too, as a redaction.
    client.socket.send('whoami');
    await waitFor(() => client.received.length === 2);
    assert.equal(ws.upgrades.find((u) => u.url === '/chat/placeholder')?.headers.authorization, 'Bearer real-gh-token-0123456789');
    assert.equal(client.received[1], 'auth:Bearer [REDACTED:github-token]');
    client.socket.close();
    await client.closed;
    const record = await recordOf('/chat/placeholder');
    assert.deepEqual(record.details?.placeholders, ['deploy-key']);
    assert.equal(record.details?.masked, 2);
  });

  it('masks the real value of a placeholder the session was lent after the WebSocket opened', async () => {
    const late = await gate.proxy.openSession({ agent: 'alice' }, 'sess-ws-late');
    const lateBridge = await bridgeToSession(late.socketPath);
    const lateDispatcher = new ProxyAgent({ uri: `http://127.0.0.1:${lateBridge.port}`, requestTls: { ca: proxyCaPem } });
    try {
      const client = await open(`wss://ws.test:${ws.port}/chat/lent-later`, lateDispatcher);
      const placeholder = placeholders.issue('sess-ws-late', grant('deploy-key'), realDeployKey);
      client.socket.send(`late ${placeholder.value}`);
      await waitFor(() => client.received.length === 1);
      assert.equal(ws.messages.at(-1), `late ${realDeployKey}`);
      assert.equal(client.received[0], `echo:late ${placeholder.value}`);
      client.socket.close();
      await client.closed;
    } finally {
      await lateDispatcher.close();
      await lateBridge.close();
    }
  });

  it('closes with 1008 a placeholder heading to a host its grant does not name, as attempted exfiltration', async () => {
    const placeholder = placeholders.issue('sess-ws', grant('deploy-key'), realDeployKey);
    const client = await open(`wss://other.test:${other.port}/chat/exfiltrate`);
    client.socket.send(`steal ${placeholder.value}`);
    assert.equal((await client.closed).code, 1008);
    assert.deepEqual(other.messages, [], 'nothing reached the other host');
    const record = await recordOf('/chat/exfiltrate');
    assert.equal(record.details?.reasonCode, 'placeholder-exfiltration');
    assert.deepEqual(record.details?.attemptedExfiltration, { secret: 'deploy-key', rule: 'deploy', session: 'sess-ws' });
  });

  it('refuses an upgrade on a path a deny rule names, before anything reaches the server', async () => {
    const client = await raw('ws.test', '/admin/socket');
    assert.equal(client.status, 403, client.head);
    assert.match(client.head, /X-Gatehouse-Reason: policy-denied/);
    assert.ok(!ws.upgrades.some((u) => u.url === '/admin/socket'));
  });

  it("answers 502 upgrade-refused when the server refuses the upgrade, without relaying the server's body", async () => {
    const client = await raw('ws.test', '/forbidden');
    assert.equal(client.status, 502, client.head);
    assert.match(client.head, /X-Gatehouse-Reason: upgrade-refused/);
    await client.closed;
    assert.ok(ws.upgrades.some((u) => u.url === '/forbidden'), 'the server was asked');
    const record = await recordOf('/forbidden');
    assert.equal(record.details?.status, 403);
    assert.match(record.reason, /answered the WebSocket upgrade with 403/);
  });

  it("answers 502 upstream-certificate when the server's certificate does not verify, and sends it nothing", async () => {
    const client = await raw('bad.test', '/chat/untrusted');
    assert.equal(client.status, 502, client.head);
    assert.match(client.head, /X-Gatehouse-Reason: upstream-certificate/);
    assert.deepEqual(bad.upgrades, [], 'no upgrade request reached the server');
  });

  it('still refuses any other upgrade over inspected TLS (501), while a WebSocket one on the same host is served', async () => {
    const h2c = await raw('ws.test', '/chat/h2c', 'h2c');
    assert.equal(h2c.status, 501, h2c.head);
    assert.match(h2c.head, /X-Gatehouse-Reason: unsupported/);
    assert.ok(!ws.upgrades.some((u) => u.url === '/chat/h2c'));
    await waitFor(() => gate.audit.records.some((r) => r.details?.upgrade === 'h2c' && r.details?.reasonCode === 'unsupported' && r.principal.agent === 'alice'));
    const websocket = await raw('ws.test', '/chat/beside-h2c');
    assert.equal(websocket.status, 101, websocket.head);
    websocket.socket.destroy();
  });

  it("stops reading the server while the agent does not read: what the proxy holds stays bounded", async () => {
    const client = await raw('ws.test', '/flood');
    assert.equal(client.status, 101, client.head);
    client.socket.pause();
    await waitFor(() => ws.flood !== undefined, 30_000);
    assert.ok(ws.flood?.stalled, `the server was never held back (sent ${ws.flood?.sent} bytes)`);
    assert.ok((ws.flood?.sent ?? 0) < 32 * 1024 * 1024, `the server got ${ws.flood?.sent} bytes out before it was held back`);
    client.socket.destroy();
  });

  it('closes with 1002 a client frame that breaks the protocol (unmasked), and records why', async () => {
    const client = await raw('ws.test', '/chat/unmasked');
    assert.equal(client.status, 101, client.head);
    client.send(encodeTestFrame(0x1, 'not masked', { masked: false }));
    await client.closed;
    const close = client.frames().find((frame) => frame.opcode === 0x8);
    assert.equal(close?.payload.readUInt16BE(0), 1002);
    assert.ok(!ws.messages.includes('not masked'));
    const record = await recordOf('/chat/unmasked');
    assert.equal(record.details?.reasonCode, 'websocket-protocol');
    assert.match(record.reason, /not masked/);
  });
});

describe('egress WebSocket messages over the inspection limit', () => {
  for (const onTooLarge of ['block', 'allow'] as const) {
    it(onTooLarge === 'block' ? 'closes with 1009 a message over the limit (onTooLarge: block)' : 'passes a message over the limit unscanned and records it (onTooLarge: allow)', async () => {
      const proxyCa = await CertificateAuthority.create('Test proxy CA');
      const publicCa = await CertificateAuthority.create('Test public CA');
      const server = await startWebSocketServer(publicCa, 'ws.test');
      const gate = await startTestProxy(`network:\n  - id: ws\n    allow: [ws.test]\n    inspect: true\n  - id: loopback\n    allow: [127.0.0.1]\ndlp:\n  onTooLarge: ${onTooLarge}\n`, {
        ca: proxyCa,
        upstreamCa: [publicCa.certificatePem],
        scanner: createScanner(),
        settings: { resolve: { 'ws.test': ['127.0.0.1'] }, limits: { maxInspectedBytes: 1024 } },
      });
      const session = await gate.proxy.openSession({ agent: 'alice' }, 'sess-large');
      const bridge = await bridgeToSession(session.socketPath);
      try {
        const client = await rawWebSocket(bridge.port, 'ws.test', server.port, proxyCa.certificatePem, '/large');
        assert.equal(client.status, 101, client.head);
        const big = 'x'.repeat(3000);
        // In two fragments, the limit crossed inside the first.
        client.send(encodeTestFrame(0x1, big.slice(0, 2000), { fin: false }));
        client.send(encodeTestFrame(0x0, big.slice(2000), { fin: true }));
        if (onTooLarge === 'block') {
          await client.closed;
          assert.equal(client.frames().find((frame) => frame.opcode === 0x8)?.payload.readUInt16BE(0), 1009);
          assert.deepEqual(server.messages, []);
        } else {
          await waitFor(() => client.frames().length === 1);
          assert.equal(server.messages[0], big);
          assert.equal(client.frames()[0]?.payload.toString(), `echo:${big}`);
          client.send(encodeTestFrame(0x8, Buffer.from([0x03, 0xe8])));
          await client.closed;
        }
        let record: AuditRecord | undefined;
        await waitFor(() => (record = gate.audit.records.find((r) => r.details?.upgrade === 'websocket' && r.details?.ended !== undefined)) !== undefined);
        if (onTooLarge === 'block') assert.equal(record?.details?.reasonCode, 'body-too-large');
        else assert.match(String(record?.details?.uninspected), /1 message\(s\) over 1024 bytes passed unscanned/);
      } finally {
        await bridge.close();
        await gate.close();
        await server.close();
      }
    });
  }
});

describe('egress WebSockets (ws://) in a plain tunnel', () => {
  let gate: TestProxy;
  let server: WsServer;
  let session: EgressSession;
  let bridge: Awaited<ReturnType<typeof bridgeToSession>>;
  let dispatcher: ProxyAgent;
  const placeholders = new PlaceholderRegistry();
  const leaked = checksummedToken('ghp_', seededRandom(41));
  const realKey = checksummedToken('ghp_', seededRandom(42));

  before(async () => {
    server = await startWebSocketServer(undefined, 'plain.test');
    gate = await startTestProxy(
      `network:\n  - id: plain\n    allow: [plain.test]\n  - id: loopback\n    allow: [127.0.0.1]\ncredentials:\n  - id: deploy\n    secret: deploy-key\n    hosts: [plain.test]\n`,
      { scanner: createScanner(), placeholders, resolveSecret: (name) => (name === 'deploy-key' ? realKey : undefined), settings: { resolve: { 'plain.test': ['127.0.0.1'] } } },
    );
    session = await gate.proxy.openSession({ agent: 'alice' }, 'sess-plain-ws');
    bridge = await bridgeToSession(session.socketPath);
    dispatcher = new ProxyAgent({ uri: `http://127.0.0.1:${bridge.port}` });
  });
  after(async () => {
    await dispatcher.close();
    await bridge.close();
    await gate.close();
    await server.close();
  });

  const open = (path: string): Promise<Opened> => openWebSocket(`ws://plain.test:${server.port}${path}`, dispatcher);
  const recordOf = async (path: string): Promise<AuditRecord> => {
    let found: AuditRecord | undefined;
    await waitFor(() => (found = gate.audit.records.find((r) => r.resource.endsWith(path) && r.details?.upgrade === 'websocket' && r.details?.ended !== undefined)) !== undefined);
    return found!;
  };

  it('relays messages both ways, reads each one, and records the connection; no extension is negotiated', async () => {
    const client = await open('/plain/round-trip');
    client.socket.send('hello in the clear');
    await waitFor(() => client.received.length === 1);
    assert.equal(client.received[0], 'echo:hello in the clear');
    client.socket.close(1000, 'done');
    assert.equal((await client.closed).code, 1000);
    const upgrade = server.upgrades.find((u) => u.url === '/plain/round-trip');
    assert.ok(upgrade, 'the upgrade reached the server');
    assert.equal(upgrade.headers['sec-websocket-extensions'], undefined, 'permessage-deflate would hide frames from the scan');
    const record = await recordOf('/plain/round-trip');
    assert.equal(record.effect, 'allow');
    assert.equal(record.resource, `http://plain.test:${server.port}/plain/round-trip`);
    assert.equal(record.details?.messagesUp, 1);
    assert.equal(record.details?.messagesDown, 1);
  });

  it('closes with 1008 a message that carries a secret, which never reaches the server', async () => {
    await expectSecretClosed(await open('/plain/leak'), server, leaked, () => recordOf('/plain/leak'));
  });

  it('refuses a placeholder in a message (credentials never go in the clear): closed 1008, nothing reaches the server', async () => {
    const grant = gate.holder.current.grants({ agent: 'alice' }).find((g) => g.secret === 'deploy-key');
    assert.ok(grant, 'a grant for deploy-key');
    const placeholder = placeholders.issue('sess-plain-ws', grant, realKey).value;
    const client = await open('/plain/placeholder');
    client.socket.send(`key=${placeholder}`);
    const closed = await client.closed;
    assert.equal(closed.code, 1008);
    assert.equal(closed.reason, 'Gatehouse: credential-over-plaintext');
    assert.ok(!server.messages.some((m) => m.includes(placeholder) || m.includes(realKey)), 'neither the placeholder nor the real value reached the server');
    const record = await recordOf('/plain/placeholder');
    assert.equal(record.details?.reasonCode, 'credential-over-plaintext');
    assert.match(record.reason, /use wss:\/\//);
  });
});
