/**
 * The gateway's front door: Streamable HTTP at `/mcp` with sessions, in front of `GatewayCore`.
 * Steps, in order: Host and Origin checks (DNS rebinding), authentication, body limit and JSON parse,
 * session lookup (a session belongs to the identity that opened it), then the session's transport
 * (session-transport.ts). Each session gets its own SDK `Server`; no server object is ever shared between clients.
 * A session's tools/call skips that server's request pipeline and goes to the core directly (direct-calls.ts).
 * With a data dir, the same front also serves `mcp.sock` there: stdio framing after a key hello, for
 * `gatehouse mcp` (local-socket.ts); and, for each `gatehouse run`, this HTTP endpoint on a socket of its own.
 */
import { randomUUID } from 'node:crypto';
import { once } from 'node:events';
import { createServer, type IncomingMessage, type Server as HttpServer, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  CLIENT_CAPABILITIES_META_KEY,
  Server,
  createMcpHandler,
  isLegacyRequest,
  parseJSONRPCMessage,
  type JSONRPCMessage,
  type LoggingLevel,
  type McpHttpHandler,
  type ServerContext,
} from '@modelcontextprotocol/server';
import type { AuditLog } from '../audit/record.js';
import { newCorrelationId } from '../audit/record.js';
import type { GatewaySettings } from '../config/schema.js';
import type { PolicyHolder } from '../policy/engine.js';
import type { Principal } from '../policy/types.js';
import { isLoopback, type Authenticator } from './auth.js';
import { readBody } from './body.js';
import { listenUnix, type UnixListener } from '../util/unix-socket.js';
import { requestCaller, type Caller, type GatewayCore } from './gateway.js';
import { serveDirectly } from './direct-calls.js';
import { LOCAL_SOCKET, LocalSessionTransport, readHello } from './local-socket.js';
import { HttpSessionTransport, presentedBy, presenting } from './session-transport.js';
import { LegacySseTransport } from './sse-front.js';
import { relayRequest } from './tasks.js';
import { UnreadLedger, UnreadWatch } from './unread.js';
import type { CallBinding } from './upstream.js';

interface Session {
  id: string;
  caller: Caller;
  /** HTTP sessions are found by their id; a local one only through its own connection. */
  transport: HttpSessionTransport | LocalSessionTransport;
  server: Server;
  lastSeen: number;
  unsubscribe: () => void;
}

export interface FrontOptions {
  settings: GatewaySettings;
  core: GatewayCore;
  authenticator: Authenticator;
  audit: AuditLog;
  policy: PolicyHolder;
  node: string;
  version: string;
  /** Close sessions unused for this long. */
  sessionIdleMs?: number;
  maxSessions?: number;
  /** What `GET /status` shows to loopback callers (`gatehouse status`). */
  status?: () => Promise<unknown>;
}

const LOOPBACK_HOSTS = new Set(['localhost', '127.0.0.1', '[::1]', '::1']);
/**
 * Rejections of callers not known (a bad Host, failed authentication) recorded one by one per minute: anyone who
 * can reach the port sends those as often as they like, and must not fill the audit log's disk.
 */
const UNKNOWN_REJECTIONS_PER_MINUTE = 100;

export class GatewayFront {
  private readonly sessions = new Map<string, Session>();
  /** Sessions of the deprecated HTTP+SSE transport, by the id in their endpoint URL. */
  private readonly sseSessions = new Map<string, { transport: LegacySseTransport; server: Server; caller: Caller; unsubscribe: () => void }>();
  private readonly http: HttpServer;
  private sweeper: NodeJS.Timeout | undefined;
  private readonly allowedHosts: Set<string>;
  private readonly allowedOrigins: Set<string>;
  /** The 2026-07-28 era: stateless, one SDK server per request, built for the authenticated caller. */
  private readonly modern: McpHttpHandler;
  private readonly unsubscribeModern: () => void;
  private readonly localListeners: UnixListener[] = [];
  /** Callers whose session is being opened (see holdingPlace). */
  private readonly opening: Principal[] = [];
  /** Rejections of callers not known in the current minute (see UNKNOWN_REJECTIONS_PER_MINUTE). */
  private unknownRejections = { since: 0, count: 0 };
  /** What each agent leaves unread across its responses, streams and local connections (unread.ts). */
  private readonly unread: UnreadLedger;
  url = '';

  constructor(private readonly options: FrontOptions) {
    this.http = createServer((req, res) => this.serve(req, res));
    this.unread = new UnreadLedger(options.settings.maxUnreadBytesPerAgent, (principal, reason) => {
      void this.recordRejection(principal, 'response.cut-off', reason);
    });
    const listenHost = hostOf(options.settings.listen);
    this.allowedHosts = new Set([...LOOPBACK_HOSTS, listenHost.toLowerCase(), ...options.settings.allowedHosts.map((h) => h.toLowerCase())]);
    if (options.settings.publicUrl) this.allowedHosts.add(new URL(options.settings.publicUrl).hostname.toLowerCase());
    this.allowedOrigins = new Set(options.settings.allowedOrigins.map((origin) => origin.toLowerCase().replace(/\/$/, '')));
    this.modern = createMcpHandler(
      (context) => {
        const principal = presentedBy(context) ?? {};
        return createSessionServer(options.core, { ...principal, session: `stateless-${randomUUID()}`, stateless: true }, options.version, options.settings.separator);
      },
      { legacy: 'reject', maxRequestBodySize: options.settings.maxMessageBytes },
    );
    // Modern clients hear about list changes on their `subscriptions/listen` streams.
    this.unsubscribeModern = options.core.onListChanged((kind) => {
      if (kind === 'tools') this.modern.notify.toolsChanged();
      else if (kind === 'prompts') this.modern.notify.promptsChanged();
      else this.modern.notify.resourcesChanged();
    });
  }

  async listen(): Promise<string> {
    const { listen } = this.options.settings;
    const separator = listen.lastIndexOf(':');
    const host = listen.slice(0, separator).replace(/^\[|\]$/g, '');
    const port = Number(listen.slice(separator + 1));
    this.http.listen(port, host);
    await once(this.http, 'listening');
    const address = this.http.address() as AddressInfo;
    const shownHost = address.family === 'IPv6' ? `[${address.address}]` : address.address;
    this.url = this.options.settings.publicUrl ?? `http://${shownHost}:${address.port}/mcp`;
    this.allowedHosts.add(shownHost.toLowerCase());
    const idle = this.options.sessionIdleMs ?? 60 * 60 * 1000;
    this.sweeper = setInterval(() => this.sweep(idle), Math.min(idle, 60_000));
    this.sweeper.unref();
    return this.url;
  }

  sessionCount(): number {
    return this.sessions.size + this.sseSessions.size;
  }

  async close(): Promise<void> {
    if (this.sweeper) clearInterval(this.sweeper);
    await Promise.all(this.localListeners.map((listener) => listener.close()));
    this.unsubscribeModern();
    await this.modern.close().catch(() => undefined);
    await Promise.all([...this.sessions.values()].map((session) => this.endSession(session)));
    await Promise.all([...this.sseSessions.values()].map((session) => session.server.close().catch(() => undefined)));
    this.http.closeAllConnections();
    await new Promise<void>((resolve) => this.http.close(() => resolve()));
  }

  private sweep(idleMs: number): void {
    const now = Date.now();
    // A local session lives as long as its connection.
    for (const session of this.sessions.values()) {
      if (session.transport instanceof HttpSessionTransport && now - session.lastSeen > idleMs) void this.endSession(session);
    }
  }

  /**
   * Serves the local socket (local-socket.ts) at `<dataDir>/mcp.sock`, beside the HTTP endpoint: the same
   * identity check, session limits, sessions and audit, with stdio's framing instead of HTTP's.
   */
  async listenLocal(dataDir: string): Promise<string> {
    const listener = await listenUnix(join(dataDir, LOCAL_SOCKET), (socket) => {
      this.serveLocal(socket).catch(() => socket.destroy());
    });
    this.localListeners.push(listener);
    return listener.path;
  }

  /**
   * This HTTP endpoint for one `gatehouse run`, on a socket of its own (in a private temp dir) that the run's
   * sandbox bridge carries 127.0.0.1:7401 to: an agent's MCP client finds the gateway at the same URL inside
   * as outside. The socket is the identity: a request without credentials is the run's agent (as on the
   * egress proxy's session sockets), so no key has to enter the sandbox. Its callers have no address, so
   * they are never anonymous loopback callers and never see /status. It closes when the run ends.
   */
  async listenForRun(principal: Principal): Promise<{ socketPath: string; close(): Promise<void> }> {
    const dir = mkdtempSync(join(tmpdir(), 'gatehouse-run-mcp-'));
    const listener = await listenUnix(join(dir, LOCAL_SOCKET), createServer((req, res) => this.serve(req, res, principal)));
    this.localListeners.push(listener);
    let closed = false;
    return {
      socketPath: listener.path,
      close: async () => {
        if (closed) return;
        closed = true;
        const at = this.localListeners.indexOf(listener);
        if (at >= 0) this.localListeners.splice(at, 1);
        await listener.close();
        rmSync(dir, { recursive: true, force: true });
      },
    };
  }

  /** Serves one HTTP request; `run` is the run whose socket it came through (see listenForRun). */
  private serve(req: IncomingMessage, res: ServerResponse, run?: Principal): void {
    this.handle(req, res, run).catch((error: unknown) => {
      if (!res.headersSent) jsonRpcError(res, 500, -32603, `internal error: ${error instanceof Error ? error.message : String(error)}`);
      else res.destroy();
    });
  }

  private async serveLocal(socket: Socket): Promise<void> {
    socket.on('error', () => undefined);
    const refuse = async (principal: Principal | undefined, action: string, reason: string): Promise<void> => {
      await this.recordRejection(principal, action, `${reason} (local socket)`);
      if (!socket.destroyed) socket.end(`${JSON.stringify({ ok: false, error: reason })}\n`);
    };
    const greeting = await readHello(socket);
    if ('error' in greeting) return refuse(undefined, 'request.rejected', greeting.error);
    // Never anonymous, whatever allowAnonymousLoopback says: `gatehouse run` carries sandboxed programs here.
    const outcome = await this.options.authenticator.authenticate({ authorization: greeting.hello.authorization }, undefined);
    if (!outcome.ok) return refuse(undefined, 'authenticate', outcome.message);
    const full = this.sessionLimit(outcome.principal);
    if (full) return refuse(outcome.principal, 'session.refused', full);
    if (socket.destroyed) return;
    let session: Session;
    try {
      session = await this.openSession(
        outcome.principal,
        (id) =>
          new LocalSessionTransport(
            id,
            socket,
            greeting.rest,
            this.options.settings.maxMessageBytes,
            (rejection) => void this.recordRejection(outcome.principal, rejection.action, `${rejection.reason} (local socket)`),
            this.unread.account(outcome.principal),
          ),
      );
    } catch (error) {
      return refuse(outcome.principal, 'session.refused', `the session could not open: ${error instanceof Error ? error.message : String(error)}`);
    }
    if (socket.destroyed) return void this.endSession(session);
    socket.once('close', () => void this.endSession(session));
  }

  private async endSession(session: Session): Promise<void> {
    if (!this.sessions.delete(session.id)) return;
    session.unsubscribe();
    await this.options.core.endSession(session.id);
    await session.server.close().catch(() => undefined);
  }

  private async handle(req: IncomingMessage, res: ServerResponse, run?: Principal): Promise<void> {
    const path = (req.url ?? '/').split('?')[0];
    // DNS rebinding: a browser tricked into calling us under another name shows that name in Host.
    const host = hostnameOfHeader(req.headers.host);
    if (host === undefined || !this.allowedHosts.has(host)) {
      return this.reject(req, res, 403, -32600, `the Host header "${req.headers.host ?? ''}" is not one this gateway answers to`);
    }
    const origin = req.headers.origin;
    if (origin !== undefined && !this.originAllowed(origin)) {
      return this.reject(req, res, 403, -32600, `requests from the origin "${origin}" are not allowed; add it to gateway.allowedOrigins`);
    }
    if (path === '/.well-known/oauth-protected-resource' || path === '/.well-known/oauth-protected-resource/mcp') {
      return this.protectedResourceMetadata(res);
    }
    if (path === '/status' && req.method === 'GET' && this.options.status) {
      if (!isLoopback(req.socket.remoteAddress)) return this.reject(req, res, 403, -32600, 'status is only served to this machine');
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(await this.options.status()));
      return;
    }
    if (path === '/healthz') {
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ ok: true, sessions: this.sessions.size }));
      return;
    }
    if (path !== '/mcp' && path !== '/sse' && path !== '/messages') {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found: the MCP endpoint is /mcp\n');
      return;
    }

    const outcome = await this.options.authenticator.authenticate(req.headers, req.socket.remoteAddress, run);
    if (!outcome.ok) {
      await this.recordRejection(undefined, 'authenticate', outcome.message);
      const metadata = `${this.baseUrl()}/.well-known/oauth-protected-resource/mcp`;
      const challenge = `Bearer resource_metadata="${metadata}"${outcome.invalidToken ? ', error="invalid_token"' : ''}`;
      res.writeHead(401, { 'content-type': 'application/json', 'www-authenticate': challenge });
      res.end(JSON.stringify({ jsonrpc: '2.0', id: null, error: { code: -32001, message: outcome.message } }));
      return;
    }
    const principal = outcome.principal;
    if (path === '/sse' || path === '/messages') return this.handleLegacySse(req, res, path, principal);

    let parsedBody: unknown;
    if (req.method === 'POST') {
      const body = await readBody(req, this.options.settings.maxMessageBytes);
      if (body === 'too-large') {
        req.resume();
        await this.recordRejection(principal, 'request.too-large', `a message over ${this.options.settings.maxMessageBytes} bytes`);
        return jsonRpcError(res, 413, -32600, `the message is over the limit of ${this.options.settings.maxMessageBytes} bytes`);
      }
      try {
        parsedBody = JSON.parse(body.toString('utf8'));
      } catch {
        await this.recordRejection(principal, 'request.parse-error', 'a body that is not JSON');
        return jsonRpcError(res, 400, -32700, 'Parse error: the body is not valid JSON');
      }
    }

    const sessionId = header(req, 'mcp-session-id');
    let session: Session | undefined;
    let opened = false;
    if (sessionId !== undefined) {
      session = this.sessions.get(sessionId);
      // A session belongs to the identity that opened it; anyone else is told it does not exist.
      if (!session || !(session.transport instanceof HttpSessionTransport) || !samePrincipal(session.caller, principal)) {
        await this.recordRejection(principal, 'session.unknown', 'a request for a session that does not exist or belongs to someone else');
        return jsonRpcError(res, 404, -32001, 'Session not found');
      }
      session.lastSeen = Date.now();
    } else if (req.method === 'POST' && isInitialize(parsedBody)) {
      const full = this.sessionLimit(principal);
      if (full) {
        await this.recordRejection(principal, 'session.refused', full);
        return jsonRpcError(res, 503, -32603, full);
      }
      session = await this.openSession(
        principal,
        (id) =>
          new HttpSessionTransport(
            id,
            () => {
              const existing = this.sessions.get(id);
              if (existing) void this.endSession(existing);
            },
            undefined,
            this.unread.account(principal),
          ),
      );
      opened = true;
    } else if (req.method === 'POST' && !(await isLegacyRequest(toWebRequest(req), parsedBody, { maxRequestBodySize: this.options.settings.maxMessageBytes }))) {
      // A 2026-07-28 request carries its own envelope and needs no session.
      const response = await this.modern.fetch(toWebRequest(req), { parsedBody, ...presenting(principal) });
      if (response.status >= 400) await this.recordRejection(principal, 'request.rejected', `HTTP ${response.status} for a 2026-07-28 request`);
      await sendWebResponse(response, res, new UnreadWatch(res, this.unread.account(principal), 'a 2026-07-28 response'));
      return;
    } else {
      await this.recordRejection(principal, 'session.missing', 'a request without Mcp-Session-Id that is not initialize');
      return jsonRpcError(res, 400, -32600, 'Bad Request: send initialize first, then the Mcp-Session-Id it returns with every request');
    }

    const refused = (session.transport as HttpSessionTransport).handle(req, res, parsedBody, principal);
    if (refused !== undefined) {
      // A session whose initialize was refused never started; it must not hold a place until the idle sweep.
      if (opened) await this.endSession(session);
      await this.recordRejection(principal, 'request.rejected', `HTTP ${refused} for ${req.method ?? '?'} on session ${session.id}`);
    }
  }

  /** The deprecated HTTP+SSE transport: `GET /sse` opens a session, `POST /messages?sessionId=` feeds it. */
  private async handleLegacySse(req: IncomingMessage, res: ServerResponse, path: string, principal: Principal): Promise<void> {
    if (path === '/sse' && req.method === 'GET') {
      const full = this.sessionLimit(principal);
      if (full) {
        await this.recordRejection(principal, 'session.refused', full);
        return jsonRpcError(res, 503, -32603, full);
      }
      const transport = new LegacySseTransport(res, '/messages', this.unread.account(principal));
      const caller: Caller = { ...principal, session: transport.sessionId };
      const tasks = await this.holdingPlace(principal, () => this.options.core.taskCapability());
      const server = createSessionServer(this.options.core, caller, this.options.version, this.options.settings.separator, tasks);
      const unsubscribe = this.options.core.onListChanged((kind) => {
        void server.notification({ method: `notifications/${kind}/list_changed` }).catch(() => undefined);
      });
      this.sseSessions.set(transport.sessionId, { transport, server, caller, unsubscribe });
      server.onclose = () => {
        this.sseSessions.delete(transport.sessionId);
        unsubscribe();
        void this.options.core.endSession(transport.sessionId);
      };
      await server.connect(transport);
      // tools/call takes the same path as on a Streamable HTTP session (a task-augmented call's CreateTaskResult
      // included, which the SDK server's own tools/call check refuses).
      serveDirectly(server, transport, this.options.core, caller);
      return;
    }
    if (path === '/messages' && req.method === 'POST') {
      const id = new URL(req.url ?? '/', 'http://gateway').searchParams.get('sessionId') ?? '';
      const session = this.sseSessions.get(id);
      if (!session || !samePrincipal(session.caller, principal)) {
        await this.recordRejection(principal, 'session.unknown', 'an SSE message for a session that does not exist or belongs to someone else');
        return jsonRpcError(res, 404, -32001, 'Session not found');
      }
      const body = await readBody(req, this.options.settings.maxMessageBytes);
      if (body === 'too-large') {
        req.resume();
        return jsonRpcError(res, 413, -32600, `the message is over the limit of ${this.options.settings.maxMessageBytes} bytes`);
      }
      let message: JSONRPCMessage;
      try {
        message = parseJSONRPCMessage(JSON.parse(body.toString('utf8')));
      } catch {
        await this.recordRejection(principal, 'request.parse-error', 'an SSE message that is not JSON-RPC');
        return jsonRpcError(res, 400, -32700, 'Parse error: the body is not a JSON-RPC message');
      }
      res.writeHead(202).end('Accepted');
      session.transport.receive(message, principal);
      return;
    }
    res.writeHead(405, { allow: path === '/sse' ? 'GET' : 'POST' }).end();
  }

  private originAllowed(origin: string): boolean {
    const normalised = origin.toLowerCase().replace(/\/$/, '');
    if (this.allowedOrigins.has(normalised) || this.allowedOrigins.has('*')) return true;
    try {
      const url = new URL(origin);
      // A page served from this machine (the MCP Inspector, an IDE webview) may call us.
      return (url.protocol === 'http:' || url.protocol === 'https:') && LOOPBACK_HOSTS.has(url.hostname.toLowerCase());
    } catch {
      return false;
    }
  }

  private baseUrl(): string {
    return this.url.replace(/\/mcp$/, '');
  }

  private protectedResourceMetadata(res: ServerResponse): void {
    const oauth = this.options.settings.auth.oauth;
    if (!oauth) {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('OAuth is not configured on this gateway\n');
      return;
    }
    // RFC 9728: where tokens for this resource come from.
    res.writeHead(200, { 'content-type': 'application/json', 'cache-control': 'max-age=300' });
    res.end(
      JSON.stringify({
        resource: oauth.audience,
        authorization_servers: [oauth.issuer],
        bearer_methods_supported: ['header'],
        resource_name: 'Gatehouse MCP gateway',
      }),
    );
  }

  /** Why no new session may open now, or undefined: the gateway's cap, then this identity's share of it. */
  private sessionLimit(principal: Principal): string | undefined {
    if (this.sessions.size + this.sseSessions.size + this.opening.length >= (this.options.maxSessions ?? 10_000)) return 'the gateway has too many open sessions; try again later';
    let own = 0;
    for (const session of this.sessions.values()) if (samePrincipal(session.caller, principal)) own += 1;
    for (const session of this.sseSessions.values()) if (samePrincipal(session.caller, principal)) own += 1;
    for (const opener of this.opening) if (samePrincipal(opener, principal)) own += 1;
    const cap = this.options.settings.maxSessionsPerAgent;
    return own >= cap ? `this agent already has ${own} open sessions (gateway.maxSessionsPerAgent is ${cap}); close one first` : undefined;
  }

  /**
   * Holds a place among the sessions from the moment a caller passed `sessionLimit` until its session is
   * registered: opening waits for the upstreams to start, and callers arriving meanwhile must count it.
   */
  private async holdingPlace<T>(principal: Principal, open: () => Promise<T>): Promise<T> {
    this.opening.push(principal);
    try {
      return await open();
    } finally {
      this.opening.splice(this.opening.indexOf(principal), 1);
    }
  }

  private openSession(principal: Principal, transportFor: (id: string) => HttpSessionTransport | LocalSessionTransport): Promise<Session> {
    return this.holdingPlace(principal, () => this.registerSession(principal, transportFor));
  }

  private async registerSession(principal: Principal, transportFor: (id: string) => HttpSessionTransport | LocalSessionTransport): Promise<Session> {
    const id = randomUUID();
    const caller: Caller = { ...principal, session: id };
    const transport = transportFor(id);
    // Tasks are offered only as far as the upstreams offer them, so the upstreams start with the first session.
    const tasks = await this.options.core.taskCapability();
    const server = createSessionServer(this.options.core, caller, this.options.version, this.options.settings.separator, tasks);
    const unsubscribe = this.options.core.onListChanged((kind) => {
      void server.notification({ method: `notifications/${kind}/list_changed` }).catch(() => undefined);
    });
    const session: Session = { id, caller, transport, server, lastSeen: Date.now(), unsubscribe };
    server.onclose = () => {
      if (this.sessions.get(id) === session) {
        this.sessions.delete(id);
        unsubscribe();
        void this.options.core.endSession(id);
      }
    };
    await server.connect(transport);
    serveDirectly(server, transport, this.options.core, caller);
    this.sessions.set(id, session);
    return session;
  }

  private async recordRejection(principal: Principal | undefined, action: string, reason: string): Promise<void> {
    if (!principal) {
      const now = Date.now();
      if (now - this.unknownRejections.since > 60_000) {
        const unrecorded = this.unknownRejections.count - UNKNOWN_REJECTIONS_PER_MINUTE - 1;
        this.unknownRejections = { since: now, count: 0 };
        if (unrecorded > 0) await this.appendRejection(undefined, 'request.rejected', `${unrecorded} more requests of callers not known were rejected in the minute before and not recorded one by one`);
      }
      this.unknownRejections.count += 1;
      if (this.unknownRejections.count > UNKNOWN_REJECTIONS_PER_MINUTE + 1) return;
      if (this.unknownRejections.count === UNKNOWN_REJECTIONS_PER_MINUTE + 1) reason += '; further rejections of callers not known are not recorded one by one this minute';
    }
    await this.appendRejection(principal, action, reason);
  }

  private async appendRejection(principal: Principal | undefined, action: string, reason: string): Promise<void> {
    const engine = this.options.policy.current;
    await this.options.audit
      .append({
        v: 1,
        time: new Date().toISOString(),
        node: this.options.node,
        principal: principal ? stripClaims(principal) : {},
        surface: 'mcp',
        action,
        resource: '/mcp',
        effect: 'deny',
        rules: [],
        reason,
        latencyUs: 0,
        correlationId: newCorrelationId(),
        policy: { version: engine.version, digest: engine.digest },
      })
      .catch(() => undefined);
  }

  private async reject(req: IncomingMessage, res: ServerResponse, status: number, code: number, message: string): Promise<void> {
    await this.recordRejection(undefined, 'request.rejected', `${message} (${req.method ?? '?'} ${req.url ?? ''})`);
    jsonRpcError(res, status, code, message);
  }
}

/** One SDK server for one client session: every handler asks the core on behalf of this caller. */
export function createSessionServer(core: GatewayCore, caller: Caller, version: string, separator = '__', tasks?: Record<string, unknown>): Server {
  const server = new Server(
    { name: 'gatehouse', version },
    {
      capabilities: {
        tools: { listChanged: true },
        prompts: { listChanged: true },
        resources: { listChanged: true, subscribe: true },
        completions: {},
        logging: {},
        ...(tasks ? { tasks } : {}),
      },
      instructions: `Gatehouse MCP gateway: tools from several servers, named <server>${separator}<tool>, governed by policy.`,
    },
  );
  // Outside a call, the session's own upstream connections reach the client through the server itself.
  caller.client = {
    session: caller.session,
    send: (request) => relayRequest(server, request, (message) => server.request(message), (message, schema) => server.request(message, schema)),
    // Log messages go through the session's own logging/setLevel filter here too.
    notify: (notification) =>
      notification.method === 'notifications/message'
        ? server.sendLoggingMessage(notification.params as never, server.transport?.sessionId)
        : server.notification(notification as never),
  };
  server.setNotificationHandler('notifications/roots/list_changed', () => void core.rootsChanged(caller));
  // Each request as the identity its own credentials present (the session's, with that token's claims).
  const callerOf = (ctx: ServerContext): Caller => requestCaller(caller, presentedBy(ctx.http));
  const binding = (ctx: ServerContext): CallBinding => ({
    session: caller.session,
    ...(caller.stateless
      ? {
          multiRound: {
            response: (key: string) => ctx.mcpReq.inputResponses?.[key],
            requestState: ctx.mcpReq.requestState<string>(),
            capabilities: (ctx.mcpReq.envelope as Record<string, Record<string, unknown> | undefined> | undefined)?.[CLIENT_CAPABILITIES_META_KEY],
          },
        }
      : {}),
    send: (request) => relayRequest(server, request, (message) => ctx.mcpReq.send(message), (message, schema) => ctx.mcpReq.send(message, schema)),
    notify: (notification) => {
      // Log messages go through the session's own logging/setLevel filter.
      if (notification.method === 'notifications/message') {
        const { level, data, logger } = (notification.params ?? {}) as { level?: LoggingLevel; data?: unknown; logger?: string };
        if (level !== undefined) return ctx.mcpReq.log(level, data, logger);
      }
      return ctx.mcpReq.notify(notification as never);
    },
  });
  server.setRequestHandler('tools/list', async (_request, ctx) => ({ tools: await core.listTools(callerOf(ctx)) }));
  server.setRequestHandler('tools/call', async (request, ctx) => {
    const meta = request.params._meta as Record<string, unknown> | undefined;
    const progressToken = meta?.progressToken as string | number | undefined;
    const task = (request.params as { task?: Record<string, unknown> }).task;
    return core.callTool(callerOf(ctx), request.params.name, request.params.arguments, binding(ctx), {
      signal: ctx.mcpReq.signal,
      ...(progressToken !== undefined ? { progressToken } : {}),
      ...(meta ? { meta } : {}),
      ...(task ? { task } : {}),
    }) as never;
  });
  if (tasks) {
    // The SDK has no task runtime and no typed surface for these methods; its 2025 wire schemas check the params.
    for (const method of ['tasks/get', 'tasks/result', 'tasks/cancel'] as const) {
      server.setRequestHandler(method as never, ((request: { params: Record<string, unknown> }, ctx: ServerContext) =>
        core.taskRequest(callerOf(ctx), method, request.params, binding(ctx))) as never);
    }
    server.setRequestHandler('tasks/list' as never, ((_request: unknown, ctx: ServerContext) => core.listTasks(callerOf(ctx))) as never);
  }
  server.setRequestHandler('prompts/list', async (_request, ctx) => ({ prompts: await core.listPrompts(callerOf(ctx)) }));
  server.setRequestHandler('prompts/get', async (request, ctx) =>
    core.getPrompt(callerOf(ctx), request.params.name, request.params.arguments, binding(ctx), { signal: ctx.mcpReq.signal }) as never,
  );
  server.setRequestHandler('resources/list', async (_request, ctx) => ({ resources: await core.listResources(callerOf(ctx)) }));
  server.setRequestHandler('resources/templates/list', async (_request, ctx) => ({ resourceTemplates: await core.listResourceTemplates(callerOf(ctx)) }));
  server.setRequestHandler('resources/read', async (request, ctx) => core.readResource(callerOf(ctx), request.params.uri, binding(ctx), { signal: ctx.mcpReq.signal }) as never);
  server.setRequestHandler('resources/subscribe', async (request, ctx) => {
    await core.subscribe(callerOf(ctx), request.params.uri, (uri) => {
      void server.notification({ method: 'notifications/resources/updated', params: { uri } }).catch(() => undefined);
    });
    // A session that ended while the upstream subscribed has had its subscriptions dropped already: so must this one.
    if (!server.transport) await core.unsubscribe(caller, request.params.uri);
    return {};
  });
  server.setRequestHandler('resources/unsubscribe', async (request) => {
    await core.unsubscribe(caller, request.params.uri);
    return {};
  });
  server.setRequestHandler('completion/complete', async (request, ctx) =>
    core.complete(callerOf(ctx), request.params as unknown as Record<string, unknown>, binding(ctx)) as never,
  );
  return server;
}

/** Whether a body opens a session; its params are the SDK server's to check. */
function isInitialize(body: unknown): boolean {
  const opens = (message: unknown): boolean => (message as { method?: unknown } | null)?.method === 'initialize';
  return Array.isArray(body) ? body.some(opens) : opens(body);
}

/** Whether two identities are the same agent, user and teams (in the same order, as the authenticator gives them). */
function samePrincipal(a: Principal, b: Principal): boolean {
  if (a.agent !== b.agent || a.user !== b.user) return false;
  // Compared in place: every request on a session is checked against its owner.
  const teams = a.teams ?? [];
  const others = b.teams ?? [];
  return teams.length === others.length && teams.every((team, index) => team === others[index]);
}

function stripClaims(principal: Principal): Principal {
  const { claims: _claims, ...rest } = principal;
  return rest;
}

function header(req: IncomingMessage, name: string): string | undefined {
  const value = req.headers[name];
  return Array.isArray(value) ? value[0] : value;
}

function hostOf(listen: string): string {
  return listen.slice(0, listen.lastIndexOf(':'));
}

/** The host name in a Host header, without the port; brackets kept for IPv6. Undefined if malformed. */
function hostnameOfHeader(value: string | undefined): string | undefined {
  if (!value) return undefined;
  const match = /^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+)(:\d{1,5})?$/.exec(value.trim());
  return match ? match[1]!.toLowerCase() : undefined;
}

function webHeaders(req: IncomingMessage): Headers {
  const headers = new Headers();
  for (const [name, value] of Object.entries(req.headers)) {
    if (value === undefined) continue;
    if (Array.isArray(value)) for (const item of value) headers.append(name, item);
    else headers.set(name, value);
  }
  return headers;
}

function toWebRequest(req: IncomingMessage): Request {
  return new Request(`http://${req.headers.host ?? 'localhost'}${req.url ?? '/'}`, { method: req.method ?? 'GET', headers: webHeaders(req) });
}

/** Headers that only make sense on an event stream, dropped when its one event is sent as plain JSON. */
const STREAM_ONLY_HEADERS = new Set(['content-type', 'cache-control', 'connection', 'x-accel-buffering', 'content-length']);

/**
 * Writes a web Response (the SDK's 2026-07-28 handler's) to a Node response. The SDK answers every POST with an event stream; when that stream
 * turns out to hold exactly one event and then ends (a reply with no progress, log or request before it, the
 * usual case), the event is sent as an `application/json` response instead, which Streamable HTTP allows for
 * any request and which costs both sides far less. Anything else streams as it comes. Nothing is written
 * before the first event, so which form to use is known then; the SDK's keep-alive comment (15 s) starts the
 * stream for a call that stays silent longer. Events are written as they come, never left waiting in the
 * SDK's stream (which takes them whether or not anyone reads): in the response, `unread` bounds them.
 */
async function sendWebResponse(response: Response, res: ServerResponse, unread: UnreadWatch): Promise<void> {
  const headers: Record<string, string> = {};
  response.headers.forEach((value, name) => {
    headers[name] = value;
  });
  if (!response.body) {
    res.writeHead(response.status, headers);
    res.end();
    return;
  }
  const reader = response.body.getReader();
  // A client that goes away mid-stream cancels the stream; the SDK sees the cancel and drops the rest.
  res.on('close', () => void reader.cancel().catch(() => undefined));
  try {
    let next = reader.read();
    const first = await next;
    if (first.done || res.destroyed) {
      if (!res.destroyed) res.writeHead(response.status, headers);
      res.end();
      return;
    }
    next = reader.read();
    if (headers['content-type']?.startsWith('text/event-stream')) {
      // The SDK enqueues a reply and closes the stream in one synchronous step, so once the stream holds only
      // the reply, the read after it settles within a microtask or two; a stream that goes on leaves it pending.
      // Waiting for a later phase of the event loop instead (setImmediate) put the reply behind the audit log's
      // group write, which is queued there by the same call.
      let ended = false;
      void next.then((read) => (ended = read.done === true), () => undefined);
      for (let turn = 0; turn < 4 && !ended; turn += 1) await null;
      const json = ended ? singleEventData(first.value) : undefined;
      if (json !== undefined) {
        const out: Record<string, string> = {};
        for (const [name, value] of Object.entries(headers)) if (!STREAM_ONLY_HEADERS.has(name)) out[name] = value;
        out['content-type'] = 'application/json';
        out['content-length'] = String(json.length);
        res.writeHead(response.status, out);
        res.end(json);
        unread.check();
        return;
      }
    }
    res.writeHead(response.status, headers);
    let chunk: Uint8Array | undefined = first.value;
    while (chunk !== undefined && !res.destroyed) {
      res.write(chunk);
      unread.check();
      const read = await next;
      if (read.done) break;
      chunk = read.value;
      next = reader.read();
    }
  } catch {
    // The client disconnected; nothing more to send.
  }
  res.end();
}

const EVENT_PREFIX = Buffer.from('event: message\ndata: ');

/**
 * The data of an event stream chunk that holds exactly one `message` event with one data line and no id,
 * the form the SDK writes a message in (JSON.stringify never writes a newline); else undefined.
 * The bytes are returned as they are: a large list is neither decoded nor encoded again.
 */
function singleEventData(chunk: Uint8Array): Buffer | undefined {
  const bytes = Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
  const end = bytes.length - 2;
  if (end <= EVENT_PREFIX.length || bytes[end] !== 10 || bytes[end + 1] !== 10) return undefined;
  if (!bytes.subarray(0, EVENT_PREFIX.length).equals(EVENT_PREFIX)) return undefined;
  if (bytes.indexOf(10, EVENT_PREFIX.length) !== end) return undefined;
  return bytes.subarray(EVENT_PREFIX.length, end);
}

function jsonRpcError(res: ServerResponse, status: number, code: number, message: string): void {
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify({ jsonrpc: '2.0', id: null, error: { code, message } }));
}
