/**
 * Gatehouse's resolver. It runs once per connection; the proxy checks every answer and dials one of exactly
 * those addresses, so a second, different answer (DNS rebinding) never reaches a socket.
 */
import { lookup } from 'node:dns/promises';

/** Answers a host name with IP address strings. Rejects (or answers empty) when the name does not resolve. */
export type Resolver = (host: string) => Promise<string[]>;

/**
 * The system resolver (getaddrinfo: /etc/hosts, then DNS), with fixed answers for some names first, in the
 * spirit of curl's `--resolve`. Overrides are how tests point names at loopback.
 */
export function createResolver(overrides: Record<string, string[]> = {}): Resolver {
  const fixed = new Map(Object.entries(overrides).map(([name, addresses]) => [name.toLowerCase(), addresses]));
  return async (host) => {
    const answer = fixed.get(host);
    if (answer) return answer;
    const found = await lookup(host, { all: true, verbatim: true });
    return found.map((entry) => entry.address);
  };
}
