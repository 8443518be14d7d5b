/**
 * SOCKS5 (RFC 1928) for TCP that is not HTTP: ssh, databases. CONNECT only; domain, IPv4 and IPv6 address
 * types; no authentication on session sockets (the socket is the identity) and username/password (RFC 1929)
 * carrying the agent key everywhere else. The chain is the CONNECT chain: authenticate → parse target →
 * limit → decide → resolve-check → dial → splice → record. SOCKS has no room for a reason sentence, so
 * refusals map to reply codes and the reason goes to the audit record.
 */
import type { Socket } from 'node:net';
import { authenticateCaller, clientOf, type Caller, type Client } from './authenticate.js';
import { checkTunnel, decideDestination } from './destination.js';
import { tunnelGate, type FirstBytes } from './first-bytes.js';
import { nextCorrelationId, type Facts } from './record.js';
import { Refusal } from './refusal.js';
import type { Runtime } from './runtime.js';
import { auditHealthy, limit, occupyTunnel, serveHttpTunnel } from './steps.js';
import { formatTarget, parseHost, type Target } from './target.js';
import { dial, splice } from './tunnel.js';

const NO_AUTH = 0x00;
const USER_PASS = 0x02;
const NO_METHOD = 0xff;

const REPLY = {
  succeeded: 0x00,
  generalFailure: 0x01,
  notAllowed: 0x02,
  hostUnreachable: 0x04,
  connectionRefused: 0x05,
  commandNotSupported: 0x07,
  addressTypeNotSupported: 0x08,
} as const;

/** Reads exactly n bytes at a time from a socket, with a deadline for the whole handshake. */
class HandshakeReader {
  private buffered: Buffer = Buffer.alloc(0);
  private waiting: { n: number; resolve: (b: Buffer) => void; reject: (e: Error) => void } | undefined;
  private failure: Error | undefined;
  private readonly timer: NodeJS.Timeout;

  constructor(
    private readonly socket: Socket,
    timeoutMs: number,
  ) {
    this.timer = setTimeout(() => this.fail(new Error('the SOCKS handshake took too long')), timeoutMs);
    socket.on('data', this.onData);
    socket.once('end', () => this.fail(new Error('the client closed the connection during the SOCKS handshake')));
    socket.once('error', (error) => this.fail(error));
  }

  private readonly onData = (chunk: Buffer): void => {
    this.buffered = this.buffered.length === 0 ? chunk : Buffer.concat([this.buffered, chunk]);
    // A handshake is a few hundred bytes at most; anything far beyond is not SOCKS.
    if (this.buffered.length > 4096) this.fail(new Error('the SOCKS handshake is too long'));
    this.deliver();
  };

  private deliver(): void {
    if (!this.waiting || this.buffered.length < this.waiting.n) return;
    const { n, resolve } = this.waiting;
    this.waiting = undefined;
    const out = this.buffered.subarray(0, n);
    this.buffered = this.buffered.subarray(n);
    resolve(out);
  }

  private fail(error: Error): void {
    this.failure ??= error;
    if (this.waiting) {
      const { reject } = this.waiting;
      this.waiting = undefined;
      reject(error);
    }
  }

  take(n: number): Promise<Buffer> {
    if (this.failure) return Promise.reject(this.failure);
    return new Promise((resolve, reject) => {
      this.waiting = { n, resolve, reject };
      this.deliver();
    });
  }

  /** Stops reading; returns bytes the client sent ahead of the reply (they belong to the tunnel). */
  finish(): Buffer {
    clearTimeout(this.timer);
    this.socket.off('data', this.onData);
    this.socket.pause();
    return this.buffered;
  }
}

export async function handleSocks(runtime: Runtime, socket: Socket): Promise<void> {
  const client = clientOf(runtime.clients, socket);
  const reader = new HandshakeReader(socket, runtime.limits.headerTimeoutMs);
  const startedAt = performance.now();
  const correlationId = nextCorrelationId();
  const engine = runtime.policy.current;
  const facts: Facts = {
    action: 'connect',
    resource: '-',
    principal: client.principal,
    session: client.session,
    correlationId,
    listener: client.listener === 'tcp' ? 'socks' : client.listener,
    startedAt,
    details: { protocol: 'socks5' },
  };
  const refuse = (refusal: Refusal, code: number): void => {
    reader.finish();
    facts.refusal = refusal;
    runtime.recorder.record(engine, facts);
    socket.end(reply(code));
  };

  let caller: Caller | Refusal;
  let target: Target | Refusal | number;
  try {
    caller = await negotiate(runtime, client, socket, reader);
    if (caller instanceof Refusal) {
      facts.refusal = caller;
      runtime.recorder.record(engine, facts);
      reader.finish();
      socket.end();
      return;
    }
    target = await readRequest(reader);
  } catch {
    reader.finish();
    socket.destroy();
    return;
  }
  facts.principal = caller.principal;
  if (typeof target === 'number') {
    return refuse(new Refusal(400, 'unsupported', 'only the SOCKS5 CONNECT command with IPv4, IPv6 or domain addresses is supported'), target);
  }
  if (target instanceof Refusal) return refuse(target, REPLY.addressTypeNotSupported);
  facts.resource = formatTarget(target);
  const notAdmitted = auditHealthy(runtime) ?? limit(runtime, caller, 'connections') ?? occupyTunnel(runtime, caller, socket);
  if (notAdmitted) return refuse(notAdmitted, REPLY.generalFailure);

  if (engine.inspects(target.host, caller.principal) && !runtime.isPassThrough(target.host)) {
    const decision = decideDestination(engine, caller.principal, { target, scheme: 'https' }, correlationId);
    if (decision instanceof Refusal) return refuse(decision, REPLY.notAllowed);
    return refuse(new Refusal(403, 'needs-inspection', `${target.host} is inspected; reach it through the HTTP proxy (CONNECT), not SOCKS`), REPLY.notAllowed);
  }
  // No scheme until the first bytes show TLS (see first-bytes.ts).
  const checked = await checkTunnel(engine, runtime.resolver, caller.principal, target, correlationId);
  if (checked instanceof Refusal) {
    return refuse(checked, checked.reason === 'resolve-failed' ? REPLY.hostUnreachable : REPLY.notAllowed);
  }
  facts.decision = checked.checked.decision;
  if (checked.checked.decision.needsInspection) {
    return refuse(new Refusal(403, 'needs-inspection', `rules for ${target.host} allow only some methods or paths, which SOCKS cannot show`, checked.checked.decision.rules), REPLY.notAllowed);
  }
  const unrecorded = runtime.recorder.awaitDecisions ? await runtime.recorder.decided(engine, facts) : undefined;
  if (unrecorded) return refuse(unrecorded, REPLY.generalFailure);
  const addresses = checked.checked.addresses;
  const upstream = await dial(addresses, target.port);
  if (upstream instanceof Refusal) return refuse(upstream, REPLY.connectionRefused);
  const dialled = upstream.remoteAddress;

  const early = reader.finish();
  socket.write(reply(REPLY.succeeded));
  socket.resume();
  const seen: FirstBytes = {};
  const gate = tunnelGate({ engine, principal: caller.principal, target, addresses: addresses.map((a) => a.address), correlationId, tlsOnly: checked.tlsOnly, isPassThrough: runtime.isPassThrough }, seen);
  const result = await splice(socket, upstream, runtime.limits, early, gate, checked.tlsOnly);
  if (result.http) {
    const served = await serveHttpTunnel(runtime, socket, result.http, { target, addresses, caller, correlationId, listener: client.listener === 'tcp' ? 'socks' : client.listener }, dialled);
    facts.details = { ...facts.details, ...served.details };
    if (served.refusal) facts.refusal = served.refusal;
    runtime.recorder.record(engine, facts);
    return;
  }
  if (seen.decision) facts.decision = seen.decision;
  if (result.refusal) facts.refusal = result.refusal;
  facts.details = {
    ...facts.details,
    address: dialled,
    ...(seen.scheme ? { scheme: seen.scheme } : {}),
    ...(seen.sni ? { sni: seen.sni } : {}),
    bytesUp: result.bytesUp,
    bytesDown: result.bytesDown,
    ended: result.ended,
  };
  runtime.recorder.record(engine, facts);
}

/** Method selection and, where needed, username/password authentication. */
async function negotiate(runtime: Runtime, client: Client, socket: Socket, reader: HandshakeReader): Promise<Caller | Refusal> {
  const [version = 0, count = 0] = await reader.take(2);
  if (version !== 5) return new Refusal(400, 'bad-request', 'not a SOCKS5 greeting');
  const methods = count === 0 ? Buffer.alloc(0) : await reader.take(count);
  if (client.principal && methods.includes(NO_AUTH)) {
    socket.write(Buffer.from([5, NO_AUTH]));
    return { principal: client.principal, session: client.session };
  }
  if (!methods.includes(USER_PASS)) {
    socket.write(Buffer.from([5, NO_METHOD]));
    return new Refusal(407, 'auth-required', 'SOCKS5 needs username/password authentication with the agent key as the password');
  }
  socket.write(Buffer.from([5, USER_PASS]));
  const [subVersion = 0, userLength = 0] = await reader.take(2);
  const user = userLength === 0 ? '' : (await reader.take(userLength)).toString('utf8');
  const [passwordLength = 0] = await reader.take(1);
  const password = passwordLength === 0 ? '' : (await reader.take(passwordLength)).toString('utf8');
  const caller = subVersion === 1 ? await authenticateCaller(client, password || user, runtime.authenticate) : new Refusal(407, 'auth-required', 'bad SOCKS5 authentication version');
  socket.write(Buffer.from([1, caller instanceof Refusal ? 1 : 0]));
  return caller;
}

/** The CONNECT request; a number is the reply code for a request we do not serve. */
async function readRequest(reader: HandshakeReader): Promise<Target | Refusal | number> {
  const [version = 0, command = 0, , addressType = 0] = await reader.take(4);
  if (version !== 5) return REPLY.generalFailure;
  let host: string;
  if (addressType === 0x01) {
    host = [...(await reader.take(4))].join('.');
  } else if (addressType === 0x03) {
    const [length = 0] = await reader.take(1);
    host = length === 0 ? '' : (await reader.take(length)).toString('latin1');
  } else if (addressType === 0x04) {
    const bytes = await reader.take(16);
    const groups: string[] = [];
    for (let i = 0; i < 16; i += 2) groups.push(bytes.readUInt16BE(i).toString(16));
    host = `[${groups.join(':')}]`;
  } else {
    return REPLY.addressTypeNotSupported;
  }
  const port = (await reader.take(2)).readUInt16BE(0);
  if (command !== 0x01) return REPLY.commandNotSupported;
  if (port === 0) return new Refusal(400, 'bad-port', 'port 0 is not a destination');
  return parseHost(host, port);
}

/** A reply with an all-zero bound address: clients do not need to know the proxy's outgoing address. */
function reply(code: number): Buffer {
  return Buffer.from([5, code, 0, 1, 0, 0, 0, 0, 0, 0]);
}
