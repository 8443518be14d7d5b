/**
 * Tunnels whose requests the proxy reads (TLS inspection, plain HTTP): the contract between the tunnel flows
 * and the HTTP engine (implemented in intercept.ts).
 */
import type { Duplex } from 'node:stream';
import type { CheckedAddress } from '../policy/addresses.js';
import type { Caller, Client } from './authenticate.js';
import type { Refusal } from './refusal.js';
import type { Target } from './target.js';

/** An allowed, resolved and checked CONNECT that the policy wants to see inside. */
export interface Tunnel {
  target: Target;
  addresses: CheckedAddress[];
  caller: Caller;
  correlationId: string;
  listener: Client['listener'];
}

export interface InterceptResult {
  /** The address the requests went to (undefined when none was sent). */
  address: string | undefined;
  sni: string | undefined;
  requests: number;
  bytesUp: number;
  bytesDown: number;
  /** Set when the tunnel as a whole was refused (for example an SNI that differs from the CONNECT target). */
  refusal: Refusal | undefined;
}

export interface RequestInspector {
  /** Whether it has a CA, and so can inspect TLS (`intercept`); plain HTTP it always serves. */
  decrypts: boolean;
  /** Terminates the client's TLS, handles each request inside, and resolves when the tunnel closes. */
  intercept(socket: Duplex, head: Buffer, tunnel: Tunnel): Promise<InterceptResult>;
  /**
   * Handles each plain HTTP request on a tunnel whose first bytes (`head`, none sent yet) began one, and
   * resolves when the tunnel closes. `tunnel.addresses` starts with the address to send them to.
   */
  serveHttp(socket: Duplex, head: Buffer, tunnel: Tunnel): Promise<InterceptResult>;
}
