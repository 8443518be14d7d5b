/**
 * The HTTP engine for tunnels whose requests the proxy reads: TLS inspection for CONNECTs the policy asks to
 * see inside, and tunnels (CONNECT or SOCKS5) whose first bytes were a plain HTTP request (see
 * first-bytes.ts). Inspected, the client's TLS ends here with a leaf certificate from the local CA. Either
 * way each request inside runs the request chain:
 *
 *   check SNI (once, TLS) → parse → Host must be the tunnel's target → limit → decide (method, path) → read
 *   body → placeholders → scan → swap → inject → forward to the checked address → record
 *
 * Over TLS, the upstream connection verifies the server's certificate for the CONNECT host against the
 * system's roots plus any configured upstream CAs; a failure is a 502, never a silent downgrade.
 *
 * A protocol upgrade takes the same chain for its request. On a plain tunnel (ws://) the two sides are then
 * joined as bytes. Inspected, only a WebSocket (wss://) is carried, message by message, each one the agent
 * sends read by the content steps and each one the server sends masked (see websocket-relay.ts); any other
 * upgrade over TLS is refused (501), since its bytes could not be read.
 */
import { createServer as createHttpServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { createSecureContext, rootCertificates, TLSSocket, type SecureContext, type TLSSocketOptions } from 'node:tls';
import type { CheckedAddress } from '../policy/addresses.js';
import type { CertificateAuthority } from './ca.js';
import { LiveMasker, prepareMessage, prepareRequest, type ContentTools, type OutgoingRequest } from './content.js';
import { decideNetwork } from './destination.js';
import { checkFraming, checkHostHeader, forwardableHeaders, hasBody, headerValues, parseOriginForm } from './http-message.js';
import type { PerCallerPools } from './pools.js';
import { HeaderDeadlines } from './deadline.js';
import { parserRefusal, refuseConnection, writeRawRefusal, writeRefusal } from './respond.js';
import type { InterceptResult, RequestInspector, Tunnel } from './inspect.js';
import { nextCorrelationId, type Facts } from './record.js';
import { Refusal } from './refusal.js';
import type { Runtime } from './runtime.js';
import { auditHealthy, limit } from './steps.js';
import { formatTarget, printable } from './target.js';
import { forward, forwardedDetails, maskedHead, upstreamHeaders, type Upstream } from './forward.js';
import { dialWebSocket, readResponseHead, relayMessages } from './websocket-relay.js';
import { originOf, upstreamPools, upstreamRefusal, type Dispatcher } from './upstream.js';
import type { PolicyEngine } from '../policy/engine.js';
import { isAllowed } from '../policy/types.js';

export interface InspectionOptions extends ContentTools {
  /** Without a CA, only plain HTTP tunnels are served; a tunnel the policy inspects is refused. */
  ca: CertificateAuthority | undefined;
  /** CA certificates (PEM) trusted for upstream servers in addition to the system's roots. */
  upstreamCa?: string[];
}

/**
 * How much each stream of an inspected tunnel buffers before it pushes back (client TLS, request and
 * response, upstream TLS). Node's 16 KB default is one TLS record: every record would pause and resume
 * the upstream socket, and a download spends its time waiting rather than decrypting. A megabyte per
 * stream (a few per tunnel, like a plain tunnel) measured about 15% less CPU per MB than 256 KB.
 */
const STREAM_BUFFER = 1024 * 1024;

/** Agent sockets told `101 Switching Protocols`: from then on they carry WebSocket frames, never an HTTP answer. */
const switched = new WeakSet<Duplex>();

interface TunnelState {
  tunnel: Tunnel;
  scheme: 'http' | 'https';
  requests: number;
  bytesUp: number;
  bytesDown: number;
  address: string | undefined;
}

export function createInspector(runtime: Runtime, options: InspectionOptions): RequestInspector {
  const states = new WeakMap<object, TunnelState>();
  // One context for every upstream connection: built per connection, it would parse every root certificate
  // again each time.
  const upstreamContext = createSecureContext({ ca: [...rootCertificates, ...(options.upstreamCa ?? [])] });
  const agents = upstreamPools({ secureContext: upstreamContext, highWaterMark: STREAM_BUFFER });
  const server = createHttpServer({
    highWaterMark: STREAM_BUFFER,
    maxHeaderSize: runtime.limits.maxHeaderBytes,
    requireHostHeader: false, // checkHostHeader refuses a missing Host with a reason
    headersTimeout: 0, // kept by HeaderDeadlines
    requestTimeout: 0,
    joinDuplicateHeaders: false,
  });
  // A client that half-closes after its request still gets the answer (node's http server otherwise aborts
  // the request and closes the socket when the client's side ends).
  (server as typeof server & { httpAllowHalfOpen: boolean }).httpAllowHalfOpen = true;
  /** A refusal before a request could be read (a parse error, slow headers): recorded as the tunnel's caller's. */
  const refuseUnread = (socket: Duplex, refusal: Refusal): void => {
    const state = states.get(socket);
    if (!state) return refuseConnection(runtime, socket, refusal);
    runtime.recorder.record(runtime.policy.current, { ...requestFacts(state), refusal });
    writeRawRefusal(socket, refusal);
  };
  const deadlines = new HeaderDeadlines(runtime.limits.headerTimeoutMs, (socket) => {
    refuseUnread(socket, new Refusal(408, 'header-timeout', 'the request headers did not arrive in time'));
    setTimeout(() => socket.destroy(), 1_000).unref();
  });
  server.on('request', (request: IncomingMessage, response: ServerResponse) => {
    const state = states.get(request.socket);
    if (!state) {
      request.socket.destroy();
      return;
    }
    deadlines.clear(request.socket);
    response.once('finish', () => deadlines.arm(request.socket));
    handleInspected(runtime, options, state.scheme === 'https' ? agents : runtime.upstreams, state, request, response).catch((error: unknown) => {
      writeRefusal(response, new Refusal(502, 'upstream-unreachable', `the proxy failed: ${error instanceof Error ? error.message : String(error)}`));
    });
  });
  server.on('checkContinue', (request, response) => server.emit('request', request, response));
  server.on('checkExpectation', (request, response) => {
    deadlines.clear(request.socket);
    request.resume();
    writeRefusal(response, new Refusal(417, 'bad-request', 'the only expectation this proxy meets is "100-continue"'));
  });
  server.on('clientError', (error: NodeJS.ErrnoException, socket) => {
    deadlines.clear(socket);
    if (error.code === 'ECONNRESET' || !socket.writable) socket.destroy();
    else refuseUnread(socket, parserRefusal(error));
  });
  const unsupported = (what: string) => (request: IncomingMessage, socket: Duplex): void => {
    deadlines.clear(socket);
    const refusal = new Refusal(501, 'unsupported', `${what} inside a tunnel whose requests the proxy reads is not supported`);
    const state = states.get(socket);
    if (state) {
      const facts = requestFacts(state, request);
      const upgrade = request.headers.upgrade;
      if (upgrade !== undefined) facts.details = { ...facts.details, upgrade: printable(String(upgrade)) };
      runtime.recorder.record(runtime.policy.current, { ...facts, refusal });
    }
    writeRawRefusal(socket, refusal);
  };
  server.on('connect', unsupported('CONNECT'));
  // After an upgrade only a WebSocket can be read (its frames), in the clear or over TLS. Any other protocol's
  // bytes would pass unjudged: h2c above all, whose HTTP/2 requests would go past the method and path rules,
  // the Host check and the scans (request smuggling through the proxy).
  const upgradeRefused = unsupported('a protocol upgrade other than WebSocket');
  server.on('upgrade', (request: IncomingMessage, socket: Duplex, head: Buffer) => {
    const state = states.get(socket);
    if (!state) return socket.destroy();
    if (!isWebSocketUpgrade(request)) return upgradeRefused(request, socket);
    deadlines.clear(socket);
    const tls = state.scheme === 'https' ? { secureContext: upstreamContext, highWaterMark: STREAM_BUFFER } : undefined;
    const upgraded = upgradeWebSocket(runtime, options, tls, state, request, socket, head);
    upgraded.catch((error: unknown) => {
      const refusal = new Refusal(502, 'upstream-unreachable', `the proxy failed: ${error instanceof Error ? error.message : String(error)}`);
      runtime.recorder.record(runtime.policy.current, { ...requestFacts(state, request), refusal });
      // Once the agent was told the protocol switched, an HTTP answer would reach it as protocol bytes.
      if (switched.has(socket)) socket.destroy();
      else writeRawRefusal(socket, refusal);
    });
  });

  return {
    decrypts: options.ca !== undefined,
    async serveHttp(socket: Duplex, head: Buffer, tunnel: Tunnel): Promise<InterceptResult> {
      const state: TunnelState = { tunnel, scheme: 'http', requests: 0, bytesUp: 0, bytesDown: 0, address: undefined };
      states.set(socket, state);
      const net = socket as Socket;
      const timer = setTimeout(() => socket.destroy(), runtime.limits.totalTimeoutMs);
      net.setTimeout(runtime.limits.idleTimeoutMs, () => socket.destroy());
      // The tunnel's bytes are what the client sent and received on it from its first request on.
      const readBefore = net.bytesRead - head.length;
      const writtenBefore = net.bytesWritten;
      const done = new Promise<InterceptResult>((resolve) => {
        socket.once('close', () => {
          clearTimeout(timer);
          resolve({ address: state.address, sni: undefined, requests: state.requests, bytesUp: net.bytesRead - readBefore, bytesDown: net.bytesWritten - writtenBefore, refusal: undefined });
        });
      });
      // As the listener hands a socket to its HTTP server (see proxy.ts): the bytes read so far first.
      socket.pause();
      if (head.length > 0) socket.unshift(head);
      deadlines.watch(socket);
      server.emit('connection', socket);
      socket.resume();
      return done;
    },
    async intercept(socket: Duplex, head: Buffer, tunnel: Tunnel): Promise<InterceptResult> {
      const result: InterceptResult = { address: undefined, sni: undefined, requests: 0, bytesUp: 0, bytesDown: 0, refusal: undefined };
      if (head.length > 0) socket.unshift(head);
      let context;
      try {
        if (!options.ca) throw new Error('this proxy has no CA for TLS inspection');
        context = await options.ca.secureContext(tunnel.target.host);
      } catch (error) {
        socket.destroy();
        result.refusal = new Refusal(502, 'unsupported', `could not issue a certificate for ${tunnel.target.host}: ${String(error)}`);
        return result;
      }
      const state: TunnelState = { tunnel, scheme: 'https', requests: 0, bytesUp: 0, bytesDown: 0, address: undefined };
      const tlsOptions: TLSSocketOptions & { highWaterMark: number } = {
        isServer: true,
        highWaterMark: STREAM_BUFFER,
        secureContext: context,
        ALPNProtocols: ['http/1.1'],
        SNICallback: (servername, callback) => {
          result.sni = servername;
          // No fronting: the name the client's TLS asks for must be the host it asked the proxy for.
          if (servername.toLowerCase().replace(/\.$/, '') !== tunnel.target.host) {
            result.refusal = new Refusal(403, 'sni-mismatch', `the TLS server name ${printable(servername)} differs from the CONNECT target ${tunnel.target.host}`);
            callback(new Error('SNI does not match the CONNECT target'), undefined);
            return;
          }
          callback(null, context);
        },
      };
      const tls = new TLSSocket(socket, tlsOptions);
      states.set(tls, state);
      runtime.clients.set(tls, { listener: tunnel.listener, principal: tunnel.caller.principal, ...(tunnel.caller.session !== undefined ? { session: tunnel.caller.session } : {}) });
      return new Promise((resolve) => {
        const timer = setTimeout(() => tls.destroy(), runtime.limits.totalTimeoutMs);
        tls.setTimeout(runtime.limits.idleTimeoutMs, () => tls.destroy());
        let secure = false;
        tls.on('error', (error: NodeJS.ErrnoException) => {
          // A handshake that fails for any reason but an SNI refusal is still a refused tunnel, with its cause.
          if (!secure) result.refusal ??= new Refusal(400, 'bad-request', `the client's TLS handshake failed (${error.code ?? error.message})`);
          tls.destroy();
        });
        tls.once('secure', () => {
          secure = true;
          deadlines.watch(tls);
          server.emit('connection', tls);
        });
        tls.once('close', () => {
          clearTimeout(timer);
          socket.destroy();
          Object.assign(result, { address: state.address, requests: state.requests, bytesUp: state.bytesUp, bytesDown: state.bytesDown });
          resolve(result);
        });
      });
    },
  };
}

/** The facts of a request on a tunnel, for its record, before any step (without one, a request that could not be read). */
function requestFacts(state: TunnelState, request?: IncomingMessage): Facts {
  const { tunnel, scheme } = state;
  return {
    action: 'request',
    resource: `${scheme}://${formatTarget(tunnel.target)}`,
    principal: tunnel.caller.principal,
    session: tunnel.caller.session,
    correlationId: nextCorrelationId(),
    listener: tunnel.listener,
    startedAt: performance.now(),
    details: { ...(request ? { method: request.method } : {}), scheme, inspected: true, tunnel: tunnel.correlationId },
  };
}

/**
 * The steps every request on a tunnel takes before anything is sent: parse, Host must be the tunnel's
 * target, limit, and the request-level decision now that method and path are visible.
 */
function checkRequest(runtime: Runtime, state: TunnelState, request: IncomingMessage, facts: Facts): { pathAndQuery: string } | Refusal {
  const { tunnel, scheme } = state;
  const { target, caller } = tunnel;
  const httpTarget = parseOriginForm(target, scheme, request.url ?? '');
  if (httpTarget instanceof Refusal) return httpTarget;
  facts.resource = `${scheme}://${formatTarget(target)}${httpTarget.path}`;
  facts.details = { ...facts.details, path: httpTarget.path };
  const badMessage = checkFraming(request) ?? checkHostHeader(request, target, scheme);
  if (badMessage) return badMessage;
  const notAdmitted = auditHealthy(runtime) ?? limit(runtime, caller, 'requests');
  if (notAdmitted) return notAdmitted;
  const destination = { target, scheme, method: request.method ?? 'GET', path: httpTarget.path, ...(httpTarget.otherPaths ? { otherPaths: httpTarget.otherPaths } : {}) };
  const decision = decideNetwork(runtime.policy.current, caller.principal, destination, facts.correlationId, tunnel.addresses.map((a) => a.address));
  facts.decision = decision;
  if (!isAllowed(decision)) {
    const rules = decision.rules.length > 0 ? ` (rule ${decision.rules.join(', ')})` : '';
    return new Refusal(403, 'policy-denied', `the network policy denies ${request.method} ${httpTarget.path} on ${target.host}${rules}: ${decision.reason}`, decision.rules);
  }
  return { pathAndQuery: httpTarget.pathAndQuery };
}

async function handleInspected(
  runtime: Runtime,
  options: InspectionOptions,
  agents: PerCallerPools<Dispatcher>,
  state: TunnelState,
  request: IncomingMessage,
  response: ServerResponse,
): Promise<void> {
  const { tunnel, scheme } = state;
  const { target, caller } = tunnel;
  const engine = runtime.policy.current;
  state.requests += 1;
  const facts = requestFacts(state, request);
  const refuse = (refusal: Refusal): void => {
    facts.refusal = refusal;
    runtime.recorder.record(engine, facts);
    request.resume();
    writeRefusal(response, refusal);
  };
  const checked = checkRequest(runtime, state, request, facts);
  if (checked instanceof Refusal) return refuse(checked);

  const prepared = await prepareRequest({
    engine,
    tools: options,
    caller,
    target,
    scheme,
    request,
    pathAndQuery: checked.pathAndQuery,
    limits: runtime.limits,
  }, facts.details);
  if (prepared instanceof Refusal) return refuse(prepared);
  const unrecorded = runtime.recorder.awaitDecisions ? await runtime.recorder.decided(engine, facts) : undefined;
  if (unrecorded) return refuse(unrecorded);

  const address = tunnel.addresses[0] as CheckedAddress;
  state.address = address.address;
  facts.details.address = address.address;
  const upstream: Upstream = {
    dispatcher: agents.for(caller),
    origin: originOf(scheme, address, target.port),
    // The certificate is verified against the CONNECT host (the SNI), not the address dialled.
    ...(target.ip ? {} : { servername: target.host }),
    method: request.method ?? 'GET',
    headers: upstreamHeaders(prepared.headers, formatTarget(target)),
  };
  const outcome = await forward(upstream, request, response, prepared, {
    idleTimeoutMs: runtime.limits.idleTimeoutMs,
  });
  const result = outcome instanceof Error ? upstreamRefusal(outcome, scheme, target.host) : outcome;
  if (result instanceof Refusal) return refuse(result);
  state.bytesUp += result.bytesUp;
  state.bytesDown += result.bytesDown;
  facts.details = { ...facts.details, ...forwardedDetails(result) };
  runtime.recorder.record(engine, facts);
}

interface StartedUpgrade {
  engine: PolicyEngine;
  facts: Facts;
  prepared: OutgoingRequest;
  /** Records the refusal and answers the client with it. */
  refuse(refusal: Refusal): void;
}

/**
 * What an upgrade's request goes through before anything is dialled, on a plain or an inspected tunnel:
 * checked and decided like any request, a body refused (node hands the socket over at the end of the head,
 * so a body would never be read, so never judged), the content steps, and in sync audit mode the decision
 * recorded first. Undefined when it was refused (and recorded).
 */
async function startUpgrade(
  runtime: Runtime,
  options: InspectionOptions,
  state: TunnelState,
  request: IncomingMessage,
  socket: Duplex,
  details: Record<string, unknown>,
): Promise<StartedUpgrade | undefined> {
  const engine = runtime.policy.current;
  const { tunnel, scheme } = state;
  state.requests += 1;
  const facts = requestFacts(state, request);
  facts.details = { ...facts.details, ...details };
  const refuse = (refusal: Refusal): void => {
    facts.refusal = refusal;
    runtime.recorder.record(engine, facts);
    writeRawRefusal(socket, refusal);
  };
  const checked = checkRequest(runtime, state, request, facts);
  if (checked instanceof Refusal) return void refuse(checked);
  if (hasBody(request)) return void refuse(new Refusal(400, 'bad-request', 'a protocol upgrade request may not carry a body'));
  const prepared = await prepareRequest(
    { engine, tools: options, caller: tunnel.caller, target: tunnel.target, scheme, request, pathAndQuery: checked.pathAndQuery, limits: runtime.limits },
    facts.details,
  );
  if (prepared instanceof Refusal) return void refuse(prepared);
  const unrecorded = runtime.recorder.awaitDecisions ? await runtime.recorder.decided(engine, facts) : undefined;
  if (unrecorded) return void refuse(unrecorded);
  return { engine, facts, prepared, refuse };
}

/** `Upgrade: websocket` and nothing else (RFC 6455 §4.1; the token is case-insensitive). */
function isWebSocketUpgrade(request: IncomingMessage): boolean {
  return /^\s*websocket\s*$/i.test(String(request.headers.upgrade ?? ''));
}

/** The most of a server's answer to a WebSocket upgrade the proxy reads before it gives up on it. */
const UPGRADE_ANSWER_MAX_BYTES = 64 * 1024;

/**
 * A WebSocket upgrade: wss:// inside an inspected tunnel, or ws:// inside a plain one. Its request takes the
 * steps of any other (checked, decided on method and path, scanned; over TLS, placeholders swapped and
 * credentials injected) and goes to the tunnel's checked address (over verified TLS for wss://) without
 * `Sec-WebSocket-Extensions`: with no extension negotiated (permessage-deflate above all), every frame stays
 * readable. A 101 goes back to the agent masked like any response head; anything else is refused (502
 * `upgrade-refused`) without its body. Then every message the agent sends is read by the same content steps
 * as a request body (over ws://, a placeholder is refused as in any plain request), and every one the server
 * sends is masked (see websocket-relay.ts). One record for the whole connection: counts, findings, and why
 * the proxy closed it, if it did.
 */
async function upgradeWebSocket(
  runtime: Runtime,
  options: InspectionOptions,
  tls: { secureContext: SecureContext; highWaterMark: number } | undefined,
  state: TunnelState,
  request: IncomingMessage,
  socket: Duplex,
  head: Buffer,
): Promise<void> {
  const offered = headerValues(request.rawHeaders, 'sec-websocket-extensions');
  const started = await startUpgrade(runtime, options, state, request, socket, {
    upgrade: 'websocket',
    ...(offered.length > 0 ? { extensions: `not forwarded (${printable(offered.join(', '))}), so no frame is compressed past reading` } : {}),
  });
  if (!started) return;
  const { engine, facts, prepared, refuse } = started;
  const { tunnel } = state;
  const { target, caller } = tunnel;

  // Over TLS the certificate is verified against the CONNECT host (the SNI), not the address dialled; an IP target's against its address.
  const upstream = await dialWebSocket(tunnel.addresses, target.port, target.host, tls && { ...tls, servername: target.ip ? undefined : target.host });
  if (upstream instanceof Refusal) return refuse(upstream);
  state.address = upstream.remoteAddress;
  facts.details.address = state.address;
  // The content steps drop hop-by-hop headers (and the proxy's own); an upgrade is sent with its two back.
  const headers = [...upstreamHeaders(withoutHeader(prepared.headers, 'sec-websocket-extensions'), formatTarget(target)), 'Connection', 'Upgrade', 'Upgrade', 'websocket'];
  const requestHead = Buffer.from(headText(`${request.method} ${prepared.pathAndQuery} HTTP/1.1`, headers), 'latin1');
  upstream.write(requestHead);

  const answer = await readResponseHead(upstream, target.host, { maxBytes: UPGRADE_ANSWER_MAX_BYTES, timeoutMs: runtime.limits.idleTimeoutMs });
  const refuseAnswer = (refusal: Refusal): void => {
    upstream.destroy();
    refuse(refusal);
  };
  if (answer instanceof Refusal) return refuseAnswer(answer);
  facts.details.status = answer.status;
  if (answer.status !== 101) {
    return refuseAnswer(new Refusal(502, 'upgrade-refused', `${target.host} answered the WebSocket upgrade with ${answer.status}, not 101 Switching Protocols`));
  }
  if (!headerValues(answer.headers, 'upgrade').some((value) => /^\s*websocket\s*$/i.test(value))) {
    return refuseAnswer(new Refusal(502, 'upgrade-refused', `${target.host} switched protocols, but not to WebSocket`));
  }
  // An extension the proxy did not offer would make frames it cannot read (a compressed one, above all).
  if (headerValues(answer.headers, 'sec-websocket-extensions').length > 0) {
    return refuseAnswer(new Refusal(502, 'upgrade-refused', `${target.host} accepted the WebSocket upgrade with an extension that was not offered`));
  }
  if (socket.destroyed) return refuseAnswer(new Refusal(502, 'upstream-unreachable', 'the client went away before the WebSocket upgrade was answered'));

  // The server's 101 goes back as any response head does: hop-by-hop headers dropped, real values masked.
  const masker = prepared.responseMasker;
  const maskers = new LiveMasker(options, caller, prepared);
  const answerHeaders = forwardableHeaders(answer.headers, headerValues(answer.headers, 'connection'));
  const shown = masker ? maskedHead(masker, answer.reason, answerHeaders) : { reason: answer.reason, headers: answerHeaders };
  socket.write(headText(`HTTP/1.1 101 ${shown.reason}`, [...shown.headers, 'Connection', 'Upgrade', 'Upgrade', 'websocket']), 'latin1');
  switched.add(socket);

  const limit = Math.min(runtime.limits.maxInspectedBytes, engine.dlp.maxBytes);
  const messageFacts = new WebSocketFacts();
  const result = await relayMessages(socket, upstream, {
    clientHead: head,
    upstreamHead: answer.rest,
    idleTimeoutMs: runtime.limits.idleTimeoutMs,
    totalTimeoutMs: runtime.limits.totalTimeoutMs,
    inspects: () => options.scanner !== undefined || (options.placeholders?.size ?? 0) > 0,
    maxMessageBytes: limit,
    onTooLarge: engine.dlp.onTooLarge,
    inspect: (payload, what) => {
      const found = messageFacts.next(what);
      const outcome = prepareMessage({ engine, tools: options, caller, target, scheme: state.scheme }, payload, found);
      // A message with findings that goes on (log, redact) is recorded now, not only when the WebSocket
      // closes: one may stay open for hours. One refused closes it, and the close's record says why.
      if (!(outcome instanceof Refusal) && found.findings !== undefined) {
        runtime.recorder.record(engine, {
          ...facts,
          action: 'message',
          correlationId: nextCorrelationId(),
          startedAt: performance.now(),
          decisionRecorded: false,
          details: { method: request.method, scheme: state.scheme, inspected: true, tunnel: facts.details.tunnel, upgrade: 'websocket', websocket: facts.correlationId, ...messageFacts.position(what), ...found },
        });
      }
      return messageFacts.add(outcome, what);
    },
    masker: () => maskers.now(),
    host: target.host,
  });
  const bytesUp = requestHead.length + result.bytesUp;
  const bytesDown = answer.size + result.bytesDown;
  state.bytesUp += bytesUp;
  state.bytesDown += bytesDown;
  const masked = maskers.maskedSecrets;
  facts.details = {
    ...facts.details,
    address: state.address,
    bytesUp,
    bytesDown,
    ended: result.ended,
    messagesUp: result.messagesUp,
    messagesDown: result.messagesDown,
    ...messageFacts.details(facts.details),
    ...(result.uninspected > 0 ? { uninspected: `${result.uninspected} message(s) over ${limit} bytes passed unscanned (policy.dlp.onTooLarge is allow)` } : {}),
    ...(masked > 0 ? { masked } : {}),
    ...(result.closeCode !== undefined ? { closeCode: result.closeCode } : {}),
  };
  if (result.refusal) {
    const how = result.closeCode !== undefined ? `the proxy closed the WebSocket (${result.closeCode})` : 'the proxy cut the WebSocket';
    facts.refusal = new Refusal(result.refusal.status, result.refusal.reason, `${how}: ${result.refusal.message}`, result.refusal.rules);
  }
  runtime.recorder.record(engine, facts);
}

/** A request or response head: the first line, then each header. */
function headText(firstLine: string, headers: string[]): string {
  let text = `${firstLine}\r\n`;
  for (let i = 0; i + 1 < headers.length; i += 2) text += `${headers[i]}: ${headers[i + 1]}\r\n`;
  return text + '\r\n';
}

function withoutHeader(headers: string[], lowerName: string): string[] {
  const out: string[] = [];
  for (let i = 0; i + 1 < headers.length; i += 2) if ((headers[i] as string).toLowerCase() !== lowerName) out.push(headers[i] as string, headers[i + 1] as string);
  return out;
}

/** The most findings one WebSocket's record lists; past that, they are counted. */
const MAX_RECORDED_FINDINGS = 20;

/**
 * What the content steps found in a WebSocket's messages, for its one record: findings (bounded, each with
 * the number of the message it was in), the secrets whose placeholders were swapped, how many messages were
 * redacted, and an attempted exfiltration. Never a secret.
 */
class WebSocketFacts {
  private messages = 0;
  private controls = 0;
  private current: Record<string, unknown> = {};
  private readonly findings: Record<string, unknown>[] = [];
  private moreFindings = 0;
  private readonly placeholders = new Set<string>();
  private redacted = 0;
  private exfiltration: unknown;

  /** A fresh facts object for the next message (or control frame) the content steps read. */
  next(what: 'message' | 'control'): Record<string, unknown> {
    if (what === 'message') this.messages += 1;
    else this.controls += 1;
    this.current = {};
    return this.current;
  }

  /** Which message (or control frame) the current one is, counted from 1. */
  position(what: 'message' | 'control'): { message: number } | { control: number } {
    return what === 'message' ? { message: this.messages } : { control: this.controls };
  }

  /** Keeps what the steps found in the current message, and passes their outcome on. */
  add<T>(outcome: T, what: 'message' | 'control'): T {
    const facts = this.current;
    const where = this.position(what);
    for (const finding of (facts.findings as Record<string, unknown>[] | undefined) ?? []) {
      if (this.findings.length < MAX_RECORDED_FINDINGS) this.findings.push({ ...finding, ...where });
      else this.moreFindings += 1;
    }
    for (const secret of (facts.placeholders as string[] | undefined) ?? []) this.placeholders.add(secret);
    if (facts.redacted) this.redacted += 1;
    if (facts.attemptedExfiltration) this.exfiltration ??= facts.attemptedExfiltration;
    return outcome;
  }

  /** The record's details, with what the upgrade request's own steps found (`request`) kept. */
  details(request: Record<string, unknown>): Record<string, unknown> {
    const findings = [...((request.findings as Record<string, unknown>[] | undefined) ?? []), ...this.findings];
    const placeholders = new Set([...((request.placeholders as string[] | undefined) ?? []), ...this.placeholders]);
    return {
      ...(findings.length > 0 ? { findings } : {}),
      ...(this.moreFindings > 0 ? { moreFindings: this.moreFindings } : {}),
      ...(placeholders.size > 0 ? { placeholders: [...placeholders] } : {}),
      ...(this.redacted > 0 ? { redactedMessages: this.redacted } : {}),
      ...(this.exfiltration ? { attemptedExfiltration: this.exfiltration } : {}),
    };
  }
}
