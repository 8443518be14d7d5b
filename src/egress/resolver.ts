/**
 * Gatehouse's resolver. It runs once per connection; the proxy checks every answer and dials one of exactly
 * those addresses, so a second, different answer (DNS rebinding) never reaches a socket.
 */
import { lookup } from 'node:dns/promises';

/**
 * Answers a host name with IP address strings. Rejects (or answers empty) when the name does not resolve.
 * A fixed answer may come back at once, without a promise: nothing to wait for, so no timeout to keep.
 */
export type Resolver = (host: string) => string[] | Promise<string[]>;

/**
 * The system resolver (getaddrinfo: /etc/hosts, then DNS), with fixed answers for some names first, in the
 * spirit of curl's `--resolve`. Overrides are how tests point names at loopback.
 */
export function createResolver(overrides: Record<string, string[]> = {}): Resolver {
  const fixed = new Map(Object.entries(overrides).map(([name, addresses]) => [name.toLowerCase(), addresses]));
  return (host) => fixed.get(host) ?? lookup(host, { all: true, verbatim: true }).then((found) => found.map((entry) => entry.address));
}
