/**
 * The gateway's local socket, `<data-dir>/mcp.sock`: MCP's stdio framing (one JSON-RPC message per line) on a
 * Unix socket, for `gatehouse mcp`, the bridge a stdio-only client launches as its server. Over it the
 * bridge only copies bytes, where over Streamable HTTP it had to run an HTTP client and the gateway an HTTP
 * session for every message; a call through the gateway then costs little more than the gateway's own work.
 *
 * A connection opens with one line from the client, `{"gatehouse":"mcp","authorization":"Bearer <key>"}`, and
 * one answer, `{"ok":true}` or `{"ok":false,"error":"..."}` (after which the gateway closes it); a client may
 * send on without waiting, as nothing it sends is read before the answer is written. Then it is one
 * 2025-era session (initialize first, as on HTTP), which ends when the connection closes. The identity is
 * the key, checked as the HTTP front checks it, and never anonymous; the socket's mode (0600, in the private
 * data dir) only keeps other users from reaching it.
 */
import type { Socket } from 'node:net';
import type { JSONRPCMessage, MessageExtraInfo, RequestId, Transport, TransportSendOptions } from '@modelcontextprotocol/server';
import { BLANK, LineSplitter, NOT_JSON, parseJsonLine } from '../util/lines.js';
import { isJsonRpcMessage } from './jsonrpc.js';
import { serialize } from './session-transport.js';
import { UnreadWatch, type UnreadAccount } from './unread.js';

export const LOCAL_SOCKET = 'mcp.sock';
/** The first line: small, and sent at once by a bridge that has its key at hand. */
const HELLO_MAX_BYTES = 16 * 1024;
const HELLO_TIMEOUT_MS = 10_000;
/**
 * The SDK client handles a notification a tick after a response read with it, when the call's progress
 * handler is gone: an answer waits this long after a notification for its request, so they come apart.
 */
const SETTLE_MS = 3;

export interface Hello {
  authorization: string;
}

/**
 * Reads the hello line; resolves with it and whatever followed it on the wire, or with the one sentence
 * that says what is wrong with it.
 */
export function readHello(socket: Socket): Promise<{ hello: Hello; rest: Buffer } | { error: string }> {
  return new Promise((resolve) => {
    let buffered: Buffer = Buffer.alloc(0);
    const finish = (outcome: { hello: Hello; rest: Buffer } | { error: string }): void => {
      clearTimeout(timer);
      socket.off('data', onData);
      socket.off('close', onClose);
      resolve(outcome);
    };
    const timer = setTimeout(() => finish({ error: `no hello line within ${HELLO_TIMEOUT_MS / 1000} s` }), HELLO_TIMEOUT_MS);
    const onClose = (): void => finish({ error: 'the connection closed before its hello line' });
    const onData = (chunk: Buffer): void => {
      buffered = buffered.length === 0 ? chunk : Buffer.concat([buffered, chunk]);
      const newline = buffered.indexOf(10);
      if (newline === -1) {
        if (buffered.length > HELLO_MAX_BYTES) finish({ error: `the hello line is over ${HELLO_MAX_BYTES} bytes` });
        return;
      }
      // Nothing after the hello is read until the session's transport takes over.
      socket.pause();
      let hello: unknown;
      try {
        hello = JSON.parse(buffered.subarray(0, newline).toString('utf8'));
      } catch {
        hello = undefined;
      }
      const record = typeof hello === 'object' && hello !== null ? (hello as Record<string, unknown>) : {};
      if (record.gatehouse !== 'mcp' || typeof record.authorization !== 'string') {
        return finish({ error: 'the first line must be {"gatehouse":"mcp","authorization":"Bearer <agent key>"}' });
      }
      finish({ hello: { authorization: record.authorization }, rest: buffered.subarray(newline + 1) });
    };
    socket.on('data', onData);
    socket.once('close', onClose);
  });
}

/** Why a line from the client was refused, for the front to record. */
export type LineRejection = { action: 'request.too-large' | 'request.parse-error' | 'request.rejected'; reason: string };

/** One session on one local connection: lines in, lines out. */
export class LocalSessionTransport implements Transport {
  onclose?: () => void;
  onerror?: (error: Error) => void;
  onmessage?: (message: JSONRPCMessage, extra?: MessageExtraInfo) => void;

  private readonly lines: LineSplitter;
  /** The client's requests not yet answered: an id may not be reused while its request runs. */
  private readonly open = new Set<RequestId>();
  /** When a notification about each open request last went out. */
  private readonly notified = new Map<RequestId, number>();
  private initialized = false;
  private closed = false;
  private waitingForDrain = false;
  private readonly unread: UnreadWatch;

  constructor(
    readonly sessionId: string,
    private readonly socket: Socket,
    private readonly rest: Buffer,
    maxMessageBytes: number,
    private readonly onReject: (rejection: LineRejection) => void,
    /** The agent whose share of unread output the connection counts against (unread.ts). */
    account?: UnreadAccount,
  ) {
    // Past either bound on unread output the connection, and with it the session, ends.
    this.unread = new UnreadWatch(socket, account, 'the local socket connection');
    this.lines = new LineSplitter(
      maxMessageBytes,
      (line) => this.receive(line),
      () => this.refuse(null, -32600, `a message is over the limit of ${maxMessageBytes} bytes; it was dropped`, { action: 'request.too-large', reason: `a message over ${maxMessageBytes} bytes` }),
    );
  }

  /** Tells the client it is in, then reads what it sent after its hello and everything after that. */
  async start(): Promise<void> {
    this.write(`${JSON.stringify({ ok: true })}\n`);
    this.socket.on('data', (chunk: Buffer) => this.lines.push(chunk));
    this.socket.on('error', () => undefined);
    this.socket.once('close', () => void this.close());
    if (this.rest.length > 0) this.lines.push(this.rest);
    this.socket.resume();
  }

  private receive(line: Buffer): void {
    if (this.closed) return;
    const message = parseJsonLine(line);
    if (message === BLANK) return;
    if (message === NOT_JSON) {
      return this.refuse(null, -32700, 'Parse error: a line is not valid JSON', { action: 'request.parse-error', reason: 'a line that is not JSON' });
    }
    if (Array.isArray(message)) {
      return this.refuse(null, -32600, 'Invalid Request: batches are not part of MCP over stdio; send one message per line', { action: 'request.rejected', reason: 'a batch on the local socket' });
    }
    if (!isJsonRpcMessage(message)) {
      const id = idOf(message);
      return this.refuse(id, -32600, 'Invalid Request: not a JSON-RPC 2.0 message', { action: 'request.rejected', reason: 'a line that is not a JSON-RPC message' });
    }
    const requestId = 'method' in message && 'id' in message ? (message.id as RequestId) : undefined;
    if ('method' in message && message.method === 'notifications/cancelled') {
      // A cancelled request is never answered; its id is the client's again.
      const cancelled = (message.params as { requestId?: RequestId } | undefined)?.requestId;
      if (cancelled !== undefined) {
        this.open.delete(cancelled);
        this.notified.delete(cancelled);
      }
    }
    if ('method' in message && message.method === 'initialize') {
      if (this.initialized) return this.refuse(idOf(message), -32600, 'Invalid Request: Server already initialized', { action: 'request.rejected', reason: 'a second initialize' });
      this.initialized = true;
    } else if (!this.initialized) {
      if (requestId === undefined) return;
      return this.refuse(idOf(message), -32000, 'Bad Request: Server not initialized; send initialize first', { action: 'request.rejected', reason: 'a request before initialize' });
    }
    if (requestId !== undefined) {
      if (this.open.has(requestId)) {
        return this.refuse(requestId, -32600, `Invalid Request: a request with id ${JSON.stringify(requestId)} is already in flight`, { action: 'request.rejected', reason: 'a request id already in flight' });
      }
      this.open.add(requestId);
    }
    this.onmessage?.(message);
  }

  private refuse(id: RequestId | null, code: number, message: string, rejection: LineRejection): void {
    this.onReject(rejection);
    this.write(JSON.stringify({ jsonrpc: '2.0', id, error: { code, message } }) + '\n');
  }

  async send(message: JSONRPCMessage, options?: TransportSendOptions): Promise<void> {
    if (this.closed) {
      // A server→client request must fail rather than wait for an answer that cannot come.
      if ('method' in message && 'id' in message) throw new Error('the client has disconnected; nothing more can be sent to it');
      return;
    }
    if (('result' in message || 'error' in message) && message.id !== undefined) {
      this.open.delete(message.id);
      const notifiedAt = this.notified.get(message.id);
      if (notifiedAt !== undefined) {
        this.notified.delete(message.id);
        const wait = notifiedAt + SETTLE_MS - performance.now();
        if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
        if (this.closed) return;
      }
    } else if (!('id' in message) && options?.relatedRequestId !== undefined && this.open.has(options.relatedRequestId)) {
      this.notified.set(options.relatedRequestId, performance.now());
    }
    const pieces = serialize(message);
    if (pieces.length === 1) return this.write(`${pieces[0] as string}\n`);
    this.socket.cork();
    for (const piece of pieces) this.socket.write(piece);
    this.write('\n');
    this.socket.uncork();
  }

  /**
   * Writes, with backpressure: while the client is behind, no more of its messages are read (so it cannot
   * queue more work), and a client that stops reading altogether is cut off rather than buffered for.
   */
  private write(data: string | Buffer): void {
    if (this.socket.destroyed) return;
    const flowing = this.socket.write(data);
    this.unread.check();
    if (flowing || this.waitingForDrain || this.socket.destroyed) return;
    this.waitingForDrain = true;
    this.socket.pause();
    this.socket.once('drain', () => {
      this.waitingForDrain = false;
      if (!this.closed) this.socket.resume();
    });
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.open.clear();
    this.notified.clear();
    this.socket.end();
    this.onclose?.();
  }
}

function idOf(value: unknown): RequestId | null {
  const id = typeof value === 'object' && value !== null ? (value as { id?: unknown }).id : undefined;
  return typeof id === 'string' || (typeof id === 'number' && Number.isSafeInteger(id)) ? id : null;
}
