/**
 * Host names as the policy sees them, and host patterns:
 *   `api.github.com`   exactly that host;
 *   `*.example.com`    one label below example.com (not example.com itself);
 *   `**.example.com`   example.com and any depth below it;
 *   `*` or `**`        any host.
 * Names are normalised the way clients do before they connect (WHATWG URL host parsing): IDN to punycode
 * (which also folds case and full-width dots), a trailing dot dropped, and IPv4 in any encoding recognised.
 */
import { domainToASCII } from 'node:url';
import { parseIpLiteral, type NormalisedIp } from './ip.js';
import { rememberedByText } from '../util/memo.js';

export type NormalisedHost = { kind: 'name'; name: string } | { kind: 'ip'; ip: NormalisedIp } | { kind: 'invalid'; reason: string };

const LABEL = /^(?!-)[a-z0-9_-]{1,63}$/;

/** A real host name is at most 253 characters. */
export const normaliseHost: (input: string) => NormalisedHost = rememberedByText(normaliseHostText, { entries: 4096, textLength: 256 });

function normaliseHostText(input: string): NormalisedHost {
  const raw = input.trim();
  if (raw === '') return { kind: 'invalid', reason: 'the host is empty' };
  if (raw.startsWith('[') || raw.includes(':')) {
    const ip = parseIpLiteral(raw);
    return ip ? { kind: 'ip', ip } : { kind: 'invalid', reason: `"${raw}" is not a valid IPv6 address` };
  }
  const ascii = domainToASCII(raw);
  if (ascii === '') return { kind: 'invalid', reason: `"${raw}" is not a valid host name` };
  // WHATWG: a host whose last label is numeric is an IPv4 address (or invalid), whatever the encoding.
  const ip = parseIpLiteral(ascii);
  if (ip) return { kind: 'ip', ip };
  const name = ascii.endsWith('.') ? ascii.slice(0, -1) : ascii;
  if (name.length > 253) return { kind: 'invalid', reason: 'the host name is longer than 253 characters' };
  const labels = name.split('.');
  if (!labels.every((label) => LABEL.test(label))) return { kind: 'invalid', reason: `"${raw}" is not a valid host name` };
  const last = labels[labels.length - 1] ?? '';
  if (/^(0x[0-9a-f]*|\d+)$/.test(last)) return { kind: 'invalid', reason: `"${raw}" looks like an IP address but is not a valid one` };
  return { kind: 'name', name };
}

export type HostPattern =
  | { kind: 'exact'; name: string; text: string }
  | { kind: 'one'; suffix: string; text: string }
  | { kind: 'any'; suffix: string; text: string }
  | { kind: 'all'; text: string };

/** Parses a host pattern; returns an error sentence for anything we will not guess at. */
export function parseHostPattern(text: string): HostPattern | string {
  const trimmed = text.trim();
  if (trimmed === '*' || trimmed === '**') return { kind: 'all', text: trimmed };
  let kind: 'exact' | 'one' | 'any' = 'exact';
  let rest = trimmed;
  if (rest.startsWith('**.')) {
    kind = 'any';
    rest = rest.slice(3);
  } else if (rest.startsWith('*.')) {
    kind = 'one';
    rest = rest.slice(2);
  }
  if (rest.includes('*')) return `"${text}" has a wildcard that is not a whole leading label; use "*.example.com" or "**.example.com"`;
  const host = normaliseHost(rest);
  if (host.kind === 'invalid') return `"${text}": ${host.reason}`;
  if (host.kind === 'ip') return `"${text}" puts a wildcard on an IP address; use a CIDR such as 10.0.0.0/8`;
  if (kind === 'exact') return { kind, name: host.name, text: trimmed };
  return { kind, suffix: host.name, text: trimmed };
}

/** `a.b.example.com` → `b.example.com`; undefined for a single label. */
export function parentDomain(name: string): string | undefined {
  const dot = name.indexOf('.');
  return dot < 0 ? undefined : name.slice(dot + 1);
}

export function matchHostPattern(pattern: HostPattern, name: string): boolean {
  switch (pattern.kind) {
    case 'all':
      return true;
    case 'exact':
      return name === pattern.name;
    case 'one':
      return parentDomain(name) === pattern.suffix;
    case 'any':
      return name === pattern.suffix || name.endsWith('.' + pattern.suffix);
  }
}

/**
 * Values indexed by host pattern. A lookup costs one map probe for exact names, one for the parent domain,
 * and one per label for `**.` suffixes: independent of how many patterns there are.
 */
export class HostIndex<T> {
  private readonly exact = new Map<string, T[]>();
  private readonly oneLabel = new Map<string, T[]>();
  private readonly anyDepth = new Map<string, T[]>();
  private readonly everything: T[] = [];

  add(pattern: HostPattern, value: T): void {
    switch (pattern.kind) {
      case 'all':
        this.everything.push(value);
        return;
      case 'exact':
        push(this.exact, pattern.name, value);
        return;
      case 'one':
        push(this.oneLabel, pattern.suffix, value);
        return;
      case 'any':
        push(this.anyDepth, pattern.suffix, value);
        return;
    }
  }

  /** Calls `visit` with every value whose pattern matches the normalised host name. */
  lookup(name: string, visit: (value: T) => void): void {
    visitAll(this.exact.get(name), visit);
    const parent = parentDomain(name);
    if (parent !== undefined) visitAll(this.oneLabel.get(parent), visit);
    if (this.anyDepth.size > 0) {
      let suffix: string | undefined = name;
      while (suffix !== undefined) {
        visitAll(this.anyDepth.get(suffix), visit);
        suffix = parentDomain(suffix);
      }
    }
    visitAll(this.everything, visit);
  }

  /** Values whose pattern is `*`: they match IP literals too. */
  wildcards(visit: (value: T) => void): void {
    visitAll(this.everything, visit);
  }
}

function push<T>(map: Map<string, T[]>, key: string, value: T): void {
  const list = map.get(key);
  if (list) list.push(value);
  else map.set(key, [value]);
}

function visitAll<T>(list: T[] | undefined, visit: (value: T) => void): void {
  if (list) for (const value of list) visit(value);
}
