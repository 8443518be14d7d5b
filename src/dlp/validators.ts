/**
 * Second-stage checks a candidate must pass after its pattern matched: checksums where a format has one,
 * entropy for free-form values, and structure for JWTs. Each returns a `Verdict`; none allocates per byte.
 */
import { crc32 } from 'node:zlib';

/** 0: not a secret after all. 1: the shape is right but a check failed (likely a fake). 2: confirmed. */
export type Verdict = 0 | 1 | 2;
export const REJECT: Verdict = 0;
export const WEAK: Verdict = 1;
export const CONFIRMED: Verdict = 2;

const BASE62 = '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz';

/** `value` as six base62 digits, left-padded with "0" (the checksum suffix of GitHub and npm tokens). */
export function base62Checksum(value: number): string {
  let out = '';
  let rest = value >>> 0;
  while (rest > 0) {
    out = BASE62[rest % 62] + out;
    rest = Math.floor(rest / 62);
  }
  return out.padStart(6, '0');
}

/**
 * GitHub (ghp_, gho_, ghu_, ghs_, ghr_) and npm (npm_) tokens end in six base62 characters holding the
 * CRC32 of the 30 random characters before them.
 */
export function prefixedCrc32Token(token: string): Verdict {
  const underscore = token.indexOf('_');
  const body = token.slice(underscore + 1);
  if (body.length !== 36) return WEAK;
  const expected = base62Checksum(crc32(body.slice(0, 30)));
  return body.endsWith(expected) ? CONFIRMED : WEAK;
}

const counts = new Int32Array(128);

/** Shannon entropy in bits per character, over the ASCII characters of `text[start, end)`. */
export function shannonEntropy(text: string, start = 0, end = text.length): number {
  const length = end - start;
  if (length <= 0) return 0;
  counts.fill(0);
  for (let i = start; i < end; i++) counts[text.charCodeAt(i) & 127]!++;
  let entropy = 0;
  for (let c = 0; c < 128; c++) {
    const n = counts[c]!;
    if (n === 0) continue;
    const p = n / length;
    entropy -= p * Math.log2(p);
  }
  return entropy;
}

/** Luhn checksum over the digits of `text` (other characters are skipped). */
export function luhnValid(text: string): boolean {
  let sum = 0;
  let double = false;
  let digits = 0;
  for (let i = text.length - 1; i >= 0; i--) {
    const d = text.charCodeAt(i) - 48;
    if (d < 0 || d > 9) continue;
    digits++;
    let v = d;
    if (double) {
      v *= 2;
      if (v > 9) v -= 9;
    }
    sum += v;
    double = !double;
  }
  return digits > 0 && sum % 10 === 0;
}

const REPEATED_DIGIT = /^(\d)\1+$/;

/** Payment card numbers: Luhn plus a known issuer prefix and the length that issuer uses. */
export function cardNumber(text: string): Verdict {
  if (!cardGrouping(text)) return REJECT;
  let digits = '';
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c >= 48 && c <= 57) digits += text[i];
  }
  const n = digits.length;
  const two = Number(digits.slice(0, 2));
  const four = Number(digits.slice(0, 4));
  const issuer =
    (digits[0] === '4' && (n === 13 || n === 16 || n === 19)) || // Visa
    (((two >= 51 && two <= 55) || (four >= 2221 && four <= 2720)) && n === 16) || // Mastercard
    ((two === 34 || two === 37) && n === 15) || // American Express
    ((four === 6011 || two === 65) && n >= 16 && n <= 19) || // Discover
    (four >= 3528 && four <= 3589 && n >= 16 && n <= 19); // JCB
  if (!issuer) return REJECT;
  // A run of one repeated digit passes Luhn for some lengths and is never a real card.
  if (REPEATED_DIGIT.test(digits)) return REJECT;
  return luhnValid(digits) ? CONFIRMED : REJECT;
}

/**
 * Whether separated digits are grouped as cards print them: fours with a shorter last group (4-4-4-4,
 * 4-4-4-4-3, 4-4-4-1), or 4-6-5 and 4-6-4 (American Express, Diners). Digits with no separator pass. An
 * 8-4-4 run is the start of a UUID whose first groups happen to be digits, never a card.
 */
function cardGrouping(text: string): boolean {
  const groups = text.split(/[ -]/);
  if (groups.length === 1) return true;
  const lengths = groups.map((group) => group.length);
  const layout = lengths.join('-');
  if (layout === '4-6-5' || layout === '4-6-4') return true;
  const last = lengths.at(-1) as number;
  return lengths.slice(0, -1).every((length) => length === 4) && last >= 1 && last <= 4;
}

/** A JWT's first segment must decode to a JSON object naming an algorithm. */
export function jwtShape(token: string): Verdict {
  const dot = token.indexOf('.');
  try {
    const header = JSON.parse(Buffer.from(token.slice(0, dot), 'base64url').toString('utf8')) as unknown;
    return typeof header === 'object' && header !== null && typeof (header as { alg?: unknown }).alg === 'string' ? CONFIRMED : REJECT;
  } catch {
    return REJECT;
  }
}

// Values that are obviously not secrets: references to where the secret comes from, template holes,
// and the stock placeholders people write in examples.
const REFERENCE = /^(?:\$|%\(|\{\{|<|\[|process\.env|os\.environ|env\.|getenv|self\.|this\.)|[()]|:\/\/|^urn:|^[\d.]+$|^(?:\.{0,2}\/|~\/)[\w./-]*$|^[A-Za-z_$][\w$]*(?:\??\.[A-Za-z_$][\w$]*)+$/;
/** Identifiers and word constants (`pemEncodedPrivateKey`, `reset_password`, `API_TOKEN_HEADER`), not values. */
const IDENTIFIER = /^(?:[A-Z]?[a-z]+(?:[A-Z][a-z]*)+(?:\$\d*)?|[A-Za-z]+(?:[_-][A-Za-z]+)+|[A-Za-z_$]+)$/;
const STOCK = /^(?:x+|\*+|\.+|-+|changeme|change_me|example|placeholder|redacted|password|passwd|secret|token|your[_-].*|my[_-]?(?:password|secret|token).*|null|none|nil|true|false|undefined|required|optional|string|test|dummy|fake|sample|todo|tbd|pass|pw|foo|bar|baz|qux|guest|user|username|(?:password|passwd|secret|pass|test|admin|changeme|example)[_-]?\d*|(.)\1*)$/i;

/** A free-form value (after `password=`) that is neither a reference nor a stock placeholder. */
export function plausibleValue(value: string, minEntropy: number): Verdict {
  if (REFERENCE.test(value) || STOCK.test(value) || IDENTIFIER.test(value)) return REJECT;
  return shannonEntropy(value) >= minEntropy ? CONFIRMED : REJECT;
}

/**
 * Secrets published in documentation and test suites (AWS's EXAMPLE keys, jwt.io's sample token, the card
 * networks' test numbers). Still reported, at low severity: they are in the wild and grant nothing.
 */
const DOCUMENTATION_EXAMPLES = new Set([
  '4111111111111111', '4242424242424242', '4012888888881881', '4222222222222', '4007000000027', '4000056655665556',
  '5555555555554444', '5105105105105100', '5200828282828210', '2223003122003222', '378282246310005', '371449635398431',
  '6011111111111117', '6011000990139424', '3530111333300000', '3566002020360505',
  'eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2MjM5MDIyfQ.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c',
]);

export function isDocumentationExample(secret: string): boolean {
  if (secret.includes('EXAMPLE')) return true;
  return DOCUMENTATION_EXAMPLES.has(secret.length <= 19 ? secret.replace(/[ -]/g, '') : secret);
}
