/**
 * egress/: the proxy every outbound connection from agents and their tools goes through.
 *
 *   startEgressProxy({ policy, audit, authenticate, settings: config.egress, dataDir, scanner, placeholders,
 *                      resolveSecret }) → { address, socksAddress, openSession(principal, id?), close() }
 *   openSession(principal) → { socketPath, id, close() }: the sandbox bridge connects to socketPath
 *
 * Listeners: HTTP forward proxy (absolute URIs and CONNECT) and SOCKS5 on TCP, authenticated by agent key;
 * a Unix socket per session, where the socket is the identity. Each connection runs a chain of small steps:
 * authenticate → parse target → limit → decide → resolve-check → dial (or inspect) → forward → record.
 * The record step bounds the refusals of each caller, counting the rest into a summary record (flood.ts).
 *
 * May import: policy/ (the PolicyEngine interface and host patterns), audit/ (the record type), config/
 * (the egress settings type), dlp/ and secrets/ (scanning, placeholders), util/. Never the other data planes.
 */
export { startEgressProxy, type EgressProxy, type EgressProxyOptions, type EgressSession } from './proxy.js';
export type { Authenticate } from './authenticate.js';
export { CertificateAuthority } from './ca.js';
export type { ResolveSecret } from './content.js';
export { createResolver, type Resolver } from './resolver.js';
export { REASON_HEADER, type ReasonCode } from './refusal.js';
