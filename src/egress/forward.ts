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
import type { IncomingMessage, ServerResponse } from 'node:http';
import { pipeline, Readable, Transform } from 'node:stream';
import { createBrotliDecompress, createGunzip, createInflate } from 'node:zlib';
import type { Masker } from '../secrets/masker.js';
import type { OutgoingRequest } from './content.js';
import { forwardableHeaders, hasBody, headerValues } from './http-message.js';
import { Refusal } from './refusal.js';
import { printable } from './target.js';
import type { Dispatcher } from './upstream.js';

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

/** Where and how the request goes: the caller's dispatcher, the checked address as origin (see upstream.ts). */
export interface Upstream {
  dispatcher: Dispatcher;
  origin: string;
  /**
   * The checked target's name, for a named host. Over HTTPS it is the name the server's certificate must carry
   * (and the SNI). Over plain HTTP undici would otherwise derive the same name from the Host header on every
   * request (checkHostHeader made them agree), at the cost of an IP-address regex over it.
   */
  servername?: string;
  method: string;
  /** Flat [name, value, ...] list: hop-by-hop and framing headers already settled (see upstreamHeaders). */
  headers: string[];
}

export interface ForwardOptions {
  /** How long the upstream may be silent: while the body goes up, before its answer, between body chunks. */
  idleTimeoutMs: number;
}

/** undici's names for the idle timeout running out, before the answer's head and between body pieces. */
const UNDICI_TIMEOUTS = new Set(['UND_ERR_HEADERS_TIMEOUT', 'UND_ERR_BODY_TIMEOUT']);

/** An error from the upstream, named like a socket error for the refusal that reports it. */
function upstreamError(message: string, code: string): NodeJS.ErrnoException {
  return Object.assign(new Error(message), { code });
}

/**
 * Resolves with the exchange, a refusal (nothing was sent to the client yet), or the upstream's error.
 * It resolves once the client's response closes, or with the error when the upstream failed first.
 */
export function forward(upstream: Upstream, request: IncomingMessage, response: ServerResponse, outgoing: OutgoingRequest, options: ForwardOptions): Promise<ForwardResult | Refusal | NodeJS.ErrnoException> {
  const { idleTimeoutMs } = options;
  const masker = outgoing.responseMasker;
  return new Promise((resolve) => {
    let bytesUp = 0;
    let bytesDown = 0;
    let status = 0;
    let complete = false;
    let cut: string | undefined;
    let settled = false;
    let gone = false;
    let abort: ((error?: Error) => void) | undefined;
    /** Where the response body goes once its head arrived: the client, or the masking pipeline. */
    let sink: { write(chunk: Buffer): boolean; end(): void; fail(): void } | undefined;

    const settle = (outcome: ForwardResult | Refusal | NodeJS.ErrnoException): void => {
      if (settled) return;
      settled = true;
      clearTimeout(uploadIdle);
      resolve(outcome);
    };
    response.once('close', () => {
      gone = true;
      if (!complete) abort?.(upstreamError('the client went away', 'ECONNRESET'));
      const masked = masker ? new Set([...masker.found].map((pair) => pair.secret)).size : 0;
      settle({ status, bytesUp, bytesDown, ...(masked > 0 ? { masked } : {}), ...(cut ? { cut } : {}) });
    });

    // The body: read whole by the content step, nothing at all, or streamed as it arrives. undici's own
    // timeout counts from the request's start, so a streamed body has an idle timer of its own, restarted by
    // every piece sent and running on until the answer's head.
    let body: Buffer | Readable | null = null;
    let uploadIdle: NodeJS.Timeout | undefined;
    if (outgoing.body) {
      body = outgoing.body;
      bytesUp = outgoing.body.length;
    } else if (hasBody(request)) {
      uploadIdle = setTimeout(() => abort?.(upstreamError('the upstream connection was idle too long', 'ETIMEDOUT')), idleTimeoutMs);
      body = streamedBody(outgoing.bodyPrefix, request, (length) => {
        bytesUp += length;
        uploadIdle?.refresh();
      });
    } else {
      // Nothing will follow the headers (no body framing).
      request.resume();
    }

    const handler: Dispatcher.DispatchHandler = {
      onConnect(abortRequest) {
        abort = abortRequest;
        // The client left while the request waited for a connection.
        if (gone) abortRequest(upstreamError('the client went away', 'ECONNRESET'));
      },
      onHeaders(statusCode, rawHeaders, resume, statusText) {
        clearTimeout(uploadIdle);
        status = statusCode;
        const raw = rawHeaders.map((bytes) => bytes.toString('latin1'));
        const headers = forwardableHeaders(raw, headerValues(raw, 'connection'));
        if (!masker) {
          response.writeHead(statusCode, statusText, headers);
          sink = {
            write: (chunk) => {
              if (response.write(chunk)) return true;
              response.once('drain', resume);
              return false;
            },
            end: () => response.end(),
            fail: () => response.destroy(),
          };
          return true;
        }
        const source = new Readable({ read: () => resume() });
        sink = {
          write: (chunk) => source.push(chunk),
          end: () => source.push(null),
          // Without an error: the pipeline, if it runs yet, reports a premature close; the upstream's error
          // itself is settled by onError.
          fail: () => source.destroy(),
        };
        relayMasked({ abort: () => abort?.(), source, statusText, rawHeaders: raw, method: request.method, response, masker, status: statusCode, headers }, {
          cut: (why) => (cut ??= why),
          fail: settle,
        });
        return true;
      },
      onData(chunk) {
        bytesDown += chunk.length;
        return sink?.write(chunk) ?? true;
      },
      onComplete() {
        complete = true;
        sink?.end();
      },
      onError(error) {
        clearTimeout(uploadIdle);
        sink?.fail();
        // Cut short once the head went out; before, the caller answers with a refusal.
        if (response.headersSent) response.destroy();
        else settle(UNDICI_TIMEOUTS.has((error as NodeJS.ErrnoException).code ?? '') ? upstreamError('the upstream server was idle too long', 'ETIMEDOUT') : (error as NodeJS.ErrnoException));
      },
    };
    // The client's body is invited ("100 Continue") only now that the request passed every check.
    if (/^100-continue$/i.test(request.headers.expect ?? '')) response.writeContinue();
    upstream.dispatcher.dispatch(
      {
        origin: upstream.origin,
        path: outgoing.pathAndQuery,
        method: upstream.method as Dispatcher.HttpMethod,
        headers: upstream.headers,
        body,
        headersTimeout: uploadIdle ? 0 : idleTimeoutMs,
        bodyTimeout: idleTimeoutMs,
        ...(upstream.servername !== undefined ? { servername: upstream.servername } : {}),
      } as Dispatcher.DispatchOptions,
      handler,
    );
  });
}

/** The body bytes already read, then the rest of the client's body as it arrives, each piece counted. */
function streamedBody(prefix: Buffer[], request: IncomingMessage, sent: (length: number) => void): Readable {
  async function* pieces(): AsyncGenerator<Buffer> {
    for (const chunk of prefix) {
      sent(chunk.length);
      yield chunk;
    }
    // Not destroyed when the upload stops early (the upstream failed): the client still gets the refusal.
    for await (const chunk of request.iterator({ destroyOnReturn: false }) as AsyncIterable<Buffer>) {
      sent(chunk.length);
      yield chunk;
    }
  }
  return Readable.from(pieces(), { objectMode: false });
}

/**
 * The headers to send upstream: the prepared ones (hop-by-hop headers and "Expect" already gone, see
 * content.ts), plus the Host the checked target names when the client left it out (HTTP/1.0). A body
 * streamed as it arrives is framed by undici: chunked, unless the client's Content-Length stands.
 */
export function upstreamHeaders(headers: string[], host: string): string[] {
  for (let i = 0; i < headers.length; i += 2) if ((headers[i] as string).toLowerCase() === 'host') return headers;
  return [...headers, 'Host', host];
}

interface MaskedExchange {
  abort(): void;
  source: Readable;
  statusText: string;
  rawHeaders: string[];
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
  const { source, response, masker, status } = exchange;
  const head = maskedHead(masker, exchange.statusText, exchange.headers);
  if (!hasResponseBody(exchange.method, status)) {
    response.writeHead(status, head.reason, head.headers);
    source.pipe(response);
    return;
  }
  const codings = codingsToUndo(exchange.rawHeaders, status, masker);
  if (codings instanceof Refusal) {
    outcome.fail(codings);
    exchange.abort();
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
  pipeline([source, ...decoders, body], (error) => {
    if (!error) return;
    if (response.headersSent) {
      // Cut short rather than finished with anything unmasked.
      if (undecodable) outcome.cut(undecodable);
      response.destroy();
      return;
    }
    outcome.fail(undecodable ? new Refusal(502, 'response-unmaskable', undecodable) : error);
    exchange.abort();
  });
  body.pipe(response);
}

/** Header names are tokens (RFC 9110 §5.1); a masked one that is no longer a token is left out. */
const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;

/** The status line's reason phrase and the headers, each real value in them masked. */
export function maskedHead(masker: Masker, reason: string, headers: string[]): { reason: string; headers: string[] } {
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
