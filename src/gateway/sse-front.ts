/**
 * The deprecated HTTP+SSE transport (protocol 2024-11-05), for old clients: `GET /sse` opens a stream whose
 * first event names the endpoint to POST messages to (`/messages?sessionId=…`); every message from the
 * server travels on the stream. The gateway puts the same SDK server per session behind it.
 */
import { randomUUID } from 'node:crypto';
import type { ServerResponse } from 'node:http';
import type { JSONRPCMessage, MessageExtraInfo, Transport } from '@modelcontextprotocol/server';
import type { Principal } from '../policy/types.js';
import { presenting } from './session-transport.js';
import { UnreadWatch, type UnreadAccount } from './unread.js';

const KEEPALIVE_MS = 15_000;

export class LegacySseTransport implements Transport {
  onclose?: () => void;
  onerror?: (error: Error) => void;
  onmessage?: (message: JSONRPCMessage, extra?: MessageExtraInfo) => void;
  readonly sessionId = randomUUID();
  private keepalive: NodeJS.Timeout | undefined;
  private closed = false;
  private readonly unread: UnreadWatch;

  constructor(
    private readonly res: ServerResponse,
    private readonly endpoint: string,
    /** The agent whose share of unread output the stream counts against (unread.ts). */
    account?: UnreadAccount,
  ) {
    this.unread = new UnreadWatch(res, account, 'the HTTP+SSE stream');
  }

  async start(): Promise<void> {
    this.res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache, no-transform', connection: 'keep-alive' });
    this.res.write(`event: endpoint\ndata: ${this.endpoint}?sessionId=${this.sessionId}\n\n`);
    this.keepalive = setInterval(() => this.res.write(': keepalive\n\n'), KEEPALIVE_MS);
    this.keepalive.unref();
    this.res.on('close', () => void this.close());
  }

  /** A message the client POSTed to the endpoint, with who posted it (see requestCaller). */
  receive(message: JSONRPCMessage, presented?: Principal): void {
    this.onmessage?.(message, presented && presenting(presented));
  }

  async send(message: JSONRPCMessage): Promise<void> {
    if (this.closed) throw new Error('the SSE stream is closed');
    this.res.write(`event: message\ndata: ${JSON.stringify(message)}\n\n`);
    // A client that stopped reading is cut off (and its session closes) rather than held in memory.
    this.unread.check();
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.keepalive) clearInterval(this.keepalive);
    this.res.end();
    this.onclose?.();
  }
}
