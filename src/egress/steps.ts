/**
 * Steps every flow (HTTP forward, CONNECT, SOCKS5, inspected requests) shares before it looks at the
 * destination: is there still an audit trail, and is this caller within its rate; and the hand-over of a
 * tunnel that turned out to carry plain HTTP.
 */
import type { Duplex } from 'node:stream';
import type { Caller } from './authenticate.js';
import type { Tunnel } from './inspect.js';
import { Refusal } from './refusal.js';
import type { Runtime } from './runtime.js';

/** Fail closed: once an audit record could not be written, nothing new proceeds. */
export function auditHealthy(runtime: Runtime): Refusal | undefined {
  if (!runtime.recorder.failed) return undefined;
  return new Refusal(503, 'audit-unavailable', 'the audit log cannot be written, so no connection may proceed');
}

function limitKey(caller: Caller): string {
  return caller.principal.agent ?? caller.session ?? 'anonymous';
}

/** Takes one token from the caller's bucket: new connections (and plain-HTTP requests), or inspected requests. */
export function limit(runtime: Runtime, caller: Caller, kind: 'connections' | 'requests'): Refusal | undefined {
  const key = limitKey(caller);
  if (runtime[kind].take(key)) return undefined;
  const rate = kind === 'connections' ? runtime.limits.connectionsPerSecond : runtime.limits.requestsPerSecond;
  return new Refusal(429, 'rate-limited', `agent ${key} is over its limit of ${rate} ${kind} per second`);
}

/**
 * Holds one of the caller's tunnel slots until `socket` closes (a tunnel's client socket, or a plain-HTTP
 * request's response: each holds up to a body the proxy reads whole); a refusal when all are taken.
 */
export function occupyTunnel(runtime: Runtime, caller: Caller, socket: { readonly destroyed: boolean; once(event: 'close', listener: () => void): unknown }): Refusal | undefined {
  if (socket.destroyed) return undefined;
  const key = limitKey(caller);
  const open = runtime.tunnels.get(key) ?? 0;
  const most = runtime.limits.maxTunnelsPerAgent;
  if (open >= most) return new Refusal(429, 'rate-limited', `agent ${key} already holds ${open} open tunnels, its limit (egress.limits.maxTunnelsPerAgent)`);
  runtime.tunnels.set(key, open + 1);
  socket.once('close', () => {
    const left = (runtime.tunnels.get(key) ?? 1) - 1;
    if (left > 0) runtime.tunnels.set(key, left);
    else runtime.tunnels.delete(key);
  });
  return undefined;
}

/**
 * A tunnel whose first bytes began a plain HTTP request (`head`, none sent yet): the HTTP engine serves its
 * requests, each decided, checked and recorded on its own, and sends them to the address the tunnel dialled.
 * Resolves with the details for the tunnel's own record when it closes.
 */
export async function serveHttpTunnel(runtime: Runtime, socket: Duplex, head: Buffer, tunnel: Tunnel, dialled: string | undefined): Promise<{ details: Record<string, unknown>; refusal: Refusal | undefined }> {
  const addresses = [...tunnel.addresses].sort((a, b) => Number(b.address === dialled) - Number(a.address === dialled));
  const served = await runtime.inspector.serveHttp(socket, head, { ...tunnel, addresses });
  return {
    details: { address: served.address ?? dialled, inspected: false, scheme: 'http', requests: served.requests, bytesUp: served.bytesUp, bytesDown: served.bytesDown },
    refusal: served.refusal,
  };
}
