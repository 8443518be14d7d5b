/**
 * The wire between the bridge inside the sandbox and Gatehouse outside: many TCP streams multiplexed over
 * the one socketpair the sandbox inherits. This file runs on both sides, so it imports only node built-ins
 * (it is bound read-only into the sandbox next to the bridge script).
 *
 * A frame is `type (u8) · stream id (u32 BE) · length (u32 BE) · payload`. Each direction of a stream has
 * a credit window: a sender stops reading its source once WINDOW bytes are unacknowledged, and the receiver
 * grants credit back as its destination accepts the bytes. The host side treats the inside as hostile: a
 * peer that overruns its window, sends an oversized frame or an unknown type loses the whole channel.
 */
import type { Duplex } from 'node:stream';

export const FRAME = {
  /**
   * inside → host: a new connection arrived at a bridge listener. No payload: the proxy port's; payload
   * `gateway`: the MCP gateway port's (see LISTENER).
   */
  OPEN: 1,
  DATA: 2,
  /** The sender will write no more on this stream (TCP half-close). */
  END: 3,
  /** Tear the stream down; payload may carry a short reason. */
  CLOSE: 4,
  /** Credit: the payload is a u32 count of bytes the receiver has consumed. */
  WINDOW: 5,
  /** host → inside: deliver this signal (payload: its name) to the program. */
  SIGNAL: 6,
  /** inside → host: the program ended; payload is JSON `{code, signal}`. */
  EXIT: 7,
  /** host → inside: the launch is recorded; start the program. */
  START: 8,
} as const;

/** Which bridge listener a stream came in on, as an OPEN frame's payload names it. */
export const LISTENER = { proxy: '', gateway: 'gateway' } as const;

export const HEADER_BYTES = 9;
export const WINDOW = 1024 * 1024;
export const MAX_FRAME = 256 * 1024;
/** Concurrent streams one sandbox may hold open; more is a sandbox trying to exhaust the host. */
export const MAX_STREAMS = 1024;

export function encodeFrame(type: number, id: number, payload?: Buffer): Buffer {
  const length = payload?.length ?? 0;
  const frame = Buffer.allocUnsafe(HEADER_BYTES + length);
  frame.writeUInt8(type, 0);
  frame.writeUInt32BE(id >>> 0, 1);
  frame.writeUInt32BE(length, 5);
  if (payload) payload.copy(frame, HEADER_BYTES);
  return frame;
}

export interface Frame {
  type: number;
  id: number;
  payload: Buffer;
}

/**
 * Incremental frame parser. Throws on a frame larger than MAX_FRAME or an unknown type. Chunks are joined
 * only once a whole frame is there, so a large frame arriving in many pieces is copied once.
 */
export class FrameReader {
  private pending: Buffer[] = [];
  private pendingBytes = 0;
  /** Header of the frame being gathered, once known: total bytes it needs. */
  private needed = HEADER_BYTES;

  push(chunk: Buffer, onFrame: (frame: Frame) => void): void {
    this.pending.push(chunk);
    this.pendingBytes += chunk.length;
    if (this.pendingBytes < this.needed) return;
    let buffer = this.pending.length === 1 ? this.pending[0]! : Buffer.concat(this.pending, this.pendingBytes);
    let offset = 0;
    this.needed = HEADER_BYTES;
    while (buffer.length - offset >= HEADER_BYTES) {
      const type = buffer.readUInt8(offset);
      const id = buffer.readUInt32BE(offset + 1);
      const length = buffer.readUInt32BE(offset + 5);
      if (type < FRAME.OPEN || type > FRAME.START) throw new Error(`unknown frame type ${type}`);
      if (length > MAX_FRAME) throw new Error(`frame of ${length} bytes exceeds ${MAX_FRAME}`);
      if (buffer.length - offset < HEADER_BYTES + length) {
        this.needed = HEADER_BYTES + length;
        break;
      }
      // The payload is a view into a buffer nobody writes to again, so it is handed on without a copy.
      const payload = buffer.subarray(offset + HEADER_BYTES, offset + HEADER_BYTES + length);
      offset += HEADER_BYTES + length;
      onFrame({ type, id, payload });
    }
    buffer = buffer.subarray(offset);
    this.pending = buffer.length > 0 ? [buffer] : [];
    this.pendingBytes = buffer.length;
  }
}

/** One stream's end of the mux: a local socket pumped to and from the channel with credit. */
export interface StreamEnd {
  socket: Duplex;
  /** Bytes we may still send before the peer grants more. */
  credit: number;
  /** Bytes the peer sent that our socket has not yet accepted. */
  unacknowledged: number;
  /** Bytes our socket accepted that we have not yet granted back as credit. */
  consumed: number;
  ended: boolean;
  closed: boolean;
  /**
   * Bytes read from our socket beyond the credit: a read does not stop at the window, so its tail waits here
   * (the socket paused) until credit comes back. What the socket's end and close say waits behind it.
   */
  held?: Buffer;
  endHeld?: boolean;
  closeHeld?: boolean;
}

/**
 * Pumps data between `channel` and per-stream sockets. Both sides use it; they differ only in who opens
 * streams (the inside, on accept) and what the host does on OPEN (dial the egress proxy).
 */
export class Mux {
  readonly streams = new Map<number, StreamEnd>();
  private readonly reader = new FrameReader();
  private broken = false;

  constructor(
    private readonly channel: Duplex,
    private readonly handlers: {
      /** `listener`: the OPEN frame's payload (LISTENER), as the peer sent it: check it. */
      onOpen?: (id: number, listener: string) => void;
      onSignal?: (signal: string) => void;
      onExit?: (status: { code: number | null; signal: string | null }) => void;
      onStart?: () => void;
      onBroken?: (error: Error) => void;
    } = {},
  ) {
    channel.on('data', (chunk: Buffer) => {
      if (this.broken) return;
      try {
        this.reader.push(chunk, (frame) => this.onFrame(frame));
      } catch (error) {
        this.fail(error instanceof Error ? error : new Error(String(error)));
      }
    });
    channel.on('error', (error) => this.fail(error));
    channel.on('close', () => this.closeAll());
  }

  send(type: number, id: number, payload?: Buffer): void {
    if (this.broken || this.channel.destroyed) return;
    if (!payload || payload.length < 4096) {
      this.channel.write(encodeFrame(type, id, payload));
      return;
    }
    // Large payloads go out as header + payload in one writev, without copying the payload.
    const header = Buffer.allocUnsafe(HEADER_BYTES);
    header.writeUInt8(type, 0);
    header.writeUInt32BE(id >>> 0, 1);
    header.writeUInt32BE(payload.length, 5);
    this.channel.cork();
    this.channel.write(header);
    this.channel.write(payload);
    process.nextTick(() => this.channel.uncork());
  }

  /** Attaches a local socket as stream `id` and starts pumping. */
  attach(id: number, socket: Duplex): void {
    const end: StreamEnd = { socket, credit: WINDOW, unacknowledged: 0, consumed: 0, ended: false, closed: false };
    this.streams.set(id, end);
    socket.on('data', (chunk: Buffer) => this.forward(id, end, end.held ? Buffer.concat([end.held, chunk]) : chunk));
    socket.on('end', () => {
      if (end.held) end.endHeld = true;
      else this.send(FRAME.END, id);
    });
    socket.on('error', () => undefined);
    socket.on('close', () => {
      // A tail still held goes first: the stream stays until credit lets it out.
      if (end.held && !end.closed) return void (end.closeHeld = true);
      this.finish(id, end);
    });
  }

  /** Sends what the credit allows of `data` and holds the rest, pausing the socket until credit returns. */
  private forward(id: number, end: StreamEnd, data: Buffer): void {
    end.held = undefined;
    const allowed = Math.min(data.length, Math.max(0, end.credit));
    for (let offset = 0; offset < allowed; offset += MAX_FRAME) {
      this.send(FRAME.DATA, id, data.subarray(offset, Math.min(allowed, offset + MAX_FRAME)));
    }
    end.credit -= allowed;
    if (allowed < data.length) end.held = data.subarray(allowed);
    if (end.credit <= 0 || end.held) end.socket.pause();
  }

  private finish(id: number, end: StreamEnd): void {
    if (!end.closed) {
      end.closed = true;
      this.send(FRAME.CLOSE, id);
    }
    this.streams.delete(id);
  }

  /** Closes stream `id` locally and tells the peer, with an optional reason. */
  close(id: number, reason?: string): void {
    const end = this.streams.get(id);
    if (end) {
      end.closed = true;
      end.socket.destroy();
      this.streams.delete(id);
    }
    this.send(FRAME.CLOSE, id, reason ? Buffer.from(reason) : undefined);
  }

  private onFrame(frame: Frame): void {
    const end = this.streams.get(frame.id);
    switch (frame.type) {
      case FRAME.OPEN:
        if (end) throw new Error(`stream ${frame.id} opened twice`);
        if (this.streams.size >= MAX_STREAMS) {
          this.send(FRAME.CLOSE, frame.id, Buffer.from('too many connections'));
          return;
        }
        this.handlers.onOpen?.(frame.id, frame.payload.toString('latin1'));
        return;
      case FRAME.DATA: {
        if (!end || end.closed) return; // data racing a close
        end.unacknowledged += frame.payload.length;
        // A peer that ignores its window is trying to make us buffer without bound.
        if (end.unacknowledged > WINDOW) throw new Error(`stream ${frame.id} overran its window`);
        const length = frame.payload.length;
        end.socket.write(frame.payload, () => {
          end.unacknowledged -= length;
          end.consumed += length;
          // Credit goes back in batches (or at once when the destination has caught up).
          if (end.consumed >= WINDOW / 8 || end.unacknowledged === 0) {
            const credit = Buffer.allocUnsafe(4);
            credit.writeUInt32BE(end.consumed);
            end.consumed = 0;
            this.send(FRAME.WINDOW, frame.id, credit);
          }
        });
        return;
      }
      case FRAME.END:
        if (end && !end.ended) {
          end.ended = true;
          end.socket.end();
        }
        return;
      case FRAME.CLOSE:
        if (end) {
          end.closed = true;
          end.socket.destroy();
          this.streams.delete(frame.id);
        }
        return;
      case FRAME.WINDOW:
        if (!end || frame.payload.length !== 4) return;
        end.credit += frame.payload.readUInt32BE(0);
        if (end.held) this.forward(frame.id, end, end.held);
        if (end.held) return;
        if (end.endHeld) {
          end.endHeld = false;
          this.send(FRAME.END, frame.id);
        }
        if (end.closeHeld) return this.finish(frame.id, end);
        if (end.credit > 0 && end.socket.isPaused()) end.socket.resume();
        return;
      case FRAME.SIGNAL:
        this.handlers.onSignal?.(frame.payload.toString('latin1'));
        return;
      case FRAME.START:
        this.handlers.onStart?.();
        return;
      case FRAME.EXIT:
        this.handlers.onExit?.(JSON.parse(frame.payload.toString('utf8')) as { code: number | null; signal: string | null });
        return;
    }
  }

  private fail(error: Error): void {
    if (this.broken) return;
    this.broken = true;
    this.handlers.onBroken?.(error);
    this.closeAll();
    this.channel.destroy();
  }

  closeAll(): void {
    for (const end of this.streams.values()) {
      end.closed = true;
      end.socket.destroy();
    }
    this.streams.clear();
  }
}
