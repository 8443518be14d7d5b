/**
 * The HTTP listener's two flows, each an ordered chain of steps that can end it with a refusal:
 *
 *   CONNECT:      authenticate → parse target → limit → decide → resolve-check → (inspect | dial → splice) → record
 *   absolute URI: authenticate → parse target → check framing and Host → limit → decide → resolve-check
 *                 → forward → record
 *
 * Transport only: decisions come from destination.ts (the PolicyEngine), refusals become bytes here.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import { authenticateCaller, clientOf, keyFromProxyAuthorization, type Caller, type Client } from './authenticate.js';
import type { CheckedAddress } from '../policy/addresses.js';
import { checkTunnel, decideDestination, resolveAndCheck, type CheckedDestination, type Destination } from './destination.js';
import { tunnelGate, type FirstBytes } from './first-bytes.js';
import { checkFraming, checkHostHeader, parseAbsoluteForm } from './http-message.js';
import { nextCorrelationId, type Facts } from './record.js';
import { Refusal } from './refusal.js';
import { writeRawRefusal, writeRefusal } from './respond.js';
import type { Runtime } from './runtime.js';
import { auditHealthy, limit, occupyTunnel, serveHttpTunnel } from './steps.js';
import { formatTarget, parseAuthority, printable } from './target.js';
import { dial, splice } from './tunnel.js';
import { prepareRequest } from './content.js';
import { forward, forwardedDetails, upstreamHeaders, type Upstream } from './forward.js';
import { originOf } from './upstream.js';

/** The first steps of both HTTP flows: audit health, then who is asking. */
function admit(runtime: Runtime, client: Client, proxyAuthorization: string | undefined): Caller | Refusal | Promise<Caller | Refusal> {
  return auditHealthy(runtime) ?? authenticateCaller(client, keyFromProxyAuthorization(proxyAuthorization), runtime.authenticate);
}

export async function handleConnect(runtime: Runtime, request: IncomingMessage, socket: Duplex, head: Buffer): Promise<void> {
  const client = clientOf(runtime.clients, socket);
  const startedAt = performance.now();
  const correlationId = nextCorrelationId();
  const engine = runtime.policy.current;
  const facts: Facts = {
    action: 'connect',
    resource: printable(request.url ?? ''),
    principal: client.principal,
    session: client.session,
    correlationId,
    listener: client.listener,
    startedAt,
    details: {},
  };
  const refuse = (refusal: Refusal): void => {
    facts.refusal = refusal;
    runtime.recorder.record(engine, facts);
    writeRawRefusal(socket, refusal);
  };
  socket.on('error', () => socket.destroy());

  const caller = await admit(runtime, client, request.headers['proxy-authorization']);
  if (caller instanceof Refusal) return refuse(caller);
  facts.principal = caller.principal;
  const target = parseAuthority(request.url ?? '');
  if (target instanceof Refusal) return refuse(target);
  facts.resource = formatTarget(target);
  const overLimit = limit(runtime, caller, 'connections') ?? occupyTunnel(runtime, caller, socket);
  if (overLimit) return refuse(overLimit);

  // An inspected tunnel is https by construction. One that is not has no scheme until its first bytes show
  // TLS (see first-bytes.ts).
  const inspect = engine.inspects(target.host, caller.principal) && !runtime.isPassThrough(target.host);
  let checked: CheckedDestination;
  let tlsOnly = false;
  if (inspect) {
    const destination: Destination = { target, scheme: 'https' };
    const decision = decideDestination(engine, caller.principal, destination, correlationId);
    if (decision instanceof Refusal) return refuse(decision);
    facts.decision = decision;
    const result = await resolveAndCheck(engine, runtime.resolver, caller.principal, destination, correlationId);
    if (result instanceof Refusal) return refuse(result);
    checked = result;
  } else {
    const result = await checkTunnel(engine, runtime.resolver, caller.principal, target, correlationId);
    if (result instanceof Refusal) return refuse(result);
    ({ checked, tlsOnly } = result);
  }
  facts.decision = checked.decision;
  if (checked.decision.needsInspection && !inspect) {
    return refuse(
      new Refusal(403, 'needs-inspection', `rules for ${target.host} allow only some methods or paths, which needs TLS inspection of this host`, checked.decision.rules),
    );
  }

  if (inspect && !runtime.inspector.decrypts) return refuse(new Refusal(502, 'unsupported', `the policy asks to inspect ${target.host}, but this proxy has no CA for TLS inspection`));
  // Sync audit mode: the decision is durable before anything is dialled or flows.
  const unrecorded = runtime.recorder.awaitDecisions ? await runtime.recorder.decided(engine, facts) : undefined;
  if (unrecorded) return refuse(unrecorded);

  if (inspect) {
    socket.write('HTTP/1.1 200 Connection Established\r\n\r\n');
    const result = await runtime.inspector.intercept(socket, head, { target, addresses: checked.addresses, caller, correlationId, listener: client.listener });
    facts.details = { address: result.address, inspected: true, sni: result.sni, requests: result.requests, bytesUp: result.bytesUp, bytesDown: result.bytesDown };
    if (result.refusal) facts.refusal = result.refusal;
    runtime.recorder.record(engine, facts);
    return;
  }

  const upstream = await dial(checked.addresses, target.port);
  if (upstream instanceof Refusal) return refuse(upstream);
  const dialled = upstream.remoteAddress;
  socket.write('HTTP/1.1 200 Connection Established\r\n\r\n');
  const seen: FirstBytes = {};
  const gate = tunnelGate({ engine, principal: caller.principal, target, addresses: checked.addresses.map((a) => a.address), correlationId, tlsOnly, isPassThrough: runtime.isPassThrough }, seen);
  const result = await splice(socket, upstream, runtime.limits, head, gate, tlsOnly);
  if (result.http) {
    const served = await serveHttpTunnel(runtime, socket, result.http, { target, addresses: checked.addresses, caller, correlationId, listener: client.listener }, dialled);
    facts.details = served.details;
    if (served.refusal) facts.refusal = served.refusal;
    runtime.recorder.record(engine, facts);
    return;
  }
  if (seen.decision) facts.decision = seen.decision;
  facts.details = {
    address: dialled,
    inspected: false,
    ...(seen.scheme ? { scheme: seen.scheme } : {}),
    ...(seen.sni ? { sni: seen.sni } : {}),
    bytesUp: result.bytesUp,
    bytesDown: result.bytesDown,
    ended: result.ended,
  };
  if (result.refusal) facts.refusal = result.refusal;
  runtime.recorder.record(engine, facts);
}

export async function handleForward(runtime: Runtime, request: IncomingMessage, response: ServerResponse): Promise<void> {
  const client = clientOf(runtime.clients, request.socket);
  const startedAt = performance.now();
  const correlationId = nextCorrelationId();
  const engine = runtime.policy.current;
  const facts: Facts = {
    action: 'request',
    resource: '-',
    principal: client.principal,
    session: client.session,
    correlationId,
    listener: client.listener,
    startedAt,
    details: { method: request.method, scheme: 'http' },
  };
  const refuse = (refusal: Refusal): void => {
    facts.refusal = refusal;
    runtime.recorder.record(engine, facts);
    request.resume();
    writeRefusal(response, refusal);
  };

  const caller = await admit(runtime, client, request.headers['proxy-authorization']);
  if (caller instanceof Refusal) return refuse(caller);
  facts.principal = caller.principal;
  const httpTarget = parseAbsoluteForm(request.url ?? '');
  if (httpTarget instanceof Refusal) return refuse(httpTarget);
  const { target } = httpTarget;
  facts.resource = `http://${formatTarget(target)}${httpTarget.path}`;
  facts.details.path = httpTarget.path;
  facts.details.port = target.port;
  const badMessage = checkFraming(request) ?? checkHostHeader(request, target, 'http');
  if (badMessage) return refuse(badMessage);
  const overLimit = limit(runtime, caller, 'connections') ?? occupyTunnel(runtime, caller, response);
  if (overLimit) return refuse(overLimit);

  const destination: Destination = { target, scheme: 'http', method: request.method ?? 'GET', path: httpTarget.path, ...(httpTarget.otherPaths ? { otherPaths: httpTarget.otherPaths } : {}) };
  const decision = decideDestination(engine, caller.principal, destination, correlationId);
  if (decision instanceof Refusal) return refuse(decision);
  facts.decision = decision;
  const checked = await resolveAndCheck(engine, runtime.resolver, caller.principal, destination, correlationId);
  if (checked instanceof Refusal) return refuse(checked);
  facts.decision = checked.decision;
  const address = checked.addresses[0] as CheckedAddress;
  facts.details.address = address.address;

  const prepared = await prepareRequest({
    engine,
    tools: runtime.content,
    caller,
    target,
    scheme: 'http',
    request,
    pathAndQuery: httpTarget.pathAndQuery,
    limits: runtime.limits,
  }, facts.details);
  if (prepared instanceof Refusal) return refuse(prepared);
  const unrecorded = runtime.recorder.awaitDecisions ? await runtime.recorder.decided(engine, facts) : undefined;
  if (unrecorded) return refuse(unrecorded);
  const upstream: Upstream = {
    dispatcher: runtime.upstreams.for(caller),
    origin: originOf('http', address, target.port),
    ...(target.ip ? {} : { servername: target.host }),
    method: request.method ?? 'GET',
    headers: upstreamHeaders(prepared.headers, formatTarget(target)),
  };
  const result = await forward(upstream, request, response, prepared, {
    idleTimeoutMs: runtime.limits.idleTimeoutMs,
  });
  if (result instanceof Error) return refuse(new Refusal(502, 'upstream-unreachable', `the upstream server failed (${result.code ?? result.message})`));
  if (result instanceof Refusal) return refuse(result);
  Object.assign(facts.details, forwardedDetails(result));
  runtime.recorder.record(engine, facts);
}
