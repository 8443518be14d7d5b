/**
 * Known secrets: values Gatehouse holds (vault entries, the process environment) that are a finding wherever
 * they appear, verbatim or base64-, hex- or URL-encoded. Each encoding becomes one keyword for the automaton
 * (its first characters) plus the full text that must follow.
 */
import { shannonEntropy } from './validators.js';

export interface KnownSecret {
  /** Shown in findings instead of the value: the vault name or `env:NAME`. */
  name: string;
  value: string;
}

export type KnownEncoding = 'verbatim' | 'base64' | 'hex' | 'url';

export interface KnownForm {
  secret: number;
  encoding: KnownEncoding;
  /** The exact text to look for. */
  text: string;
}

/** Shorter values match too much ordinary text to be worth reporting. */
export const MIN_KNOWN_SECRET_LENGTH = 8;
/** Shortest encoded text worth a keyword (partial base64 alignments of short secrets can be short). */
const MIN_FORM_LENGTH = 8;

/**
 * The base64 characters that depend only on the secret's bytes, for each of the three positions the secret
 * can take relative to base64's 3-byte groups (so it is found inside a longer encoded blob too).
 */
function base64Cores(bytes: Buffer): string[] {
  const cores: string[] = [];
  for (let offset = 0; offset < 3; offset++) {
    const padded = Buffer.concat([Buffer.alloc(offset), bytes]);
    const encoded = padded.toString('base64');
    const firstBit = offset * 8;
    const endBit = (offset + bytes.length) * 8;
    const from = Math.ceil(firstBit / 6);
    const to = Math.floor(endBit / 6);
    cores.push(encoded.slice(from, to));
  }
  return cores;
}

export function knownForms(secrets: readonly KnownSecret[]): KnownForm[] {
  const forms: KnownForm[] = [];
  const seen = new Set<string>();
  const add = (secret: number, encoding: KnownEncoding, text: string): void => {
    if (text.length < MIN_FORM_LENGTH || seen.has(text)) return;
    seen.add(text);
    forms.push({ secret, encoding, text });
  };
  secrets.forEach((known, index) => {
    if (known.value.length < MIN_KNOWN_SECRET_LENGTH) return;
    const bytes = Buffer.from(known.value, 'utf8');
    add(index, 'verbatim', known.value);
    // Bytes are scanned as latin1: a value with non-ASCII characters appears there as its UTF-8 bytes.
    add(index, 'verbatim', bytes.toString('latin1'));
    const url = encodeURIComponent(known.value);
    add(index, 'url', url);
    // Other encoders write lower-case escapes, or '+' for a space (HTML forms).
    add(index, 'url', url.replace(/%[0-9A-F]{2}/g, (escape) => escape.toLowerCase()));
    add(index, 'url', url.replaceAll('%20', '+'));
    const hex = bytes.toString('hex');
    add(index, 'hex', hex);
    add(index, 'hex', hex.toUpperCase());
    for (const core of base64Cores(bytes)) {
      add(index, 'base64', core);
      add(index, 'base64', core.replaceAll('+', '-').replaceAll('/', '_'));
    }
  });
  return forms;
}

// Names that say the value is a credential. Values of other variables (PATH, HOME, LANG) are left alone.
const SECRET_NAME = /KEY|TOKEN|SECRET|PASSW|PASSPHRASE|CREDENTIAL|AUTH|PRIVATE|SESSION|COOKIE|DSN|DATABASE_URL|CONN(ECTION)?_?STR/i;
const NOT_A_VALUE = /^(?:true|false|yes|no|on|off|null|none|\d+)$/i;

/**
 * Known secrets from an environment: variables whose name says they hold a credential and whose value is
 * long enough to match safely. File paths are skipped (GOOGLE_APPLICATION_CREDENTIALS names a file).
 */
export function secretsFromEnvironment(env: NodeJS.ProcessEnv = process.env): KnownSecret[] {
  const out: KnownSecret[] = [];
  for (const [name, value] of Object.entries(env)) {
    if (value === undefined || value.length < MIN_KNOWN_SECRET_LENGTH || value.length > 8192) continue;
    if (!SECRET_NAME.test(name) || NOT_A_VALUE.test(value)) continue;
    if (value.startsWith('/') || value.startsWith('~/') || /^[A-Za-z]:\\/.test(value)) continue;
    // Socket and bus addresses (DBUS_SESSION_BUS_ADDRESS, SESSION_MANAGER) and low-entropy words are not secrets.
    if (/^(?:unix|local|tcp|abstract):|\/run\/|\/tmp\//.test(value) || shannonEntropy(value) < 3) continue;
    out.push({ name: `env:${name}`, value });
  }
  return out;
}
