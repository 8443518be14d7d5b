/**
 * Address ranges the data planes refuse unless the policy explicitly allows the address (the egress proxy
 * for agents' connections, the gateway for remote MCP servers): everything that is not
 * global unicast. That covers loopback, link-local (and with it cloud metadata at 169.254.169.254 and
 * fd00:ec2::254), RFC 1918, CGNAT, ULA, multicast, unspecified and reserved space, and the IPv6 forms that
 * carry an IPv4 address (IPv4-mapped, IPv4-compatible, NAT64, 6to4, Teredo) whatever IPv4 address they carry.
 * Parsing is ipaddr.js's.
 */
import ipaddr from 'ipaddr.js';
import { isIPv4, isIPv6, SocketAddress } from 'node:net';
import { rememberedByText } from '../util/memo.js';

export interface CheckedAddress {
  /** What is dialled: the OS's canonical spelling (IPv4-mapped IPv6 becomes IPv4). */
  address: string;
  family: 4 | 6;
  /** Why the address is blocked by default (an ipaddr.js range name), or undefined for global unicast. */
  blockedRange: string | undefined;
}

/**
 * Classifies one address as the OS will dial it. Returns undefined for text that is not an IP address at all
 * (a resolver answering with garbage is refused, not guessed at).
 */
export const classifyAddress: (text: string) => CheckedAddress | undefined = rememberedByText(classifyText, { entries: 4096, textLength: 128 });

function classifyText(text: string): CheckedAddress | undefined {
  if (isIPv4(text)) {
    return { address: text, family: 4, blockedRange: blockedIpv4Range(ipaddr.IPv4.parse(text)) };
  }
  // A zone id names an interface; an answer carrying one is not an address we will guess about.
  if (!isIPv6(text) || text.includes('%')) return undefined;
  const canonical = new SocketAddress({ address: text, family: 'ipv6' }).address;
  const parsed = ipaddr.IPv6.parse(dottedTailToHex(canonical));
  if (parsed.isIPv4MappedAddress()) {
    const v4 = parsed.toIPv4Address();
    return { address: v4.toString(), family: 4, blockedRange: blockedIpv4Range(v4) };
  }
  return { address: canonical, family: 6, blockedRange: blockedIpv6Range(parsed) };
}

function blockedIpv4Range(address: ipaddr.IPv4): string | undefined {
  const range = address.range();
  return range === 'unicast' ? undefined : range;
}

function blockedIpv6Range(address: ipaddr.IPv6): string | undefined {
  const range = address.range();
  if (range !== 'unicast') return range;
  // Global unicast is 2000::/3 only; the rest of "unicast" to ipaddr.js includes ::/96 (IPv4-compatible).
  const first = address.parts[0] ?? 0;
  if (first < 0x2000 || first > 0x3fff) return first === 0 ? 'ipv4Compatible' : 'reserved';
  return undefined;
}

/**
 * ipaddr.js 2.5 reads "::1.2.3.4" as the IPv4-mapped "::ffff:1.2.3.4". The OS (inet_pton) reads it as the
 * IPv4-compatible ::102:304. Rewriting a dotted tail as two hex groups makes both agree on the bytes.
 */
export function dottedTailToHex(text: string): string {
  const match = /^(.*:)(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(text);
  if (!match) return text;
  const [, head, a, b, c, d] = match;
  const hi = ((Number(a) << 8) | Number(b)).toString(16);
  const lo = ((Number(c) << 8) | Number(d)).toString(16);
  return `${head}${hi}:${lo}`;
}
