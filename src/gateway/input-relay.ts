/**
 * A call from a 2026-07-28 client on an upstream that asks the client something mid-call (sampling,
 * elicitation, roots). Such a client cannot be sent requests: the gateway answers its tools/call with an
 * `input_required` result carrying the upstream's questions, keeps the upstream call running meanwhile, and
 * hands the answers of the client's retry to the questions still waiting upstream.
 */
import { createHmac, timingSafeEqual } from 'node:crypto';
import type { Result } from '@modelcontextprotocol/client';
import { canonicalJson } from './canonical.js';
import type { CallBinding } from './upstream.js';

/** A server→client request, as it travels inside an `input_required` result. */
export interface InputRequest {
  method: string;
  params?: Record<string, unknown>;
}

/** Where a relayed call stands when a client request waits on it. */
export type RelayStep =
  | { kind: 'done'; result: Result }
  | { kind: 'failed'; error: unknown }
  | { kind: 'input'; requests: Record<string, InputRequest> };

interface Question {
  request: InputRequest;
  answer(result: Result): void;
  refuse(error: Error): void;
}

export class InputRelay {
  /** Cancels the upstream call: a client that gave up, or never came back. */
  private readonly controller = new AbortController();
  /** The upstream's questions not yet answered, by the key the client answers each under. */
  private readonly questions = new Map<string, Question>();
  private asked = 0;
  private outcome: RelayStep | undefined;
  private wake: (() => void) | undefined;
  /** The client request being served now; none while the call is parked between rounds. */
  private round: CallBinding | undefined;
  /** What the upstream call is bound to: its questions are kept here, its notifications reach the current round. */
  readonly binding: CallBinding;
  readonly signal: AbortSignal = this.controller.signal;

  constructor(session: string) {
    this.binding = {
      session,
      send: (request) => this.ask(request),
      notify: async (notification) => {
        await this.round?.notify(notification);
      },
    };
  }

  /** Follows the upstream call, started with `binding` and `signal`. */
  follow(call: Promise<Result>): void {
    call.then(
      (result) => this.settle({ kind: 'done', result }),
      (error: unknown) => this.settle({ kind: 'failed', error }),
    );
  }

  private settle(step: RelayStep): void {
    this.outcome = step;
    for (const question of this.questions.values()) question.refuse(new Error('the call has ended'));
    this.questions.clear();
    this.wake?.();
  }

  private ask(request: { method: string; params?: Record<string, unknown> }): Promise<Result> {
    if (this.outcome || this.signal.aborted) return Promise.reject(new Error('the call has ended'));
    return new Promise((answer, refuse) => {
      this.asked += 1;
      const params = request.params && withoutMeta(request.params);
      this.questions.set(`upstream-${this.asked}`, { request: { method: request.method, ...(params ? { params } : {}) }, answer, refuse });
      this.wake?.();
    });
  }

  /**
   * Serves one client request: waits until the call ends or has questions for the client. A client that
   * goes away meanwhile (its request's `signal`) cancels the call upstream.
   */
  async next(round: CallBinding, signal: AbortSignal | undefined): Promise<RelayStep> {
    this.round = round;
    const gaveUp = () => this.cancel('the client cancelled the call');
    signal?.addEventListener('abort', gaveUp, { once: true });
    try {
      while (!this.outcome) {
        // What this client did not declare it can answer is refused upstream, never put to it.
        for (const [key, question] of this.questions) {
          const missing = missingCapability(question.request, round.multiRound?.capabilities);
          if (missing) this.refuse(key, new Error(`the client did not declare the ${missing} capability`));
        }
        if (this.questions.size > 0) break;
        await new Promise<void>((resolve) => (this.wake = resolve));
      }
    } finally {
      this.wake = undefined;
      signal?.removeEventListener('abort', gaveUp);
    }
    if (this.outcome) return this.outcome;
    this.round = undefined;
    const requests: Record<string, InputRequest> = {};
    for (const [key, question] of this.questions) requests[key] = question.request;
    return { kind: 'input', requests };
  }

  /** The client's answers to the questions waiting, each with its key and the method it answers. */
  answers(response: (key: string) => unknown): { key: string; method: string; value: unknown }[] {
    const found = [];
    for (const [key, question] of this.questions) {
      const value = response(key);
      if (value !== undefined) found.push({ key, method: question.request.method, value });
    }
    return found;
  }

  /** Gives the upstream its answer; a question the client left unanswered is asked again next round. */
  reply(key: string, value: Result): void {
    this.questions.get(key)?.answer(value);
    this.questions.delete(key);
  }

  refuse(key: string, error: Error): void {
    this.questions.get(key)?.refuse(error);
    this.questions.delete(key);
  }

  cancel(reason: string): void {
    for (const question of this.questions.values()) question.refuse(new Error(reason));
    this.questions.clear();
    this.controller.abort(new Error(reason));
  }
}

/** The client capability a question needs that `declared` lacks, as a dotted name; undefined when it has it. */
function missingCapability(request: InputRequest, declared: Record<string, unknown> | undefined): string | undefined {
  const has = (path: string[]): boolean => {
    let at: unknown = declared;
    for (const part of path) {
      if (typeof at !== 'object' || at === null || !(part in at)) return false;
      at = (at as Record<string, unknown>)[part];
    }
    return true;
  };
  const params = request.params ?? {};
  let needed: string[];
  if (request.method === 'sampling/createMessage') needed = params.tools !== undefined || params.toolChoice !== undefined ? ['sampling', 'tools'] : ['sampling'];
  else if (request.method === 'roots/list') needed = ['roots'];
  else if (request.method === 'elicitation/create') {
    const url = params.mode === 'url';
    // A bare `elicitation: {}` declares form mode (the 2025-06-18 form).
    const bare = has(['elicitation']) && !has(['elicitation', 'form']) && !has(['elicitation', 'url']);
    needed = url ? ['elicitation', 'url'] : bare ? ['elicitation'] : ['elicitation', 'form'];
  } else return request.method;
  return has(needed) ? undefined : needed.join('.');
}

function withoutMeta(params: Record<string, unknown>): Record<string, unknown> | undefined {
  const { _meta: _dropped, ...rest } = params;
  return Object.keys(rest).length > 0 ? rest : undefined;
}

/**
 * Signs and checks request states: `<prefix><expires>.<nonce>.<HMAC>`, where the HMAC covers what the state
 * is bound to (the caller, the tool, the argument digest), its purpose, expiry and nonce. The key is new at
 * every start, so no state outlives the gateway that issued it.
 */
export class StateSigner {
  constructor(private readonly key: Buffer) {}

  sign(purpose: string, bound: unknown[], expires: number, nonce: string): string {
    const mac = createHmac('sha256', this.key).update(canonicalJson([purpose, ...bound, expires, nonce])).digest('base64url');
    return `${purpose}.${expires}.${nonce}.${mac}`;
  }

  /** The nonce of a state that is genuine, unexpired and bound to exactly this; undefined otherwise. */
  check(purpose: string, state: string | undefined, bound: unknown[]): { nonce: string; expires: number } | undefined {
    const [given, expiresText, nonce] = state?.split('.') ?? [];
    const expires = Number(expiresText);
    if (!state || given !== purpose || !nonce || !Number.isSafeInteger(expires) || expires < Date.now()) return undefined;
    const expected = Buffer.from(this.sign(purpose, bound, expires, nonce));
    const received = Buffer.from(state);
    return expected.length === received.length && timingSafeEqual(expected, received) ? { nonce, expires } : undefined;
  }
}
