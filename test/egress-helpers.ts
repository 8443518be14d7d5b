/**
 * Shared by the egress tests: a real proxy on loopback with a compiled policy, real target servers on
 * loopback, and real clients (curl as a child process). Not a test file itself.
 */
import { spawn } from 'node:child_process';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { connect, createServer as createNetServer, type Socket } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import { parse as parseYaml } from 'yaml';
import { MemoryAuditLog } from '../src/audit/jsonl.js';
import { policySchema } from '../src/config/policy-schema.js';
import { readClientHelloSni } from '../src/egress/client-hello.js';
import { startEgressProxy, type EgressProxy, type EgressProxyOptions } from '../src/egress/index.js';
import type { PolicyEngine, PolicyHolder } from '../src/policy/engine.js';
import { compilePolicy } from '../src/policy/index.js';

export const KEYS: Record<string, { agent: string; teams?: string[] }> = {
  'key-alice': { agent: 'alice', teams: ['dev'] },
  'key-bob': { agent: 'bob' },
};

export function compile(yamlText: string): PolicyEngine {
  return compilePolicy(policySchema.parse(parseYaml(yamlText)));
}

export interface TestProxy {
  proxy: EgressProxy;
  audit: MemoryAuditLog;
  holder: { current: PolicyEngine };
  url: string;
  close(): Promise<void>;
}

export async function startTestProxy(policyYaml: string, extra: Partial<EgressProxyOptions> = {}): Promise<TestProxy> {
  const audit = new MemoryAuditLog();
  const holder = { current: compile(policyYaml) };
  const proxy = await startEgressProxy({
    policy: holder as PolicyHolder,
    audit,
    authenticate: (key) => KEYS[key],
    node: 'test',
    ...extra,
    settings: { listen: '127.0.0.1:0', ...extra.settings },
  });
  return {
    proxy,
    audit,
    holder,
    url: `http://127.0.0.1:${proxy.address.port}`,
    close: () => proxy.close(),
  };
}

/** An HTTP server on 127.0.0.1 that answers every request with what it received, as JSON. */
export async function startEchoServer(handler?: (request: IncomingMessage, response: ServerResponse, body: Buffer) => boolean): Promise<{ server: Server; port: number; close(): Promise<void> }> {
  const server = createServer((request, response) => {
    const chunks: Buffer[] = [];
    request.on('data', (chunk: Buffer) => chunks.push(chunk));
    request.on('end', () => {
      const body = Buffer.concat(chunks);
      if (handler?.(request, response, body)) return;
      const text = JSON.stringify({ method: request.method, url: request.url, headers: request.headers, body: body.toString('utf8') });
      response.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
      response.end(text);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  return {
    server,
    port,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

export interface CurlResult {
  code: number | null;
  status: number;
  /** The last response's status line, reason phrase and all. */
  statusLine: string;
  headers: Record<string, string>;
  body: string;
  stderr: string;
}

/** Runs curl with `-sS -i` and a hard time limit; parses the last response's status and headers. */
export function curl(args: string[], timeoutMs = 10_000): Promise<CurlResult> {
  return new Promise((resolve) => {
    const child = spawn('curl', ['-sS', '-i', '--max-time', String(Math.ceil(timeoutMs / 1000)), '--noproxy', '', ...args], {
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: process.env.HOME ?? '/tmp' },
    });
    let out = '';
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => (out += chunk.toString('latin1')));
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    child.on('close', (code) => {
      // With -i, every response (the proxy's "200 Connection Established" too) prints a header block.
      let rest = out;
      let status = 0;
      let statusLine = '';
      let headers: Record<string, string> = {};
      while (/^HTTP\/[\d.]+ \d{3}/.test(rest)) {
        const end = rest.indexOf('\r\n\r\n');
        const block = end < 0 ? rest : rest.slice(0, end);
        rest = end < 0 ? '' : rest.slice(end + 4);
        const lines = block.split('\r\n');
        statusLine = lines[0] ?? '';
        status = Number(statusLine.split(' ')[1]);
        headers = {};
        for (const line of lines.slice(1)) {
          const colon = line.indexOf(':');
          if (colon > 0) headers[line.slice(0, colon).toLowerCase()] = line.slice(colon + 1).trim();
        }
      }
      resolve({ code, status, statusLine, headers, body: rest, stderr });
    });
  });
}

/** Sends raw bytes to a port (then half-closes, if asked) and collects what comes back until the peer closes (bounded). */
export function rawExchange(port: number, bytes: string | Buffer, timeoutMs = 3_000, halfClose = false): Promise<string> {
  return new Promise((resolve) => {
    const socket: Socket = connect(port, '127.0.0.1');
    let data = '';
    const timer = setTimeout(() => socket.destroy(), timeoutMs);
    socket.on('connect', () => (halfClose ? socket.end(bytes) : socket.write(bytes)));
    socket.on('data', (chunk: Buffer) => (data += chunk.toString('latin1')));
    socket.on('error', () => undefined);
    socket.on('close', () => {
      clearTimeout(timer);
      resolve(data);
    });
  });
}

/** The X-Gatehouse-Reason of a raw HTTP response. */
export function reasonOf(raw: string): string | undefined {
  return /\r\nX-Gatehouse-Reason: ([^\r]+)/i.exec(raw)?.[1];
}

/** What a test server received; `bodyBytes` and `rawHeaders` exactly as they arrived. */
export interface SeenRequest {
  method: string;
  url: string;
  headers: Record<string, unknown>;
  body: string;
  bodyBytes: Buffer;
  rawHeaders: string[];
}

/** An HTTPS server on 127.0.0.1 with a certificate for `names` from `ca`, answering like startEchoServer. */
export async function startTlsEchoServer(
  ca: { issue(host: string): Promise<{ certificate: string; key: string }> },
  name: string,
): Promise<{ port: number; requests: SeenRequest[]; close(): Promise<void> }> {
  const { createServer: createHttpsServer } = await import('node:https');
  const pair = await ca.issue(name);
  const requests: SeenRequest[] = [];
  const server = createHttpsServer({ cert: pair.certificate, key: pair.key }, (request, response) => {
    const chunks: Buffer[] = [];
    request.on('data', (chunk: Buffer) => chunks.push(chunk));
    request.on('end', () => {
      const bytes = Buffer.concat(chunks);
      const seen = { method: request.method ?? '', url: request.url ?? '', headers: request.headers, body: bytes.toString('utf8') };
      requests.push({ ...seen, bodyBytes: bytes, rawHeaders: request.rawHeaders });
      const text = JSON.stringify(seen);
      response.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
      response.end(text);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as AddressInfo).port,
    requests,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/** A CONNECT tunnel to host:port through the proxy at `connectTo`, handed back once the proxy answered 200. */
export async function connectTunnel(connectTo: { path: string } | { port: number }, host: string, port: number, proxyAuthorization?: string): Promise<Socket> {
  const tunnel: Socket = 'path' in connectTo ? connect(connectTo.path) : connect(connectTo.port, '127.0.0.1');
  await new Promise<void>((resolve, reject) => {
    tunnel.once('error', reject);
    tunnel.once('connect', () => {
      const auth = proxyAuthorization ? `Proxy-Authorization: ${proxyAuthorization}\r\n` : '';
      tunnel.write(`CONNECT ${host}:${port} HTTP/1.1\r\nHost: ${host}:${port}\r\n${auth}\r\n`);
    });
    let head = '';
    const onData = (chunk: Buffer): void => {
      head += chunk.toString('latin1');
      if (!head.includes('\r\n\r\n')) return;
      tunnel.off('data', onData);
      if (/^HTTP\/1\.1 200 /.test(head)) resolve();
      else reject(new Error(`CONNECT refused: ${head.split('\r\n')[0]} ${/x-gatehouse-reason: (\S+)/i.exec(head)?.[1] ?? ''}`));
    };
    tunnel.on('data', onData);
  });
  return tunnel;
}

/**
 * An HTTPS request through a CONNECT tunnel opened on `connectTo` (a session's Unix socket or the TCP
 * listener), with the TLS server name `servername` (the target host unless a test wants fronting).
 */
export async function httpsViaProxy(options: {
  connectTo: { path: string } | { port: number };
  host: string;
  port: number;
  ca: string;
  servername?: string;
  proxyAuthorization?: string;
  method?: string;
  path?: string;
  headers?: Record<string, string>;
  body?: string | Buffer;
}): Promise<{ status: number; headers: Record<string, string | string[] | undefined>; body: string }> {
  const { connect: tlsConnect } = await import('node:tls');
  const { request: httpRequest } = await import('node:http');
  const tunnel = await connectTunnel(options.connectTo, options.host, options.port, options.proxyAuthorization);
  const secure = tlsConnect({ socket: tunnel, servername: options.servername ?? options.host, ca: options.ca, ALPNProtocols: ['http/1.1'] });
  await new Promise<void>((resolve, reject) => {
    secure.once('secureConnect', resolve);
    secure.once('error', reject);
  });
  return new Promise((resolve, reject) => {
    // TLS is already up on `secure`; plain http.request speaks HTTP over it (no agent, so createConnection is used).
    const request = httpRequest(
      {
        host: options.host,
        port: options.port,
        method: options.method ?? 'GET',
        path: options.path ?? '/',
        headers: options.headers ?? {},
        createConnection: () => secure,
        timeout: 5_000,
      },
      (response) => {
        let body = '';
        response.on('data', (chunk: Buffer) => (body += chunk.toString()));
        response.on('end', () => {
          secure.destroy();
          resolve({ status: response.statusCode ?? 0, headers: response.headers, body });
        });
      },
    );
    request.on('error', reject);
    request.end(options.body);
  });
}

/**
 * A TCP port on 127.0.0.1 that relays each connection to a session's Unix socket, as the sandbox's bridge
 * does, so clients that only speak to TCP proxies (curl, git) can use a session.
 */
export async function bridgeToSession(socketPath: string): Promise<{ port: number; close(): Promise<void> }> {
  const { createServer: createNetServer } = await import('node:net');
  const open = new Set<Socket>();
  const server = createNetServer({ allowHalfOpen: true }, (inbound) => {
    const outbound = connect(socketPath);
    open.add(inbound).add(outbound);
    for (const socket of [inbound, outbound]) {
      socket.on('error', () => {
        inbound.destroy();
        outbound.destroy();
      });
      socket.once('close', () => open.delete(socket));
    }
    inbound.pipe(outbound).pipe(inbound);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as AddressInfo).port,
    close: () =>
      new Promise<void>((resolve) => {
        for (const socket of open) socket.destroy();
        server.close(() => resolve());
      }),
  };
}

/** The first bytes a real node TLS client sends (its ClientHello) for `servername`. */
export async function captureHello(servername: string): Promise<Buffer> {
  const server = createNetServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
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
  const client = tlsConnect({ host: '127.0.0.1', port: (server.address() as AddressInfo).port, servername, rejectUnauthorized: false });
  client.on('error', () => undefined);
  const hello = await captured;
  client.destroy();
  server.close();
  return hello;
}

/** Waits until `condition` holds, checking every 20 ms; throws after `timeoutMs`. */
export async function waitFor(condition: () => boolean, timeoutMs = 5_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}
