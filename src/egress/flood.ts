/**
 * Bounds refusal records, so that a caller refused as often as it likes cannot flood the audit log (disk,
 * index, and the real events buried under its noise). The MCP gateway bounds the events an upstream causes
 * the same way (see gateway/upstream.ts `note`): the first few in a window are recorded one by one, then one
 * that says the rest are not. Here the rest are also counted, and one summary record per window says how
 * many were not recorded, by reason and host, so the fact that they happened is never lost.
 *
 * Per caller and window, a refusal is recorded in full when it is among the first FLOOD_RECORDS (the one after
 * them says so), or the first of its reason and host in the window (up to FLOOD_DISTINCT of those: hosts are
 * the caller's choice). Any other refusal is counted. A caller is an agent (in its session, if any); a caller who has not
 * authenticated is the listener it came in on, since a client's address is not a bound on anything (any
 * 127.x.y.z is a source address on loopback).
 *
 * The summary is written when the window ends, or when the proxy closes, whichever comes first.
 */
import type { PolicyEngine } from '../policy/engine.js';
import type { Principal } from '../policy/types.js';
import type { ReasonCode } from './refusal.js';

/** Refusals of one caller recorded one by one per window, the same count as the gateway's. */
export const FLOOD_RECORDS = 10;
export const FLOOD_WINDOW_MS = 60_000;
/** Refusals recorded because they are the first of their reason and host in the window, beyond FLOOD_RECORDS. */
export const FLOOD_DISTINCT = 100;
/** Reason-and-host counts one summary lists; counts beyond them are added up in `otherHosts`. */
export const SUMMARY_HOSTS = 50;
/** A host is the caller's text when the refusal came before the target was parsed: kept to a host name's length. */
const HOST_CHARS = 255;

/** Who a refusal is counted against. */
export interface RefusedCaller {
  principal: Principal | undefined;
  session: string | undefined;
  listener: string;
}

/** What one summary record reports: the refusals of one caller in one window that were not recorded one by one. */
export interface RefusalSummary {
  principal: Principal | undefined;
  session: string | undefined;
  /** Set when the caller had not authenticated: the listener stands for it. */
  listener: string | undefined;
  since: number;
  until: number;
  suppressed: number;
  byReason: Partial<Record<ReasonCode, number>>;
  byHost: { reasonCode: ReasonCode; host: string; count: number }[];
  /** Counted refusals whose reason and host did not fit in `byHost`. */
  otherHosts: number;
  /** The policy the last counted refusal was decided under. */
  engine: PolicyEngine;
}

/** `record`: in full; `record-last`: in full, saying that further ones are counted; `count`: only counted. */
export type FloodVerdict = 'record' | 'record-last' | 'count';

interface Window {
  caller: RefusedCaller;
  anonymous: boolean;
  since: number;
  nth: number;
  /** Reasons and hosts recorded in full in this window. */
  recordedKinds: Set<string>;
  /** Refusals recorded in full only because they were the first of their reason and host. */
  firsts: number;
  suppressed: number;
  byReason: Map<ReasonCode, number>;
  byHost: Map<string, { reasonCode: ReasonCode; host: string; count: number }>;
  otherHosts: number;
  engine: PolicyEngine | undefined;
  timer: NodeJS.Timeout;
}

export class RefusalFlood {
  private readonly windows = new Map<string, Window>();
  private closed = false;

  constructor(
    private readonly summarize: (summary: RefusalSummary) => void,
    private readonly windowMs: number = FLOOD_WINDOW_MS,
  ) {}

  /** Whether a refusal of `caller` on `resource` for `reason` is recorded in full, or only counted. */
  admit(caller: RefusedCaller, reason: ReasonCode, resource: string, engine: PolicyEngine): FloodVerdict {
    // After close, no window would ever be summarized: the few stragglers of closing sockets are recorded.
    if (this.closed) return 'record';
    const anonymous = caller.principal === undefined;
    const key = anonymous ? `listener\0${caller.listener}` : `agent\0${caller.principal?.agent ?? ''}\0${caller.principal?.user ?? ''}\0${caller.session ?? ''}`;
    let window = this.windows.get(key);
    if (!window) {
      window = {
        caller: { principal: caller.principal, session: caller.session, listener: caller.listener },
        anonymous,
        since: Date.now(),
        nth: 0,
        recordedKinds: new Set(),
        firsts: 0,
        suppressed: 0,
        byReason: new Map(),
        byHost: new Map(),
        otherHosts: 0,
        engine: undefined,
        timer: setTimeout(() => this.end(key), this.windowMs),
      };
      // A window never keeps the process alive; `close` writes what is left.
      window.timer.unref();
      this.windows.set(key, window);
    }
    const host = hostOf(resource);
    const kind = `${reason}\0${host}`;
    window.nth += 1;
    if (window.nth <= FLOOD_RECORDS + 1) {
      window.recordedKinds.add(kind);
      return window.nth === FLOOD_RECORDS + 1 ? 'record-last' : 'record';
    }
    // A new reason or host is news even amid a flood of one (a first try at another host, say).
    if (!window.recordedKinds.has(kind) && window.firsts < FLOOD_DISTINCT) {
      window.recordedKinds.add(kind);
      window.firsts += 1;
      return 'record';
    }
    window.suppressed += 1;
    window.engine = engine;
    window.byReason.set(reason, (window.byReason.get(reason) ?? 0) + 1);
    const counted = window.byHost.get(kind);
    if (counted) counted.count += 1;
    else if (window.byHost.size < SUMMARY_HOSTS) window.byHost.set(kind, { reasonCode: reason, host, count: 1 });
    else window.otherHosts += 1;
    return 'count';
  }

  /** Ends every window (writing the summaries due) and records every later refusal in full. */
  close(): void {
    this.closed = true;
    for (const key of [...this.windows.keys()]) this.end(key);
  }

  private end(key: string): void {
    const window = this.windows.get(key);
    if (!window) return;
    this.windows.delete(key);
    clearTimeout(window.timer);
    if (window.suppressed === 0 || window.engine === undefined) return;
    this.summarize({
      principal: window.caller.principal,
      session: window.caller.session,
      listener: window.anonymous ? window.caller.listener : undefined,
      since: window.since,
      until: Date.now(),
      suppressed: window.suppressed,
      byReason: Object.fromEntries(window.byReason) as Partial<Record<ReasonCode, number>>,
      byHost: [...window.byHost.values()],
      otherHosts: window.otherHosts,
      engine: window.engine,
    });
  }
}

/**
 * The host a refusal's resource names (`host:port`, `http://host:port/path`, or the caller's unparsed text):
 * without scheme, port or path, so that a caller sweeping ports or paths of one host counts as one.
 */
export function hostOf(resource: string): string {
  // A resource carries at most a host name, a scheme and a port before its path; the caller's text can be longer.
  let text = resource.slice(0, 2 * HOST_CHARS).replace(/^[a-z][a-z0-9+.-]*:\/\//i, '');
  const slash = text.indexOf('/');
  if (slash >= 0) text = text.slice(0, slash);
  if (text.startsWith('[')) {
    const close = text.indexOf(']');
    if (close > 0) text = text.slice(0, close + 1);
  } else {
    text = text.replace(/:[0-9]*$/, '');
  }
  return text.slice(0, HOST_CHARS);
}
