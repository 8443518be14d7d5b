/**
 * The forward step for HTTP requests the proxy can see: send the prepared request upstream (a read body in
 * one piece, or the part already read followed by the rest streamed), stream the response back without
 * hop-by-hop headers, and count bytes. Callers turn a failure into a refusal.
 *
 * With a `mask` (a session holding placeholders), real secret values a server reflects back (an echo
 * endpoint, an error page quoting a header, a paste read back later) go back to the agent as their
 * placeholders: header values always, and a body held whole up to `maskLimit` bytes. A larger or compressed
 * body cannot be masked and streams as it is; the result says so (`unmasked`) for the record.
 */
import type { ClientRequest, IncomingMessage, ServerResponse } from 'node:http';
import { Transform } from 'node:stream';
import type { OutgoingRequest } from './content.js';
import { forwardableHeaders, hasBody, headerValues } from './http-message.js';

export interface ForwardResult {
  status: number;
  bytesUp: number;
  bytesDown: number;
  /** Reflected real values put back as placeholders (header values and body). */
  masked?: number;
  /** Why the response body could not be masked. */
  unmasked?: string;
}

/** What a forwarded exchange adds to its audit record. */
export function forwardedDetails(result: ForwardResult): Record<string, unknown> {
  return {
    status: result.status,
    bytesUp: result.bytesUp,
    bytesDown: result.bytesDown,
    ...(result.masked ? { masked: result.masked } : {}),
    ...(result.unmasked ? { unmasked: result.unmasked } : {}),
  };
}

/** Puts a session's reflected real values back as placeholders; `count` is how many kinds were found. */
export type ResponseMask = (bytes: Buffer) => { bytes: Buffer; count: number };

export interface ForwardOptions {
  idleTimeoutMs: number;
  mask?: ResponseMask;
  maskLimit?: number;
}

export function forward(upstream: ClientRequest, request: IncomingMessage, response: ServerResponse, outgoing: OutgoingRequest, options: ForwardOptions): Promise<ForwardResult | NodeJS.ErrnoException> {
  const { idleTimeoutMs, mask } = options;
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
      let headers = forwardableHeaders(upstreamResponse.rawHeaders, headerValues(upstreamResponse.rawHeaders, 'connection'));
      const status = upstreamResponse.statusCode ?? 502;
      let masked = 0;
      let unmasked: string | undefined;
      let waiting = false;
      const done = (): void => {
        if (waiting) return;
        waiting = true;
        response.on('close', () => {
          if (!upstreamResponse.complete) upstream.destroy();
          resolve({ status, bytesUp, bytesDown, ...(masked > 0 ? { masked } : {}), ...(unmasked ? { unmasked } : {}) });
        });
      };
      upstreamResponse.on('data', (chunk: Buffer) => {
        bytesDown += chunk.length;
      });
      if (!mask) {
        response.writeHead(status, upstreamResponse.statusMessage, headers);
        upstreamResponse.pipe(response);
        done();
        return;
      }
      headers = headers.map((item, index) => {
        if (index % 2 === 0) return item;
        const result = mask(Buffer.from(item, 'latin1'));
        masked += result.count;
        return result.count > 0 ? result.bytes.toString('latin1') : item;
      });
      const encoding = (upstreamResponse.headers['content-encoding'] ?? 'identity').toLowerCase();
      const declared = Number(upstreamResponse.headers['content-length'] ?? 0);
      const limit = options.maskLimit ?? 0;
      const streamAsIs = (why: string, held: Buffer[] = []): void => {
        response.writeHead(status, upstreamResponse.statusMessage, headers);
        for (const piece of held) response.write(piece);
        upstreamResponse.pipe(response);
        unmasked = why;
        done();
      };
      if (encoding !== 'identity') return streamAsIs(`the response is ${encoding}-encoded`);
      if (upstreamResponse.headers['content-length'] === undefined) {
        // A stream (chunked, event stream): masked piece by piece as it flows, so streaming still streams; a
        // value split across two pieces is the leak scanner's to catch.
        response.writeHead(status, upstreamResponse.statusMessage, headers);
        const pieces = new Transform({
          transform(chunk: Buffer, _encoding, callback) {
            const result = mask(chunk);
            masked += result.count;
            callback(null, result.count > 0 ? result.bytes : chunk);
          },
        });
        upstreamResponse.pipe(pieces).pipe(response);
        response.once('close', () => pieces.destroy());
        done();
        return;
      }
      if (declared > limit) return streamAsIs(`the response body is over ${limit} bytes`);
      const held: Buffer[] = [];
      let size = 0;
      const onData = (chunk: Buffer): void => {
        held.push(chunk);
        size += chunk.length;
        if (size <= limit) return;
        upstreamResponse.off('data', onData);
        upstreamResponse.off('end', onEnd);
        streamAsIs(`the response body is over ${limit} bytes`, held);
      };
      const onEnd = (): void => {
        const body = Buffer.concat(held, size);
        const result = mask(body);
        masked += result.count;
        // The body changed length: say so, in place of whatever framing the server used.
        if (result.count > 0) headers = setLength(headers, result.bytes.length);
        response.writeHead(status, upstreamResponse.statusMessage, headers);
        response.end(result.count > 0 ? result.bytes : body);
        done();
      };
      done();
      upstreamResponse.on('data', onData);
      upstreamResponse.once('end', onEnd);
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

function setLength(headers: string[], length: number): string[] {
  const out: string[] = [];
  for (let i = 0; i + 1 < headers.length; i += 2) {
    const name = (headers[i] as string).toLowerCase();
    if (name !== 'content-length' && name !== 'transfer-encoding') out.push(headers[i] as string, headers[i + 1] as string);
  }
  return [...out, 'Content-Length', String(length)];
}
