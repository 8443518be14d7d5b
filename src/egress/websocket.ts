/**
 * WebSocket framing (RFC 6455 §5), for the proxy that reads every message of an inspected wss:// connection:
 * an incremental parser and the encoder for frames the proxy writes itself. No sockets and no policy here.
 *
 * The parser never holds more than one frame header (at most 14 bytes): payload bytes are handed on as they
 * arrive, unmasked, so a caller decides how much of a message it keeps. It enforces what a proxy must rely
 * on to read messages at all: no reserved bit (the proxy lets no extension be negotiated, so a set one means
 * bytes it cannot read, such as a compressed frame), known opcodes only, control frames short and whole,
 * fragments in order, masking the right way round, and lengths a number can hold.
 */
import { randomFillSync } from 'node:crypto';

export const Opcode = { continuation: 0x0, text: 0x1, binary: 0x2, close: 0x8, ping: 0x9, pong: 0xa } as const;

const KNOWN_OPCODES = new Set<number>(Object.values(Opcode));

/** The longest payload a control frame may carry (RFC 6455 §5.5). */
export const MAX_CONTROL_PAYLOAD = 125;

/** Close codes the proxy sends (RFC 6455 §7.4.1). */
export const CloseCode = { protocolError: 1002, policyViolation: 1008, messageTooBig: 1009 } as const;

export interface FrameHeader {
  fin: boolean;
  opcode: number;
  /** Payload length in bytes. */
  length: number;
}

/** What a piece of input held: a frame begins, some of its payload (unmasked), or its payload is complete. */
export type FrameEvent = { kind: 'frame'; header: FrameHeader } | { kind: 'payload'; bytes: Buffer } | { kind: 'end' };

/** Bytes that break RFC 6455; the connection is to be closed with 1002. */
export class ProtocolViolation {
  constructor(readonly message: string) {}
}

export function isControl(opcode: number): boolean {
  return (opcode & 0x8) !== 0;
}

interface CurrentFrame {
  header: FrameHeader;
  remaining: number;
  mask: Buffer | undefined;
  /** Payload bytes unmasked so far: where the mask key stands. */
  offset: number;
}

export class FrameParser {
  private pending: Buffer = Buffer.alloc(0);
  private current: CurrentFrame | undefined;
  /** A data message whose last fragment has not come yet. */
  private inMessage = false;
  private violation: ProtocolViolation | undefined;

  /**
   * @param masked whether every frame must be masked (a client's) or none may be (a server's), RFC 6455 §5.1
   */
  constructor(private readonly masked: boolean) {}

  /** The events in the next piece of input, in order; a violation ends the parser (every later push returns it). */
  push(chunk: Buffer): FrameEvent[] | ProtocolViolation {
    if (this.violation) return this.violation;
    const events: FrameEvent[] = [];
    let at = 0;
    while (at < chunk.length || (this.current && this.current.remaining === 0)) {
      if (this.current) {
        const frame = this.current;
        const take = Math.min(frame.remaining, chunk.length - at);
        if (take > 0) {
          const piece = chunk.subarray(at, at + take);
          events.push({ kind: 'payload', bytes: frame.mask ? unmask(piece, frame.mask, frame.offset) : piece });
          frame.offset += take;
          frame.remaining -= take;
          at += take;
        }
        if (frame.remaining === 0) {
          events.push({ kind: 'end' });
          this.current = undefined;
        }
        continue;
      }
      // A header may arrive in pieces: only its bytes so far are kept.
      const need = Math.min(chunk.length - at, 14 - this.pending.length);
      const bytes = this.pending.length > 0 ? Buffer.concat([this.pending, chunk.subarray(at, at + need)]) : chunk.subarray(at, at + need);
      const parsed = this.readHeader(bytes);
      if (parsed instanceof ProtocolViolation) {
        this.violation = parsed;
        return parsed;
      }
      if (parsed === undefined) {
        this.pending = Buffer.from(bytes);
        at += need;
        continue;
      }
      at += parsed.size - this.pending.length;
      this.pending = Buffer.alloc(0);
      this.current = { header: parsed.header, remaining: parsed.header.length, mask: parsed.mask, offset: 0 };
      events.push({ kind: 'frame', header: parsed.header });
    }
    return events;
  }

  /** A whole header at the start of `bytes`, undefined when more bytes are needed, or a violation. */
  private readHeader(bytes: Buffer): { header: FrameHeader; mask: Buffer | undefined; size: number } | undefined | ProtocolViolation {
    if (bytes.length < 2) return undefined;
    const first = bytes[0] as number;
    const second = bytes[1] as number;
    const fin = (first & 0x80) !== 0;
    const opcode = first & 0x0f;
    const masked = (second & 0x80) !== 0;
    if ((first & 0x70) !== 0) return new ProtocolViolation('a frame has a reserved bit set, and no extension was negotiated');
    if (!KNOWN_OPCODES.has(opcode)) return new ProtocolViolation(`a frame has the unknown opcode 0x${opcode.toString(16)}`);
    if (masked !== this.masked) return new ProtocolViolation(this.masked ? 'a client frame is not masked' : 'a server frame is masked');
    let length = second & 0x7f;
    if (isControl(opcode)) {
      if (!fin) return new ProtocolViolation('a control frame is fragmented');
      if (length > MAX_CONTROL_PAYLOAD) return new ProtocolViolation(`a control frame's payload is over ${MAX_CONTROL_PAYLOAD} bytes`);
      if (opcode === Opcode.close && length === 1) return new ProtocolViolation('a close frame has a one-byte payload (a close code takes two)');
    } else if (opcode === Opcode.continuation && !this.inMessage) {
      return new ProtocolViolation('a continuation frame has no message to continue');
    } else if (opcode !== Opcode.continuation && this.inMessage) {
      return new ProtocolViolation("a new message began before the previous one's last fragment");
    }
    let size = 2;
    if (length === 126) {
      if (bytes.length < 4) return undefined;
      length = bytes.readUInt16BE(2);
      size = 4;
    } else if (length === 127) {
      if (bytes.length < 10) return undefined;
      const long = bytes.readBigUInt64BE(2);
      // The most significant bit must be 0 (RFC 6455 §5.2); past 2^53 a length is no exact number here.
      if (long > BigInt(Number.MAX_SAFE_INTEGER)) return new ProtocolViolation(`a frame announces a payload of ${long} bytes, more than any message can be`);
      length = Number(long);
      size = 10;
    }
    let mask: Buffer | undefined;
    if (masked) {
      if (bytes.length < size + 4) return undefined;
      mask = Buffer.from(bytes.subarray(size, size + 4));
      size += 4;
    }
    if (!isControl(opcode)) this.inMessage = !fin;
    return { header: { fin, opcode, length }, mask, size };
  }
}

/** A copy of `bytes` XORed with the mask key, the key's position being `offset` bytes into the payload. */
export function unmask(bytes: Buffer, key: Buffer, offset = 0): Buffer {
  const out = Buffer.allocUnsafe(bytes.length);
  for (let i = 0; i < bytes.length; i++) out[i] = (bytes[i] as number) ^ (key[(offset + i) & 3] as number);
  return out;
}

/** A frame header; with `mask`, the key goes in it and the payload that follows must be masked with it. */
export function frameHeader(fin: boolean, opcode: number, length: number, mask?: Buffer): Buffer {
  const extra = length < 126 ? 0 : length < 0x10000 ? 2 : 8;
  const header = Buffer.allocUnsafe(2 + extra + (mask ? 4 : 0));
  header[0] = (fin ? 0x80 : 0) | opcode;
  header[1] = (mask ? 0x80 : 0) | (extra === 0 ? length : extra === 2 ? 126 : 127);
  if (extra === 2) header.writeUInt16BE(length, 2);
  if (extra === 8) header.writeBigUInt64BE(BigInt(length), 2);
  if (mask) mask.copy(header, 2 + extra);
  return header;
}

/** A fresh mask key from a strong source (RFC 6455 §5.3: a server must not be able to predict it). */
export function newMaskKey(): Buffer {
  return randomFillSync(Buffer.allocUnsafe(4));
}

/** A whole frame: a client's is masked with a fresh key, a server's is not. */
export function encodeFrame(fin: boolean, opcode: number, payload: Buffer, masked: boolean): Buffer {
  if (!masked) return Buffer.concat([frameHeader(fin, opcode, payload.length), payload]);
  const key = newMaskKey();
  return Buffer.concat([frameHeader(fin, opcode, payload.length, key), unmask(payload, key)]);
}

/** A close frame's payload: the code, then the reason cut to fit a control frame without splitting a character. */
export function closePayload(code: number, reason: string): Buffer {
  let text = Buffer.from(reason, 'utf8');
  if (text.length > MAX_CONTROL_PAYLOAD - 2) {
    let end = MAX_CONTROL_PAYLOAD - 2;
    while (end > 0 && ((text[end] as number) & 0xc0) === 0x80) end--;
    text = text.subarray(0, end);
  }
  const payload = Buffer.allocUnsafe(2 + text.length);
  payload.writeUInt16BE(code, 0);
  text.copy(payload, 2);
  return payload;
}
