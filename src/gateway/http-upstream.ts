/**
 * The Streamable HTTP transport to a remote upstream: the SDK's, except for the message that makes up
 * nearly all traffic, a request on an established 2025-era connection. That one goes straight over the
 * upstream's dialer (dial.ts): one POST, the answer read as JSON or as an event stream, each message's
 * envelope checked by hand (the SDK client checks results against their method's schema anyway). The SDK's
 * path wraps the same exchange in fetch Headers, a web Response, web streams and a zod pass per message,
 * which cost more than twice the request itself. A call can also skip the SDK client's request pipeline
 * (see `request`). Everything else (initialize, the version probe and every 2026-07-28 message,
 * notifications, the GET stream, closing) stays with the SDK, on the same dialer.
 */
import type { Readable } from 'node:stream';
import {
  PROTOCOL_VERSION_META_KEY,
  ProtocolError,
  SdkError,
  SdkErrorCode,
  SdkHttpError,
  SSEClientTransport,
  StreamableHTTPClientTransport,
  type JSONRPCMessage,
  type JSONRPCResponse,
  type Result,
  type SSEClientTransportOptions,
  type StreamableHTTPClientTransportOptions,
  type TransportSendOptions,
} from '@modelcontextprotocol/client';
import type { Dialer } from './dial.js';
import { isJsonRpcMessage } from './jsonrpc.js';

/** The 2025-era revisions, whose requests this class sends itself; any other version is left to the SDK. */
const SESSION_ERA = new Set(['2024-11-05', '2025-03-26', '2025-06-18', '2025-11-25']);
/** Starts the ids of the requests `request` sends: the SDK's are numbers, so neither can take the other's answer. */
const OWN_ID_PREFIX = 'gatehouse-';
const CANCELLED = 'the request was cancelled';

export class HttpUpstreamTransport extends StreamableHTTPClientTransport {
  /** What waits for the answer to each request `request` sent, by id. */
  private readonly awaiting = new Map<string, (answer: JSONRPCResponse | Error) => void>();
  private serial = 0;

  constructor(
    private readonly endpoint: URL,
    options: Omit<StreamableHTTPClientTransportOptions, 'fetch'>,
    /** This connection's own: closed with it, which ends every request still in flight. */
    private readonly dialer: Dialer,
    /** The upstream's configured and injected headers, sent with every request. */
    private readonly headers: Record<string, string>,
    private readonly maxMessageBytes: number,
  ) {
    super(endpoint, { ...options, fetch: dialer.fetch });
  }

  override send(message: JSONRPCMessage | JSONRPCMessage[], options?: TransportSendOptions): Promise<void> {
    const direct = !Array.isArray(message) && 'method' in message && 'id' in message && this.carries(message) && options?.resumptionToken === undefined;
    return direct ? this.post(message, this.protocolVersion!) : super.send(message, options);
  }

  /** Whether this class sends a request itself: any but initialize on an established 2025-era connection. */
  carries(request: { method: string; params?: Record<string, unknown> }): boolean {
    const version = this.protocolVersion;
    return (
      request.method !== 'initialize' &&
      version !== undefined &&
      SESSION_ERA.has(version) &&
      (request.params?._meta as Record<string, unknown> | undefined)?.[PROTOCOL_VERSION_META_KEY] === undefined
    );
  }

  /**
   * Sends a request (one that `carries` takes) and waits for its result without the SDK client's request
   * pipeline, which costs a relayed call more than the gateway's own steps around it do: an id, a handler
   * and a timer per request, a schema pass over every answer, a promise chain. What it does for a request
   * without progress is done here alike: the answer is taken by its id (see `answered`), an error answer
   * is a ProtocolError, a result must be an object, and a request that times out after `timeoutMs` or
   * whose `signal` aborts is rejected and the upstream told with notifications/cancelled. The connection
   * closing rejects it as the SDK would. Everything the upstream sends on the way (log messages, requests
   * to the client) still goes to the SDK client.
   */
  request(request: { method: string; params?: Record<string, unknown> }, options: { timeoutMs: number; signal?: AbortSignal }): Promise<Result> {
    const { timeoutMs, signal } = options;
    const id = `${OWN_ID_PREFIX}${(this.serial += 1)}`;
    return new Promise<Result>((resolve, reject) => {
      if (signal?.aborted) return reject(new SdkError(SdkErrorCode.RequestTimeout, CANCELLED));
      const settle = (): boolean => {
        if (!this.awaiting.delete(id)) return false;
        clearTimeout(timer);
        signal?.removeEventListener('abort', cancel);
        return true;
      };
      const giveUp = (error: SdkError): void => {
        if (!settle()) return;
        reject(error);
        // The gateway's reason, never the client's: its words would reach the upstream unscanned.
        this.send({ jsonrpc: '2.0', method: 'notifications/cancelled', params: { requestId: id, reason: error.message } }).catch((failure: unknown) =>
          this.onerror?.(new Error(`Failed to send cancellation: ${String(failure)}`)),
        );
      };
      const cancel = (): void => giveUp(new SdkError(SdkErrorCode.RequestTimeout, CANCELLED));
      const timer = setTimeout(() => giveUp(new SdkError(SdkErrorCode.RequestTimeout, 'Request timed out', { timeout: timeoutMs })), timeoutMs);
      signal?.addEventListener('abort', cancel, { once: true });
      this.awaiting.set(id, (answer) => {
        settle();
        if (answer instanceof Error) return reject(answer);
        if ('error' in answer) return reject(ProtocolError.fromError(answer.error.code, answer.error.message, answer.error.data));
        const result: unknown = answer.result;
        if (typeof result !== 'object' || result === null || Array.isArray(result)) {
          return reject(new SdkError(SdkErrorCode.InvalidResult, `Invalid result for ${request.method}: the result is not an object`));
        }
        // As the SDK's 2025-era codec does: resultType belongs to the 2026-07-28 protocol.
        if (!('resultType' in result)) return resolve(result as Result);
        const { resultType: _dropped, ...rest } = result as Record<string, unknown>;
        resolve(rest as Result);
      });
      this.post({ jsonrpc: '2.0', id, ...request } as JSONRPCMessage, this.protocolVersion!).catch((error: unknown) => {
        if (settle()) reject(error);
      });
    });
  }

  /**
   * Takes an answer to one of `request`'s requests off the inbound messages (the upstream connection passes
   * each one here before the SDK client sees it). One whose request has already timed out or been cancelled is
   * dropped: the SDK would only report an unknown id.
   */
  answered(message: JSONRPCMessage): boolean {
    if ('method' in message || !('id' in message) || typeof message.id !== 'string' || !message.id.startsWith(OWN_ID_PREFIX)) return false;
    this.awaiting.get(message.id)?.(message as JSONRPCResponse);
    return true;
  }

  override async close(): Promise<void> {
    const closed = new SdkError(SdkErrorCode.ConnectionClosed, 'Connection closed');
    for (const waiting of [...this.awaiting.values()]) waiting(closed);
    try {
      await super.close();
    } finally {
      await this.dialer.close();
    }
  }

  private async post(message: JSONRPCMessage, version: string): Promise<void> {
    const headers: Record<string, string> = {
      ...this.headers,
      'content-type': 'application/json',
      accept: 'application/json, text/event-stream',
      'mcp-protocol-version': version,
    };
    if (this.sessionId !== undefined) headers['mcp-session-id'] = this.sessionId;
    const answer = await this.dialer.dial(this.endpoint, { method: 'POST', headers, body: JSON.stringify(message) });
    const { status } = answer;
    const type = answer.headers['content-type'] ?? '';
    if (status < 200 || status >= 300) {
      const text = answer.body?.toString('utf8') ?? '';
      // The same error the SDK raises, so that a 404 still reads as "the server forgot our session".
      throw new SdkHttpError(SdkErrorCode.ClientHttpNotImplemented, `Error POSTing to endpoint: ${text}`, { status, statusText: answer.statusText, text });
    }
    if (answer.body) {
      // Read whole: the dialer does that for JSON (and only for JSON among successful answers).
      const body: unknown = JSON.parse(answer.body.toString('utf8'));
      for (const item of Array.isArray(body) ? body : [body]) this.deliver(item);
      return;
    }
    if (typeof type === 'string' && /^text\/event-stream\b/i.test(type)) {
      void this.readEvents(answer.stream).catch((error: unknown) => this.onerror?.(error instanceof Error ? error : new Error(String(error))));
      return;
    }
    answer.stream.destroy();
    throw new SdkError(SdkErrorCode.ClientHttpUnexpectedContent, `the upstream answered a request with content type "${String(type)}"`);
  }

  /** Reads an event stream to its end, delivering the data of each `message` event. */
  private async readEvents(res: Readable): Promise<void> {
    let buffer = '';
    let data: string[] = [];
    let dataLength = 0;
    let event = 'message';
    res.setEncoding('utf8');
    for await (const chunk of res as AsyncIterable<string>) {
      buffer += chunk;
      for (let newline = buffer.indexOf('\n'); newline !== -1; newline = buffer.indexOf('\n')) {
        const line = buffer.slice(0, newline).replace(/\r$/, '');
        buffer = buffer.slice(newline + 1);
        if (line === '') {
          if (event === 'message' && data.length > 0) this.deliverText(data.join('\n'));
          data = [];
          dataLength = 0;
          event = 'message';
        } else if (line.startsWith('data:')) {
          const value = line.slice(line[5] === ' ' ? 6 : 5);
          data.push(value);
          dataLength += value.length;
        } else if (line.startsWith('event:')) {
          event = line.slice(6).trim();
        }
        // `id:`, `retry:` and comments (keep-alives) need nothing: this stream belongs to one request.
      }
      if (buffer.length + dataLength > this.maxMessageBytes) {
        res.destroy();
        throw new Error(`the upstream sent an event over ${this.maxMessageBytes} bytes`);
      }
    }
  }

  private deliverText(text: string): void {
    let message: unknown;
    try {
      message = JSON.parse(text);
    } catch {
      message = undefined;
    }
    this.deliver(message);
  }

  private deliver(message: unknown): void {
    if (!isJsonRpcMessage(message)) {
      this.onerror?.(new Error(`the upstream sent something that is not a JSON-RPC message: ${JSON.stringify(message)?.slice(0, 200)}`));
      return;
    }
    // One microtask per message, as on stdio: the SDK runs notification handlers a microtask after
    // delivery but responses at once, so progress read together with its result must not be overtaken.
    queueMicrotask(() => this.onmessage?.(message));
  }
}

/** The SDK's transport to a legacy HTTP+SSE upstream, on a dialer of its own that closes with it. */
export class SseUpstreamTransport extends SSEClientTransport {
  constructor(
    endpoint: URL,
    options: Omit<SSEClientTransportOptions, 'fetch'>,
    private readonly dialer: Dialer,
  ) {
    super(endpoint, { ...options, fetch: dialer.fetch });
  }

  override async close(): Promise<void> {
    try {
      await super.close();
    } finally {
      await this.dialer.close();
    }
  }
}
