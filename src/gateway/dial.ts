/**
 * The fetch a remote upstream's transport uses when private addresses are not allowed for it: every
 * connection resolves the host once, checks every address it got, and dials only a checked one. So a name
 * that resolves to a public address when the upstream starts cannot later be rebound to 127.0.0.1, a
 * private network or a cloud metadata address. `plainFetch` is the same fetch without the checks, for
 * upstreams allowed private addresses: both are plain node:http(s) requests on the keep-alive global agent,
 * much cheaper per call than the global fetch.
 */
import { lookup as dnsLookup, type LookupAddress } from 'node:dns';
import { setMaxListeners } from 'node:events';
import { request as httpRequest, type IncomingMessage } from 'node:http';
import { request as httpsRequest } from 'node:https';
import type { LookupFunction } from 'node:net';
import { Readable } from 'node:stream';
import ipaddr from 'ipaddr.js';
import { classifyAddress } from '../policy/addresses.js';
import { readBody } from './body.js';

/** Why an address may not be dialled, or undefined when it is a public unicast address. */
export function addressRefusal(address: string): string | undefined {
  const checked = classifyAddress(address);
  if (!checked) return `${address} is not an IP address`;
  return checked.blockedRange === undefined ? undefined : `${address} is a ${checked.blockedRange} address`;
}

/** A `lookup` for sockets that fails unless every address the name resolves to is public. */
export const checkedLookup: LookupFunction = (hostname, options, callback) => {
  dnsLookup(hostname, { ...options, all: true }, (error, addresses) => {
    if (error) return callback(error, '', 0);
    const list = addresses as LookupAddress[];
    for (const entry of list) {
      const refusal = addressRefusal(entry.address);
      if (refusal) {
        return callback(Object.assign(new Error(`${hostname} resolves to ${refusal}, which an upstream may not reach`), { code: 'EGATEHOUSE_PRIVATE' }), '', 0);
      }
    }
    const first = list[0];
    if (!first) return callback(Object.assign(new Error(`${hostname} did not resolve`), { code: 'ENOTFOUND' }), '', 0);
    if ((options as { all?: boolean }).all) return (callback as unknown as (e: null, a: LookupAddress[]) => void)(null, list);
    callback(null, first.address, first.family);
  });
};

/** A fetch over node:http(s) whose connections go through `checkedLookup`; IP literals are checked directly. */
export const checkedFetch = createCheckedFetch(checkedLookup, addressRefusal);

/** The same fetch for an upstream that may reach private addresses: the system's lookup, no checks. */
export const plainFetch = createCheckedFetch(dnsLookup as LookupFunction, () => undefined);

/** The same fetch with another lookup and literal check (tests give one that stands in for public DNS). */
export function createCheckedFetch(lookup: LookupFunction, literalRefusal: (address: string) => string | undefined) {
  const dial = createDial(lookup, literalRefusal);
  return (input: string | URL, init?: RequestInit) => fetchWith(dial, input, init ?? {});
}

export interface DialRequest {
  method: string;
  headers: Record<string, string>;
  body?: string | Buffer;
  signal?: AbortSignal;
}

/** One HTTP request over a checked (or plain) connection, answered with node's own response stream. */
export type Dial = (url: URL, request: DialRequest) => Promise<IncomingMessage>;

/** Requests through `checkedLookup`, and the plain kind for upstreams allowed private addresses. */
export const checkedDial = createDial(checkedLookup, addressRefusal);
export const plainDial = createDial(dnsLookup as LookupFunction, () => undefined);

export function createDial(lookup: LookupFunction, literalRefusal: (address: string) => string | undefined): Dial {
  return (url, request) => {
    const literal = url.hostname.replace(/^\[|\]$/g, '');
    if (ipaddr.isValid(literal)) {
      const refusal = literalRefusal(literal);
      if (refusal) return Promise.reject(new Error(`${refusal}, which an upstream may not reach`));
    }
    const send = url.protocol === 'https:' ? httpsRequest : httpRequest;
    // The transport passes its own long-lived signal with every request; each request's listener on it goes
    // when the request closes, so the count is the number in flight, which may well pass the warning's 10.
    if (request.signal) setMaxListeners(0, request.signal);
    return new Promise<IncomingMessage>((resolve, reject) => {
      const req = send(url, { method: request.method, headers: request.headers, lookup, ...(request.signal ? { signal: request.signal } : {}) }, resolve);
      req.on('error', reject);
      req.end(request.body);
    });
  };
}

async function fetchWith(dial: Dial, input: string | URL, init: RequestInit): Promise<Response> {
  const headers: Record<string, string> = {};
  (init.headers instanceof Headers ? init.headers : new Headers(init.headers)).forEach((value, name) => {
    headers[name] = value;
  });
  const body = init.body === undefined || init.body === null ? undefined : typeof init.body === 'string' ? init.body : Buffer.from(await new Response(init.body).arrayBuffer());
  const method = init.method ?? 'GET';
  const res = await dial(new URL(String(input)), { method, headers, ...(body !== undefined ? { body } : {}), ...(init.signal ? { signal: init.signal } : {}) });
  const responseHeaders = new Headers();
  for (const [name, value] of Object.entries(res.headers)) {
    if (Array.isArray(value)) for (const item of value) responseHeaders.append(name, item);
    else if (value !== undefined) responseHeaders.set(name, value);
  }
  const status = res.statusCode ?? 502;
  const meta = { status, statusText: res.statusMessage ?? '', headers: responseHeaders };
  if (status === 204 || status === 304 || method === 'HEAD') {
    res.resume();
    return new Response(null, meta);
  }
  // A JSON answer is read whole by the transport anyway: collected here it skips the web stream adapter,
  // a good part of what a relayed call cost. An event stream stays a stream.
  if (/^application\/json\b/i.test(res.headers['content-type'] ?? '')) return new Response((await readBody(res, Infinity)) as Buffer, meta);
  return new Response(Readable.toWeb(res) as ReadableStream<Uint8Array>, meta);
}
