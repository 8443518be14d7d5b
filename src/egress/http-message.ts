/**
 * Request-target and header checks for HTTP requests the proxy can see (plain HTTP in absolute form, and
 * requests inside an inspected tunnel in origin form). Node's parser (llhttp, strict mode) already refuses
 * malformed request lines, bare LF, duplicate or conflicting Content-Length and Transfer-Encoding with
 * Content-Length; this file refuses what it lets through that a proxy must not forward.
 */
import type { IncomingMessage } from 'node:http';
import { Refusal } from './refusal.js';
import { parseAuthority, printable, type Target } from './target.js';

export interface HttpTarget {
  target: Target;
  scheme: 'http' | 'https';
  /** Normalised path (dot segments resolved, unreserved escapes decoded), without the query. */
  path: string;
  /**
   * Other ways a server may read the path, when it has any (see `otherReadings`). The request is decided
   * under every reading (see destination.ts, `decideNetwork`).
   */
  otherPaths?: string[];
  /** What is sent upstream: the normalised path plus the original query. */
  pathAndQuery: string;
}

/** Hop-by-hop headers (RFC 9110 §7.6.1) plus the proxy's own credentials: never forwarded. */
const HOP_BY_HOP = new Set([
  'connection',
  'proxy-connection',
  'keep-alive',
  'proxy-authorization',
  'proxy-authenticate',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
]);

/** Parses `http://host[:port]/path?query` (absolute form, RFC 9112 §3.2.2) strictly. */
export function parseAbsoluteForm(url: string): HttpTarget | Refusal {
  const match = /^([A-Za-z][A-Za-z0-9+.-]*):\/\/([^/?#]*)([^#]*)$/.exec(url);
  if (!match) {
    if (url.startsWith('/')) {
      return new Refusal(400, 'bad-request', 'this is a proxy: send an absolute URI such as http://example.com/ (or use CONNECT for HTTPS)');
    }
    return new Refusal(400, 'bad-request', `"${printable(url)}" is not an absolute http:// URI`);
  }
  const [, schemeText = '', authority = '', rest = ''] = match;
  const scheme = schemeText.toLowerCase();
  if (scheme !== 'http') {
    return new Refusal(400, 'bad-request', `${scheme}:// requests are not forwarded in the clear; use CONNECT for HTTPS`);
  }
  const target = parseAuthority(authority, 80);
  if (target instanceof Refusal) return target;
  return withPath(target, 'http', rest === '' ? '/' : rest);
}

/** Combines a known target (an inspected tunnel's) with an origin-form request target `/path?query`. */
export function parseOriginForm(target: Target, scheme: 'http' | 'https', url: string): HttpTarget | Refusal {
  if (!url.startsWith('/')) {
    return new Refusal(400, 'bad-request', `"${printable(url)}" is not an origin-form request target (it must start with "/")`);
  }
  return withPath(target, scheme, url);
}

function withPath(target: Target, scheme: 'http' | 'https', pathAndQuery: string): HttpTarget | Refusal {
  if (!pathAndQuery.startsWith('/') && !pathAndQuery.startsWith('?')) {
    return new Refusal(400, 'bad-request', 'the request path must start with "/"');
  }
  const question = pathAndQuery.indexOf('?');
  const rawPath = question < 0 ? pathAndQuery : pathAndQuery.slice(0, question);
  const query = question < 0 ? '' : pathAndQuery.slice(question);
  const path = normalisePath(rawPath === '' ? '/' : rawPath);
  if (path instanceof Refusal) return path;
  if (!path.includes('%2')) return { target, scheme, path, pathAndQuery: path + query };
  const otherPaths = otherReadings(path);
  if (otherPaths instanceof Refusal) return otherPaths;
  return { target, scheme, path, ...(otherPaths.length > 0 ? { otherPaths } : {}), pathAndQuery: path + query };
}

/** More than this many layers of `%25` is no path anyone means. */
const MAX_ENCODING_LAYERS = 4;

/**
 * The readings of a normalised path that servers differ on: an encoded slash (`%2F`) as a separator, and a
 * double-encoded escape (`%252e`) decoded once more, as a server that decodes twice does (`%252e%252e` is
 * `..` there). Each combination is normalised like the path itself; one that is not a valid path refuses
 * the request.
 */
function otherReadings(path: string): string[] | Refusal {
  const decodedLayers: string[] = [];
  let layer = path;
  while (/%25[0-9A-F]{2}/i.test(layer)) {
    if (decodedLayers.length === MAX_ENCODING_LAYERS) return new Refusal(400, 'bad-request', `the request path is percent-encoded more than ${MAX_ENCODING_LAYERS} times over`);
    const next = normalisePath(layer.replace(/%25([0-9A-Fa-f]{2})/g, '%$1'));
    if (next instanceof Refusal) return new Refusal(400, 'bad-request', `the request path decoded once more is not a valid path: ${next.message}`);
    decodedLayers.push((layer = next));
  }
  const readings = new Set<string>(decodedLayers);
  for (const reading of [path, ...decodedLayers]) {
    if (!reading.includes('%2F')) continue;
    const slashed = normalisePath(reading.replaceAll('%2F', '/'));
    if (slashed instanceof Refusal) return slashed;
    readings.add(slashed);
  }
  readings.delete(path);
  return [...readings];
}

const ALREADY_NORMAL = /^\/[\x21-\x7e]*$/;
const NEEDS_WORK = /[%\\]|\/\.\.?(?:\/|$)/;

/**
 * One spelling per path, so the path policy decides on is the path the server gets: unreserved
 * percent-escapes decoded (`/%61dmin` is `/admin`, `%2e%2e` is `..`), then dot segments resolved; escapes a
 * server might read as structure (`%5C`, `%00`) and backslashes are refused. An encoded slash stays, spelt
 * `%2F`: APIs use it inside one segment (GitLab's `projects/group%2Fproject`), and servers differ on whether
 * it is a separator, so such a request is decided both ways (`otherReadings`), as is one with an encoded "%".
 */
export function normalisePath(path: string): string | Refusal {
  // Most paths are already in that one spelling: printable ASCII from "/", no escape, no backslash, no dot
  // segment. Everything below would hand them back unchanged.
  if (ALREADY_NORMAL.test(path) && !NEEDS_WORK.test(path)) return path;
  if (/[^\x21-\x7e]/.test(path)) return new Refusal(400, 'bad-request', 'the request path contains spaces, control or non-ASCII characters');
  if (path.includes('\\')) return new Refusal(400, 'bad-request', 'the request path contains a backslash');
  if (/%(?![0-9A-Fa-f]{2})/.test(path)) return new Refusal(400, 'bad-request', 'the request path has a malformed percent-escape');
  if (/%(5c|00)/i.test(path)) return new Refusal(400, 'bad-request', 'the request path contains an encoded "\\" or NUL');
  const decoded = path.replace(/%([0-9A-Fa-f]{2})/g, (escape, hex: string) => {
    const code = parseInt(hex, 16);
    const char = String.fromCharCode(code);
    return /[A-Za-z0-9._~-]/.test(char) ? char : escape.toUpperCase();
  });
  const output: string[] = [];
  const segments = decoded.split('/').slice(1);
  segments.forEach((segment, index) => {
    const last = index === segments.length - 1;
    if (segment === '.') {
      if (last) output.push('');
    } else if (segment === '..') {
      output.pop();
      if (last) output.push('');
    } else {
      output.push(segment);
    }
  });
  return '/' + output.join('/');
}

/**
 * The Host header must be present once and name the same host and port as the request target: a request
 * that says one destination to the proxy and another to the server (fronting) is refused.
 */
export function checkHostHeader(request: IncomingMessage, target: Target, scheme: 'http' | 'https'): Refusal | undefined {
  const hosts = headerValues(request.rawHeaders, 'host');
  if (hosts.length > 1) return new Refusal(400, 'host-mismatch', 'the request has more than one Host header');
  const hostValue = hosts[0];
  if (hostValue === undefined) {
    // HTTP/1.0 without Host: the absolute URI alone names the destination.
    return request.httpVersion === '1.0' ? undefined : new Refusal(400, 'host-mismatch', 'the request has no Host header');
  }
  const named = parseAuthority(hostValue, scheme === 'https' ? 443 : 80);
  if (named instanceof Refusal) return new Refusal(400, 'host-mismatch', `the Host header is not valid: ${named.message}`);
  if (named.host !== target.host || named.port !== target.port) {
    return new Refusal(
      403,
      'host-mismatch',
      `the Host header names ${printable(hostValue)} but the request goes to ${target.host}:${target.port}`,
    );
  }
  return undefined;
}

/**
 * Every value of one header, in order, however its name is spelt: what `headersDistinct` holds for that
 * name, read from the raw list without building the whole map (this runs for every request).
 */
export function headerValues(rawHeaders: string[], lowerName: string): string[] {
  const values: string[] = [];
  for (let i = 0; i + 1 < rawHeaders.length; i += 2) {
    const name = rawHeaders[i] as string;
    if (name.length === lowerName.length && name.toLowerCase() === lowerName) values.push(rawHeaders[i + 1] as string);
  }
  return values;
}

/** Transfer-Encoding other than exactly "chunked" is refused: intermediaries disagree on what it means. */
export function checkFraming(request: IncomingMessage): Refusal | undefined {
  const encodings = headerValues(request.rawHeaders, 'transfer-encoding');
  if (encodings.length === 0) return undefined;
  if (encodings.length !== 1 || encodings[0]?.trim().toLowerCase() !== 'chunked') {
    return new Refusal(400, 'smuggling', 'the request has a Transfer-Encoding other than "chunked"');
  }
  return undefined;
}

/**
 * Headers a `Connection` header may not declare hop-by-hop: dropping them would change how the upstream
 * frames the body or which host it serves (`Connection: content-length` is a smuggling trick).
 */
const NEVER_HOP_BY_HOP = new Set(['content-length', 'host']);

/**
 * The request's headers as a flat [name, value, ...] list for forwarding: hop-by-hop headers removed. This
 * runs twice per request (the request's headers and the response's), so the usual case, a Connection header
 * naming only hop-by-hop headers anyway ("keep-alive", "close"), builds no list of extra names.
 */
export function forwardableHeaders(rawHeaders: string[], extraHopByHop: string | string[] | undefined, alsoDrop: readonly string[] = []): string[] {
  // Names the Connection header lists are hop-by-hop too.
  let named: string[] | undefined;
  const listed = extraHopByHop === undefined ? [] : typeof extraHopByHop === 'string' ? [extraHopByHop] : extraHopByHop;
  for (const value of listed) {
    for (const name of value.split(',')) {
      const lower = name.trim().toLowerCase();
      if (!HOP_BY_HOP.has(lower) && !NEVER_HOP_BY_HOP.has(lower)) (named ??= []).push(lower);
    }
  }
  const out: string[] = [];
  for (let i = 0; i + 1 < rawHeaders.length; i += 2) {
    const name = (rawHeaders[i] as string).toLowerCase();
    if (HOP_BY_HOP.has(name) || alsoDrop.includes(name) || named?.includes(name)) continue;
    out.push(rawHeaders[i] as string, rawHeaders[i + 1] as string);
  }
  return out;
}

/** Whether the request's framing announces a body (a Transfer-Encoding, or a Content-Length other than 0). */
export function hasBody(request: IncomingMessage): boolean {
  return request.headers['transfer-encoding'] !== undefined || (request.headers['content-length'] !== undefined && request.headers['content-length'] !== '0');
}
