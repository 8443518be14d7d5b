/**
 * A refusal is how any step ends a connection or request: an HTTP status, a machine-readable reason code
 * (sent in `X-Gatehouse-Reason`, and recorded in the audit log) and one sentence for a person.
 * Steps return refusals as values; only the listener that owns the socket turns them into bytes.
 */
export type ReasonCode =
  | 'auth-required'
  | 'bad-request'
  | 'bad-target'
  | 'bad-port'
  | 'non-canonical-ip'
  | 'ipv6-zone-id'
  | 'host-mismatch'
  | 'smuggling'
  | 'headers-too-large'
  | 'header-timeout'
  | 'body-timeout'
  | 'policy-denied'
  | 'blocked-address'
  | 'resolve-failed'
  | 'needs-inspection'
  | 'sni-mismatch'
  | 'needs-tls'
  | 'secret-detected'
  | 'placeholder-exfiltration'
  | 'credential-over-plaintext'
  | 'body-too-large'
  | 'rate-limited'
  | 'upstream-unreachable'
  | 'upstream-certificate'
  | 'upgrade-refused'
  | 'websocket-protocol'
  | 'response-unmaskable'
  | 'timeout'
  | 'audit-unavailable'
  | 'unsupported';

export class Refusal {
  constructor(
    readonly status: number,
    readonly reason: ReasonCode,
    readonly message: string,
    /** Rule ids behind a policy denial. */
    readonly rules: string[] = [],
  ) {}
}

export function isRefusal(value: unknown): value is Refusal {
  return value instanceof Refusal;
}

/** The header every refusal carries; an agent reads it to tell its user why. */
export const REASON_HEADER = 'x-gatehouse-reason';
