/**
 * The forward step for HTTP requests the proxy can see: send the prepared request upstream (a read body in
 * one piece, or the part already read followed by the rest streamed), stream the response back without
 * hop-by-hop headers, and count bytes. Callers turn a failure into a refusal.
 *
 * With a response masker (the caller holds placeholders, or a credential header was injected), no real
 * value a server sends back (an echo endpoint, an error page quoting a header, a paste read back later)
 * reaches the agent: the reason phrase, header names and values are masked, and so is the body, as a stream
 * (any size, memory bounded by the longest value), decoded first when the server used gzip, deflate or br
 * although it was asked for none. A body the proxy cannot decode is refused before anything is sent.
 */
import type { ClientRequest, IncomingMessage, ServerResponse } from 'node:http';
import { pipeline, Transform } from 'node:stream';
import { createBrotliDecompress, createGunzip, createInflate } from 'node:zlib';
import type { Masker } from '../secrets/masker.js';
import type { OutgoingRequest } from './content.js';
import { forwardableHeaders, hasBody, headerValues } from './http-message.js';
import { Refusal } from './refusal.js';
import { printable } from './target.js';

export interface ForwardResult {
  status: number;
  bytesUp: number;
  bytesDown: number;
  /** How many secrets the server reflected and the response had masked. */
  masked?: number;
  /** Why a masked response was cut short after its head went out (a body that did not decode). */
  cut?: string;
}

/** What a forwarded exchange adds to its audit record. */
export function forwardedDetails(result: ForwardResult): Record<string, unknown> {
  return {
    status: result.status,
    bytesUp: result.bytesUp,
    bytesDown: result.bytesDown,
    ...(result.masked ? { masked: result.masked } : {}),
    ...(result.cut ? { cut: result.cut } : {}),
  };
}

export interface ForwardOptions {
  idleTimeoutMs: number;
}

/** Resolves with the exchange, a refusal (nothing was sent to the client yet), or the upstream's error. */
export function forward(upstream: ClientRequest, request: IncomingMessage, response: ServerResponse, outgoing: OutgoingRequest, options: ForwardOptions): Promise<ForwardResult | Refusal | NodeJS.ErrnoException> {
  const { idleTimeoutMs } = options;
  const masker = outgoing.responseMasker;
  return new Promise((resolve) => {
    let bytesUp = 0;
    let bytesDown = 0;
    upstream.setTimeout(idleTimeoutMs, () => upstream.destroy(Object.assign(new Error('idle timeout'), { code: 'ETIMEDOUT' })));
    upstream.on('error', (error: NodeJS.ErrnoException) => {
      if (response.headersSent) {
        response.destroy();
        resolve({ status: response.statusCode, bytesUp, bytesDown });
      } else {
        resolve(error);
      }
    });
    upstream.on('response', (upstreamResponse) => {
      // Read from the raw list: `upstreamResponse.headers` would build the whole map for this one header.
      const headers = forwardableHeaders(upstreamResponse.rawHeaders, headerValues(upstreamResponse.rawHeaders, 'connection'));
      const status = upstreamResponse.statusCode ?? 502;
      let cut: string | undefined;
      const done = (): void => {
        response.on('close', () => {
          if (!upstreamResponse.complete) upstream.destroy();
          const masked = masker ? new Set([...masker.found].map((pair) => pair.secret)).size : 0;
          resolve({ status, bytesUp, bytesDown, ...(masked > 0 ? { masked } : {}), ...(cut ? { cut } : {}) });
        });
      };
      upstreamResponse.on('data', (chunk: Buffer) => {
        bytesDown += chunk.length;
      });
      if (!masker) {
        response.writeHead(status, upstreamResponse.statusMessage, headers);
        upstreamResponse.pipe(response);
        done();
        return;
      }
      relayMasked({ upstream, upstreamResponse, method: request.method, response, masker, status, headers }, {
        cut: (why) => (cut ??= why),
        fail: resolve,
      });
      done();
    });
    // The client's body is invited ("100 Continue") only now that the request passed every check.
    if (/^100-continue$/i.test(request.headers.expect ?? '')) response.writeContinue();
    if (outgoing.body) {
      bytesUp = outgoing.body.length;
      upstream.end(outgoing.body);
      return;
    }
    if (!hasBody(request)) {
      // Nothing will follow the headers (no body framing): end now instead of piping an empty stream.
      upstream.end();
      request.resume();
      return;
    }
    for (const chunk of outgoing.bodyPrefix) {
      bytesUp += chunk.length;
      upstream.write(chunk);
    }
    request.on('data', (chunk: Buffer) => {
      bytesUp += chunk.length;
    });
    request.pipe(upstream);
    request.resume();
  });
}

interface MaskedExchange {
  upstream: ClientRequest;
  upstreamResponse: IncomingMessage;
  method: string | undefined;
  response: ServerResponse;
  masker: Masker;
  status: number;
  /** Forwardable headers, not yet masked. */
  headers: string[];
}

/**
 * Relays a response with every real value in it masked: the head, then the body decoded (when the server
 * coded it although asked not to) and masked as a stream. `fail` gets a refusal or error when nothing has
 * been sent yet; `cut` says why a response already under way was cut short.
 */
function relayMasked(exchange: MaskedExchange, outcome: { cut(why: string): void; fail(failure: Refusal | NodeJS.ErrnoException): void }): void {
  const { upstream, upstreamResponse, response, masker, status } = exchange;
  const head = maskedHead(masker, upstreamResponse.statusMessage ?? '', exchange.headers);
  if (!hasResponseBody(exchange.method, status)) {
    response.writeHead(status, head.reason, head.headers);
    upstreamResponse.pipe(response);
    return;
  }
  const codings = codingsToUndo(upstreamResponse.rawHeaders, status, masker);
  if (codings instanceof Refusal) {
    upstreamResponse.resume();
    upstream.destroy();
    outcome.fail(codings);
    return;
  }
  let undecodable: string | undefined;
  const decoders = codings.map((coding) => {
    const decoder = coding === 'br' ? createBrotliDecompress() : coding === 'deflate' ? createInflate() : createGunzip();
    decoder.once('error', (error: Error) => (undecodable ??= `the server's ${coding}-coded response body did not decode (${error.message})`));
    return decoder;
  });
  // A decoded or resized body gets new framing: no Content-Length, so it goes chunked (or, to an
  // HTTP/1.0 client, until the connection closes).
  const reframed = codings.length > 0 || !masker.keepsLength;
  const framed = reframed ? withoutHeaders(head.headers, codings.length > 0 ? ['content-length', 'content-encoding'] : ['content-length']) : head.headers;
  // A coded body's head waits for its first decoded bytes, so a body that does not decode at all is
  // refused with a reason instead of cut short. A plain body's head goes at once (an event stream may
  // be quiet for a while).
  const sendHead = (): void => {
    if (!response.headersSent) response.writeHead(status, head.reason, framed);
  };
  if (codings.length === 0) sendHead();
  const body = new Transform({
    transform(chunk: Buffer, _encoding, callback) {
      const out = masker.push(chunk);
      if (out.length > 0) sendHead();
      callback(null, out.length > 0 ? out : undefined);
    },
    flush(callback) {
      const rest = masker.end();
      sendHead();
      callback(null, rest.length > 0 ? rest : undefined);
    },
  });
  pipeline([upstreamResponse, ...decoders, body], (error) => {
    if (!error) return;
    if (response.headersSent) {
      // Cut short rather than finished with anything unmasked.
      if (undecodable) outcome.cut(undecodable);
      response.destroy();
      return;
    }
    upstream.destroy();
    outcome.fail(undecodable ? new Refusal(502, 'response-unmaskable', undecodable) : error);
  });
  body.pipe(response);
}

/** Header names are tokens (RFC 9110 §5.1); a masked one that is no longer a token is left out. */
const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;

/** The status line's reason phrase and the headers, each real value in them masked. */
function maskedHead(masker: Masker, reason: string, headers: string[]): { reason: string; headers: string[] } {
  const text = (value: string): string => {
    const bytes = Buffer.from(value, 'latin1');
    const out = masker.mask(bytes);
    return out === bytes ? value : out.toString('latin1');
  };
  const out: string[] = [];
  for (let i = 0; i + 1 < headers.length; i += 2) {
    const name = text(headers[i] as string);
    if (TOKEN.test(name)) out.push(name, text(headers[i + 1] as string));
  }
  return { reason: text(reason), headers: out };
}

/** Whether a response to this method with this status has a body at all (RFC 9110 §6.4.1). */
function hasResponseBody(method: string | undefined, status: number): boolean {
  return method !== 'HEAD' && status >= 200 && status !== 204 && status !== 304;
}

const DECODABLE = new Set(['gzip', 'x-gzip', 'deflate', 'br']);

/**
 * The codings a response body went through, in the order to undo them: its content codings, then any
 * transfer coding besides chunked (node's parser undoes chunked only, and Transfer-Encoding is not
 * forwarded, so a gzip transfer coding would reach the client unannounced). A refusal for a body the proxy
 * cannot decode, since it could not be masked either.
 */
function codingsToUndo(rawHeaders: string[], status: number, masker: Masker): string[] | Refusal {
  const listed = [...headerValues(rawHeaders, 'content-encoding'), ...headerValues(rawHeaders, 'transfer-encoding')]
    .flatMap((value) => value.split(','))
    .map((coding) => coding.trim().toLowerCase())
    .filter((coding) => coding !== '' && coding !== 'identity' && coding !== 'chunked');
  const unknown = listed.find((coding) => !DECODABLE.has(coding));
  if (unknown !== undefined) {
    // The name is the server's text: masked before it is quoted.
    const name = printable(masker.mask(Buffer.from(unknown, 'latin1')).toString('latin1'));
    return new Refusal(502, 'response-unmaskable', `the server answered in the "${name}" coding, which the proxy cannot decode to mask the real values it may carry`);
  }
  if (listed.length > 0 && status === 206) {
    return new Refusal(502, 'response-unmaskable', `the server answered with a range of a ${listed.join(', ')}-coded body, which the proxy cannot decode to mask the real values it may carry`);
  }
  return listed.map((coding) => (coding === 'x-gzip' ? 'gzip' : coding)).reverse();
}

function withoutHeaders(headers: string[], lowerNames: string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i + 1 < headers.length; i += 2) {
    if (!lowerNames.includes((headers[i] as string).toLowerCase())) out.push(headers[i] as string, headers[i + 1] as string);
  }
  return out;
}
