/**
 * The record step: one audit record per connection (tunnel or SOCKS) and one per request the proxy can see.
 * Facts only, never secrets: no query strings, headers or bodies.
 */
import { randomBytes } from 'node:crypto';
import type { AuditLog, AuditRecord, RecordEffect } from '../audit/record.js';
import type { PolicyEngine } from '../policy/engine.js';
import type { Decision, Principal } from '../policy/types.js';
import { Refusal } from './refusal.js';

export interface Facts {
  action: 'connect' | 'request';
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
  const principal: AuditRecord['principal'] = { ...(facts.principal ?? {}) };
  if (facts.session !== undefined) principal.session = facts.session;
  return {
    v: 1,
    time: new Date().toISOString(),
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
    details: {
      listener: facts.listener,
      ...(refusal ? { reasonCode: refusal.reason } : {}),
      ...facts.details,
      durationMs: Math.round((performance.now() - facts.startedAt) * 1000) / 1000,
    },
  };
}

/**
 * Appends records for the data path. In batch audit mode (the default) nothing waits: the one record of a
 * connection or request is appended when it ends, and a failed append trips `failed`, after which the proxy
 * refuses new connections (fail closed: nothing proceeds without evidence). In sync mode (`awaitDecisions`),
 * the decision is also recorded, and acknowledged, before the first byte flows (`decided`); the record at the
 * end then becomes `<action>.end`, carrying the bytes and duration under the same correlation id.
 */
export class Recorder {
  failed: Error | undefined;

  constructor(
    private readonly log: AuditLog,
    private readonly node: string,
    readonly awaitDecisions = false,
  ) {}

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
    const record = buildRecord(this.node, engine, facts);
    if (facts.decisionRecorded) {
      record.action = `${facts.action}.end`;
      if (!facts.refusal) {
        record.effect = 'info';
        record.reason = 'ended';
      }
    }
    this.log.append(record).catch((error: unknown) => {
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
