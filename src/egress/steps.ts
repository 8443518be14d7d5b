/**
 * Steps every flow (HTTP forward, CONNECT, SOCKS5, inspected requests) shares before it looks at the
 * destination: is there still an audit trail, and is this caller within its rate.
 */
import type { Caller } from './authenticate.js';
import { Refusal } from './refusal.js';
import type { Runtime } from './runtime.js';

/** Fail closed: once an audit record could not be written, nothing new proceeds. */
export function auditHealthy(runtime: Runtime): Refusal | undefined {
  if (!runtime.recorder.failed) return undefined;
  return new Refusal(503, 'audit-unavailable', 'the audit log cannot be written, so no connection may proceed');
}

/** Takes one token from the caller's bucket: new connections (and plain-HTTP requests), or inspected requests. */
export function limit(runtime: Runtime, caller: Caller, kind: 'connections' | 'requests'): Refusal | undefined {
  const key = caller.principal.agent ?? caller.session ?? 'anonymous';
  if (runtime[kind].take(key)) return undefined;
  const rate = kind === 'connections' ? runtime.limits.connectionsPerSecond : runtime.limits.requestsPerSecond;
  return new Refusal(429, 'rate-limited', `agent ${key} is over its limit of ${rate} ${kind} per second`);
}
