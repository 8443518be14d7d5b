/**
 * The first-bytes step of tunnels the proxy does not inspect (CONNECT and SOCKS5). Nothing goes upstream
 * until the client's first bytes are judged:
 *
 *   - a TLS ClientHello makes the tunnel `https`: its server name must be the target host (no fronting), and
 *     the destination is decided again as `https`, so `schemes:` rules apply both ways (an allow that names
 *     only https, a deny that names https);
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
  scheme?: 'https';
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
      if (!input.tlsOnly) return 'pass';
      return new Refusal(403, 'needs-tls', `only rules for https allow ${target.host}, and the client did not begin with a TLS handshake`);
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
