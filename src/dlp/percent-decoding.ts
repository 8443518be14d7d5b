/**
 * Percent-decoded readings of request text, for the secret scan: `ghp%5F…` in a query, `%67%68%70…` in a
 * body or `%255F` (encoded twice) is `ghp_…` to a server that decodes it, so it is scanned that way too.
 *
 * A reading removes every layer of escapes (to a fixed point, at most MAX_LAYERS deep), as a server that
 * decodes once, twice or more would read it. Malformed escapes (`%zz`, `%4`, a trailing `%`) stay as they
 * are, byte for byte, as lenient decoders leave them; nothing here throws on any input.
 *
 * Each reading can say which bytes of the encoded text spell a span of it (`spanOf`), so a secret found
 * decoded is redacted where it sits, and everything around it reaches the server byte-exact.
 */

/** Layers of encoding read through; text still changing after this many is refused (see `percentReadings`). */
export const MAX_LAYERS = 8;

export interface PercentReading {
  /** The text with every layer of escapes decoded. */
  bytes: Buffer;
  /** The span `[start, end)` of the encoded text that spells `bytes[start, end)`: whole escapes, never half of one. */
  spanOf(start: number, end: number): { start: number; end: number };
}

/**
 * How servers may read `text`: as a URL decoder does (`%XX` only, like `decodeURIComponent`) and, when
 * `formFrom` is inside the text, as a form decoder does from that offset on (`+` is a space too, like
 * `URLSearchParams`): a query starts form rules at its "?", a form body at 0. Both are kept because a
 * secret holding a "+" reads right only the first way, and a PEM key sent as `BEGIN+RSA+PRIVATE` only the
 * second. A reading is left out when it would equal the text (or the other reading), so text without "%"
 * (or "+" where form rules apply) costs one byte search. `too-deep` when decoding still changes the text
 * after MAX_LAYERS layers: no client encodes that often, and stopping there would let a secret through.
 */
export function percentReadings(text: Buffer, formFrom = Infinity): PercentReading[] | 'too-deep' {
  const readings: PercentReading[] = [];
  if (text.includes(PERCENT)) {
    const url = reading(text, Infinity);
    if (url === 'too-deep') return url;
    if (url) readings.push(url);
  }
  if (formFrom < text.length && (text.includes(PERCENT, formFrom) || text.includes(PLUS, formFrom))) {
    const form = reading(text, formFrom);
    if (form === 'too-deep') return form;
    if (form && !readings.some((other) => other.bytes.equals(form.bytes))) readings.push(form);
  }
  return readings;
}

/**
 * Whether percent-decoding could read anything else in `text` (bytes, or latin1 text): a "%", or a "+" where
 * form rules apply. Without one, percentReadings has no reading to give (its own two tests above are these).
 */
export function hasEscapes(text: Buffer | string, formFrom = Infinity): boolean {
  return text.includes('%') || (formFrom < text.length && text.includes('+', formFrom));
}

const PERCENT = 0x25;
const PLUS = 0x2b;
const SPACE = 0x20;

/** Hex digit values by byte; -1 for anything else. */
const HEX = new Int8Array(256).fill(-1);
for (let digit = 0; digit < 16; digit++) {
  HEX['0123456789abcdef'.charCodeAt(digit)] = digit;
  HEX['0123456789ABCDEF'.charCodeAt(digit)] = digit;
}

/** Where each byte of a decoded text came from in the original: `[from[i], to[i])`. */
interface Origins {
  from: Int32Array;
  to: Int32Array;
}

interface Layer {
  bytes: Buffer;
  /** Where form rules start in `bytes` (Infinity: nowhere). */
  formFrom: number;
  origins?: Origins;
}

/** Every layer of `text` decoded; undefined when there was nothing to decode. */
function reading(text: Buffer, formFrom: number): PercentReading | undefined | 'too-deep' {
  const decoded = decodeLayers(text, formFrom, false);
  if (decoded === 'too-deep' || decoded === undefined) return decoded;
  let origins: Origins | undefined;
  return {
    bytes: decoded.bytes,
    spanOf(start, end) {
      // Only asked for when a secret was found decoded (rare), so the byte map is built then, not before.
      origins ??= (decodeLayers(text, formFrom, true) as Layer).origins as Origins;
      const last = Math.max(start, end - 1);
      return { start: origins.from[start] as number, end: origins.to[last] as number };
    },
  };
}

function decodeLayers(text: Buffer, formFrom: number, track: boolean): Layer | undefined | 'too-deep' {
  let current: Layer = { bytes: text, formFrom };
  if (track) {
    const from = new Int32Array(text.length);
    const to = new Int32Array(text.length);
    for (let i = 0; i < text.length; i++) {
      from[i] = i;
      to[i] = i + 1;
    }
    current.origins = { from, to };
  }
  for (let layer = 0; ; layer++) {
    const next = decodeLayer(current);
    if (next === undefined) return layer === 0 ? undefined : current;
    if (layer === MAX_LAYERS) return 'too-deep';
    current = next;
  }
}

/**
 * One layer of decoding; undefined when the text has nothing to decode. Runs between escapes are copied
 * whole: a large binary body holds a "%" every few hundred bytes, and a loop over every byte would cost
 * as much as the scan.
 */
function decodeLayer(input: Layer): Layer | undefined {
  const { bytes, formFrom, origins } = input;
  const out = Buffer.allocUnsafe(bytes.length);
  const from = origins ? new Int32Array(bytes.length) : undefined;
  const to = origins ? new Int32Array(bytes.length) : undefined;
  let length = 0;
  let changed = false;
  // Form rules start at the byte that came from `formFrom`: it is a "?" or offset 0, never inside an escape.
  let nextFormFrom = Infinity;
  let percentAt = bytes.indexOf(PERCENT);
  let plusAt = formFrom < bytes.length ? bytes.indexOf(PLUS, formFrom) : -1;
  for (let i = 0; i < bytes.length; ) {
    if (nextFormFrom === Infinity && i >= formFrom) nextFormFrom = length;
    if (percentAt >= 0 && percentAt < i) percentAt = bytes.indexOf(PERCENT, i);
    if (plusAt >= 0 && plusAt < i) plusAt = bytes.indexOf(PLUS, i);
    // Copy up to the next "%", "+" in form text, or the start of form text, whichever comes first.
    const stop = Math.min(percentAt < 0 ? bytes.length : percentAt, plusAt < 0 ? bytes.length : plusAt, i < formFrom ? formFrom : Infinity);
    if (stop > i) {
      bytes.copy(out, length, i, stop);
      if (from && to && origins) {
        from.set(origins.from.subarray(i, stop), length);
        to.set(origins.to.subarray(i, stop), length);
      }
      length += stop - i;
      i = stop;
      continue;
    }
    const byte = bytes[i] as number;
    let width = 1;
    if (byte === PERCENT && i + 2 < bytes.length && HEX[bytes[i + 1] as number]! >= 0 && HEX[bytes[i + 2] as number]! >= 0) {
      out[length] = (HEX[bytes[i + 1] as number]! << 4) | HEX[bytes[i + 2] as number]!;
      width = 3;
      changed = true;
    } else if (byte === PLUS && i >= formFrom) {
      out[length] = SPACE;
      changed = true;
    } else {
      out[length] = byte;
    }
    if (from && to && origins) {
      from[length] = origins.from[i] as number;
      to[length] = origins.to[i + width - 1] as number;
    }
    length++;
    i += width;
  }
  if (!changed) return undefined;
  return {
    bytes: out.subarray(0, length),
    formFrom: nextFormFrom,
    ...(from && to ? { origins: { from: from.subarray(0, length), to: to.subarray(0, length) } } : {}),
  };
}
