/**
 * Invisible characters (zero-width space, non-joiner and joiner, word joiner, byte-order mark, soft hyphen)
 * can hide a token from a scanner while leaving it usable to whoever strips them. These helpers find them,
 * as code points in strings or as their UTF-8 bytes in the latin1 view of a Buffer.
 */

/**
 * `text` without zero-width characters and soft hyphens (as code points in strings, or as their UTF-8 bytes
 * in the latin1 view of a Buffer), with `map[i]` the original index of character `i`. Undefined if none.
 */
export function stripInvisible(text: string, from: number, to: number): { text: string; map: Int32Array } | undefined {
  const map = new Int32Array(to - from);
  // Parts joined at the end: `join` gives a flat string, which the scan loop reads fastest.
  const parts: string[] = [];
  let kept = 0;
  let runStart = from;
  for (let i = from; i < to; ) {
    const c = text.charCodeAt(i);
    const width = c < 128 ? 0 : invisibleWidth(text, i);
    if (width === 0) {
      map[kept++] = i++;
      continue;
    }
    parts.push(text.slice(runStart, i));
    i += width;
    runStart = i;
  }
  if (parts.length === 0) return undefined;
  parts.push(text.slice(runStart, to));
  return { text: parts.join(''), map: map.subarray(0, kept) };
}

export function invisibleWidth(text: string, i: number): number {
  const c = text.charCodeAt(i);
  if (c === 0x200b || c === 0x200c || c === 0x200d || c === 0x2060 || c === 0xfeff || c === 0xad) return 1;
  const c1 = text.charCodeAt(i + 1);
  if (c === 0xc2 && c1 === 0xad) return 2;
  const c2 = text.charCodeAt(i + 2);
  if (c === 0xe2 && c1 === 0x80 && c2 >= 0x8b && c2 <= 0x8d) return 3;
  if (c === 0xe2 && c1 === 0x81 && c2 === 0xa0) return 3;
  if (c === 0xef && c1 === 0xbb && c2 === 0xbf) return 3;
  return 0;
}

