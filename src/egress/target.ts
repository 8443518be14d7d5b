/**
 * Parsing what a client asks to reach: the authority of a CONNECT, the host and port of an absolute URI, a
 * SOCKS5 address. Strict on purpose. Anything a resolver or an OS might read two ways is refused here, before
 * policy sees it: IPv4 in odd encodings (`0x7f.1`, `2130706433`, `0177.0.0.1`, `127.1`), IPv6 zone ids,
 * non-ASCII names, userinfo, and ports with signs or leading junk.
 */
import { isIPv4, isIPv6, SocketAddress } from 'node:net';
import { rememberedByText } from '../util/memo.js';
import { Refusal } from './refusal.js';

export interface Target {
  /** Lower-case ASCII host name without a trailing dot, or a canonical IP address (IPv6 without brackets). */
  host: string;
  port: number;
  /** Set when the host is an IP literal. */
  ip?: { address: string; family: 4 | 6 };
}

const LABEL = /^[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?$/;
/** A last label WHATWG URL parsing would read as a number makes the whole name an IPv4 address. */
const NUMERIC_LABEL = /^(?:0x[0-9a-f]*|[0-9]+)$/;

export function parsePort(text: string): number | Refusal {
  if (!/^[0-9]{1,5}$/.test(text)) return new Refusal(400, 'bad-port', `"${text}" is not a port number`);
  const port = Number(text);
  if (port < 1 || port > 65535) return new Refusal(400, 'bad-port', `port ${text} is out of range`);
  return port;
}

/** Parses `host:port` or `[v6]:port` (the CONNECT request target, RFC 9110 authority-form). */
export function parseAuthority(authority: string, defaultPort?: number): Target | Refusal {
  let parse = authorities.get(defaultPort);
  if (!parse) authorities.set(defaultPort, (parse = rememberedByText((text) => parseAuthorityText(text, defaultPort), { entries: 4096, textLength: 262 }, freezeTarget)));
  return parse(authority);
}

/**
 * Authorities already judged, by their text, one store per default port (none, 80 or 443): the same few
 * arrive over and over, in the request target and again in the Host header (see util/memo.ts).
 */
const authorities = new Map<number | undefined, (text: string) => Target | Refusal>();

function freezeTarget(target: Target | Refusal): void {
  if (!(target instanceof Refusal) && target.ip) Object.freeze(target.ip);
  Object.freeze(target);
}

function parseAuthorityText(authority: string, defaultPort: number | undefined): Target | Refusal {
  if (authority.includes('@')) return new Refusal(400, 'bad-target', 'the target must not carry user information');
  let hostText: string;
  let portText: string | undefined;
  if (authority.startsWith('[')) {
    const close = authority.indexOf(']');
    if (close < 0) return new Refusal(400, 'bad-target', `"${authority}" has an unclosed "["`);
    hostText = authority.slice(0, close + 1);
    const rest = authority.slice(close + 1);
    if (rest !== '') {
      if (!rest.startsWith(':')) return new Refusal(400, 'bad-target', `"${authority}" has text after the IPv6 address`);
      portText = rest.slice(1);
    }
  } else {
    const colon = authority.lastIndexOf(':');
    if (colon >= 0 && authority.indexOf(':') !== colon) {
      return new Refusal(400, 'bad-target', `"${authority}" looks like an IPv6 address without brackets`);
    }
    hostText = colon >= 0 ? authority.slice(0, colon) : authority;
    portText = colon >= 0 ? authority.slice(colon + 1) : undefined;
  }
  let port: number | Refusal;
  if (portText === undefined) {
    if (defaultPort === undefined) return new Refusal(400, 'bad-target', `"${authority}" has no port`);
    port = defaultPort;
  } else {
    port = parsePort(portText);
  }
  if (port instanceof Refusal) return port;
  return parseHost(hostText, port);
}

/** Validates a host (a name, a dotted-quad IPv4 address or a bracketed IPv6 address) and pairs it with a port. */
export function parseHost(hostText: string, port: number): Target | Refusal {
  if (hostText.startsWith('[')) {
    if (!hostText.endsWith(']')) return new Refusal(400, 'bad-target', `"${hostText}" has an unclosed "["`);
    return parseIpv6(hostText.slice(1, -1), port);
  }
  if (hostText.includes(':')) return parseIpv6(hostText, port);
  if (hostText === '') return new Refusal(400, 'bad-target', 'the target host is empty');
  if (isIPv4(hostText)) return { host: hostText, port, ip: { address: hostText, family: 4 } };
  // Not ASCII letters, digits, dots, "-" or "_": Unicode, percent-encoding, spaces, control characters.
  if (!/^[A-Za-z0-9._-]+$/.test(hostText)) {
    return new Refusal(400, 'bad-target', `"${printable(hostText)}" is not a valid host name (use the ASCII/punycode form)`);
  }
  const name = (hostText.endsWith('.') ? hostText.slice(0, -1) : hostText).toLowerCase();
  if (name.length === 0 || name.length > 253) return new Refusal(400, 'bad-target', `"${hostText}" is not a valid host name`);
  const labels = name.split('.');
  const last = labels[labels.length - 1] ?? '';
  // Every way the C library or a URL parser would turn this into an IPv4 address: decimal integers, octal
  // and hex parts, fewer than four parts. One canonical spelling only, so policy and dialer agree.
  if (NUMERIC_LABEL.test(last)) {
    return new Refusal(400, 'non-canonical-ip', `"${hostText}" is an IP address in a non-standard form; write it as four decimal parts like 93.184.216.34`);
  }
  if (!labels.every((label) => LABEL.test(label))) return new Refusal(400, 'bad-target', `"${hostText}" is not a valid host name`);
  return { host: name, port };
}

function parseIpv6(text: string, port: number): Target | Refusal {
  if (text.includes('%')) {
    return new Refusal(400, 'ipv6-zone-id', `"${printable(text)}" names a network interface (an IPv6 zone id); zone ids are not accepted`);
  }
  if (!isIPv6(text)) return new Refusal(400, 'bad-target', `"${printable(text)}" is not a valid IPv6 address`);
  // The OS's own spelling of the address: what is checked is exactly what is dialled.
  const address = new SocketAddress({ address: text, family: 'ipv6' }).address;
  return { host: address, port, ip: { address, family: 6 } };
}

/** Quotes untrusted text for a message: control and non-ASCII characters escaped, length bounded. */
export function printable(text: string): string {
  const cut = text.length > 80 ? text.slice(0, 80) + '…' : text;
  return cut.replace(/[^\x20-\x7e]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

/** `host:port`, with brackets for IPv6: the resource string of audit records. */
export function formatTarget(target: Pick<Target, 'host' | 'port'>): string {
  return target.host.includes(':') ? `[${target.host}]:${target.port}` : `${target.host}:${target.port}`;
}
