/**
 * The server side of one Streamable HTTP session (protocol 2025-03-26 to 2025-11-25), written on node:http.
 * The front has already checked Host, Origin, the caller's identity, the body's size and that it is JSON,
 * and that the session belongs to the caller; this transport speaks the session's HTTP: POST carries
 * messages in, GET opens the stream for messages outside any request, DELETE ends the session.
 *
 * A POST that holds requests is answered with `application/json` when nothing but the answers has to go
 * back, the usual case; the moment a progress notification, log message or server→client request related
 * to one of its requests must go first (or the call stays silent past the keep-alive interval, or its
 * answers grow too big to hold), the answer turns into an event stream and everything goes on it in order.
 * The spec lets the server pick either form per request. This replaces the SDK's WebStandardStreamableHTTPServerTransport, whose web streams,
 * Request/Response objects and second validation of every message cost more than the rest of the gateway.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import {
  SUPPORTED_PROTOCOL_VERSIONS,
  type JSONRPCMessage,
  type MessageExtraInfo,
  type RequestId,
  type Transport,
  type TransportSendOptions,
} from '@modelcontextprotocol/server';
import type { Principal } from '../policy/types.js';
import { isJsonRpcMessage } from './jsonrpc.js';
import { STREAM_UNREAD_LIMIT, UnreadWatch, type UnreadAccount } from './unread.js';

/** What a transport passes along with a message to say who sent it (the SDK's `authInfo`); see presentedBy. */
export function presenting(principal: Principal): { authInfo: { token: string; clientId: string; scopes: string[]; extra: { principal: Principal } } } {
  return { authInfo: { token: '', clientId: principal.agent ?? 'anonymous', scopes: [], extra: { principal } } };
}

/** The identity a transport passed along with a message (see presenting), if any. */
export function presentedBy(extra: { authInfo?: { extra?: Record<string, unknown> } } | undefined): Principal | undefined {
  return extra?.authInfo?.extra?.principal as Principal | undefined;
}

const KEEPALIVE_MS = 15_000;
const MAX_BATCH = 100;

/**
 * The JSON of a message. A frozen array directly in a result (the gateway freezes its list views, tools and
 * all) is stringified once and its JSON kept with it: a 960-tool list is ~180 KB, and stringifying it again
 * for every tools/list was most of what a warm list cost the gateway.
 */
const frozenJson = new WeakMap<object, Buffer>();

/** The JSON of a message, in pieces: the cached JSON of frozen lists, and everything else as it comes. */
export function serialize(message: JSONRPCMessage): (string | Buffer)[] {
  const result = 'result' in message ? (message.result as Record<string, unknown>) : undefined;
  if (!result || !Object.values(result).some((value) => Array.isArray(value) && Object.isFrozen(value))) return [JSON.stringify(message)];
  const pieces: (string | Buffer)[] = [`{"jsonrpc":"2.0","id":${JSON.stringify((message as { id: RequestId }).id)},"result":{`];
  for (const [key, value] of Object.entries(result)) {
    if (value === undefined || typeof value === 'function') continue;
    pieces.push(`${pieces.length > 1 ? ',' : ''}${JSON.stringify(key)}:`);
    if (Array.isArray(value) && Object.isFrozen(value)) {
      let json = frozenJson.get(value);
      if (json === undefined) frozenJson.set(value, (json = Buffer.from(JSON.stringify(value))));
      pieces.push(json);
    } else {
      pieces.push(JSON.stringify(value));
    }
  }
  pieces.push('}}');
  return pieces;
}

/**
 * Writes pieces as they are, corked so that they leave in one system call: copying a cached list's JSON
 * into one buffer for every answer would cost a copy of the whole list and the garbage it leaves. What the
 * client leaves unread is checked after (unread.ts).
 */
function writePieces(res: ServerResponse, unread: UnreadWatch, pieces: (string | Buffer)[], end: boolean): void {
  res.cork();
  for (const piece of pieces) res.write(piece);
  if (end) res.end();
  else res.uncork();
  unread.check();
}

/** One message event, from the message's JSON in pieces. */
function sseEvent(json: (string | Buffer)[]): (string | Buffer)[] {
  return ['event: message\ndata: ', ...json, '\n\n'];
}

function byteLength(pieces: (string | Buffer)[]): number {
  let length = 0;
  for (const piece of pieces) length += typeof piece === 'string' ? Buffer.byteLength(piece) : piece.length;
  return length;
}

const STREAM_HEADERS = { 'content-type': 'text/event-stream', 'cache-control': 'no-cache, no-transform', connection: 'keep-alive', 'x-accel-buffering': 'no' };

/** One POST that holds requests: where their answers go, and in which form. */
class Exchange {
  streaming = false;
  /** Answers held for the JSON form (serialized), and their size in bytes. */
  private readonly answers: (string | Buffer)[][] = [];
  private held = 0;
  private readonly keepalive: NodeJS.Timeout;
  private readonly unread: UnreadWatch;

  constructor(
    private readonly res: ServerResponse,
    private readonly sessionId: string,
    /** Requests of this POST still unanswered. */
    readonly open: Set<RequestId>,
    private readonly batch: boolean,
    keepAliveMs: number,
    account: UnreadAccount | undefined,
  ) {
    // Answers held for the JSON form count as unread too: they are held for a client that has not taken them.
    this.unread = new UnreadWatch(res, account, 'a Streamable HTTP response', () => this.held);
    this.keepalive = setInterval(() => {
      this.startStream();
      this.res.write(': keepalive\n\n');
    }, keepAliveMs);
    this.keepalive.unref();
  }

  /** A message related to one of the requests, sent before its answer: from now on this is a stream. */
  event(message: JSONRPCMessage): void {
    this.startStream();
    this.deliver(message);
  }

  answer(id: RequestId, message: JSONRPCMessage): void {
    this.open.delete(id);
    this.deliver(message);
    if (this.open.size === 0) this.complete();
  }

  /** The session is closing: every request still open gets an error, and the response ends. */
  close(): void {
    for (const id of this.open) this.deliver({ jsonrpc: '2.0', id, error: { code: -32000, message: 'the session was closed before this request was answered' } });
    this.open.clear();
    this.complete();
  }

  /** The client went away (or was cut off): nothing more can reach it, and nothing is held for it. */
  abandon(): void {
    clearInterval(this.keepalive);
    this.answers.length = 0;
    this.held = 0;
  }

  get gone(): boolean {
    return this.res.destroyed || this.res.writableEnded;
  }

  private deliver(message: JSONRPCMessage): void {
    if (this.gone) return;
    if (this.streaming) return writePieces(this.res, this.unread, sseEvent(serialize(message)), false);
    const json = serialize(message);
    this.answers.push(json);
    this.held += byteLength(json);
    // The JSON form leaves whole once the last answer is in, and a client that never reads it would leave it
    // all with us: past half the unread limit, the answers go as a stream instead, which the limit bounds.
    if (this.held > STREAM_UNREAD_LIMIT / 2) this.startStream();
    else this.unread.check();
  }

  private complete(): void {
    clearInterval(this.keepalive);
    if (this.gone) return;
    if (this.streaming) {
      this.res.end();
      return;
    }
    const body = this.batch ? ['[', ...this.answers.flatMap((json, index) => (index > 0 ? [',', ...json] : json)), ']'] : this.answers[0]!;
    // The brackets and commas of a batch are one byte each.
    const length = this.held + (this.batch ? this.answers.length + 1 : 0);
    this.res.writeHead(200, { 'content-type': 'application/json', 'content-length': length, 'mcp-session-id': this.sessionId });
    this.held = 0;
    writePieces(this.res, this.unread, body, true);
  }

  private startStream(): void {
    if (this.streaming) return;
    this.streaming = true;
    this.res.writeHead(200, { ...STREAM_HEADERS, 'mcp-session-id': this.sessionId });
    const answers = this.answers.splice(0);
    this.held = 0;
    for (const json of answers) writePieces(this.res, this.unread, sseEvent(json), false);
  }
}

export class HttpSessionTransport implements Transport {
  onclose?: () => void;
  onerror?: (error: Error) => void;
  onmessage?: (message: JSONRPCMessage, extra?: MessageExtraInfo) => void;

  /** Requests in flight, each with the POST its answer goes to. */
  private readonly exchanges = new Map<RequestId, Exchange>();
  /** The GET stream, for messages not related to any request. */
  private standalone: { res: ServerResponse; keepalive: NodeJS.Timeout; unread: UnreadWatch } | undefined;
  private supportedVersions: readonly string[] = SUPPORTED_PROTOCOL_VERSIONS;
  private initialized = false;
  private closed = false;

  constructor(
    readonly sessionId: string,
    /** Called when the client ends the session with DELETE. */
    private readonly onterminate?: () => void,
    /** How long a request may stay silent before its answer becomes a stream with keep-alive comments. */
    private readonly keepAliveMs = KEEPALIVE_MS,
    /** The agent whose share of unread output the session's responses count against (unread.ts). */
    private readonly account?: UnreadAccount,
  ) {}

  async start(): Promise<void> {}

  setSupportedProtocolVersions(versions: string[]): void {
    this.supportedVersions = versions;
  }

  /**
   * Serves one request on this session; `body` is the parsed JSON of a POST. Returns the HTTP status it
   * answered with when that status refuses the request, for the front to record.
   */
  handle(req: IncomingMessage, res: ServerResponse, body: unknown, presented?: Principal): number | undefined {
    if (this.closed) return refuse(res, 404, -32001, 'Session not found');
    if (req.method === 'POST') return this.post(req, res, body, presented);
    if (req.method === 'GET') return this.get(req, res);
    if (req.method === 'DELETE') {
      const refused = this.checkVersion(req, res);
      if (refused) return refused;
      this.onterminate?.();
      res.writeHead(200).end();
      void this.close();
      return undefined;
    }
    res.writeHead(405, { allow: 'GET, POST, DELETE', 'content-type': 'application/json' });
    res.end(JSON.stringify({ jsonrpc: '2.0', id: null, error: { code: -32000, message: 'Method not allowed.' } }));
    return 405;
  }

  private post(req: IncomingMessage, res: ServerResponse, body: unknown, presented: Principal | undefined): number | undefined {
    const accept = req.headers.accept ?? '';
    if (!accept.includes('application/json') || !accept.includes('text/event-stream')) {
      return refuse(res, 406, -32000, 'Not Acceptable: Client must accept both application/json and text/event-stream');
    }
    if (!isJsonContentType(req.headers['content-type'])) return refuse(res, 415, -32000, 'Unsupported Media Type: Content-Type must be application/json');
    const batch = Array.isArray(body);
    const messages: unknown[] = batch ? body : [body];
    if (messages.length === 0 || messages.length > MAX_BATCH) return refuse(res, 400, -32600, `Invalid Request: a batch holds 1 to ${MAX_BATCH} messages`);
    for (const message of messages) if (!isJsonRpcMessage(message)) return refuse(res, 400, -32700, 'Parse error: Invalid JSON-RPC message');
    const valid = messages as JSONRPCMessage[];
    if (valid.some((message) => 'method' in message && message.method === 'initialize')) {
      if (this.initialized) return refuse(res, 400, -32600, 'Invalid Request: Server already initialized');
      if (valid.length > 1) return refuse(res, 400, -32600, 'Invalid Request: Only one initialization request is allowed');
      this.initialized = true;
    } else {
      if (!this.initialized) return refuse(res, 400, -32000, 'Bad Request: Server not initialized');
      const refused = this.checkVersion(req, res);
      if (refused) return refused;
    }
    const requests = new Set<RequestId>();
    for (const message of valid) {
      if (!('method' in message) || !('id' in message)) continue;
      if (this.exchanges.has(message.id) || requests.has(message.id)) return refuse(res, 400, -32600, `Invalid Request: a request with id ${JSON.stringify(message.id)} is already in flight`);
      requests.add(message.id);
    }
    if (requests.size === 0) {
      res.writeHead(202).end();
    } else {
      const exchange = new Exchange(res, this.sessionId, requests, batch, this.keepAliveMs, this.account);
      for (const id of requests) this.exchanges.set(id, exchange);
      // A client that goes away mid-call leaves its requests running: their ids stay taken until they are
      // answered (the answers are dropped), so a new request reusing one can never receive the old one's answer.
      res.on('close', () => exchange.abandon());
    }
    // Who sent them, as this POST's credentials say (see requestCaller).
    const extra = presented && presenting(presented);
    for (const message of valid) this.onmessage?.(message, extra);
    return undefined;
  }

  private get(req: IncomingMessage, res: ServerResponse): number | undefined {
    if (!(req.headers.accept ?? '').includes('text/event-stream')) return refuse(res, 406, -32000, 'Not Acceptable: Client must accept text/event-stream');
    const refused = this.checkVersion(req, res);
    if (refused) return refused;
    if (this.standalone) return refuse(res, 409, -32000, 'Conflict: Only one SSE stream is allowed per session');
    res.writeHead(200, { ...STREAM_HEADERS, 'mcp-session-id': this.sessionId });
    res.flushHeaders();
    const keepalive = setInterval(() => res.write(': keepalive\n\n'), this.keepAliveMs);
    keepalive.unref();
    const stream = { res, keepalive, unread: new UnreadWatch(res, this.account, 'the Streamable HTTP GET stream') };
    this.standalone = stream;
    res.on('close', () => {
      clearInterval(keepalive);
      if (this.standalone === stream) this.standalone = undefined;
    });
    return undefined;
  }

  private checkVersion(req: IncomingMessage, res: ServerResponse): number | undefined {
    const version = req.headers['mcp-protocol-version'];
    if (version === undefined || (typeof version === 'string' && this.supportedVersions.includes(version))) return undefined;
    return refuse(res, 400, -32000, `Bad Request: Unsupported protocol version: ${String(version)} (supported versions: ${this.supportedVersions.join(', ')})`);
  }

  async send(message: JSONRPCMessage, options?: TransportSendOptions): Promise<void> {
    if ('result' in message || 'error' in message) {
      const id = message.id;
      if (id === undefined) return;
      const exchange = this.exchanges.get(id);
      // An answer to a request whose client went away, or an error for a message without an id.
      if (!exchange) return;
      this.exchanges.delete(id);
      exchange.answer(id, message);
      return;
    }
    const related = options?.relatedRequestId;
    if (related !== undefined) {
      const exchange = this.exchanges.get(related);
      if (exchange && !exchange.gone) return exchange.event(message);
      // A server→client request must fail rather than wait for an answer that cannot come.
      if ('id' in message) throw new Error(`the client's request ${String(related)} has ended or its client went away; nothing more can be sent for it`);
      return;
    }
    // Outside any request: the GET stream, if the client keeps one open; otherwise a notification is dropped,
    // as the spec allows, and a request fails now rather than leave its sender waiting out its timeout.
    if (this.standalone) return writePieces(this.standalone.res, this.standalone.unread, sseEvent(serialize(message)), false);
    if ('id' in message) throw new Error('the client keeps no stream open outside its requests (GET), so nothing can ask it anything now');
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const exchange of new Set(this.exchanges.values())) exchange.close();
    this.exchanges.clear();
    if (this.standalone) {
      clearInterval(this.standalone.keepalive);
      this.standalone.res.end();
      this.standalone = undefined;
    }
    this.onclose?.();
  }
}

function isJsonContentType(value: string | undefined): boolean {
  return value !== undefined && value.split(';')[0]!.trim().toLowerCase() === 'application/json';
}

function refuse(res: ServerResponse, status: number, code: number, message: string): number {
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify({ jsonrpc: '2.0', id: null, error: { code, message } }));
  return status;
}
