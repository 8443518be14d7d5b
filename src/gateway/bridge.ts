/**
 * `gatehouse mcp`: the stdio server a stdio-only MCP client launches, carrying its messages to the gateway.
 *
 * Two ways to the gateway:
 * - the node's local socket (local-socket.ts), when the client opens with `initialize` (a 2025-era session)
 *   and the socket is reachable: after a one-line hello with the agent key, bytes are copied both ways and
 *   never parsed here; the gateway checks every message as it checks HTTP's;
 * - Streamable HTTP otherwise (a remote gateway, `--url http...`, or a 2026-07-28 client, whose stateless
 *   requests the HTTP front serves).
 * A request that cannot reach the gateway is still answered, with an error saying why, so the client never
 * waits forever; the reason also goes to stderr, which clients show in their logs.
 */
import { connect, type Socket } from 'node:net';
import type { Readable, Writable } from 'node:stream';
import type { JSONRPCMessage } from '@modelcontextprotocol/client';
import { BLANK, LineSplitter, NOT_JSON, parseJsonLine } from '../util/lines.js';

export type BridgeTarget = { socket: string; fallbackUrl?: string } | { url: string };

export interface BridgeOptions {
  target: BridgeTarget;
  /** The agent key; without one only HTTP is tried, and the gateway decides who the caller is. */
  key?: string;
  /** The largest line accepted from the client on the HTTP way (the gateway bounds the socket way). */
  maxMessageBytes?: number;
  stdin?: Readable;
  stdout?: Writable;
  stderr?: Writable;
}

const DEFAULT_MAX_MESSAGE = 4 * 1024 * 1024;

/** Runs until the client closes stdin or the gateway goes away; resolves with the exit code. */
export async function runStdioBridge(options: BridgeOptions): Promise<number> {
  const stdin = options.stdin ?? process.stdin;
  const stdout = options.stdout ?? process.stdout;
  const stderr = options.stderr ?? process.stderr;
  const say = (text: string): void => void stderr.write(`gatehouse mcp: ${text}\n`);
  const first = await firstLine(stdin, options.maxMessageBytes ?? DEFAULT_MAX_MESSAGE);
  if (first === undefined) return 0;

  const target = options.target;
  const initialize = opensSession(first.line);
  if ('socket' in target && options.key !== undefined && initialize) {
    const link = await openLocal(target.socket, options.key);
    if (link.ok) return pipeLocal(link.socket, first, stdin, stdout, say);
    if (!link.unreachable || target.fallbackUrl === undefined) return refuseAll(first, stdin, stdout, say, link.error);
    // No node serves this data dir's socket: the configured HTTP endpoint may still be up.
  }
  const url = 'url' in target ? target.url : target.fallbackUrl;
  if (url === undefined) {
    const socket = (target as { socket: string }).socket;
    const reason = initialize
      ? `no gateway serves ${socket}; is "gatehouse node" running?`
      : `the socket ${socket} serves 2025-era sessions, which open with initialize; this client needs the gateway's HTTP endpoint (--url http://…/mcp)`;
    return refuseAll(first, stdin, stdout, say, reason);
  }
  return bridgeHttp(url, options.key, first, stdin, stdout, say, options.maxMessageBytes ?? DEFAULT_MAX_MESSAGE);
}

interface FirstLine {
  line: Buffer;
  /** Everything read so far, the line and what followed it, ending in a newline: what goes on to the gateway. */
  read: Buffer;
}

/** The client's first message (a line), before the way to the gateway is chosen; undefined if stdin ends first. */
function firstLine(stdin: Readable, maxBytes: number): Promise<FirstLine | undefined> {
  return new Promise((resolve) => {
    let buffered: Buffer = Buffer.alloc(0);
    const done = (value: FirstLine | undefined): void => {
      stdin.off('data', onData);
      stdin.off('end', onEnd);
      stdin.pause();
      resolve(value);
    };
    const onData = (chunk: Buffer): void => {
      buffered = buffered.length === 0 ? chunk : Buffer.concat([buffered, chunk]);
      const newline = buffered.indexOf(10);
      if (newline !== -1) return done({ line: buffered.subarray(0, newline), read: buffered });
      // An overlong first line still goes on, to be refused by whoever reads it.
      if (buffered.length > maxBytes) done(unterminated(buffered));
    };
    const onEnd = (): void => done(buffered.length > 0 ? unterminated(buffered) : undefined);
    stdin.on('data', onData);
    stdin.once('end', onEnd);
    stdin.resume();
  });
}

function unterminated(line: Buffer): FirstLine {
  return { line, read: Buffer.concat([line, Buffer.from('\n')]) };
}

/** The line's message, when it is a JSON object. */
function messageOf(line: Buffer): { id?: unknown; method?: unknown } | undefined {
  const message = parseJsonLine(line);
  return typeof message === 'object' && message !== null ? (message as { id?: unknown; method?: unknown }) : undefined;
}

/** Whether the line is an `initialize` request, which opens a 2025-era session. */
function opensSession(line: Buffer): boolean {
  const message = messageOf(line);
  return message?.method === 'initialize' && message.id !== undefined;
}

type LocalLink = { ok: true; socket: Socket } | { ok: false; unreachable: boolean; error: string };

/** Connects to the local socket and says hello; the gateway answers with one line. */
function openLocal(path: string, key: string): Promise<LocalLink> {
  return new Promise((resolve) => {
    const socket = connect(path);
    let answer = '';
    const fail = (link: LocalLink): void => {
      socket.destroy();
      resolve(link);
    };
    const onError = (error: NodeJS.ErrnoException): void => {
      const unreachable = error.code === 'ENOENT' || error.code === 'ECONNREFUSED' || error.code === 'EACCES';
      fail({ ok: false, unreachable, error: `cannot reach the gateway at ${path}: ${error.code ?? error.message}` });
    };
    const onClose = (): void => fail({ ok: false, unreachable: true, error: `the gateway at ${path} closed the connection` });
    socket.once('error', onError);
    socket.once('connect', () => socket.write(`${JSON.stringify({ gatehouse: 'mcp', authorization: `Bearer ${key}` })}\n`));
    const onData = (chunk: Buffer): void => {
      answer += chunk.toString('utf8');
      const newline = answer.indexOf('\n');
      if (newline === -1) return;
      socket.off('data', onData);
      socket.pause();
      let reply: { ok?: unknown; error?: unknown } = {};
      try {
        reply = JSON.parse(answer.slice(0, newline)) as typeof reply;
      } catch {
        // Not the gateway's answer: refused below.
      }
      if (reply.ok === true) {
        socket.off('error', onError);
        socket.off('close', onClose);
        // Anything after the answer belongs to the session.
        const rest = answer.slice(newline + 1);
        if (rest) socket.unshift(Buffer.from(rest));
        return resolve({ ok: true, socket });
      }
      fail({ ok: false, unreachable: false, error: `the gateway refused this bridge: ${typeof reply.error === 'string' ? reply.error : 'no reason given'}` });
    };
    socket.on('data', onData);
    socket.once('close', onClose);
  });
}

/** Copies bytes both ways until one side ends. */
function pipeLocal(socket: Socket, first: FirstLine, stdin: Readable, stdout: Writable, say: (text: string) => void): Promise<number> {
  return new Promise((resolve) => {
    let clientGone = false;
    socket.write(first.read);
    stdin.pipe(socket);
    socket.pipe(stdout, { end: false });
    stdin.once('end', () => (clientGone = true));
    stdout.on('error', () => socket.destroy());
    socket.on('error', (error) => say(`the connection to the gateway broke: ${error.message}`));
    const closed = (): void => {
      if (!clientGone) say('the gateway closed the session (did the node stop?)');
      resolve(clientGone ? 0 : 1);
    };
    if (socket.destroyed) return closed();
    socket.once('close', closed);
    socket.resume();
  });
}

/** Answers each of the client's requests with `reason`, until it gives up and closes stdin. */
function refuseAll(first: FirstLine, stdin: Readable, stdout: Writable, say: (text: string) => void, reason: string): Promise<number> {
  say(reason);
  return new Promise((resolve) => {
    const lines = new LineSplitter(DEFAULT_MAX_MESSAGE, (line) => {
      const id = requestIdOf(line);
      if (id !== undefined) stdout.write(`${JSON.stringify({ jsonrpc: '2.0', id, error: { code: -32603, message: `Gatehouse: ${reason}` } })}\n`);
    }, () => undefined);
    lines.push(first.read);
    stdin.on('data', (chunk: Buffer) => lines.push(chunk));
    stdin.once('end', () => resolve(1));
    stdin.resume();
  });
}

function requestIdOf(line: Buffer): string | number | undefined {
  const message = messageOf(line);
  return typeof message?.method === 'string' && (typeof message.id === 'string' || typeof message.id === 'number') ? message.id : undefined;
}

/** Streamable HTTP to the gateway, with the SDK client transport; each line is parsed to be sent. */
async function bridgeHttp(url: string, key: string | undefined, first: FirstLine, stdin: Readable, stdout: Writable, say: (text: string) => void, maxBytes: number): Promise<number> {
  const { StreamableHTTPClientTransport } = await import('@modelcontextprotocol/client');
  const upstream = new StreamableHTTPClientTransport(new URL(url), key ? { requestInit: { headers: { authorization: `Bearer ${key}` } } } : {});
  const reply = (message: unknown): void => void stdout.write(`${JSON.stringify(message)}\n`);
  return new Promise((resolve) => {
    let closing = false;
    const close = async (code: number): Promise<void> => {
      if (closing) return;
      closing = true;
      await upstream.terminateSession().catch(() => undefined);
      await upstream.close().catch(() => undefined);
      resolve(code);
    };
    const forward = (line: Buffer): void => {
      const parsed = parseJsonLine(line);
      if (parsed === BLANK) return;
      if (parsed === NOT_JSON) return reply({ jsonrpc: '2.0', id: null, error: { code: -32700, message: 'Parse error: a line is not valid JSON' } });
      if (typeof parsed !== 'object' || parsed === null) return reply({ jsonrpc: '2.0', id: null, error: { code: -32600, message: 'Invalid Request: a line is not a JSON-RPC message' } });
      const message = parsed as JSONRPCMessage;
      upstream.send(message).catch((error: unknown) => {
        say(`the gateway at ${url} refused or could not be reached: ${error instanceof Error ? error.message : String(error)}`);
        // A request that cannot be delivered still gets an answer, so the client does not wait forever.
        if ('id' in message && 'method' in message) reply({ jsonrpc: '2.0', id: message.id, error: { code: -32603, message: `the Gatehouse gateway could not be reached at ${url}` } });
      });
    };
    const lines = new LineSplitter(maxBytes, forward, () => reply({ jsonrpc: '2.0', id: null, error: { code: -32600, message: `a message is over the limit of ${maxBytes} bytes; it was dropped` } }));
    upstream.onmessage = (message) => reply(message);
    upstream.onerror = (error) => say(error.message);
    upstream.onclose = () => void close(0);
    void upstream.start().then(() => {
      lines.push(first.read);
      stdin.on('data', (chunk: Buffer) => lines.push(chunk));
      stdin.once('end', () => void close(0));
      stdin.resume();
    });
  });
}
