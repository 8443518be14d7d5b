/**
 * The record step: one audit record per connection (tunnel or SOCKS) and one per request the proxy can see.
 * Facts only, never secrets: no query strings, headers or bodies.
 */
import { randomBytes } from 'node:crypto';
import { isoNow, SUPPRESSED_REFUSALS, type AppendOptions, type AuditLog, type AuditRecord, type RecordEffect } from '../audit/record.js';
import type { PolicyEngine } from '../policy/engine.js';
import { isAllowed, type Decision, type Principal } from '../policy/types.js';
import { RefusalFlood, type RefusalSummary } from './flood.js';
import { Refusal } from './refusal.js';

export interface Facts {
  /** `message`: a WebSocket message the content steps found something in (see upgradeInspected). */
  action: 'connect' | 'request' | 'message';
  resource: string;
  principal: Principal | undefined;
  session: string | undefined;
  correlationId: string;
  listener: string;
  startedAt: number;
  decision?: Decision | undefined;
  refusal?: Refusal | undefined;
  details: Record<string, unknown>;
  /** Set once the decision's own record was written ahead of the traffic (sync audit mode). */
  decisionRecorded?: boolean;
}

export function buildRecord(node: string, engine: PolicyEngine, facts: Facts): AuditRecord {
  const { decision, refusal } = facts;
  let effect: RecordEffect = decision?.effect ?? 'allow';
  let rules = decision?.rules ?? [];
  let reason = decision?.reason ?? 'allowed';
  if (refusal) {
    effect = 'deny';
    rules = refusal.rules.length > 0 ? refusal.rules : rules;
    reason = refusal.message;
  }
  // A copy: the record may wait a few ms to be written (deferred), and the caller's principal is not ours.
  const principal: AuditRecord['principal'] = { ...facts.principal };
  if (facts.session !== undefined) principal.session = facts.session;
  const details: Record<string, unknown> = { listener: facts.listener };
  if (refusal) details.reasonCode = refusal.reason;
  Object.assign(details, facts.details);
  details.durationMs = Math.round((performance.now() - facts.startedAt) * 1000) / 1000;
  return {
    v: 1,
    time: isoNow(),
    node,
    principal,
    surface: 'network',
    action: facts.action,
    resource: facts.resource,
    effect,
    rules,
    reason,
    latencyUs: decision?.latencyUs ?? 0,
    correlationId: facts.correlationId,
    policy: { version: engine.version, digest: engine.digest },
    details,
  };
}

/** The action of a summary record (see flood.ts). */
export const SUMMARY_ACTION = SUPPRESSED_REFUSALS;

/** The record that says how many refusals of one caller in one window were counted, not recorded one by one. */
export function buildSummaryRecord(node: string, summary: RefusalSummary): AuditRecord {
  const principal: AuditRecord['principal'] = { ...(summary.principal ?? {}) };
  if (summary.session !== undefined) principal.session = summary.session;
  const who = summary.listener !== undefined ? `unauthenticated callers on the ${summary.listener} listener` : `agent ${summary.principal?.agent ?? '(unknown)'}${summary.session !== undefined ? ` in session ${summary.session}` : ''}`;
  const seconds = Math.max(1, Math.round((summary.until - summary.since) / 1000));
  return {
    v: 1,
    time: new Date(summary.until).toISOString(),
    node,
    principal,
    surface: 'network',
    action: SUMMARY_ACTION,
    resource: '-',
    effect: 'deny',
    rules: [],
    reason: `${summary.suppressed} more ${summary.suppressed === 1 ? 'refusal' : 'refusals'} of ${who} in ${seconds} s were counted here instead of recorded one by one`,
    latencyUs: 0,
    correlationId: nextCorrelationId(),
    policy: { version: summary.engine.version, digest: summary.engine.digest },
    details: {
      ...(summary.listener !== undefined ? { listener: summary.listener } : {}),
      since: new Date(summary.since).toISOString(),
      until: new Date(summary.until).toISOString(),
      suppressed: summary.suppressed,
      byReason: summary.byReason,
      byHost: summary.byHost,
      otherHosts: summary.otherHosts,
    },
  };
}

/**
 * Appends records for the data path. In batch audit mode (the default) nothing waits: the one record of a
 * connection or request is appended when it ends, and a failed append trips `failed`, after which the proxy
 * refuses new connections (fail closed: nothing proceeds without evidence). In sync mode (`awaitDecisions`),
 * the decision is also recorded, and acknowledged, before the first byte flows (`decided`); the record at the
 * end then becomes `<action>.end`, carrying the bytes and duration under the same correlation id.
 *
 * Refusals a caller can cause as often as it likes are bounded per caller and window (see flood.ts): beyond
 * the first few, they are counted into one summary record. Never bounded: allowed connections and requests,
 * and refusals of a flow the policy allowed (a failed dial, a secret found in an allowed request, a tunnel cut
 * short), since those come no faster than the caller's rate limit lets allowed flows through, and each is
 * evidence of traffic that was let go; nor the end record of a decision already recorded in sync mode.
 */
export class Recorder {
  failed: Error | undefined;
  private readonly flood: RefusalFlood;
  /** Summary records not yet acknowledged: `close` waits for them. */
  private readonly summaries = new Set<Promise<void>>();

  constructor(
    private readonly log: AuditLog,
    private readonly node: string,
    readonly awaitDecisions = false,
  ) {
    this.flood = new RefusalFlood((summary) => {
      const appended = this.append(buildSummaryRecord(this.node, summary));
      this.summaries.add(appended);
      void appended.finally(() => this.summaries.delete(appended));
    });
  }

  /**
   * The allowed decision, before any traffic: in sync mode its record is appended and awaited; a failed
   * append is a refusal. In batch mode it does nothing.
   */
  async decided(engine: PolicyEngine, facts: Facts): Promise<Refusal | undefined> {
    if (!this.awaitDecisions) return undefined;
    try {
      await this.log.append(buildRecord(this.node, engine, facts));
      facts.decisionRecorded = true;
      return undefined;
    } catch (error) {
      this.failed = error instanceof Error ? error : new Error(String(error));
      return new Refusal(503, 'audit-unavailable', 'the audit log cannot be written, so no connection may proceed');
    }
  }

  record(engine: PolicyEngine, facts: Facts): void {
    const { refusal } = facts;
    const bounded = refusal !== undefined && !facts.decisionRecorded && !(facts.decision !== undefined && isAllowed(facts.decision));
    const verdict = bounded ? this.flood.admit(facts, refusal.reason, facts.resource, engine) : 'record';
    if (verdict === 'count') return;
    const record = buildRecord(this.node, engine, facts);
    if (facts.decisionRecorded) {
      record.action = `${facts.action}.end`;
      if (!facts.refusal) {
        record.effect = 'info';
        record.reason = 'ended';
      }
    }
    if (verdict === 'record-last') record.reason += '; further refusals of this caller within a minute are counted in one summary record, except the first of each reason and host';
    // Nobody waits for it: the log may write it with others (see chain.ts, DEFERRED_WRITE_MS).
    void this.append(record, { deferred: true });
  }

  /** Writes the summaries of refusals counted so far and waits for them; later refusals are recorded in full. */
  async close(): Promise<void> {
    this.flood.close();
    await Promise.all(this.summaries);
  }

  private append(record: AuditRecord, options?: AppendOptions): Promise<void> {
    return this.log.append(record, options).catch((error: unknown) => {
      this.failed = error instanceof Error ? error : new Error(String(error));
    });
  }
}

const idPrefix = randomBytes(9).toString('base64url');
let idCounter = 0;

/** A correlation id unique to this process: a random prefix and a counter (no random bytes per connection). */
export function nextCorrelationId(): string {
  idCounter += 1;
  return idPrefix + idCounter.toString(36);
}
