/**
 * How the gateway reaches a remote upstream over HTTP: an undici keep-alive pool per upstream connection,
 * whose every new connection resolves the host once, checks every address it got, and dials the checked
 * address itself (undici is handed the socket; it looks nothing up). So a name that resolves to a public
 * address when the upstream starts cannot later be rebound to 127.0.0.1, a private network or a cloud
 * metadata address. An upstream allowed private addresses gets the same pool with the system's lookup and
 * no checks. Over TLS the certificate must name the upstream's host, which is also the SNI.
 *
 * undici rather than node:http's client because a relayed call's request and answer through node:http's
 * agent, ClientRequest and IncomingMessage cost the gateway more CPU than undici's dispatch. Redirects are
 * not followed (an answer is an answer), and nothing of the gateway's own caller goes upstream: a request
 * carries only the headers its sender gives it.
 */
import { lookup as dnsLookup, type LookupAddress } from 'node:dns';
import { setMaxListeners } from 'node:events';
import { createRequire } from 'node:module';
import type { LookupFunction } from 'node:net';
import { Readable } from 'node:stream';
import ipaddr from 'ipaddr.js';
import type { Agent, buildConnector, Dispatcher } from 'undici';
import { classifyAddress } from '../policy/addresses.js';

/** Why an address may not be dialled, or undefined when it is a public unicast address. */
export function addressRefusal(address: string): string | undefined {
  const checked = classifyAddress(address);
  if (!checked) return `${address} is not an IP address`;
  return checked.blockedRange === undefined ? undefined : `${address} is a ${checked.blockedRange} address`;
}

/** A lookup that fails unless every address the name resolves to is public; it answers the checked form of the first. */
export const checkedLookup: LookupFunction = (hostname, options, callback) => {
  dnsLookup(hostname, { ...options, all: true }, (error, addresses) => {
    if (error) return callback(error, '', 0);
    let first: { address: string; family: number } | undefined;
    for (const entry of addresses as LookupAddress[]) {
      const refusal = addressRefusal(entry.address);
      if (refusal) {
        return callback(Object.assign(new Error(`${hostname} resolves to ${refusal}, which an upstream may not reach`), { code: 'EGATEHOUSE_PRIVATE' }), '', 0);
      }
      first ??= classifyAddress(entry.address)!;
    }
    if (!first) return callback(Object.assign(new Error(`${hostname} did not resolve`), { code: 'ENOTFOUND' }), '', 0);
    callback(null, first.address, first.family);
  });
};

/** undici takes about 85 ms to load: it loads with the first remote upstream, not with the gateway. */
const load = createRequire(import.meta.url);
let undici: { Agent: typeof Agent; buildConnector: typeof buildConnector } | undefined;

export interface DialRequest {
  method: string;
  headers: Record<string, string>;
  body?: string | Buffer;
  signal?: AbortSignal;
}

interface DialHead {
  status: number;
  statusText: string;
  /** Lower-case names; a repeated header's values in a list. */
  headers: Record<string, string | string[]>;
}

/**
 * An answer: read whole (`body`) when it is JSON or an HTTP error, which is all there is to it; otherwise as
 * it comes (`stream`), an event stream for instance.
 */
export type DialResponse = DialHead & ({ body: Buffer; stream?: undefined } | { stream: Readable; body?: undefined });

export interface DialLimits {
  /** How long a new connection may take to open (TCP, and TLS when it is HTTPS). */
  connectMs: number;
  /**
   * How long an exchange may wait for its answer's head, and an answer be silent between two pieces: the
   * longest a call may run. A GET (the SDK's stream for messages outside any request) may be silent for good.
   */
  exchangeMs: number;
  /** The largest answer read whole; one over it is cut off and the request fails. */
  maxBytes: number;
  /** What an upstream's certificate must chain to instead of the system's roots (tests stand in a CA of their own). */
  ca?: string;
}

/** The HTTP client of one remote upstream connection. */
export class Dialer {
  private readonly agent: Agent;

  constructor(
    lookup: LookupFunction,
    literalRefusal: (address: string) => string | undefined,
    private readonly limits: DialLimits,
  ) {
    undici ??= load('undici') as NonNullable<typeof undici>;
    const connect = undici.buildConnector({ timeout: limits.connectMs, ...(limits.ca !== undefined ? { ca: limits.ca } : {}) });
    this.agent = new undici.Agent({
      connect: (options, callback) => {
        const host = options.hostname;
        const dial = (address: string): void => {
          // The certificate is checked against the name, not the address dialled.
          connect({ ...options, hostname: address, ...(ipaddr.isValid(host) ? {} : { servername: options.servername || host }) }, callback);
        };
        if (ipaddr.isValid(host)) {
          const refusal = literalRefusal(host);
          return refusal ? callback(new Error(`${refusal}, which an upstream may not reach`), null) : dial(host);
        }
        lookup(host, {}, (error, address) => (error ? callback(error, null) : dial(address as string)));
      },
    });
  }

  /** Sends one request; resolves with the answer's head and its body (see DialResponse). */
  dial(url: URL, request: DialRequest): Promise<DialResponse> {
    const { maxBytes, exchangeMs } = this.limits;
    const signal = request.signal;
    return new Promise((resolve, reject) => {
      let abort: ((reason?: Error) => void) | undefined;
      let head: DialHead | undefined;
      let chunks: Buffer[] | undefined;
      let size = 0;
      let stream: Readable | undefined;
      let finished = false;
      const onAbort = (): void => abort?.(signal!.reason instanceof Error ? signal!.reason : new Error(String(signal!.reason ?? 'aborted')));
      const done = (): void => {
        finished = true;
        signal?.removeEventListener('abort', onAbort);
      };
      if (signal) {
        // One listener per request in flight on a signal that may serve them all (the SDK's).
        setMaxListeners(0, signal);
        signal.addEventListener('abort', onAbort, { once: true });
      }
      const handler: Dispatcher.DispatchHandler = {
        onConnect(abortRequest) {
          abort = abortRequest;
          if (signal?.aborted) onAbort();
        },
        onHeaders(status, raw, resume, statusText) {
          if (status < 200) return true; // informational: the answer is still to come
          const headers = headersOf(raw);
          head = { status, statusText, headers };
          const type = headers['content-type'];
          if (status >= 300 || (typeof type === 'string' && /^application\/json\b/i.test(type))) {
            if (Number(headers['content-length']) > maxBytes) {
              abort?.(tooLarge(maxBytes));
              return false;
            }
            chunks = [];
            return true;
          }
          stream = new Readable({
            read: () => resume(),
            // A reader that stops early (its limit, the transport closing) ends the exchange.
            destroy: (error, callback) => {
              if (!finished) abort?.(error ?? new Error('the answer was not read to its end'));
              callback(error);
            },
          });
          resolve({ ...head, stream });
          return true;
        },
        onData(chunk) {
          if (stream) return stream.push(chunk);
          size += chunk.length;
          if (size > maxBytes) {
            abort?.(tooLarge(maxBytes));
            return false;
          }
          chunks!.push(chunk);
          return true;
        },
        onComplete() {
          done();
          if (stream) stream.push(null);
          else resolve({ ...head!, body: chunks!.length === 1 ? chunks![0]! : Buffer.concat(chunks!) });
        },
        onError(error) {
          done();
          if (stream) stream.destroy(error);
          else reject(error);
        },
      };
      this.agent.dispatch(
        {
          origin: url.origin,
          path: `${url.pathname}${url.search}`,
          method: request.method as Dispatcher.HttpMethod,
          headers: request.headers,
          body: request.body ?? null,
          headersTimeout: exchangeMs,
          bodyTimeout: request.method === 'GET' ? 0 : exchangeMs,
        },
        handler,
      );
    });
  }

  /** A fetch over `dial`, for the SDK's own requests (initialize, notifications, the GET stream, the session's end). */
  readonly fetch = async (input: string | URL, init?: RequestInit): Promise<Response> => {
    const headers: Record<string, string> = {};
    new Headers(init?.headers).forEach((value, name) => (headers[name] = value));
    const body = init?.body === undefined || init.body === null ? undefined : typeof init.body === 'string' ? init.body : Buffer.from(await new Response(init.body).arrayBuffer());
    const method = init?.method ?? 'GET';
    const answer = await this.dial(new URL(String(input)), { method, headers, ...(body !== undefined ? { body } : {}), ...(init?.signal ? { signal: init.signal } : {}) });
    const responseHeaders = new Headers();
    for (const [name, value] of Object.entries(answer.headers)) {
      if (Array.isArray(value)) for (const item of value) responseHeaders.append(name, item);
      else responseHeaders.set(name, value);
    }
    const meta = { status: answer.status, statusText: answer.statusText, headers: responseHeaders };
    if (answer.status === 204 || answer.status === 304 || method === 'HEAD') {
      answer.stream?.destroy();
      return new Response(null, meta);
    }
    return new Response(answer.body ?? (Readable.toWeb(answer.stream) as ReadableStream<Uint8Array>), meta);
  };

  /** Ends every request in flight and every connection. */
  async close(): Promise<void> {
    await this.agent.destroy().catch(() => undefined);
  }
}

/** The dialer for a remote upstream: checked addresses only, unless it may reach private ones. */
export function upstreamDialer(allowPrivateAddress: boolean, limits: DialLimits): Dialer {
  return allowPrivateAddress ? new Dialer(dnsLookup as LookupFunction, () => undefined, limits) : new Dialer(checkedLookup, addressRefusal, limits);
}

function tooLarge(maxBytes: number): Error {
  return new Error(`the upstream's answer is over the limit of ${maxBytes} bytes`);
}

/** undici's raw header list ([name, value, ...] as bytes) as an object with lower-case names. */
function headersOf(raw: Buffer[]): Record<string, string | string[]> {
  const headers: Record<string, string | string[]> = Object.create(null) as Record<string, string | string[]>;
  for (let i = 0; i + 1 < raw.length; i += 2) {
    const name = raw[i]!.toString('latin1').toLowerCase();
    const value = raw[i + 1]!.toString('latin1');
    const before = headers[name];
    headers[name] = before === undefined ? value : Array.isArray(before) ? [...before, value] : [before, value];
  }
  return headers;
}
