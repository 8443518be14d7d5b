/**
 * The forward step for HTTP requests the proxy can see: send the prepared request upstream (a read body in
 * one piece, or the part already read followed by the rest streamed), stream the response back without
 * hop-by-hop headers, and count bytes. Callers turn a failure into a refusal.
 */
import type { ClientRequest, IncomingMessage, ServerResponse } from 'node:http';
import type { OutgoingRequest } from './content.js';
import { forwardableHeaders } from './http-message.js';

export interface ForwardResult {
  status: number;
  bytesUp: number;
  bytesDown: number;
}

export function forward(upstream: ClientRequest, request: IncomingMessage, response: ServerResponse, outgoing: OutgoingRequest, idleTimeoutMs: number): Promise<ForwardResult | NodeJS.ErrnoException> {
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
      const headers = forwardableHeaders(upstreamResponse.rawHeaders, upstreamResponse.headers.connection);
      response.writeHead(upstreamResponse.statusCode ?? 502, upstreamResponse.statusMessage, headers);
      upstreamResponse.on('data', (chunk: Buffer) => {
        bytesDown += chunk.length;
      });
      upstreamResponse.pipe(response);
      response.on('close', () => {
        if (!upstreamResponse.complete) upstream.destroy();
        resolve({ status: upstreamResponse.statusCode ?? 0, bytesUp, bytesDown });
      });
    });
    // The client's body is invited ("100 Continue") only now that the request passed every check.
    if (/^100-continue$/i.test(request.headers.expect ?? '')) response.writeContinue();
    if (outgoing.body) {
      bytesUp = outgoing.body.length;
      upstream.end(outgoing.body);
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
