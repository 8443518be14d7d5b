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
