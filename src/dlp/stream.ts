/**
 * The streaming scanner, for bodies that arrive in chunks (the egress proxy, streamed tool results). It runs
 * the same single pass as `Scanner.check` over what is held plus each new chunk, including tokens hidden by
 * invisible characters (the neighbourhood of one is held back until it has fully arrived). AWS secret keys
 * found only by their distance to a key id are not looked for in streams.
 */
import { applyRedactions, latin1, matchStarts, resolveOverlaps, type Finding } from './findings.js';
import type { Scanner } from './scanner.js';

/**
 * Streams: `push` byte chunks, forward what comes back in `release`, and call `end` at the end. A secret
 * split across chunks is found because the tail that could still be part of a match is held back: at least
 * `scanner.holdBack` bytes, and from the start of any match that is still arriving (never more than that
 * rule's `maxLength`). Offsets are absolute byte offsets in the stream. With `redact`, released bytes have
 * their secrets replaced. Past `maxBytes` the stream reports `tooLarge`, releases nothing more and stops
 * keeping chunks; a caller whose policy allows oversized content forwards `drain()` (the bytes held so far,
 * including the chunk that crossed the limit) and then the remaining chunks itself, unscanned.
 */
export class StreamScanner {
  private held = '';
  /** Absolute offset of `held[0]`. */
  private base = 0;
  private previous = -1;
  private total = 0;
  /** Bytes at the end of `held` that arrived since the last scan. */
  private waiting = 0;
  private readonly reported = new Set<string>();
  tooLarge = false;

  constructor(
    private readonly scanner: Scanner,
    private readonly redacting: boolean,
    private readonly maxBytes: number,
  ) {}

  push(chunk: Uint8Array): { release: Buffer; findings: Finding[]; tooLarge: boolean } {
    if (this.tooLarge) return { release: Buffer.alloc(0), findings: [], tooLarge: true };
    this.total += chunk.length;
    if (this.total > this.maxBytes) {
      this.tooLarge = true;
      this.held += latin1(chunk);
      return { release: Buffer.alloc(0), findings: [], tooLarge: true };
    }
    // A long held-back tail (an unfinished private key) is not scanned again for every tiny chunk: wait
    // until a quarter as much again has arrived, so trickled input costs a constant factor, not a square.
    const held = this.held.length - this.waiting;
    this.held += latin1(chunk);
    this.waiting += chunk.length;
    if (held > 4096 && this.waiting < held / 4) return { release: Buffer.alloc(0), findings: [], tooLarge: false };
    this.waiting = 0;
    return { ...this.advance(this.held, false), tooLarge: false };
  }

  end(): { release: Buffer; findings: Finding[]; tooLarge: boolean } {
    if (this.tooLarge) return { release: Buffer.alloc(0), findings: [], tooLarge: true };
    return { ...this.advance(this.held, true), tooLarge: false };
  }

  /** The bytes held back so far, unscanned; for callers that forward oversized content on purpose. */
  drain(): Buffer {
    const out = Buffer.from(this.held, 'latin1');
    this.held = '';
    return out;
  }

  private advance(text: string, final: boolean): { release: Buffer; findings: Finding[] } {
    const found: Finding[] = [];
    const { pendingFrom } = this.scanner.scanText(text, final, this.previous, found);
    const findings = resolveOverlaps(found);
    let safe = final ? text.length : Math.min(pendingFrom, Math.max(0, text.length - this.scanner.holdBack));
    // A finding not wholly released is held back from its match start (the scheme of a URL, the name in
    // an assignment), so the next scan sees the whole match again and redaction never splits a secret.
    for (const finding of findings) {
      if (finding.end > safe) safe = Math.min(safe, matchStarts.get(finding) ?? finding.start);
    }
    const released = findings.filter((f) => f.end <= safe);
    const fresh: Finding[] = [];
    for (const finding of released) {
      const absolute = { ...finding, start: finding.start + this.base, end: finding.end + this.base };
      const key = `${finding.ruleId}:${absolute.start}:${absolute.end}`;
      if (this.reported.has(key)) continue;
      this.reported.add(key);
      fresh.push(absolute);
    }
    const out = text.slice(0, safe);
    const release = Buffer.from(this.redacting ? applyRedactions(out, released) : out, 'latin1');
    if (safe > 0) this.previous = text.charCodeAt(safe - 1);
    this.held = text.slice(safe);
    this.base += safe;
    // Forget reports that can no longer be found again (they lie wholly in released bytes).
    if (this.reported.size > 64) {
      for (const key of this.reported) {
        const end = Number(key.slice(key.lastIndexOf(':') + 1));
        if (end <= this.base) this.reported.delete(key);
      }
    }
    return { release, findings: fresh };
  }
}

