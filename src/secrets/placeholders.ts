/**
 * Placeholders: what an agent holds instead of a secret. Each is unique per session, worthless outside
 * Gatehouse, and shaped like the real value (the same known prefix, the same length, the same character
 * classes and separators, a valid checksum where the format has one), so client-side format checks pass.
 *
 * Every placeholder carries the registry's tag (40 random bits written in the alphabet of the segment it sits
 * in) at a known offset. Finding "any live placeholder of any session" in a body is therefore one
 * `indexOf` per alphabet (at most a handful), then a map probe per tag hit; no per-session work.
 */
import { randomBytes, randomInt } from 'node:crypto';
import { crc32 } from 'node:zlib';
import { RULES } from '../dlp/rules.js';
import { base62Checksum } from '../dlp/validators.js';
import type { CredentialGrant } from '../policy/engine.js';
import { matchHostPattern, normaliseHost, parseHostPattern, type HostPattern } from '../policy/hosts.js';
import { Masker, type MaskPair } from './masker.js';

export interface Placeholder {
  /** The text the agent sees (in its environment or in a tool's configuration). Safe to log. */
  readonly value: string;
  readonly session: string;
  /** The secret's name (vault or provider), never its value. */
  readonly secret: string;
  /** The credentials rule that granted it. */
  readonly ruleId: string;
  /** Where the real value may go. */
  readonly hosts: readonly string[];
  readonly servers: readonly string[];
  readonly header?: { name: string; template: string };
  readonly env?: string;
  readonly issuedAt: string;
}

export interface PlaceholderHit {
  placeholder: Placeholder;
  /** Span in the searched text: UTF-16 units for strings, bytes for Buffers. */
  start: number;
  end: number;
}

/** Where content is going: a host (egress proxy) or an MCP server (gateway). */
export type Destination = { host: string } | { server: string };

const TAG_BITS = 40;
const NON_ASCII = /[^\x00-\x7f]/;
const SEGMENT = /[A-Za-z0-9]/;
const SEGMENT_MERGED = /[A-Za-z0-9_-]/;
const BASIC_AUTH = /^(\s*[Bb]asic\s+)([A-Za-z0-9+/]+={0,2})\s*$/;
/** Random characters after the tag that, with it, key a placeholder in the index. */
const KEY_EXTRA = 8;

const LOWER = 'abcdefghijklmnopqrstuvwxyz';
const UPPER = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ';
const DIGITS = '0123456789';

/** Parts of a format that must stay as they are for the value to still look like one (besides the prefix). */
const PEM_ARMOUR = [/^-----BEGIN [^\n-]+-----/, /-----END [^\n-]+-----\s*$/];
const KEEP: Record<string, RegExp[]> = {
  'openai-api-key': [/T3BlbkFJ/],
  'anthropic-api-key': [/AA$/],
  'anthropic-admin-key': [/AA$/],
  'mailchimp-api-key': [/-us[0-9]{1,2}$/],
  // A JWT keeps its header and claims (clients read `exp`); only the signature is replaced.
  jwt: [/^[^.]+\.[^.]+\./],
  'sentry-org-token': [/^sntrys_eyJ/],
  'azure-ad-client-secret': [/[0-9]Q~/],
  'terraform-cloud-token': [/\.atlasv1\./],
  'slack-webhook-url': [/services\/T/, /\/B(?=[A-Z0-9]{8,12}\/)/],
  'private-key': PEM_ARMOUR,
  'openssh-private-key': PEM_ARMOUR,
  'pgp-private-key': PEM_ARMOUR,
};
const CHECKSUMMED = new Set(['github-pat', 'github-oauth-token', 'github-user-token', 'github-app-token', 'github-refresh-token', 'npm-token']);

interface Format {
  ruleId: string | undefined;
  /** Kept as is: the format's constant prefix (and anything before the token, for a token inside a URL). */
  prefix: string;
  /** Where the token starts in the value (its format is checked from there). */
  from: number;
  /** More character ranges kept as is, `[start, end)`. */
  keep: [number, number][];
}

interface AnchoredRule {
  id: string;
  /** Keywords that begin a match (empty for rules whose keyword sits inside the token). */
  leading: readonly string[];
  inner: readonly string[];
  regex: RegExp;
}
let anchoredRules: AnchoredRule[] | undefined;

function anchored(): AnchoredRule[] {
  anchoredRules ??= RULES.filter((rule) => rule.keywords.length > 0).map((rule) => ({
    id: rule.id,
    leading: (rule.before ?? 0) === 0 ? rule.keywords : [],
    inner: (rule.before ?? 0) === 0 ? [] : rule.keywords,
    regex: new RegExp(`^(?:${rule.pattern})$`, rule.flags ?? ''),
  }));
  return anchoredRules;
}

/** The provider format of a real value, if it is one: the rule and what to keep. */
function formatOf(real: string): Format {
  for (const rule of anchored()) {
    // Keep the longest keyword the value starts with (pypi-AgEIcHlwaS5vcmc, not just pypi-).
    const keyword = rule.leading.filter((k) => real.startsWith(k)).sort((a, b) => b.length - a.length)[0];
    if (keyword !== undefined && rule.regex.test(real)) return { ruleId: rule.id, prefix: keyword, from: 0, keep: [] };
    if (rule.inner.some((k) => real.includes(k)) && rule.regex.test(real)) return { ruleId: rule.id, prefix: '', from: 0, keep: [] };
  }
  // A token at the end of a URL (a Slack or Discord webhook): everything up to its keyword stays.
  for (const rule of anchored()) {
    for (const keyword of rule.leading) {
      const at = real.lastIndexOf(keyword);
      if (at > 0 && rule.regex.test(real.slice(at))) return { ruleId: rule.id, prefix: real.slice(0, at + keyword.length), from: at, keep: [] };
    }
  }
  // A connection string (`Key=value;Key=value`): only the values of secret-named keys are replaced.
  if (CONNECTION_STRING.test(real)) {
    const keep: [number, number][] = [];
    let at = 0;
    for (const part of real.split(';')) {
      const equals = part.indexOf('=');
      const secretValue = equals > 0 && SECRET_NAME.test(part.slice(0, equals));
      keep.push([at, secretValue ? at + equals + 1 : at + part.length + 1]);
      at += part.length + 1;
    }
    return { ruleId: undefined, prefix: '', from: 0, keep };
  }
  // A URL: scheme, user name and host stay (clients parse them); the password and the path are replaced.
  const url = URL_PARTS.exec(real);
  if (url) {
    const [, scheme, user, password, host] = url as unknown as [string, string, string | undefined, string | undefined, string];
    const keep: [number, number][] = [];
    let at = scheme.length;
    if (user !== undefined) {
      keep.push([at, at + user.length + (password !== undefined ? 1 : 0)]);
      at += user.length + (password !== undefined ? 1 + password.length : 0);
      keep.push([at, at + 1]); // "@"
      at += 1;
    }
    keep.push([at, at + host.length]);
    return { ruleId: undefined, prefix: scheme, from: 0, keep };
  }
  // Unknown format: keep leading letter groups that end in a separator ("sk-", "acme_live_").
  const leading = /^(?:[A-Za-z]{2,10}[-_])+/.exec(real)?.[0] ?? '';
  return { ruleId: undefined, prefix: leading.length <= 16 ? leading : '', from: 0, keep: [] };
}

const CONNECTION_STRING = /^[A-Za-z][\w .-]*=[^;]*(?:;[A-Za-z][\w .-]*=[^;]*)+;?$/;
const SECRET_NAME = /key|secret|password|pwd|token|signature|sig$/i;

/** scheme://, then optional user[:password]@, then host[:port]. */
const URL_PARTS = /^([a-z][a-z0-9+.-]*:\/\/)(?:([^:@/?#\s]*)(?::([^@/?#\s]*))?@)?([^/?#\s]*)/i;

/** Whether `value` still has the format `ruleId` describes (from `from` on). */
function hasFormat(value: string, ruleId: string | undefined, from: number): boolean {
  return ruleId === undefined || anchored().some((rule) => rule.id === ruleId && rule.regex.test(value.slice(from)));
}

/** Formats whose characters are narrower than "letters of this case and digits". */
const ALPHABETS: Record<string, string> = {
  'aws-access-key-id': 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567',
  'age-secret-key': 'QPZRY9X8GF2TVDW0S3JN54KHCE6MUA7L',
};

function alphabetOf(segment: string): string {
  if (/^[0-9a-f]+$/.test(segment) && /[a-f]/.test(segment)) return DIGITS + 'abcdef';
  if (/^[0-9A-F]+$/.test(segment) && /[A-F]/.test(segment)) return DIGITS + 'ABCDEF';
  let alphabet = '';
  if (/[a-z]/.test(segment)) alphabet += LOWER;
  if (/[A-Z]/.test(segment)) alphabet += UPPER;
  if (/[0-9]/.test(segment)) alphabet += DIGITS;
  // A segment of separators alone (`-` between non-ASCII characters, when merging): letters and digits.
  return alphabet === '' ? LOWER + UPPER + DIGITS : alphabet;
}

function randomFrom(alphabet: string, length: number): string {
  let out = '';
  for (let i = 0; i < length; i++) out += alphabet[randomInt(alphabet.length)];
  return out;
}

/** `value` (TAG_BITS bits) written in `alphabet`, fixed width. */
function encodeTag(value: bigint, alphabet: string): string {
  const base = BigInt(alphabet.length);
  const width = Math.ceil(TAG_BITS / Math.log2(alphabet.length));
  let out = '';
  let rest = value;
  for (let i = 0; i < width; i++) {
    out = alphabet[Number(rest % base)] + out;
    rest /= base;
  }
  return out;
}

/** How `find` and `swap` read their input. */
export interface PlaceholderSearch {
  /** The input is a request target (path and query): see `find` and `swap`. */
  url?: boolean;
  /**
   * The input is a form body (application/x-www-form-urlencoded): placeholders are found as in a URL, and a
   * real value goes in percent-encoded where the client percent-encoded its placeholder, as is where it did
   * not (a body labelled a form is often JSON, as curl's `-d` labels everything).
   */
  form?: boolean;
}

/** A value for a URL: its UTF-8 bytes percent-encoded, except the characters RFC 3986 leaves unreserved. */
function percentEncode(text: string): string {
  let out = '';
  for (const byte of Buffer.from(text, 'utf8')) {
    out += UNRESERVED.test(String.fromCharCode(byte)) ? String.fromCharCode(byte) : `%${byte.toString(16).toUpperCase().padStart(2, '0')}`;
  }
  return out;
}

const UNRESERVED = /^[A-Za-z0-9._~-]$/;

/** The text a hit spans, as it arrived (bytes read as latin1, as `find` reads a URL). */
function textAt(input: string | Uint8Array, hit: PlaceholderHit): string {
  return typeof input === 'string' ? input.slice(hit.start, hit.end) : Buffer.from(input.buffer, input.byteOffset, input.length).toString('latin1', hit.start, hit.end);
}

/**
 * Where `value` (an ASCII placeholder whose tag starts at `tagOffset`) sits in URL text whose tag was found
 * at `at`, each character as is or percent-encoded: matched outwards from the tag.
 */
function spanInUrl(text: string, at: number, value: string, tagOffset: number): { start: number; end: number } | undefined {
  let start = at;
  for (let i = tagOffset - 1; i >= 0; i--) {
    const width = urlWidth(text, start - 1, value.charCodeAt(i), -1);
    if (width === 0) return undefined;
    start -= width;
  }
  let end = at;
  for (let i = tagOffset; i < value.length; i++) {
    const width = urlWidth(text, end, value.charCodeAt(i), 1);
    if (width === 0) return undefined;
    end += width;
  }
  return { start, end };
}

/**
 * How many characters of `text` spell the character `code` at `at`, reading forwards (1) or backwards
 * (-1, `at` being the last character): `%XX`, itself, or `+` for a space; 0 when none does. An escape is
 * tried first, as a server reads it: `%25` is a "%", not a "%" followed by "25".
 */
function urlWidth(text: string, at: number, code: number, direction: 1 | -1): number {
  if (at < 0 || at >= text.length) return 0;
  const escape = direction === 1 ? at : at - 2;
  const hex = text.slice(escape + 1, escape + 3);
  if (escape >= 0 && text[escape] === '%' && /^[0-9A-Fa-f]{2}$/.test(hex) && parseInt(hex, 16) === code) return 3;
  return text.charCodeAt(at) === code || (code === 0x20 && text[at] === '+') ? 1 : 0;
}

/**
 * What a response masker looks for when the proxy put a real value in without lending a placeholder (a
 * grant's header): the value, as is and percent-encoded, each replaced by `[REDACTED:<secret>]`.
 */
export function redactionPairs(secret: string, real: string): MaskPair[] {
  // The name is printed as ASCII: the redaction may land in a header, where a line break would not do.
  const stand = Buffer.from(`[REDACTED:${secret.replace(/[^\x20-\x7e]/g, '?')}]`, 'latin1');
  const forms = new Set([real, percentEncode(real)]);
  return [...forms].map((form) => ({ real: Buffer.from(form, 'utf8'), stand, secret }));
}

/** What `mask` looks for and puts back: the real value, and the percent-encoded form `swap` writes into URLs. */
function maskPairs(entry: Entry): [string, string][] {
  const encoded = percentEncode(entry.real);
  return encoded === entry.real ? [[entry.real, entry.placeholder.value]] : [[entry.real, entry.placeholder.value], [encoded, percentEncode(entry.placeholder.value)]];
}

interface Entry {
  placeholder: Placeholder;
  real: string;
  tagOffset: number;
  /** This entry's key in `byKey`. */
  key: string;
  hostPatterns: HostPattern[];
}

export class PlaceholderRegistry {
  private readonly tagValue: bigint;
  /** Tag text per alphabet in use. */
  private readonly tags = new Map<string, string>();
  /** The same tags as bytes, for searching bodies without decoding them. */
  private readonly tagBytes = new Map<string, Buffer>();
  /** Key (tag + KEY_EXTRA characters) → entry. */
  private readonly byKey = new Map<string, Entry>();
  private readonly byValue = new Map<string, Entry>();
  private readonly bySession = new Map<string, Set<Entry>>();
  /** Counts issues and revocations: a holder of a session's placeholders knows by it when to look again. */
  changes = 0;

  constructor() {
    this.tagValue = BigInt('0x' + randomBytes(TAG_BITS / 8).toString('hex'));
  }

  /** Number of live placeholders. */
  get size(): number {
    return this.byValue.size;
  }

  /**
   * Issues a placeholder for `grant` in `session`, shaped like `real`. The real value stays in the registry;
   * the returned object is safe to log.
   */
  issue(session: string, grant: CredentialGrant, real: string): Placeholder {
    // The same grant and value in the same session keeps its placeholder (an agent restarted in its session,
    // or a second upstream started for it, sees the value it already has).
    for (const entry of this.bySession.get(session) ?? []) {
      if (entry.placeholder.ruleId === grant.ruleId && entry.placeholder.secret === grant.secret && entry.real === real) return entry.placeholder;
    }
    const hostPatterns = grant.hosts.map((text) => {
      const pattern = parseHostPattern(text);
      if (typeof pattern === 'string') throw new Error(`credentials rule "${grant.ruleId}": ${pattern}`);
      return pattern;
    });
    // Shapes from most to least faithful: separators kept; then "-" and "_" inside the token rewritten too
    // (so a short, dashed token has room for the tag); then, if the format still cannot be matched, the
    // closest shape without the guarantee: a placeholder is always issued.
    for (let attempt = 0; attempt < 24; attempt++) {
      const plan = attempt < 8 ? 'keep' : attempt < 16 ? 'merge' : 'extend';
      const shaped = this.shape(real, plan);
      if (!shaped || (plan !== 'extend' && !hasFormat(shaped.value, shaped.ruleId, shaped.from))) continue;
      const key = shaped.value.slice(shaped.tagOffset, shaped.tagOffset + shaped.tagLength + KEY_EXTRA);
      if (this.byKey.has(key) || this.byValue.has(shaped.value) || shaped.value === real) continue;
      const placeholder: Placeholder = Object.freeze({
        value: shaped.value,
        session,
        secret: grant.secret,
        ruleId: grant.ruleId,
        hosts: [...grant.hosts],
        servers: [...grant.servers],
        ...(grant.header ? { header: grant.header } : {}),
        ...(grant.env ? { env: grant.env } : {}),
        issuedAt: new Date().toISOString(),
      });
      const entry: Entry = { placeholder, real, tagOffset: shaped.tagOffset, key, hostPatterns };
      this.byKey.set(key, entry);
      this.byValue.set(shaped.value, entry);
      let set = this.bySession.get(session);
      if (!set) this.bySession.set(session, (set = new Set()));
      set.add(entry);
      this.changes += 1;
      return placeholder;
    }
    throw new Error('could not issue a unique placeholder');
  }

  /** The live placeholder with exactly this value. */
  get(value: string): Placeholder | undefined {
    return this.byValue.get(value)?.placeholder;
  }

  /** Whether `input` contains any live placeholder of any session. */
  containsAny(input: string | Uint8Array): boolean {
    return this.find(input, true).length > 0;
  }

  /**
   * Every live placeholder in `input`, of any session. With `url` (a request target), a placeholder is also
   * found as a client percent-encoded it: its characters that are not safe in a URL written as `%XX` in either
   * case, or a space as `+`. The tag and the key after it are letters and digits, which no encoding changes.
   */
  find(input: string | Uint8Array, firstOnly = false, search: PlaceholderSearch = {}): PlaceholderHit[] {
    const url = search.url === true || search.form === true;
    if (this.byValue.size === 0) return [];
    if (typeof input !== 'string') {
      const bytes = Buffer.from(input.buffer, input.byteOffset, input.length);
      // A URL is short: read as latin1 text, its character offsets are its byte offsets.
      return url ? this.find(bytes.toString('latin1'), firstOnly, { url }) : this.findInBytes(bytes, firstOnly);
    }
    const hits: PlaceholderHit[] = [];
    for (const tag of this.tags.values()) {
      for (let at = input.indexOf(tag); at >= 0; at = input.indexOf(tag, at + 1)) {
        const entry = this.byKey.get(input.slice(at, at + tag.length + KEY_EXTRA));
        if (!entry) continue;
        const { value } = entry.placeholder;
        const start = at - entry.tagOffset;
        const span = url ? spanInUrl(input, at, value, entry.tagOffset) : start >= 0 && input.startsWith(value, start) ? { start, end: start + value.length } : undefined;
        if (span) {
          hits.push({ placeholder: entry.placeholder, ...span });
          if (firstOnly) return hits;
        }
      }
    }
    return hits.sort((a, b) => a.start - b.start);
  }

  /** `find` over bytes without decoding the body: placeholders are ASCII, so their bytes are their text. */
  private findInBytes(bytes: Buffer, firstOnly: boolean): PlaceholderHit[] {
    const hits: PlaceholderHit[] = [];
    for (const [tag, needle] of this.tagBytes) {
      for (let at = bytes.indexOf(needle); at >= 0; at = bytes.indexOf(needle, at + 1)) {
        const entry = this.byKey.get(bytes.toString('latin1', at, at + tag.length + KEY_EXTRA));
        const start = entry ? at - entry.tagOffset : -1;
        const value = entry?.placeholder.value;
        if (entry && start >= 0 && start + value!.length <= bytes.length && bytes.toString('latin1', start, start + value!.length) === value) {
          hits.push({ placeholder: entry.placeholder, start, end: start + value!.length });
          if (firstOnly) return hits;
        }
      }
    }
    return hits.sort((a, b) => a.start - b.start);
  }

  /**
   * Leak findings minus those that are live placeholders (which look like real tokens but are worthless):
   * `registry.withoutPlaceholders(scanner.scan(body), body)`. Spans must come from the same input.
   */
  withoutPlaceholders<F extends { start: number; end: number }>(findings: readonly F[], input: string | Uint8Array, search: PlaceholderSearch = {}): F[] {
    if (findings.length === 0 || this.byValue.size === 0) return [...findings];
    const hits = this.find(input, false, search);
    return findings.filter((f) => !hits.some((h) => h.start <= f.start && f.end <= h.end));
  }

  /** Whether the placeholder's grant lets the real value go to `destination`. */
  allowedAt(placeholder: Placeholder, destination: Destination): boolean {
    const entry = this.byValue.get(placeholder.value);
    if (!entry) return false;
    if ('server' in destination) return placeholder.servers.includes(destination.server) || placeholder.servers.includes('*');
    const host = normaliseHost(destination.host);
    if (host.kind === 'name') return entry.hostPatterns.some((pattern) => matchHostPattern(pattern, host.name));
    // An IP literal matches only a grant that names exactly that address.
    return host.kind === 'ip' && entry.hostPatterns.some((pattern) => pattern.kind === 'all' || pattern.text === destination.host);
  }

  /**
   * Puts the real values in, for placeholders of `session` that may go to `destination`. Every other live
   * placeholder found (another session's, or one not allowed here) is left as is and reported in `refused`:
   * the caller should deny, since it is a credential heading to the wrong place. A Buffer comes back as a
   * Buffer (real values written as UTF-8). With `url`, placeholders are found as `find` finds them in a
   * URL, and real values go in percent-encoded, so a `/`, `?`, `#`, `&` or `%` in a secret stays part of it;
   * with `form`, likewise where the client encoded its placeholder (see PlaceholderSearch).
   */
  swap(input: string, session: string, destination: Destination, search?: PlaceholderSearch): { text: string; swapped: Placeholder[]; refused: PlaceholderHit[] };
  swap(input: Uint8Array, session: string, destination: Destination, search?: PlaceholderSearch): { text: Buffer; swapped: Placeholder[]; refused: PlaceholderHit[] };
  swap(input: string | Uint8Array, session: string, destination: Destination, search: PlaceholderSearch = {}): { text: string | Buffer; swapped: Placeholder[]; refused: PlaceholderHit[] } {
    const hits = this.find(input, false, search);
    const swapped: Placeholder[] = [];
    const refused: PlaceholderHit[] = [];
    const parts: (string | Uint8Array)[] = [];
    let at = 0;
    for (const hit of hits) {
      if (hit.start < at) continue;
      if (hit.placeholder.session === session && this.allowedAt(hit.placeholder, destination)) {
        const real = this.byValue.get(hit.placeholder.value)!.real;
        const encode = search.url === true || (search.form === true && textAt(input, hit) !== hit.placeholder.value);
        parts.push(input.slice(at, hit.start), encode ? percentEncode(real) : real);
        at = hit.end;
        swapped.push(hit.placeholder);
      } else {
        refused.push(hit);
      }
    }
    if (swapped.length === 0) return { text: typeof input === 'string' ? input : Buffer.from(input), swapped, refused };
    parts.push(input.slice(at));
    const text = typeof input === 'string' ? parts.join('') : Buffer.concat(parts.map((p) => (typeof p === 'string' ? Buffer.from(p, 'utf8') : p)));
    return { text, swapped, refused };
  }

  /**
   * `swap` for one header value, looking inside `Basic` credentials too: git and package managers send a
   * token as the password of HTTP basic auth, base64-encoded (`Basic base64("x-access-token:ghp_…")`).
   */
  swapHeader(value: string, session: string, destination: Destination): { value: string; swapped: Placeholder[]; refused: PlaceholderHit[] } {
    const basic = BASIC_AUTH.exec(value);
    if (basic) {
      const decoded = Buffer.from(basic[2]!, 'base64').toString('utf8');
      const inner = this.swap(decoded, session, destination);
      if (inner.swapped.length > 0 || inner.refused.length > 0) {
        const encoded = inner.swapped.length > 0 ? Buffer.from(inner.text, 'utf8').toString('base64') : basic[2]!;
        return { value: `${basic[1]}${encoded}`, swapped: inner.swapped, refused: inner.refused };
      }
    }
    const plain = this.swap(value, session, destination);
    return { value: plain.text, swapped: plain.swapped, refused: plain.refused };
  }

  /**
   * The header a grant asks the proxy to set (`Authorization: Bearer {secret}`), with the real value, for
   * the session's placeholder of that grant; undefined unless the destination is allowed.
   */
  headerFor(session: string, ruleId: string, destination: Destination): { name: string; value: string } | undefined {
    for (const entry of this.bySession.get(session) ?? []) {
      const { placeholder } = entry;
      if (placeholder.ruleId !== ruleId || !placeholder.header || !this.allowedAt(placeholder, destination)) continue;
      return { name: placeholder.header.name, value: placeholder.header.template.replaceAll('{secret}', entry.real) };
    }
    return undefined;
  }

  /**
   * Issues a placeholder for each grant of a session (resolving each real value once) and returns them
   * with the environment the sandbox should set: `{ GITHUB_TOKEN: "ghp_…placeholder" }`.
   */
  async issueForSession(
    session: string,
    grants: readonly CredentialGrant[],
    resolveSecret: (name: string) => Promise<string>,
  ): Promise<{ placeholders: Placeholder[]; env: Record<string, string> }> {
    const placeholders: Placeholder[] = [];
    const env: Record<string, string> = {};
    for (const grant of grants) {
      const placeholder = this.issue(session, grant, await resolveSecret(grant.secret));
      placeholders.push(placeholder);
      if (grant.env) env[grant.env] = placeholder.value;
    }
    return { placeholders, env };
  }

  /**
   * The reverse of `swap`, for responses on their way back to the agent: every real value of `session`'s
   * placeholders that appears verbatim is put back as its placeholder. An allowed host that reflects what it
   * was sent (an echo endpoint, an error page quoting the Authorization header) must not hand the agent the
   * secret. A value is also masked in the percent-encoded form `swap` puts into URLs (a server quoting the
   * URL it was asked for). Other encodings are the leak scanner's job (known secrets).
   */
  mask(input: string, session: string): { text: string; masked: Placeholder[] };
  mask(input: Uint8Array, session: string): { text: Buffer; masked: Placeholder[] };
  mask(input: string | Uint8Array, session: string): { text: string | Buffer; masked: Placeholder[] } {
    const own = this.maskPairsOf(session);
    const masker = new Masker(own.map(([pair]) => pair));
    const bytes = typeof input === 'string' ? Buffer.from(input, 'utf8') : Buffer.from(input.buffer, input.byteOffset, input.length);
    const out = masker.mask(bytes);
    const masked = [...new Set(own.filter(([pair]) => masker.found.has(pair)).map(([, placeholder]) => placeholder))];
    if (masked.length === 0) return { text: typeof input === 'string' ? input : Buffer.from(input), masked };
    return { text: typeof input === 'string' ? out.toString('utf8') : out, masked };
  }

  /**
   * A masker for one response to `session` (see `mask`; streams too), with `extra` pairs after the session's
   * own: real values the proxy put into the request without lending a placeholder for them.
   */
  masker(session: string, extra: readonly MaskPair[] = []): Masker {
    return new Masker([...this.maskPairsOf(session).map(([pair]) => pair), ...extra]);
  }

  /** What masking looks for in a response to `session`, each with the placeholder it puts back. */
  private maskPairsOf(session: string): [MaskPair, Placeholder][] {
    return [...(this.bySession.get(session) ?? [])].flatMap((entry) =>
      maskPairs(entry).map(([real, value]): [MaskPair, Placeholder] => [
        { real: Buffer.from(real, 'utf8'), stand: Buffer.from(value, 'latin1'), secret: entry.placeholder.secret },
        entry.placeholder,
      ]),
    );
  }

  /** The real value behind a placeholder, only for its own session and an allowed destination. */
  secretFor(session: string, value: string, destination: Destination): string | undefined {
    const entry = this.byValue.get(value);
    if (!entry || entry.placeholder.session !== session || !this.allowedAt(entry.placeholder, destination)) return undefined;
    return entry.real;
  }

  /** Ends a session: its placeholders stop being live. Returns how many were revoked. */
  revokeSession(session: string): number {
    const entries = this.bySession.get(session);
    if (!entries) return 0;
    for (const entry of entries) {
      this.byValue.delete(entry.placeholder.value);
      this.byKey.delete(entry.key);
    }
    this.bySession.delete(session);
    this.changes += 1;
    return entries.size;
  }

  /** Placeholders of a session (for building its environment). */
  sessionPlaceholders(session: string): Placeholder[] {
    return [...(this.bySession.get(session) ?? [])].map((entry) => entry.placeholder);
  }

  private tagFor(alphabet: string): string {
    let tag = this.tags.get(alphabet);
    if (tag === undefined) {
      tag = encodeTag(this.tagValue, alphabet);
      this.tags.set(alphabet, tag);
      this.tagBytes.set(tag, Buffer.from(tag, 'latin1'));
    }
    return tag;
  }

  /**
   * A random value shaped like `real`, with the tag written into its longest random segment. `keep` leaves
   * every separator in place, `merge` also rewrites "-" and "_", and `extend` lengthens the longest segment
   * when none is long enough for the tag (undefined when the plan cannot place the tag).
   */
  private shape(
    real: string,
    plan: 'keep' | 'merge' | 'extend',
  ): { value: string; tagOffset: number; tagLength: number; ruleId: string | undefined; from: number } | undefined {
    const format = formatOf(real);
    const chars = real.split('');
    const kept = new Uint8Array(chars.length);
    for (let i = 0; i < format.prefix.length; i++) kept[i] = 1;
    for (const [start, end] of format.keep) kept.fill(1, start, end);
    const token = real.slice(format.from);
    for (const keep of (format.ruleId ? KEEP[format.ruleId] : undefined) ?? []) {
      const match = keep.exec(token);
      if (match) kept.fill(1, format.from + match.index, format.from + match.index + match[0].length);
    }
    // A percent-escape stays as it is: a random one could decode to a byte the real value never holds
    // (`%00`), and the placeholder would be refused where the real value is not.
    for (const escape of real.matchAll(/%[0-9A-Fa-f]{2}/g)) kept.fill(1, escape.index, escape.index + 3);
    const checksummed = format.ruleId !== undefined && CHECKSUMMED.has(format.ruleId);
    if (checksummed) kept.fill(1, chars.length - 6);

    // Segments: maximal runs of letters and digits (and, when merging, "-" and "_") not kept; everything
    // else stays in place.
    const inSegment = plan === 'merge' ? SEGMENT_MERGED : SEGMENT;
    const segments: { start: number; end: number }[] = [];
    for (let i = 0; i < chars.length; ) {
      if (kept[i] || !inSegment.test(chars[i]!)) {
        i++;
        continue;
      }
      let j = i;
      while (j < chars.length && !kept[j] && inSegment.test(chars[j]!)) j++;
      segments.push({ start: i, end: j });
      i = j;
    }
    const alphabetFor = (segment: { start: number; end: number }): string =>
      (format.ruleId && ALPHABETS[format.ruleId]) || alphabetOf(real.slice(segment.start, segment.end));
    for (const segment of segments) {
      const alphabet = alphabetFor(segment);
      // Digits stay digits, letters keep their case, hex stays hex, when a segment has a single class.
      for (let i = segment.start; i < segment.end; i++) chars[i] = randomFrom(alphabet, 1);
    }
    const fits = (s: { start: number; end: number }): boolean => {
      const alphabet = alphabetFor(s);
      return alphabet.length >= 10 && s.end - s.start >= encodeTag(0n, alphabet).length + KEY_EXTRA;
    };
    const longest = [...segments].filter((s) => alphabetFor(s).length >= 10).sort((a, b) => b.end - b.start - (a.end - a.start))[0];
    let host = longest && fits(longest) ? longest : undefined;
    const ascii = !NON_ASCII.test(real);
    if (!host && plan === 'extend' && longest && ascii) {
      // Lengthen the longest segment just enough to carry the tag; the rest of the shape stays.
      const alphabet = alphabetFor(longest);
      const missing = encodeTag(0n, alphabet).length + KEY_EXTRA - (longest.end - longest.start);
      chars.splice(longest.end, 0, ...randomFrom(alphabet, missing).split(''));
      host = { start: longest.start, end: longest.end + missing };
    }

    let value: string;
    let tagOffset: number;
    let tagLength: number;
    // Placeholders are ASCII, so they read the same in text and in bytes.
    if (host && ascii) {
      const tag = this.tagFor(alphabetFor(host));
      for (let i = 0; i < tag.length; i++) chars[host.start + i] = tag[i]!;
      value = chars.join('');
      tagOffset = host.start;
      tagLength = tag.length;
    } else if (plan === 'extend') {
      // Nothing to shape (no letters or digits, or not ASCII): a plain alphanumeric value.
      const alphabet = LOWER + UPPER + DIGITS;
      const tag = this.tagFor(alphabet);
      value = format.prefix + tag + randomFrom(alphabet, 16);
      tagOffset = format.prefix.length;
      tagLength = tag.length;
    } else {
      return undefined;
    }
    if (checksummed) {
      const underscore = value.indexOf('_', format.from);
      const body = value.slice(underscore + 1, underscore + 31);
      value = value.slice(0, underscore + 31) + base62Checksum(crc32(body));
    }
    return { value, tagOffset, tagLength, ruleId: format.ruleId, from: format.from };
  }
}
