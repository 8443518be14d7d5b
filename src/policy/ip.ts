/**
 * IP literals and CIDR tables. Parsing is ipaddr.js's; this file decides what counts as the "same" address
 * for policy: every IPv4 encoding a client accepts (`2130706433`, `0177.0.0.1`, `0x7f.1`, `127.1`) is one
 * address, an IPv4-mapped IPv6 address *is* its IPv4 address, and IPv4 addresses embedded in other IPv6 forms
 * (NAT64, 6to4, Teredo, ISATAP, IPv4-compatible) are extra identities that deny rules also see.
 */
import ipaddr from 'ipaddr.js';
import { dottedTailToHex } from './addresses.js';
import { rememberedByText } from '../util/memo.js';

export type IpAddress = ipaddr.IPv4 | ipaddr.IPv6;

const IPV4_SHAPE = /^(?:[0-9a-fx]+\.){0,3}(?:0x[0-9a-f]*|[0-9]+)$/i;

/** A parsed address with a stable key: `4:<uint32>` or `6:<32 hex digits>`. */
export interface NormalisedIp {
  address: IpAddress;
  text: string;
  /** IPv4 addresses embedded in an IPv6 address; deny rules match on these too. */
  embedded: ipaddr.IPv4[];
}

/**
 * Parses an IP literal in any encoding, with or without brackets or an IPv6 zone id. A literal is short (an
 * IPv6 one with a zone id, some dozens of characters).
 */
export const parseIpLiteral: (input: string) => NormalisedIp | undefined = rememberedByText(parseIpText, { entries: 4096, textLength: 128 }, (ip) => {
  Object.freeze(ip.embedded);
  Object.freeze(ip);
});

function parseIpText(input: string): NormalisedIp | undefined {
  let text = input.trim();
  if (text.startsWith('[') && text.endsWith(']')) text = text.slice(1, -1);
  if (text.includes(':')) {
    // Zone ids (fe80::1%eth0, or %25 as in URLs) name an interface, not a different address.
    const zone = text.indexOf('%');
    if (zone >= 0) text = text.slice(0, zone);
    if (!ipaddr.IPv6.isValid(text)) return undefined;
    return normalise(ipaddr.IPv6.parse(dottedTailToHex(text)));
  }
  if (text.endsWith('.')) text = text.slice(0, -1);
  // Cheap gate first: ipaddr.js signals "not an address" by throwing, which costs microseconds, and most
  // hosts are names. Every inet_aton form (decimal, octal, hex, one to four parts) uses only these
  // characters and ends in a numeric part.
  if (!IPV4_SHAPE.test(text)) return undefined;
  if (!ipaddr.IPv4.isValid(text)) return undefined;
  return normalise(ipaddr.IPv4.parse(text));
}

export function normalise(address: IpAddress): NormalisedIp {
  if (address.kind() === 'ipv6') {
    const v6 = address as ipaddr.IPv6;
    if (v6.isIPv4MappedAddress()) return normalise(v6.toIPv4Address());
    return { address: v6, text: v6.toString(), embedded: embeddedIpv4(v6) };
  }
  return { address, text: address.toString(), embedded: [] };
}

function v4(hi: number, lo: number): ipaddr.IPv4 {
  return new ipaddr.IPv4([hi >> 8, hi & 0xff, lo >> 8, lo & 0xff]);
}

/** IPv4 addresses carried inside an IPv6 address by the well-known transition mechanisms. */
export function embeddedIpv4(address: ipaddr.IPv6): ipaddr.IPv4[] {
  const p = address.parts;
  const at = (i: number): number => p[i] ?? 0;
  const found: ipaddr.IPv4[] = [];
  // IPv4-compatible ::a.b.c.d (deprecated but still routed by some stacks); not :: or ::1.
  if (at(0) === 0 && at(1) === 0 && at(2) === 0 && at(3) === 0 && at(4) === 0 && at(5) === 0 && (at(6) !== 0 || at(7) > 1)) {
    found.push(v4(at(6), at(7)));
  }
  // NAT64 well-known prefix 64:ff9b::/96 and local-use 64:ff9b:1::/48 (RFC 6052, RFC 8215).
  if (at(0) === 0x64 && at(1) === 0xff9b) {
    found.push(v4(at(6), at(7)));
    if (at(2) === 1) found.push(v4(at(3), ((at(4) & 0xff) << 8) | (at(5) >> 8)));
  }
  // 6to4 2002:AABB:CCDD::/48.
  if (at(0) === 0x2002) found.push(v4(at(1), at(2)));
  // Teredo 2001:0::/32: server in bits 32-63, client obfuscated (inverted) in the last 32 bits.
  if (at(0) === 0x2001 && at(1) === 0) {
    found.push(v4(at(2), at(3)));
    found.push(v4(~at(6) & 0xffff, ~at(7) & 0xffff));
  }
  // ISATAP interface identifier ::0:5efe:a.b.c.d or ::200:5efe:a.b.c.d under any prefix.
  if ((at(4) === 0 || at(4) === 0x200) && at(5) === 0x5efe) found.push(v4(at(6), at(7)));
  return found;
}

export interface Cidr {
  address: IpAddress;
  prefix: number;
}

/** Parses "10.0.0.0/8", "fd00::/8" or a bare address (a /32 or /128). IPv4-mapped CIDRs become IPv4 CIDRs. */
export function parseCidr(text: string): Cidr | undefined {
  const slash = text.indexOf('/');
  if (slash < 0) {
    const ip = parseIpLiteral(text);
    if (!ip) return undefined;
    return { address: ip.address, prefix: ip.address.kind() === 'ipv4' ? 32 : 128 };
  }
  const ip = parseIpLiteral(text.slice(0, slash));
  const prefixText = text.slice(slash + 1);
  if (!ip || !/^\d{1,3}$/.test(prefixText)) return undefined;
  let prefix = Number(prefixText);
  // "::ffff:10.0.0.0/104" is 10.0.0.0/8 once the mapped address became IPv4 in parseIpLiteral.
  if (ip.address.kind() === 'ipv4' && text.includes(':')) prefix -= 96;
  const max = ip.address.kind() === 'ipv4' ? 32 : 128;
  if (prefix < 0 || prefix > max) return undefined;
  return { address: ip.address, prefix };
}

function ipv4Number(address: ipaddr.IPv4): number {
  const [a = 0, b = 0, c = 0, d = 0] = address.octets;
  return ((a << 24) | (b << 16) | (c << 8) | d) >>> 0;
}

function ipv6Hex(address: ipaddr.IPv6): string {
  return address.parts.map((part) => part.toString(16).padStart(4, '0')).join('');
}

/** An IPv4 address (as a number) with all but its first `prefix` bits cleared. */
function v4Key(address: number, prefix: number): number {
  const mask = prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0;
  return (address & mask) >>> 0;
}

/** The first `prefix` bits of an IPv6 address (32 hex digits), as hex, the last digit masked. */
function v6Key(hex: string, prefix: number): string {
  const whole = prefix >> 2;
  const rest = prefix & 3;
  let key = hex.slice(0, whole);
  if (rest > 0) {
    const nibble = parseInt(hex[whole] ?? '0', 16) & (0xf << (4 - rest)) & 0xf;
    key += nibble.toString(16);
  }
  return key;
}

function insert<K, V>(tables: Map<number, Map<K, V[]>>, prefix: number, key: K, value: V): void {
  let table = tables.get(prefix);
  if (!table) tables.set(prefix, (table = new Map()));
  const list = table.get(key);
  if (list) list.push(value);
  else table.set(key, [value]);
}

/**
 * Values indexed by CIDR, one table per prefix length in use. A lookup masks the address once per such
 * length, so it costs O(prefix lengths in use), not O(entries). IPv4 keys are numbers: a lookup builds no
 * string.
 */
export class CidrTable<T> {
  private readonly v4 = new Map<number, Map<number, T[]>>();
  private readonly v6 = new Map<number, Map<string, T[]>>();

  add(cidr: Cidr, value: T): void {
    if (cidr.address.kind() === 'ipv4') insert(this.v4, cidr.prefix, v4Key(ipv4Number(cidr.address as ipaddr.IPv4), cidr.prefix), value);
    else insert(this.v6, cidr.prefix, v6Key(ipv6Hex(cidr.address as ipaddr.IPv6), cidr.prefix), value);
  }

  /** Calls `visit` with every value whose CIDR contains `address`. */
  lookup(address: IpAddress, visit: (value: T) => void): void {
    if (address.kind() === 'ipv4') {
      if (this.v4.size === 0) return;
      const number = ipv4Number(address as ipaddr.IPv4);
      for (const [prefix, table] of this.v4) {
        const found = table.get(v4Key(number, prefix));
        if (found) for (const value of found) visit(value);
      }
      return;
    }
    if (this.v6.size === 0) return;
    const hex = ipv6Hex(address as ipaddr.IPv6);
    for (const [prefix, table] of this.v6) {
      const found = table.get(v6Key(hex, prefix));
      if (found) for (const value of found) visit(value);
    }
  }
}

export function cidrContains(cidr: Cidr, address: IpAddress): boolean {
  if (cidr.address.kind() !== address.kind()) return false;
  return address.match(cidr.address as never, cidr.prefix);
}
