/**
 * Newline-delimited messages from a byte stream, each bounded: the framing of MCP's stdio transport, of
 * stdio upstreams and of the gateway's local socket. A line over the bound is dropped whole (up to its
 * newline) without ever being held in memory past the bound, and reported once.
 */
export class LineSplitter {
  private pending: Buffer[] = [];
  private pendingBytes = 0;
  private discarding = false;

  constructor(
    private readonly maxLineBytes: number,
    private readonly onLine: (line: Buffer) => void,
    /** A line went over the bound and is being dropped. */
    private readonly onOverlong: () => void,
  ) {}

  push(chunk: Buffer): void {
    let start = 0;
    for (let newline = chunk.indexOf(10, start); newline !== -1; newline = chunk.indexOf(10, start)) {
      const piece = chunk.subarray(start, newline);
      start = newline + 1;
      if (this.discarding) {
        this.discarding = false;
        this.reset();
        continue;
      }
      const line = this.pending.length === 0 ? piece : Buffer.concat([...this.pending, piece]);
      this.reset();
      if (line.length > this.maxLineBytes) this.onOverlong();
      else this.onLine(line);
    }
    if (start < chunk.length && !this.discarding) {
      this.pending.push(chunk.subarray(start));
      this.pendingBytes += chunk.length - start;
      if (this.pendingBytes > this.maxLineBytes) {
        this.reset();
        this.discarding = true;
        this.onOverlong();
      }
    }
  }

  private reset(): void {
    this.pending = [];
    this.pendingBytes = 0;
  }
}

/** Nothing on a line but whitespace: skipped, as MCP's stdio framing allows. */
export const BLANK = Symbol('blank line');
/** A line that is not JSON. */
export const NOT_JSON = Symbol('not JSON');

/**
 * The JSON value on one line, read as UTF-8; surrounding whitespace (a Windows line ending, padding) does
 * not count. A blank line gives BLANK and a line that does not parse NOT_JSON.
 */
export function parseJsonLine(line: Buffer): unknown {
  const text = line.toString('utf8').trim();
  if (text === '') return BLANK;
  try {
    return JSON.parse(text);
  } catch {
    return NOT_JSON;
  }
}
