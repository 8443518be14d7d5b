/**
 * The upstream HTTP client: one undici Agent per caller (see pools.ts), which keeps its connections alive
 * per origin. The origin is always the address the resolve-check step passed, never a name, so undici
 * dials exactly that address and looks nothing up. Over TLS, the name the certificate must carry (and the
 * SNI) is the checked target's, given per request.
 *
 * undici rather than node:http's client because the proxy's request rate is bounded by its own CPU per
 * request: forwarding through it cost about a third less CPU per kept-alive request, and about a tenth less
 * with a new client connection each time (measured with the bench's small-request load).
 */
import { createRequire } from 'node:module';
import type { SecureContext } from 'node:tls';
import type { Agent, Dispatcher } from 'undici';
import type { CheckedAddress } from '../policy/addresses.js';
import { PerCallerPools } from './pools.js';
import { Refusal } from './refusal.js';

/**
 * undici takes about 85 ms to load, so it loads with the first request forwarded, not with the proxy: a
 * `gatehouse run` whose program never speaks plain or inspected HTTP does not wait for it.
 */
const load = createRequire(import.meta.url);
let undiciAgent: typeof Agent | undefined;

/** Idle upstream connections are kept this long, unless the server's Keep-Alive header says less. */
const KEEP_ALIVE_MS = 30_000;

/**
 * Upstream dispatchers, one per caller. With `secureContext`, connections are TLS verified against it;
 * `highWaterMark` sizes the socket's buffers (inspected downloads use large ones; see intercept.ts).
 */
export function upstreamPools(tls?: { secureContext: SecureContext; highWaterMark: number }): PerCallerPools<Agent> {
  const options: Agent.Options = {
    keepAliveTimeout: KEEP_ALIVE_MS,
    keepAliveMaxTimeout: KEEP_ALIVE_MS,
    // undici hands these to tls.connect (its typings omit highWaterMark, which node's socket options have).
    ...(tls ? { connect: { secureContext: tls.secureContext, highWaterMark: tls.highWaterMark } as Agent.Options['connect'] } : {}),
  };
  return new PerCallerPools(() => {
    undiciAgent ??= (load('undici') as { Agent: typeof Agent }).Agent;
    return new undiciAgent(options);
  });
}

/** The origin undici connects to: the checked address itself. */
export function originOf(scheme: 'http' | 'https', address: CheckedAddress, port: number): string {
  return `${scheme}://${address.family === 6 ? `[${address.address}]` : address.address}:${port}`;
}

export type { Dispatcher };

/** Error codes of a server certificate that did not verify (node's and OpenSSL's names). */
const CERTIFICATE_ERROR = /CERT|SELF_SIGNED|UNABLE_TO|HOSTNAME|ALTNAME/;

/** The refusal for an upstream connection that failed: over TLS, a certificate that did not verify is its own reason. */
export function upstreamRefusal(error: NodeJS.ErrnoException, scheme: 'http' | 'https', host: string): Refusal {
  if (scheme === 'https' && typeof error.code === 'string' && CERTIFICATE_ERROR.test(error.code)) {
    return new Refusal(502, 'upstream-certificate', `the certificate of ${host} did not verify (${error.code})`);
  }
  return new Refusal(502, 'upstream-unreachable', `the upstream server failed (${error.code ?? error.message})`);
}
