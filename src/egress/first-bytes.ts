/**
 * The first-bytes step of tunnels the proxy does not inspect (CONNECT and SOCKS5). Nothing goes upstream
 * until the client's first bytes are judged:
 *
 *   - a TLS ClientHello makes the tunnel `https`: its server name must be the target host (no fronting), and
 *     the destination is decided again as `https`, so `schemes:` rules apply both ways (an allow that names
 *     only https, a deny that names https);
 *   - an HTTP/1 request makes the tunnel `http`: it is handed to the proxy's HTTP engine (see intercept.ts),
 *     where every request on it is parsed, its Host must be the target, and it is decided with its method
 *     and path like any plain request. Passed on blind, the bytes could name any Host the server fronts;
 *   - anything else leaves the tunnel without a scheme: it passes, unless only an https rule allowed it.
 */
import type { PolicyEngine } from '../policy/engine.js';
import { isAllowed, type Decision, type Principal } from '../policy/types.js';
import { readClientHelloSni } from './client-hello.js';
import { decideTls, readsScheme } from './destination.js';
import { Refusal } from './refusal.js';
import { printable, type Target } from './target.js';
import type { FirstBytesGate } from './tunnel.js';

/** What the first bytes showed, for the connection's record. */
export interface FirstBytes {
  scheme?: 'https' | 'http';
  sni?: string;
  /** The decision taken again as `https`, when TLS was seen and the policy reads schemes. */
  decision?: Decision;
}

export interface TunnelGateInput {
  engine: PolicyEngine;
  principal: Principal;
  target: Target;
  /** The checked addresses the tunnel was allowed for. */
  addresses: string[];
  correlationId: string;
  /** Only a rule for `https` allowed the tunnel: its first bytes must be TLS. */
  tlsOnly: boolean;
  /** Hosts whose TLS is tunnelled even when a rule asks for inspection (egress.passThrough). */
  isPassThrough(host: string): boolean;
}

export function tunnelGate(input: TunnelGateInput, seen: FirstBytes): FirstBytesGate {
  const { engine, target } = input;
  return (data) => {
    const hello = readClientHelloSni(data);
    if (hello.kind === 'incomplete') return 'more';
    if (hello.kind === 'not-tls') {
      if (input.tlsOnly) return new Refusal(403, 'needs-tls', `only rules for https allow ${target.host}, and the client did not begin with a TLS handshake`);
      const http = readHttpStart(data);
      if (http === 'incomplete') return 'more';
      if (http === 'other') return 'pass';
      if (http === 'http/0.9') return new Refusal(400, 'bad-request', 'the client sent an HTTP/0.9 request (no HTTP version), which this proxy does not carry');
      seen.scheme = 'http';
      return 'http';
    }
    seen.scheme = 'https';
    if (hello.kind === 'sni') {
      const name = hello.name.toLowerCase().replace(/\.$/, '');
      seen.sni = printable(name);
      if (!target.ip && name !== target.host) {
        return new Refusal(403, 'sni-mismatch', `the TLS server name ${printable(hello.name)} differs from the target ${target.host}`);
      }
      if (target.ip) {
        // A tunnel to an address that names a server: the name is judged too, with that address as what it
        // resolved to, so a name the policy denies cannot be reached by dialling its IP instead.
        const byName = engine.decide({ surface: 'network', ...input.principal, host: name, port: target.port, scheme: 'https', addresses: [target.ip.address], correlationId: input.correlationId });
        if (!isAllowed(byName)) {
          return new Refusal(403, 'policy-denied', `the TLS server name ${printable(name)} is not allowed: ${byName.reason}`, byName.rules);
        }
        // A name whose requests the policy must see (method or path rules, inspection) is not reached blind
        // through its address: DELETE would pass where a CONNECT by name is inspected or refused.
        if (byName.needsInspection || (engine.inspects(name, input.principal) && !input.isPassThrough(name))) {
          return new Refusal(403, 'needs-inspection', `the TLS server name ${printable(name)} is inspected by the policy; CONNECT to ${printable(name)} by name instead of its address`, byName.rules);
        }
      }
    }
    if (!readsScheme(engine)) return 'pass';
    const decision = decideTls(engine, input.principal, target, input.addresses, input.correlationId);
    if (decision instanceof Refusal) return decision;
    seen.decision = decision;
    return 'pass';
  };
}

/** Characters of an HTTP token (RFC 9110 section 5.6.2), the request method among them. */
const TCHAR = new Uint8Array(128);
for (const c of "!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz") TCHAR[c.charCodeAt(0)] = 1;
const MAX_METHOD = 32;
const HTTP_VERSION = /HTTP\//i;

/**
 * Whether a client's first bytes begin an HTTP/1 request. Read as a lenient server would, and on the side
 * of "http" wherever one might: empty lines (and blanks) before the request line are skipped (RFC 9112
 * section 2.2), and a first line that is a token, a space or tab, and anything naming an HTTP version is a
 * request, whatever the case or the bytes between, since the engine it goes to refuses what it cannot
 * parse. An HTTP/0.9 request line (`GET /path`, no version) is told apart: node's parser would wait for headers
 * that never come, and a server that still answers one would take its path past the path rules. A first byte
 * that cannot begin a method (a binary protocol, Redis's "*1\r\n" ends its token at the CR) is "other" at
 * once; a line without an HTTP version (SSH's banner, SMTP) is "other" at its end.
 */
export function readHttpStart(data: Buffer): 'http' | 'http/0.9' | 'other' | 'incomplete' {
  let at = 0;
  while (at < data.length && (data[at] === 0x0d || data[at] === 0x0a || data[at] === 0x20 || data[at] === 0x09)) at += 1;
  const methodStart = at;
  while (at < data.length && (data[at] as number) < 128 && TCHAR[data[at] as number] === 1) {
    at += 1;
    if (at - methodStart > MAX_METHOD) return 'other';
  }
  if (at === data.length) return 'incomplete';
  if (at === methodStart || (data[at] !== 0x20 && data[at] !== 0x09)) return 'other';
  const end = data.indexOf(0x0a, at);
  if (end < 0) return HTTP_VERSION.test(data.toString('latin1', at)) ? 'http' : 'incomplete';
  if (HTTP_VERSION.test(data.toString('latin1', at, end))) return 'http';
  return SIMPLE_REQUEST.test(data.toString('latin1', methodStart, end)) ? 'http/0.9' : 'other';
}

/** An HTTP/0.9 request line: GET and a path, no version. Servers that still answer one ignore Host and headers. */
const SIMPLE_REQUEST = /^GET[ \t]+\/[^ \t\r]*[ \t]*\r?$/;
