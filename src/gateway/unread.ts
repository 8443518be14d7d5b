/**
 * Output a client leaves unread, and the two bounds on it. One response, stream or local connection that
 * holds STREAM_UNREAD_LIMIT unread belongs to a client that stopped reading. And since one agent may run
 * gateway.maxCallsPerAgent calls at once over many sessions, each answered on a response of its own, what
 * all of an agent's outputs hold unread together is bounded too, by gateway.maxUnreadBytesPerAgent. Past
 * either bound the output being written to is cut off, and the cut-off is recorded; the agent's other
 * outputs, and other agents, go on.
 *
 * The transports call `check()` after they write; the front keeps the ledger and records the cut-offs.
 */
import { principalKey, type Principal } from '../policy/types.js';

/**
 * A client that leaves this much of one response, stream or connection unread is cut off: an upstream that
 * keeps sending (a live task's progress, log messages) to a client that stopped reading must not grow the
 * gateway's memory without bound.
 */
export const STREAM_UNREAD_LIMIT = 64 * 1024 * 1024;

/**
 * An output holding no more than this is not counted against its agent, so an answer that leaves at once
 * costs one comparison. It is at least any stream's default high-water mark (16 KB; 64 KB from Node 22):
 * an output counted has had a write refused, so it says 'drain' once it empties and is counted down then.
 */
const UNCOUNTED_BYTES = 64 * 1024;

/** What the transports write to and may cut off: a ServerResponse or a local connection's Socket. */
export interface Output {
  readonly writableLength: number;
  readonly destroyed: boolean;
  destroy(): void;
  on(event: 'drain' | 'close', listener: () => void): unknown;
}

/** The agent an output's unread bytes are charged to. */
export interface UnreadAccount {
  readonly ledger: UnreadLedger;
  readonly principal: Principal;
  /** The identity, as the gateway counts an agent's calls (agent, user and teams). */
  readonly key: string;
}

/** What each agent leaves unread across all its outputs. */
export class UnreadLedger {
  private readonly unread = new Map<string, number>();

  constructor(
    /** gateway.maxUnreadBytesPerAgent */
    readonly limitPerAgent: number,
    /** Records a cut-off (the front writes it to the audit log). */
    readonly onCutOff: (principal: Principal, reason: string) => void,
  ) {}

  account(principal: Principal): UnreadAccount {
    return { ledger: this, principal, key: principalKey(principal) };
  }

  /** What this principal's agent leaves unread now, over all its outputs. */
  unreadOf(principal: Principal): number {
    return this.unread.get(principalKey(principal)) ?? 0;
  }

  /** Moves an agent's total by `delta`; returns the new total. An agent at zero leaves no entry behind. */
  move(key: string, delta: number): number {
    const total = (this.unread.get(key) ?? 0) + delta;
    if (total > 0) this.unread.set(key, total);
    else this.unread.delete(key);
    return total;
  }
}

/** One output of one agent (a response, a stream, a local connection), and what it leaves unread. */
export class UnreadWatch {
  /** What this output adds to its agent's total now. */
  private charged = 0;
  private watching = false;
  private closed = false;

  constructor(
    private readonly output: Output,
    /** Who is charged; without one only the bound of one output applies, and nothing is recorded. */
    private readonly account: UnreadAccount | undefined,
    /** What the output is, for the record: "a Streamable HTTP response". */
    private readonly what: string,
    /** Output held for it and not written yet (answers held for the JSON form). */
    private readonly pending: () => number = () => 0,
  ) {}

  /** After every write: one comparison while the client keeps up; past either bound, the output is cut off. */
  check(): void {
    if (this.closed || this.output.destroyed) return;
    const unread = this.output.writableLength + this.pending();
    if (unread <= UNCOUNTED_BYTES && this.charged === 0) return;
    if (unread > STREAM_UNREAD_LIMIT) {
      return this.cutOff(`the client left ${unread} bytes of ${this.what} unread, over the limit of ${STREAM_UNREAD_LIMIT} bytes for one response; it was cut off`);
    }
    if (!this.account) return;
    const total = this.recount(unread);
    const limit = this.account.ledger.limitPerAgent;
    if (total > limit) {
      this.cutOff(`the agent left ${total} bytes unread across its connections, over gateway.maxUnreadBytesPerAgent (${limit}); ${this.what} was cut off`);
    }
  }

  /** Charges the agent with what the output holds now; the first time, starts following it until it closes. */
  private recount(unread: number): number {
    const { ledger, key } = this.account!;
    if (!this.watching) {
      this.watching = true;
      this.output.on('drain', () => {
        if (!this.closed) this.recount(this.output.writableLength + this.pending());
      });
      this.output.on('close', () => this.release());
    }
    const total = ledger.move(key, unread - this.charged);
    this.charged = unread;
    return total;
  }

  private cutOff(reason: string): void {
    this.output.destroy();
    this.release();
    if (this.account) this.account.ledger.onCutOff(this.account.principal, reason);
  }

  /** The output is gone, and what it held with it. */
  private release(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.charged !== 0) this.account!.ledger.move(this.account!.key, -this.charged);
    this.charged = 0;
  }
}

