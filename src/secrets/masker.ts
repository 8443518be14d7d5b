/**
 * Masking: real values on their way back to an agent replaced by what the agent may read instead (its
 * placeholder, or a redaction for a credential it never held). One masker serves one response: whole pieces
 * of text (a header) with `mask`, and a body as a stream with `push` and `end`.
 *
 * A stream holds back only what could still become a real value: the longest tail of what it has seen that
 * is the start of one. So a value cut in two between pieces is caught, memory stays bounded by the longest
 * value, and a stream whose pieces end elsewhere (an event stream) is not delayed at all.
 */

/** One real value, as bytes, and what is written in its place. */
export interface MaskPair {
  real: Buffer;
  stand: Buffer;
  /** The secret's name (for the record), never its value. */
  secret: string;
}

const EMPTY = Buffer.alloc(0);

export class Masker {
  /** The pairs found so far, in headers and body. */
  readonly found = new Set<MaskPair>();
  /** Whether masking never changes a length, so a server's Content-Length still holds. */
  readonly keepsLength: boolean;
  private readonly pairs: MaskPair[];
  private held: Buffer = EMPTY;

  /** Earlier pairs win when two start at the same byte and are as long (a placeholder before a redaction). */
  constructor(pairs: readonly MaskPair[]) {
    this.pairs = pairs.filter((pair) => pair.real.length > 0);
    this.keepsLength = this.pairs.every((pair) => pair.real.length === pair.stand.length);
  }

  /** Every real value in `bytes` replaced; the same Buffer when there was none. */
  mask(bytes: Buffer): Buffer {
    return this.replace(bytes, false).out;
  }

  /** The next piece of a stream: what may go out now (possibly empty). */
  push(chunk: Buffer): Buffer {
    const input = this.held.length > 0 ? Buffer.concat([this.held, chunk]) : chunk;
    const { out, rest } = this.replace(input, true);
    this.held = rest;
    return out;
  }

  /** The end of the stream: whatever was held back, which can no longer become a real value. */
  end(): Buffer {
    const rest = this.held;
    this.held = EMPTY;
    return rest;
  }

  /**
   * Replaces real values left to right (at one start, the longest). With `streaming`, the tail after the last
   * replacement that is the start of some real value is kept back as `rest` instead of written.
   */
  private replace(input: Buffer, streaming: boolean): { out: Buffer; rest: Buffer } {
    const next = this.pairs.map((pair) => input.indexOf(pair.real));
    const parts: Buffer[] = [];
    let at = 0;
    for (;;) {
      let best = -1;
      for (let i = 0; i < this.pairs.length; i++) {
        if ((next[i] as number) >= 0 && (next[i] as number) < at) next[i] = input.indexOf((this.pairs[i] as MaskPair).real, at);
        const start = next[i] as number;
        if (start < 0) continue;
        const current = best < 0 ? -1 : (next[best] as number);
        if (best < 0 || start < current || (start === current && (this.pairs[i] as MaskPair).real.length > (this.pairs[best] as MaskPair).real.length)) best = i;
      }
      if (best < 0) break;
      const pair = this.pairs[best] as MaskPair;
      const start = next[best] as number;
      parts.push(input.subarray(at, start), pair.stand);
      at = start + pair.real.length;
      this.found.add(pair);
    }
    const keep = streaming ? this.startOfValue(input, at) : 0;
    if (parts.length === 0 && keep === 0) return { out: input, rest: EMPTY };
    parts.push(input.subarray(at, input.length - keep));
    return { out: Buffer.concat(parts), rest: keep > 0 ? Buffer.from(input.subarray(input.length - keep)) : EMPTY };
  }

  /** The length of the longest tail of `input` (from `from` on) that some real value begins with. */
  private startOfValue(input: Buffer, from: number): number {
    let longest = 0;
    for (const { real } of this.pairs) {
      for (let length = Math.min(real.length - 1, input.length - from); length > longest; length--) {
        if (input.compare(real, 0, length, input.length - length) === 0) {
          longest = length;
          break;
        }
      }
    }
    return longest;
  }
}
