/** What every sink does: deliver a batch of record lines, in order, or throw so the batch is retried. */
export interface Sink {
  readonly name: string;
  /** Resolves once the receiver has accepted every line; throws otherwise. Lines are records as JSON. */
  send(lines: readonly string[]): Promise<void>;
  close(): Promise<void>;
}
