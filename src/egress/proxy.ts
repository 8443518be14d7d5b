/**
 * Listeners and sessions. One HTTP engine (node's strict parser) serves every listener: the TCP listener
 * (agents outside a sandbox, authenticated by key), and a Unix socket per session (the socket is the
 * identity). Both also speak SOCKS5, told apart by the first byte a client sends.
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer as createHttpServer, type Server as HttpServer, type ServerResponse } from 'node:http';
import { createServer as createNetServer, type Server as NetServer, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import type { Duplex } from 'node:stream';
import { join } from 'node:path';
import type { AuditLog } from '../audit/record.js';
import { egressDefaults, type EgressSettings } from '../config/schema.js';
import type { Scanner } from '../dlp/index.js';
import type { PolicyHolder } from '../policy/engine.js';
import { matchHostPattern, parseHostPattern, type HostPattern } from '../policy/hosts.js';
import type { Principal } from '../policy/types.js';
import type { PlaceholderRegistry } from '../secrets/placeholders.js';
import { configError } from '../util/errors.js';
import type { Authenticate, Client } from './authenticate.js';
import { CertificateAuthority } from './ca.js';
import type { ResolveSecret } from './content.js';
import { HeaderDeadlines } from './deadline.js';
import { handleConnect, handleForward } from './http-proxy.js';
import { createInspector } from './intercept.js';
import { RateLimiter } from './limits.js';
import { Recorder } from './record.js';
import { Refusal } from './refusal.js';
import { createResolver, type Resolver } from './resolver.js';
import { parserRefusal, recordRefusal, refuseConnection, writeRawRefusal, writeRefusal } from './respond.js';
import type { Runtime } from './runtime.js';
import { handleSocks } from './socks.js';
import { upstreamPools } from './upstream.js';

export interface EgressProxyOptions {
  policy: PolicyHolder;
  audit: AuditLog;
  authenticate: Authenticate;
  /** Names this node in audit records. */
  node?: string;
  /** The `egress:` config section (listen addresses, resolve overrides, pass-through hosts, limits). */
  settings?: Partial<Omit<EgressSettings, 'limits'>> & { limits?: Partial<EgressSettings['limits']> };
  /** Replaces the system resolver (overrides in `settings.resolve` still apply first). */
  resolver?: Resolver;
  /** The CA for TLS inspection; without it (and without `dataDir`), a CONNECT the policy wants inspected is refused. */
  ca?: CertificateAuthority;
  /** The node's data dir: the inspection CA is loaded from (or created in) `<dataDir>/egress-ca/` when `ca` is not given. */
  dataDir?: string;
  /** CA certificates (PEM text) trusted for upstream servers besides the system's roots and `settings.upstreamCa` files. */
  upstreamCa?: string[];
  /** Secret scanning of readable requests (dlp/). */
  scanner?: Scanner;
  /** Session placeholders to swap for real values, only on the way to a host their grant names (secrets/). */
  placeholders?: PlaceholderRegistry;
  /** The vault: a secret's real value by name, for header injection. */
  resolveSecret?: ResolveSecret;
  /**
   * Sync audit mode (`audit.mode: sync`): each allowed connection's and request's decision record is
   * acknowledged by the audit log before the first byte flows. Batch mode (false, the default) records when
   * the connection or request ends, without making traffic wait.
   */
  awaitAudit?: boolean;
  /** Directory for session sockets; a private temporary directory by default. */
  socketDir?: string;
}

export interface EgressSession {
  /** Unix socket the sandbox bridge connects to; whoever connects is this session's principal. */
  socketPath: string;
  id: string;
  close(): Promise<void>;
}

export interface EgressProxy {
  /** The TCP listener's address, e.g. `{ host: '127.0.0.1', port: 7402 }`. */
  address: { host: string; port: number };
  /** The SOCKS5-only listener, when configured. */
  socksAddress: { host: string; port: number } | undefined;
  openSession(principal: Principal, id?: string): Promise<EgressSession>;
  close(): Promise<void>;
}

const SOCKS_CLIENT: Client = { listener: 'socks' };

export async function startEgressProxy(options: EgressProxyOptions): Promise<EgressProxy> {
  const settings = options.settings ?? {};
  const limits: EgressSettings['limits'] = { ...egressDefaults, ...settings.limits };
  const baseResolver = options.resolver ?? createResolver();
  const overrides = createResolver(settings.resolve ?? {});
  const fixedNames = new Set(Object.keys(settings.resolve ?? {}).map((name) => name.toLowerCase()));
  const passThrough = (settings.passThrough ?? []).map(parsePassThrough);
  // The inspector is set right below: it belongs to the runtime it is built from.
  const runtime = {
    policy: options.policy,
    recorder: new Recorder(options.audit, options.node ?? 'local', options.awaitAudit ?? false),
    resolver: (host) => (fixedNames.has(host) ? overrides(host) : baseResolver(host)),
    authenticate: options.authenticate,
    limits,
    connections: new RateLimiter(limits.connectionsPerSecond),
    requests: new RateLimiter(limits.requestsPerSecond),
    tunnels: new Map(),
    upstreams: upstreamPools(),
    clients: new WeakMap(),
    content: { ...(options.scanner ? { scanner: options.scanner } : {}), ...(options.placeholders ? { placeholders: options.placeholders } : {}), ...(options.resolveSecret ? { resolveSecret: options.resolveSecret } : {}) },
    isPassThrough: (host: string) => passThrough.some((pattern) => matchHostPattern(pattern, host)),
  } as Omit<Runtime, 'inspector'> as Runtime;

  const ca = options.ca ?? (options.dataDir !== undefined ? await CertificateAuthority.loadOrCreate(options.dataDir) : undefined);
  runtime.inspector = createInspector(runtime, { ...runtime.content, ca, upstreamCa: [...readUpstreamCas(settings.upstreamCa ?? []), ...(options.upstreamCa ?? [])] });
  const http = createHttpEngine(runtime);
  const sockets = new Set<Socket>();
  const accept = (client: Client, own?: Set<Socket>) => (socket: Socket): void => {
    sockets.add(socket);
    own?.add(socket);
    runtime.clients.set(socket, client);
    routeByFirstByte(runtime, http, socket, () => {
      sockets.delete(socket);
      own?.delete(socket);
    });
  };

  const tcp = createNetServer({ allowHalfOpen: true, noDelay: true, highWaterMark: 256 * 1024 }, accept({ listener: 'tcp' }));
  const address = await listen(tcp, settings.listen ?? '127.0.0.1:7402');
  let socks: NetServer | undefined;
  let socksAddress: EgressProxy['socksAddress'];
  if (settings.socks) {
    socks = createNetServer({ allowHalfOpen: true, noDelay: true, highWaterMark: 256 * 1024 }, (socket) => {
      sockets.add(socket);
      socket.once('close', () => sockets.delete(socket));
      runtime.clients.set(socket, SOCKS_CLIENT);
      void handleSocks(runtime, socket);
    });
    try {
      socksAddress = await listen(socks, settings.socks.listen);
    } catch (error) {
      await closeServer(tcp);
      throw error;
    }
  }

  let ownSocketDir: string | undefined;
  const sessions = new Set<EgressSession>();
  const openSession = async (principal: Principal, id: string = randomBytes(9).toString('base64url')): Promise<EgressSession> => {
    if (!/^[A-Za-z0-9_-]{1,64}$/.test(id)) throw configError('egress-session-id', `"${id}" is not a session id: use 1-64 letters, digits, "_" or "-"`);
    let dir = options.socketDir;
    if (!dir) dir = ownSocketDir ??= mkdtempSync(join(tmpdir(), 'gatehouse-egress-'));
    const socketPath = join(dir, `${id}.sock`);
    const connections = new Set<Socket>();
    const server = createNetServer({ allowHalfOpen: true, noDelay: true, highWaterMark: 256 * 1024 }, accept({ listener: 'session', principal, session: id }, connections));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen({ path: socketPath, readableAll: false, writableAll: false }, () => resolve());
    });
    const session: EgressSession = {
      socketPath,
      id,
      // Ending a session ends its connections too: nothing keeps the session's identity after it is gone.
      close: async () => {
        sessions.delete(session);
        const closing = closeServer(server);
        for (const socket of connections) socket.destroy();
        await closing;
      },
    };
    sessions.add(session);
    return session;
  };

  return {
    address,
    socksAddress,
    openSession,
    close: async () => {
      const closing = [closeServer(tcp), ...(socks ? [closeServer(socks)] : []), ...[...sessions].map((s) => s.close())];
      for (const socket of sockets) socket.destroy();
      await Promise.all(closing);
      // Refusals counted but not yet summarized are written now, before the caller closes the audit log.
      await runtime.recorder.close();
      runtime.upstreams.destroy();
      http.server.close();
      if (ownSocketDir) rmSync(ownSocketDir, { recursive: true, force: true });
    },
  };
}

function createHttpEngine(runtime: Runtime): { server: HttpServer; deadlines: HeaderDeadlines } {
  const server = createHttpServer({
    maxHeaderSize: runtime.limits.maxHeaderBytes,
    requireHostHeader: false, // HTTP/1.0 clients may omit Host; checkHostHeader decides
    headersTimeout: 0, // kept by HeaderDeadlines (see deadline.ts)
    requestTimeout: 0,
    keepAliveTimeout: 5_000,
    joinDuplicateHeaders: false,
  });
  // A client that half-closes after its request still gets the answer (node's http server otherwise aborts
  // the request and closes the socket when the client's side ends).
  (server as typeof server & { httpAllowHalfOpen: boolean }).httpAllowHalfOpen = true;
  const deadlines = new HeaderDeadlines(runtime.limits.headerTimeoutMs, (socket) => {
    refuseConnection(runtime, socket, new Refusal(408, 'header-timeout', 'the request headers did not arrive in time'));
    setTimeout(() => socket.destroy(), 1_000).unref();
  });
  server.on('request', (request, response) => {
    deadlines.clear(request.socket);
    response.once('finish', () => deadlines.arm(request.socket));
    handleForward(runtime, request, response).catch((error: unknown) => internalError(runtime, request.socket, response, error));
  });
  // "Expect: 100-continue": the client's body is invited only once the request passed its checks (see
  // forward.ts). Any other expectation is refused.
  server.on('checkContinue', (request, response) => server.emit('request', request, response));
  server.on('checkExpectation', (request, response) => {
    deadlines.clear(request.socket);
    request.resume();
    writeRefusal(response, new Refusal(417, 'bad-request', 'the only expectation this proxy meets is "100-continue"'));
  });
  server.on('connect', (request, socket, head) => {
    deadlines.clear(socket);
    handleConnect(runtime, request, socket, head).catch((error: unknown) => internalError(runtime, socket, undefined, error));
  });
  server.on('upgrade', (request, socket) => {
    deadlines.clear(socket);
    request.resume();
    writeRawRefusal(socket, new Refusal(501, 'unsupported', 'protocol upgrades through the plain-HTTP proxy are not supported; use CONNECT'));
  });
  server.on('clientError', (error: NodeJS.ErrnoException, socket) => {
    deadlines.clear(socket);
    if (error.code === 'ECONNRESET' || !socket.writable) {
      socket.destroy();
      return;
    }
    refuseConnection(runtime, socket, parserRefusal(error));
  });
  return { server, deadlines };
}

/**
 * SOCKS5 begins with version byte 5; an HTTP request begins with a method name. `closed` runs when the socket
 * closes; one listener does all of a connection's cleanup (a connection per request makes each one count).
 */
function routeByFirstByte(runtime: Runtime, http: { server: HttpServer; deadlines: HeaderDeadlines }, socket: Socket, closed: () => void): void {
  socket.on('error', () => socket.destroy());
  // A client that connects and sends nothing holds a socket too: it gets the header deadline as well.
  const silent = setTimeout(() => socket.destroy(), runtime.limits.headerTimeoutMs);
  silent.unref();
  socket.once('close', () => {
    clearTimeout(silent);
    http.deadlines.clear(socket);
    closed();
  });
  socket.once('data', (chunk: Buffer) => {
    clearTimeout(silent);
    socket.pause();
    socket.unshift(chunk);
    if (chunk[0] === 0x05) {
      void handleSocks(runtime, socket);
    } else {
      http.deadlines.arm(socket);
      http.server.emit('connection', socket);
    }
    socket.resume();
  });
}

/** A step threw (a bug, or a resource failure): answer 502 if still possible, and leave a record of it. */
function internalError(runtime: Runtime, socket: Duplex, response: ServerResponse | undefined, error: unknown): void {
  const refusal = new Refusal(502, 'upstream-unreachable', `the proxy failed: ${error instanceof Error ? error.message : String(error)}`);
  if (response) {
    recordRefusal(runtime, socket, refusal);
    writeRefusal(response, refusal);
  } else {
    refuseConnection(runtime, socket, refusal);
  }
}

function readUpstreamCas(paths: string[]): string[] {
  return paths.map((path) => {
    try {
      return readFileSync(path, 'utf8');
    } catch (error) {
      throw configError('egress-upstream-ca', `egress.upstreamCa: cannot read ${path} (${(error as NodeJS.ErrnoException).code ?? 'error'})`);
    }
  });
}

function parsePassThrough(text: string): HostPattern {
  const pattern = parseHostPattern(text);
  if (typeof pattern === 'string') throw configError('egress-pass-through', `egress.passThrough: ${pattern}`);
  return pattern;
}

async function listen(server: NetServer, listenAddress: string): Promise<{ host: string; port: number }> {
  const colon = listenAddress.lastIndexOf(':');
  const host = listenAddress.slice(0, colon).replace(/^\[|\]$/g, '');
  const port = Number(listenAddress.slice(colon + 1));
  await new Promise<void>((resolve, reject) => {
    server.once('error', (error: NodeJS.ErrnoException) =>
      reject(configError('egress-listen', `the egress proxy cannot listen on ${listenAddress} (${error.code ?? error.message}); change egress.listen`)),
    );
    server.listen({ host, port }, () => resolve());
  });
  const bound = server.address();
  if (bound === null || typeof bound === 'string') throw new Error('the egress listener has no address');
  return { host: bound.address, port: bound.port };
}

function closeServer(server: NetServer): Promise<void> {
  return new Promise((resolve) => server.close(() => resolve()));
}
