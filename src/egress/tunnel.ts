/**
 * The dial and forward steps for byte tunnels (CONNECT, SOCKS5): connect to exactly a checked address, then
 * splice the two sockets with backpressure (`pipe` pauses the faster side; nothing buffers without bound),
 * idle and total timeouts, and byte counts for the record.
 */
import { connect, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import type { CheckedAddress } from './addresses.js';
import { Refusal } from './refusal.js';

const CONNECT_TIMEOUT_MS = 10_000;

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

function dialOne(address: CheckedAddress, port: number): Promise<Socket | string> {
  return new Promise((resolve) => {
    const socket = connect({ host: address.address, port, family: address.family, noDelay: true, allowHalfOpen: true });
    const timer = setTimeout(() => {
      socket.destroy();
      resolve('timed out');
    }, CONNECT_TIMEOUT_MS);
    socket.once('connect', () => {
      clearTimeout(timer);
      socket.removeAllListeners('error');
      resolve(socket);
    });
    socket.once('error', (error: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      resolve(`${address.address}: ${error.code ?? error.message}`);
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
  ended: 'closed' | 'idle-timeout' | 'total-timeout' | 'error';
}

/** Joins client and upstream until both are done. `head` is anything the client sent ahead of the splice. */
export function splice(client: Duplex, upstream: Socket, limits: SpliceLimits, head?: Buffer): Promise<SpliceResult> {
  return new Promise((resolve) => {
    let ended: SpliceResult['ended'] = 'closed';
    let closed = 0;
    const finish = (): void => {
      closed += 1;
      if (closed < 2) return;
      clearTimeout(total);
      resolve({ bytesUp: upstream.bytesWritten, bytesDown: upstream.bytesRead, ended });
    };
    const abort = (why: SpliceResult['ended']) => (): void => {
      if (ended === 'closed') ended = why;
      client.destroy();
      upstream.destroy();
    };
    const total = setTimeout(abort('total-timeout'), limits.totalTimeoutMs);
    // Node resets a socket's timeout on reads and writes alike, so one timer per side covers both directions.
    upstream.setTimeout(limits.idleTimeoutMs, abort('idle-timeout'));
    client.on('error', abort('error'));
    upstream.on('error', abort('error'));
    // A side that closes lets the other finish writing what it already has (end, not destroy).
    client.on('close', () => {
      upstream.end();
      finish();
    });
    upstream.on('close', () => {
      client.end();
      finish();
    });
    if (head && head.length > 0) upstream.write(head);
    client.pipe(upstream);
    upstream.pipe(client);
  });
}
