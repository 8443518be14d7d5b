/**
 * The transport of a WebSocket the proxy reads (wss:// in an inspected tunnel, ws:// in a plain one), once
 * its upgrade request passed the request steps (see `upgradeWebSocket` in intercept.ts): dial the checked
 * address (over verified TLS for wss://), read the server's answer head, then relay WebSocket frames both
 * ways, every message read on its way.
 *
 *   agent → server: frames parsed (masked, RFC 6455), each data message held whole up to the inspection
 *   limit and handed to `inspect` (the content steps: scan, placeholders), then sent as one frame, freshly
 *   masked. Control frames are inspected too (a ping carries 125 bytes of anything). A message over the
 *   limit is closed (1009) or passed on unscanned, as policy.dlp.onTooLarge says.
 *   server → agent: frames parsed (unmasked) and, with a masker, streamed through it, so a real value the
 *   server reflects reaches the agent as its placeholder, split between frames or not.
 *
 * A refusal closes the WebSocket toward both sides with a close frame (1008 policy, 1002 protocol, 1009
 * too big) where a frame boundary allows it, else by closing the connection. Memory per connection is
 * bounded: a held message (the limit), a control frame, the masker's tail, and each socket's buffer, since a
 * side whose peer's socket is full is paused until it drains. Policy lives in the callbacks, not here.
 */
import { connect as netConnect, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { connect as tlsConnect, type ConnectionOptions, type SecureContext } from 'node:tls';
import type { CheckedAddress } from '../policy/addresses.js';
import type { Masker } from '../secrets/masker.js';
import { Refusal } from './refusal.js';
import { whenConnected } from './tunnel.js';
import { upstreamRefusal } from './upstream.js';
import {
  CloseCode,
  closePayload,
  encodeFrame,
  frameHeader,
  FrameParser,
  isControl,
  MAX_CONTROL_PAYLOAD,
  newMaskKey,
  Opcode,
  ProtocolViolation,
  unmask,
  type FrameEvent,
  type FrameHeader,
} from './websocket.js';

/** How long a TCP connect (plus TLS handshake) to the server may take. */
const CONNECT_TIMEOUT_MS = 10_000;
/** After the proxy closed a WebSocket, how long either side has to answer before its connection is cut. */
const CLOSE_GRACE_MS = 2_000;

export interface TlsDial {
  /** The name the certificate must carry (and the SNI); none for an IP target, whose address is checked. */
  servername: string | undefined;
  secureContext: SecureContext;
  highWaterMark: number;
}

/**
 * Connects to the checked addresses in order (never by name): over TLS with `tls`, the server's certificate
 * verified, in the clear without (ws:// on a plain tunnel). A certificate that does not verify is a refusal
 * at once; an unreachable address moves on to the next.
 */
export async function dialWebSocket(addresses: CheckedAddress[], port: number, host: string, tls: TlsDial | undefined): Promise<Socket | Refusal> {
  let last: Refusal = new Refusal(502, 'upstream-unreachable', `could not connect to port ${port} (no address)`);
  for (const address of addresses) {
    const result = await dialOne(address, port, tls);
    if (!(result instanceof Error)) return result;
    last = upstreamRefusal(result, tls ? 'https' : 'http', host);
    if (last.reason === 'upstream-certificate') return last;
  }
  return last;
}

async function dialOne(address: CheckedAddress, port: number, tls: TlsDial | undefined): Promise<Socket | NodeJS.ErrnoException> {
  const where = { host: address.address, port, family: address.family, noDelay: true };
  const socket = tls
    ? tlsConnect({
        ...where,
        ...(tls.servername !== undefined ? { servername: tls.servername } : {}),
        secureContext: tls.secureContext,
        ALPNProtocols: ['http/1.1'],
        highWaterMark: tls.highWaterMark,
      } as ConnectionOptions)
    : netConnect(where);
  const outcome = await whenConnected<Socket>(socket, tls ? 'secureConnect' : 'connect', CONNECT_TIMEOUT_MS);
  return outcome === 'timed out' ? Object.assign(new Error(`${address.address}: timed out`), { code: 'ETIMEDOUT' }) : outcome;
}

export interface ResponseHead {
  status: number;
  reason: string;
  /** Flat [name, value, ...] list, as the server sent them. */
  headers: string[];
  /** How many bytes the head took. */
  size: number;
  /** What the server sent after its head: the first frames. */
  rest: Buffer;
}

const STATUS_LINE = /^HTTP\/1\.[01] ([1-9][0-9]{2})(?: ([^\x00-\x08\x0a-\x1f\x7f]*))?$/;
const HEADER_LINE = /^([!#$%&'*+\-.^_`|~0-9A-Za-z]+):[ \t]*([^\x00-\x08\x0a-\x1f\x7f]*?)[ \t]*$/;

/**
 * Reads the server's answer head, at most `maxBytes` and within `timeoutMs`. The socket is left paused with
 * its listeners removed; what came after the head is in `rest`.
 */
export function readResponseHead(socket: Duplex, host: string, limits: { maxBytes: number; timeoutMs: number }): Promise<ResponseHead | Refusal> {
  return new Promise((resolve) => {
    let buffered = Buffer.alloc(0);
    const finish = (outcome: ResponseHead | Refusal): void => {
      clearTimeout(timer);
      socket.off('data', onData);
      socket.off('close', onClose);
      socket.pause();
      resolve(outcome);
    };
    const timer = setTimeout(() => finish(new Refusal(502, 'upstream-unreachable', `${host} did not answer the WebSocket upgrade within ${limits.timeoutMs} ms`)), limits.timeoutMs);
    const onClose = (): void => finish(new Refusal(502, 'upstream-unreachable', `${host} closed the connection before answering the WebSocket upgrade`));
    const onData = (chunk: Buffer): void => {
      buffered = Buffer.concat([buffered, chunk]);
      const end = buffered.indexOf('\r\n\r\n');
      if (end < 0) {
        if (buffered.length > limits.maxBytes) finish(new Refusal(502, 'upstream-unreachable', `${host} answered the WebSocket upgrade with a head over ${limits.maxBytes} bytes`));
        return;
      }
      if (end + 4 > limits.maxBytes) return finish(new Refusal(502, 'upstream-unreachable', `${host} answered the WebSocket upgrade with a head over ${limits.maxBytes} bytes`));
      const head = parseHead(buffered.toString('latin1', 0, end));
      if (!head) return finish(new Refusal(502, 'upstream-unreachable', `${host} answered the WebSocket upgrade with a head that is not valid HTTP/1.1`));
      finish({ ...head, size: end + 4, rest: buffered.subarray(end + 4) });
    };
    socket.on('data', onData);
    socket.once('close', onClose);
  });
}

function parseHead(text: string): { status: number; reason: string; headers: string[] } | undefined {
  const lines = text.split('\r\n');
  const status = STATUS_LINE.exec(lines[0] ?? '');
  if (!status) return undefined;
  const headers: string[] = [];
  for (const line of lines.slice(1)) {
    const header = HEADER_LINE.exec(line);
    // A folded line, a bare CR or LF, a space before the colon: each read two ways by two parsers.
    if (!header) return undefined;
    headers.push(header[1] as string, header[2] as string);
  }
  return { status: Number(status[1]), reason: status[2] ?? '', headers };
}

/** Writes frames to one side: a client-bound frame bare, a server-bound one masked with a fresh key per frame. */
class FrameWriter {
  bytes = 0;
  private remaining = 0;
  private key: Buffer | undefined;
  private offset = 0;

  constructor(
    readonly socket: Duplex,
    private readonly masked: boolean,
  ) {}

  /** Whether a frame's payload is still owed: nothing else may be written until it is complete. */
  get midFrame(): boolean {
    return this.remaining > 0;
  }

  /** A whole frame. */
  frame(fin: boolean, opcode: number, payload: Buffer): void {
    this.write(encodeFrame(fin, opcode, payload, this.masked));
  }

  /** A frame's header; its payload follows in `payload` pieces. */
  start(fin: boolean, opcode: number, length: number): void {
    this.key = this.masked ? newMaskKey() : undefined;
    this.offset = 0;
    this.remaining = length;
    this.write(frameHeader(fin, opcode, length, this.key));
  }

  payload(bytes: Buffer): void {
    this.write(this.key ? unmask(bytes, this.key, this.offset) : bytes);
    this.offset += bytes.length;
    this.remaining -= bytes.length;
  }

  private write(bytes: Buffer): void {
    this.bytes += bytes.length;
    this.socket.write(bytes);
  }
}

export interface RelayOptions {
  /** What the client sent after its upgrade request, and the server after its 101: the first frames. */
  clientHead: Buffer;
  upstreamHead: Buffer;
  idleTimeoutMs: number;
  totalTimeoutMs: number;
  /** Whether the agent's messages must be held whole for `inspect` (checked per message). */
  inspects(): boolean;
  /** The most of one message held for inspection; past it, `onTooLarge` applies. */
  maxMessageBytes: number;
  onTooLarge: 'block' | 'allow';
  /**
   * The content steps for a message (or a control frame's payload) the agent sends: the payload to send
   * (the same Buffer when unchanged), or the refusal that closes the WebSocket.
   */
  inspect(payload: Buffer, what: 'message' | 'control'): Buffer | Refusal;
  /**
   * The masker for what the server sends next (real values back to placeholders), asked per message since
   * the session may be lent more placeholders while the WebSocket is open; none: frames pass as they are.
   */
  masker(): Masker | undefined;
  /** Names the server in refusals. */
  host: string;
}

export interface RelayResult {
  /** Bytes written to the server and read from it (frames only; the heads are the caller's). */
  bytesUp: number;
  bytesDown: number;
  messagesUp: number;
  messagesDown: number;
  /** Messages the agent sent over the inspection limit, passed on unscanned (policy.dlp.onTooLarge: allow). */
  uninspected: number;
  ended: 'closed' | 'idle-timeout' | 'total-timeout' | 'error' | 'refused';
  /** Why the proxy closed the WebSocket, and with which close code. */
  refusal?: Refusal;
  closeCode?: number;
}

/** The close code a refusal of a WebSocket is sent with. */
function closeCodeOf(refusal: Refusal): number {
  if (refusal.reason === 'websocket-protocol') return CloseCode.protocolError;
  if (refusal.reason === 'body-too-large') return CloseCode.messageTooBig;
  return CloseCode.policyViolation;
}

/** Relays frames between the client and the server until both sides are closed. */
export function relayMessages(client: Duplex, upstream: Socket, options: RelayOptions): Promise<RelayResult> {
  return new Promise((resolve) => {
    const result: RelayResult = { bytesUp: 0, bytesDown: 0, messagesUp: 0, messagesDown: 0, uninspected: 0, ended: 'closed' };
    const toServer = new FrameWriter(upstream, true);
    const toClient = new FrameWriter(client, false);
    let stopped = false;
    let closed = 0;

    const finish = (): void => {
      closed += 1;
      if (closed < 2) return;
      clearTimeout(total);
      clearTimeout(grace);
      result.bytesUp = toServer.bytes;
      resolve(result);
    };
    const abort = (why: RelayResult['ended']) => (): void => {
      if (result.ended === 'closed') result.ended = why;
      client.destroy();
      upstream.destroy();
    };
    let grace: NodeJS.Timeout | undefined;
    /** Closes the WebSocket toward both sides for a refusal; nothing either side sends after is relayed. */
    const refuse = (refusal: Refusal): void => {
      if (stopped) return;
      stopped = true;
      const code = closeCodeOf(refusal);
      result.refusal = refusal;
      result.closeCode = code;
      result.ended = 'refused';
      const payload = closePayload(code, `Gatehouse: ${refusal.reason}`);
      for (const writer of [toClient, toServer]) {
        const socket = writer.socket;
        if (socket.destroyed) continue;
        // Mid-frame, a close frame would land inside a payload: the connection is cut instead.
        if (writer.midFrame || !socket.writable) socket.destroy();
        else {
          writer.frame(true, Opcode.close, payload);
          socket.end();
        }
      }
      grace = setTimeout(abort('refused'), CLOSE_GRACE_MS);
    };

    const outbound = new Outbound(toServer, options, result, refuse);
    const inbound = new Inbound(toClient, options, result, refuse);

    /** Pauses `reader` while `writer`'s socket is full; resumes it once that drains. */
    const pressure = (reader: Duplex, writer: Duplex): void => {
      if (!writer.writableNeedDrain || reader.isPaused()) return;
      reader.pause();
      writer.once('drain', () => reader.resume());
    };
    /**
     * A step that throws (a bug, never an expected refusal) would otherwise escape from a socket's event into
     * the process: the WebSocket is cut instead, and the record says why.
     */
    const guarded = (handle: (chunk: Buffer) => void) => (chunk: Buffer): void => {
      try {
        handle(chunk);
      } catch (error) {
        result.refusal ??= new Refusal(502, 'upstream-unreachable', `the proxy failed: ${error instanceof Error ? error.message : String(error)}`);
        stopped = true;
        abort('error')();
      }
    };
    const fromClient = guarded((chunk) => {
      if (stopped) return;
      outbound.push(chunk);
      pressure(client, upstream);
    });
    const fromUpstream = guarded((chunk) => {
      result.bytesDown += chunk.length;
      if (stopped) return;
      inbound.push(chunk);
      pressure(upstream, client);
    });

    const total = setTimeout(abort('total-timeout'), options.totalTimeoutMs);
    // Node resets a socket's timeout on reads and writes alike, so one timer per side covers both directions.
    upstream.setTimeout(options.idleTimeoutMs, abort('idle-timeout'));
    client.on('error', abort('error'));
    upstream.on('error', abort('error'));
    // A side that closes lets the other finish writing what it has (end, not destroy).
    const closedSide = (other: Duplex) => (): void => {
      if (!other.destroyed && !other.writableEnded) other.end();
      finish();
    };
    if (client.destroyed) closedSide(upstream)();
    else client.once('close', closedSide(upstream));
    if (upstream.destroyed) closedSide(client)();
    else upstream.once('close', closedSide(client));

    if (options.upstreamHead.length > 0) fromUpstream(options.upstreamHead);
    if (options.clientHead.length > 0) fromClient(options.clientHead);
    client.on('data', fromClient);
    upstream.on('data', fromUpstream);
    client.resume();
    upstream.resume();
  });
}

type Refuse = (refusal: Refusal) => void;

/** A frame being read, and how much of its payload is still to come. */
interface Reading {
  header: FrameHeader;
  left: number;
  /** A control frame's payload, held whole (at most 125 bytes). */
  control?: Buffer[];
}

/** One direction of a WebSocket: its frames parsed, and each event handled until the WebSocket is refused. */
abstract class Direction {
  /** The frame being read. */
  protected reading: Reading | undefined;

  constructor(
    private readonly parser: FrameParser,
    protected readonly writer: FrameWriter,
    protected readonly options: RelayOptions,
    protected readonly result: RelayResult,
    protected readonly refuse: Refuse,
  ) {}

  push(chunk: Buffer): void {
    const events = this.parser.push(chunk);
    if (events instanceof ProtocolViolation) {
      this.refuse(this.violation(events.message));
      return;
    }
    for (const event of events) {
      if (!this.handle(event)) return;
    }
  }

  /** The refusal for bytes that break RFC 6455 on this side. */
  protected abstract violation(message: string): Refusal;

  /** One event; false once the WebSocket was refused. */
  protected abstract handle(event: FrameEvent): boolean;
}

/** The agent's side: masked frames in, each message inspected, re-framed toward the server. */
class Outbound extends Direction {
  /** The data message being read: held for inspection, or streaming on (nothing to inspect, or too large). */
  private message: { opcode: number; held: Buffer[]; size: number; streaming: boolean } | undefined;

  constructor(writer: FrameWriter, options: RelayOptions, result: RelayResult, refuse: Refuse) {
    super(new FrameParser(true), writer, options, result, refuse);
  }

  protected violation(message: string): Refusal {
    return new Refusal(400, 'websocket-protocol', `the client broke the WebSocket protocol (RFC 6455): ${message}`);
  }

  protected handle(event: FrameEvent): boolean {
    if (event.kind === 'frame') {
      const header = event.header;
      this.reading = { header, left: header.length, ...(isControl(header.opcode) ? { control: [] } : {}) };
      if (isControl(header.opcode)) return true;
      if (header.opcode !== Opcode.continuation) this.message = { opcode: header.opcode, held: [], size: 0, streaming: !this.options.inspects() };
      if (this.message?.streaming) this.writer.start(header.fin, header.opcode, header.length);
      return true;
    }
    const reading = this.reading as Reading;
    if (event.kind === 'payload') {
      reading.left -= event.bytes.length;
      if (reading.control) reading.control.push(event.bytes);
      else if (this.message?.streaming) this.writer.payload(event.bytes);
      else return this.hold(event.bytes, reading);
      return true;
    }
    this.reading = undefined;
    if (reading.control) return this.control(reading.header.opcode, Buffer.concat(reading.control));
    const message = this.message;
    if (!reading.header.fin || !message) return true;
    this.message = undefined;
    this.result.messagesUp += 1;
    if (message.streaming) return true;
    const out = this.options.inspect(Buffer.concat(message.held, message.size), 'message');
    if (out instanceof Refusal) {
      this.refuse(out);
      return false;
    }
    // Held whole, the message goes as one frame (RFC 6455 §5.4: with no extension, an intermediary may
    // coalesce fragments), with its new length when the content steps changed it.
    this.writer.frame(true, message.opcode, out);
    return true;
  }

  /** Holds a piece of a message; past the limit, refuses it or passes it on unscanned, as the policy says. */
  private hold(bytes: Buffer, reading: Reading): boolean {
    const message = this.message!;
    message.held.push(bytes);
    message.size += bytes.length;
    if (message.size <= this.options.maxMessageBytes) return true;
    const limit = this.options.maxMessageBytes;
    if (this.options.onTooLarge !== 'allow') {
      this.refuse(new Refusal(413, 'body-too-large', `a WebSocket message to ${this.options.host} is over ${limit} bytes, the most this proxy inspects (policy.dlp.onTooLarge is block)`));
      return false;
    }
    // What was held goes as the message's first fragment; the rest of this frame, and every later one, streams.
    this.result.uninspected += 1;
    message.streaming = true;
    this.writer.frame(false, message.opcode, Buffer.concat(message.held, message.size));
    message.held = [];
    if (reading.left > 0 || reading.header.fin) this.writer.start(reading.header.fin, Opcode.continuation, reading.left);
    return true;
  }

  /** A ping, pong or close from the agent: its payload inspected like a message, then passed on. */
  private control(opcode: number, payload: Buffer): boolean {
    if (!this.options.inspects() || payload.length === 0) {
      this.writer.frame(true, opcode, payload);
      return true;
    }
    // A close frame's first two bytes are its code; only the reason after them is text.
    const text = opcode === Opcode.close ? payload.subarray(2) : payload;
    const out = text.length > 0 ? this.options.inspect(text, 'control') : text;
    if (out instanceof Refusal) {
      this.refuse(out);
      return false;
    }
    const sent = out === text ? payload : opcode === Opcode.close ? Buffer.concat([payload.subarray(0, 2), out]) : out;
    if (sent.length > MAX_CONTROL_PAYLOAD) {
      this.refuse(new Refusal(403, 'secret-detected', `a WebSocket control frame to ${this.options.host} would be over ${MAX_CONTROL_PAYLOAD} bytes once its content was rewritten`));
      return false;
    }
    this.writer.frame(true, opcode, sent);
    return true;
  }
}

/** The server's side: unmasked frames in, real values masked on their way to the agent. */
class Inbound extends Direction {
  /**
   * The data message being relayed: with a masker, its opcode until its first frame went and what the
   * masker let out, not yet sent; without, its frames pass as they came.
   */
  private message: { masker: Masker | undefined; opcode: number; ready: Buffer | undefined } | undefined;

  constructor(writer: FrameWriter, options: RelayOptions, result: RelayResult, refuse: Refuse) {
    super(new FrameParser(false), writer, options, result, refuse);
  }

  protected violation(message: string): Refusal {
    return new Refusal(502, 'websocket-protocol', `${this.options.host} broke the WebSocket protocol (RFC 6455): ${message}`);
  }

  protected handle(event: FrameEvent): boolean {
    if (event.kind === 'frame') {
      const header = event.header;
      this.reading = { header, left: header.length, ...(isControl(header.opcode) ? { control: [] } : {}) };
      if (isControl(header.opcode)) return true;
      if (header.opcode !== Opcode.continuation) this.message = { masker: this.options.masker(), opcode: header.opcode, ready: undefined };
      if (!this.message?.masker) this.writer.start(header.fin, header.opcode, header.length);
      return true;
    }
    const reading = this.reading as Reading;
    const message = this.message;
    if (event.kind === 'payload') {
      if (reading.control) reading.control.push(event.bytes);
      else if (message?.masker) this.mask(message, message.masker, event.bytes);
      else this.writer.payload(event.bytes);
      return true;
    }
    this.reading = undefined;
    if (reading.control) return this.control(reading.header.opcode, Buffer.concat(reading.control));
    if (!reading.header.fin) return true;
    this.result.messagesDown += 1;
    this.message = undefined;
    if (message?.masker) {
      // The masker's held tail can no longer become a real value: it ends the message.
      const rest = message.masker.end();
      this.writer.frame(true, message.opcode, message.ready ? Buffer.concat([message.ready, rest]) : rest);
    }
    return true;
  }

  /**
   * A piece of a message through the masker. What it lets out goes one piece behind, so the message's last
   * piece and the masker's tail leave as one final frame; each frame after the first is a continuation.
   */
  private mask(message: NonNullable<Inbound['message']>, masker: Masker, bytes: Buffer): void {
    const out = masker.push(bytes);
    if (message.ready && message.ready.length > 0) {
      this.writer.frame(false, message.opcode, message.ready);
      message.opcode = Opcode.continuation;
    }
    message.ready = out;
  }

  private control(opcode: number, payload: Buffer): boolean {
    const masker = this.options.masker();
    const text = opcode === Opcode.close ? payload.subarray(2) : payload;
    const masked = masker && text.length > 0 ? masker.mask(text) : text;
    const sent = masked === text ? payload : opcode === Opcode.close ? Buffer.concat([payload.subarray(0, 2), masked]) : masked;
    if (sent.length > MAX_CONTROL_PAYLOAD) {
      this.refuse(new Refusal(502, 'response-unmaskable', `a WebSocket control frame from ${this.options.host} would be over ${MAX_CONTROL_PAYLOAD} bytes once its real values were masked`));
      return false;
    }
    this.writer.frame(true, opcode, sent);
    return true;
  }
}
