/**
 * A path the steps below hand back unchanged: "/" alone, or "/"-separated segments that are neither empty nor
 * begin with "." and hold no "%", ";", "?" or "#", without a trailing slash.
 */
const ALREADY_NORMAL = /^(?:\/|(?:\/[^/%;?#.][^/%;?#]*)+)$/;

/**
 * HTTP request paths are normalised before method and path rules see them, so that `/admin` cannot be
 * reached as `/%61dmin`, `/x/../admin`, `//admin`, `/admin/` or `/public/..;/admin`: the query is dropped,
 * percent-encoded unreserved characters are decoded, `;` parameters are cut from each segment (servlet
 * containers resolve `..;` as `..`), dot segments are resolved (encoded ones too), repeated slashes collapse
 * and a trailing slash is dropped. An encoded slash (`%2F`) stays encoded: it is part of a segment, not a
 * separator. Matching stays case-sensitive, as RFC 3986 paths are.
 */
export function normaliseHttpPath(raw: string): string | undefined {
  // Most paths are already normal (as the egress proxy hands them over): nothing below would change them.
  if (ALREADY_NORMAL.test(raw)) return raw;
  let path = raw;
  const query = path.search(/[?#]/);
  if (query >= 0) path = path.slice(0, query);
  if (!path.startsWith('/')) return undefined;
  let decoded = '';
  for (let i = 0; i < path.length; i += 1) {
    const ch = path[i]!;
    if (ch !== '%') {
      decoded += ch;
      continue;
    }
    const hex = path.slice(i + 1, i + 3);
    if (!/^[0-9A-Fa-f]{2}$/.test(hex)) return undefined;
    const code = parseInt(hex, 16);
    const c = String.fromCharCode(code);
    decoded += /[A-Za-z0-9\-._~]/.test(c) ? c : `%${hex.toUpperCase()}`;
    i += 2;
  }
  const out: string[] = [];
  for (const raw of decoded.split('/')) {
    const parameters = raw.indexOf(';');
    const segment = parameters >= 0 ? raw.slice(0, parameters) : raw;
    if (segment === '' || segment === '.') continue;
    if (segment === '..') out.pop();
    else out.push(segment);
  }
  return '/' + out.join('/');
}
