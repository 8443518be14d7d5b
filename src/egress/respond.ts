/**
 * Turning refusals into bytes: an HTTP response with `X-Gatehouse-Reason` and one sentence, on a response
 * object or on a raw socket (CONNECT, parser errors). Listeners call these; steps only return refusals.
 */
import { STATUS_CODES, type ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import { clientOf } from './authenticate.js';
import { nextCorrelationId } from './record.js';
import { REASON_HEADER, Refusal } from './refusal.js';
import type { Runtime } from './runtime.js';

/** Writes a refusal as an HTTP response: status, `X-Gatehouse-Reason`, and one sentence. */
export function writeRefusal(response: ServerResponse, refusal: Refusal): void {
  if (response.headersSent) {
    response.destroy();
    return;
  }
  const body = `Gatehouse refused this request: ${refusal.message}\n`;
  const headers: Record<string, string | number> = {
    'content-type': 'text/plain; charset=utf-8',
    'content-length': Buffer.byteLength(body),
    [REASON_HEADER]: refusal.reason,
  };
  if (refusal.status === 407) headers['proxy-authenticate'] = 'Basic realm="gatehouse"';
  if (refusal.status >= 500 || refusal.reason === 'smuggling' || refusal.status === 407) headers.connection = 'close';
  response.writeHead(refusal.status, headers);
  response.end(body);
}

/** Writes a refusal on a raw socket (CONNECT, parser errors), then closes it. */
export function writeRawRefusal(socket: Duplex, refusal: Refusal): void {
  if (!socket.writable) {
    socket.destroy();
    return;
  }
  const body = `Gatehouse refused this connection: ${refusal.message}\n`;
  const lines = [
    `HTTP/1.1 ${refusal.status} ${STATUS_CODES[refusal.status] ?? 'Refused'}`,
    'Content-Type: text/plain; charset=utf-8',
    `Content-Length: ${Buffer.byteLength(body)}`,
    `X-Gatehouse-Reason: ${refusal.reason}`,
    ...(refusal.status === 407 ? ['Proxy-Authenticate: Basic realm="gatehouse"'] : []),
    'Connection: close',
  ];
  socket.end(lines.join('\r\n') + '\r\n\r\n' + body);
}

/** Maps a parser error (from the `clientError` event) to a clear refusal. */
export function parserRefusal(error: NodeJS.ErrnoException): Refusal {
  switch (error.code) {
    case 'HPE_HEADER_OVERFLOW':
      return new Refusal(431, 'headers-too-large', 'the request headers are larger than this proxy accepts');
    case 'HPE_INVALID_TRANSFER_ENCODING':
    case 'HPE_UNEXPECTED_CONTENT_LENGTH':
    case 'HPE_INVALID_CONTENT_LENGTH':
      return new Refusal(400, 'smuggling', `the request's framing is ambiguous (${error.message.replace(/^Parse Error: /, '')})`);
    case 'ERR_HTTP_REQUEST_TIMEOUT':
      return new Refusal(408, 'header-timeout', 'the request headers did not arrive in time');
    default:
      return new Refusal(400, 'bad-request', `the request is malformed (${(error.message ?? '').replace(/^Parse Error: /, '')})`);
  }
}


/** Records and answers a refusal for a connection whose request could not be read. */
export function refuseConnection(runtime: Runtime, socket: Duplex, refusal: Refusal): void {
  recordRefusal(runtime, socket, refusal);
  writeRawRefusal(socket, refusal);
}

/** The audit record of a refusal that happened before any flow knew its destination. */
export function recordRefusal(runtime: Runtime, socket: Duplex, refusal: Refusal): void {
  const client = clientOf(runtime.clients, socket);
  runtime.recorder.record(runtime.policy.current, {
    action: 'request',
    resource: '-',
    principal: client.principal,
    session: client.session,
    correlationId: nextCorrelationId(),
    listener: client.listener,
    startedAt: performance.now(),
    refusal,
    details: {},
  });
}

