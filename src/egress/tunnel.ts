/**
 * The dial and forward steps for byte tunnels (CONNECT, SOCKS5): connect to exactly a checked address, then
 * splice the two sockets with backpressure (the faster side pauses; a few megabytes at most are held per
 * direction), idle and total timeouts, and byte counts for the record.
 */
import { connect, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import type { CheckedAddress } from '../policy/addresses.js';
import { Refusal } from './refusal.js';

const CONNECT_TIMEOUT_MS = 10_000;

/**
 * Downloads are read in large pieces through node's `onread` instead of 64 KB reads through the stream
 * machinery: far fewer system calls and callbacks per megabyte. A socket starts reading into one buffer
 * shared by every tunnel, copying each read out at once (an idle or chatty tunnel holds no buffer of its
 * own). Once a tunnel streams (a read fills half its buffer or more), it reads into two buffers of its own
 * in turn, each handed to the client's socket without a copy. A buffer is read into again only once the
 * client's socket is done with it: until then reading pauses, which is also the tunnel's backpressure (at
 * most two reads are in flight). Nothing is allocated, faulted in or collected per megabyte, and buffers
 * are never shared between tunnels while they hold data.
 */
const READ_SIZE = 1024 * 1024;
const SHARED_READ_BUFFER = Buffer.allocUnsafe(READ_SIZE);
/** A read at least this large is passed on in the buffer it landed in; a smaller one is copied out. */
const STREAMING_READ = READ_SIZE / 2;
/** What arrives from upstream before the client is attached is held, up to this much, then reading pauses. */
const EARLY_LIMIT = 256 * 1024;

/** Where an upstream socket's bytes go: held until the client is attached, then written with backpressure. */
class Downstream {
  target: Duplex | undefined;
  held: { piece: Buffer; buffer?: Buffer }[] = [];
  heldBytes = 0;
  bytes = 0;
  ended = false;
  /** The buffer the next read lands in: the shared one, or one of this tunnel's own while it streams. */
  private reading: Buffer = SHARED_READ_BUFFER;
  /** This tunnel's own buffers while it streams (none otherwise), used in turn. */
  private own: Buffer[] = [];
  /** Own buffers the client's socket still holds: not to be read into until written. */
  private readonly inFlight = new Set<Buffer>();
  /** Reading paused until this buffer is written. */
  private waitingFor: Buffer | undefined;

  constructor(private readonly socket: Socket) {}

  /** The `onread` buffer: node asks for it after each read, for the next one. */
  readonly nextBuffer = (): Buffer => this.reading;

  /** The `onread` callback: false pauses reading until the target drains or the next buffer is free. */
  readonly onRead = (length: number, buffer: Buffer): boolean => {
    this.bytes += length;
    let piece: Buffer;
    let owned: Buffer | undefined;
    if (length >= STREAMING_READ) {
      if (buffer === SHARED_READ_BUFFER) {
        piece = Buffer.from(buffer.subarray(0, length));
        if (this.own.length === 0) this.own = [Buffer.allocUnsafeSlow(READ_SIZE), Buffer.allocUnsafeSlow(READ_SIZE)];
        this.reading = this.own[0]!;
      } else {
        piece = buffer.subarray(0, length);
        owned = buffer;
        this.inFlight.add(buffer);
        this.reading = this.own[0] === buffer ? this.own[1]! : this.own[0]!;
      }
    } else {
      piece = Buffer.from(buffer.subarray(0, length));
      // A small read means the tunnel is not streaming: its own buffers go once written, and reads share again.
      this.reading = SHARED_READ_BUFFER;
      this.own = [];
    }
    if (!this.target) {
      this.held.push(owned ? { piece, buffer: owned } : { piece });
      this.heldBytes += length;
      return this.heldBytes < EARLY_LIMIT && this.mayReadInto(this.reading);
    }
    this.send(piece, owned);
    // Keep reading while the client has less than one read's worth queued; past that, wait for 'drain'.
    return this.target.writableLength < READ_SIZE && this.mayReadInto(this.reading);
  };

  attach(target: Duplex): void {
    this.target = target;
    target.on('drain', () => {
      if (!this.waitingFor) this.socket.resume();
    });
    for (const { piece, buffer } of this.held) this.send(piece, buffer);
    this.held = [];
    if (this.ended) target.end();
    else if (!this.waitingFor) this.socket.resume();
  }

  /** Whether the next read may land in `buffer` now; if not, reading waits until it is written. */
  private mayReadInto(buffer: Buffer): boolean {
    if (!this.inFlight.has(buffer)) return true;
    this.waitingFor = buffer;
    return false;
  }

  /** Writes a piece; a buffer of this tunnel's own is read into again only once the socket is done with it. */
  private send(piece: Buffer, owned: Buffer | undefined): void {
    if (!owned) {
      this.target!.write(piece);
      return;
    }
    this.target!.write(piece, () => {
      this.inFlight.delete(owned);
      if (this.waitingFor !== owned) return;
      this.waitingFor = undefined;
      if (this.target!.writableLength < READ_SIZE) this.socket.resume();
    });
  }
}

const downstreams = new WeakMap<Socket, Downstream>();

/** Connects to the checked addresses in order; never to anything else, and never by name. */
export async function dial(addresses: CheckedAddress[], port: number): Promise<Socket | Refusal> {
  let lastError = 'no address';
  for (const address of addresses) {
    const result = await dialOne(address, port);
    if (typeof result !== 'string') return result;
    lastError = result;
  }
  return new Refusal(502, 'upstream-unreachable', `could not connect to port ${port} (${lastError})`);
}

async function dialOne(address: CheckedAddress, port: number): Promise<Socket | string> {
  let downstream: Downstream | undefined;
  const socket = connect({
    host: address.address,
    port,
    family: address.family,
    noDelay: true,
    allowHalfOpen: true,
    onread: { buffer: () => downstream?.nextBuffer() ?? SHARED_READ_BUFFER, callback: (length, buffer) => downstream?.onRead(length, buffer as Buffer) ?? false },
  });
  downstream = new Downstream(socket);
  downstreams.set(socket, downstream);
  socket.once('end', () => {
    if (!downstream) return;
    downstream.ended = true;
    downstream.target?.end();
  });
  const outcome = await whenConnected(socket, 'connect', CONNECT_TIMEOUT_MS);
  if (outcome === 'timed out') return outcome;
  return outcome instanceof Error ? `${address.address}: ${outcome.code ?? outcome.message}` : outcome;
}

/**
 * Waits for a socket being dialled to be ready (`connect`, or `secureConnect` for TLS) within `timeoutMs`:
 * the socket, or why not. One that fails is destroyed; one that succeeds is destroyed on any later error.
 */
export function whenConnected<S extends Socket>(socket: S, ready: 'connect' | 'secureConnect', timeoutMs: number): Promise<S | NodeJS.ErrnoException | 'timed out'> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      socket.destroy();
      resolve('timed out');
    }, timeoutMs);
    socket.once(ready, () => {
      clearTimeout(timer);
      socket.removeAllListeners('error');
      socket.on('error', () => socket.destroy());
      resolve(socket);
    });
    socket.once('error', (error: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      socket.destroy();
      resolve(error);
    });
  });
}

export interface SpliceLimits {
  idleTimeoutMs: number;
  totalTimeoutMs: number;
}

export interface SpliceResult {
  bytesUp: number;
  bytesDown: number;
  /** Why the tunnel ended, when it was not a normal close. */
  ended: 'closed' | 'idle-timeout' | 'total-timeout' | 'error' | 'refused';
  /** Set when the gate refused the client's first bytes. */
  refusal?: Refusal;
  /**
   * Set when the gate found an HTTP request: the client's bytes so far, none of them sent. The client's
   * socket is paused and left to the caller; the upstream connection is closed.
   */
  http?: Buffer;
}

/**
 * Looks at the client's first bytes before any of them go upstream: 'pass', 'more' (wait for more bytes),
 * 'http' (the splice ends and hands the client over; see SpliceResult.http) or a refusal. The server's side
 * flows from the start (protocols where the server speaks first).
 */
export type FirstBytesGate = (data: Buffer) => 'pass' | 'more' | 'http' | Refusal;

const GATE_MAX_BYTES = 20 * 1024;

/**
 * Joins client and upstream until both are done. `head` is anything the client sent ahead of the splice.
 * With `holdDownstream`, the server's bytes wait too until the gate passes (for tunnels that must begin
 * with the client's TLS handshake).
 */
export function splice(client: Duplex, upstream: Socket, limits: SpliceLimits, head?: Buffer, gate?: FirstBytesGate, holdDownstream = false): Promise<SpliceResult> {
  return new Promise((resolve) => {
    let ended: SpliceResult['ended'] = 'closed';
    let refusal: Refusal | undefined;
    let closed = 0;
    const finish = (): void => {
      closed += 1;
      if (closed < 2) return;
      clearTimeout(total);
      resolve({ bytesUp: upstream.bytesWritten, bytesDown: downstreams.get(upstream)?.bytes ?? upstream.bytesRead, ended, ...(refusal ? { refusal } : {}) });
    };
    const abort = (why: SpliceResult['ended']) => (): void => {
      if (ended === 'closed') ended = why;
      client.destroy();
      upstream.destroy();
    };
    const total = setTimeout(abort('total-timeout'), limits.totalTimeoutMs);
    // Node resets a socket's timeout on reads and writes alike, so one timer per side covers both directions.
    upstream.setTimeout(limits.idleTimeoutMs, abort('idle-timeout'));
    const clientError = abort('error');
    client.on('error', clientError);
    upstream.on('error', abort('error'));
    // A side that closes lets the other finish writing what it already has (end, not destroy). One already
    // ended or destroyed is left alone: ending it again builds an error, stack trace and all, for nothing.
    const clientClosed = (): void => {
      if (!upstream.destroyed && !upstream.writableEnded) upstream.end();
      finish();
    };
    const upstreamClosed = (): void => {
      if (!client.destroyed && !client.writableEnded) client.end();
      finish();
    };
    client.on('close', clientClosed);
    upstream.on('close', upstreamClosed);
    const downstream = downstreams.get(upstream);
    const attach = (): void => {
      if (downstream) downstream.attach(client);
      else upstream.pipe(client);
    };
    if (!gate || !holdDownstream) attach();
    if (!gate) {
      if (head && head.length > 0) upstream.write(head);
      client.pipe(upstream);
      return;
    }
    let pending = head ?? Buffer.alloc(0);
    const judge = (): boolean => {
      let verdict = gate(pending);
      if (verdict === 'more') {
        if (pending.length <= GATE_MAX_BYTES) return false;
        // A gate that still wants more past the limit is never passed by default (fail closed).
        verdict = new Refusal(400, 'bad-request', `the tunnel's first ${GATE_MAX_BYTES} bytes did not complete what the proxy must check`);
      }
      client.off('data', onData);
      client.off('end', onEnd);
      if (verdict === 'http') {
        client.pause();
        client.off('error', clientError);
        client.off('close', clientClosed);
        upstream.off('close', upstreamClosed);
        clearTimeout(total);
        upstream.destroy();
        resolve({ bytesUp: 0, bytesDown: 0, ended: 'closed', http: pending });
        return true;
      }
      if (verdict instanceof Refusal) {
        refusal = verdict;
        abort('refused')();
        return true;
      }
      if (holdDownstream) attach();
      if (pending.length > 0) upstream.write(pending);
      client.pipe(upstream);
      return true;
    };
    const onData = (chunk: Buffer): void => {
      pending = pending.length === 0 ? chunk : Buffer.concat([pending, chunk]);
      judge();
    };
    // The client half-closed before its first bytes could be judged: with nothing sent, the upstream just
    // sees the end; a fragment is never passed on unjudged.
    const onEnd = (): void => {
      client.off('data', onData);
      if (pending.length === 0 && !holdDownstream) {
        upstream.end();
        return;
      }
      if (pending.length > 0) refusal = new Refusal(400, 'bad-request', 'the client ended the tunnel before the proxy could check its first bytes');
      abort(pending.length > 0 ? 'refused' : 'closed')();
    };
    if (pending.length === 0 || !judge()) {
      if (client.readableEnded) return onEnd();
      client.on('data', onData);
      client.once('end', onEnd);
      client.resume();
    }
  });
}
