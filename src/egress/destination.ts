/**
 * The decide and resolve-check steps: may this principal reach this host and port, and at which addresses.
 * Policy decisions come only from the PolicyEngine; this file adds the one thing policy does not say by
 * default: non-public addresses are refused unless a rule names them by IP or CIDR.
 */
import ipaddr from 'ipaddr.js';
import type { PolicyEngine } from '../policy/engine.js';
import type { Decision, NetworkRequest, Principal } from '../policy/types.js';
import { isAllowed } from '../policy/types.js';
import { classifyAddress, type CheckedAddress } from '../policy/addresses.js';
import { parseIpLiteral } from '../policy/ip.js';
import { Refusal } from './refusal.js';
import type { Resolver } from './resolver.js';
import type { Target } from './target.js';

export interface Destination {
  target: Target;
  scheme?: string;
  method?: string;
  path?: string;
  /** Other ways a server may read the path, when it has any (HttpTarget.otherPaths). */
  otherPaths?: string[];
}

/** A destination that passed policy: the addresses the proxy may dial, in order, and the deciding decision. */
export interface CheckedDestination {
  decision: Decision;
  addresses: CheckedAddress[];
}

const RESOLVE_TIMEOUT_MS = 5_000;

export function networkRequest(principal: Principal, destination: Destination, correlationId: string, addresses?: string[]): NetworkRequest {
  const request: NetworkRequest = {
    surface: 'network',
    host: destination.target.host,
    port: destination.target.port,
    correlationId,
  };
  if (principal.agent !== undefined) request.agent = principal.agent;
  if (principal.teams !== undefined) request.teams = principal.teams;
  if (principal.user !== undefined) request.user = principal.user;
  if (principal.claims !== undefined) request.claims = principal.claims;
  if (destination.scheme !== undefined) request.scheme = destination.scheme;
  if (destination.method !== undefined) request.method = destination.method;
  if (destination.path !== undefined) request.path = destination.path;
  if (addresses !== undefined) request.addresses = addresses;
  return request;
}

/**
 * The policy's decision on a destination. A path servers read in more than one way (an encoded slash, an
 * encoded "%") is decided under every reading, and allowed only if all are: `/public%2F..%2Fadmin` and
 * `/public/%252e%252e/admin` are also `/admin`. The first refusal is the answer.
 */
export function decideNetwork(engine: PolicyEngine, principal: Principal, destination: Destination, correlationId: string, addresses?: string[]): Decision {
  const decision = engine.decide(networkRequest(principal, destination, correlationId, addresses));
  if (destination.otherPaths === undefined || !isAllowed(decision)) return decision;
  for (const path of destination.otherPaths) {
    const other = engine.decide(networkRequest(principal, { ...destination, path }, correlationId, addresses));
    if (!isAllowed(other)) return { ...other, reason: `read as a server may read it (${path}): ${other.reason}` };
  }
  return decision;
}

/**
 * Step "decide": the host-level decision, before any DNS query leaves for a host that is denied anyway (a
 * query is itself a way to leak data). Undefined means "decide after resolving": the target is an IP literal,
 * or no rule names the host but a rule allowing by CIDR might cover its addresses for this principal and port.
 */
export function decideDestination(engine: PolicyEngine, principal: Principal, destination: Destination, correlationId: string): Decision | Refusal | undefined {
  if (destination.target.ip) return undefined;
  const decision = decideNetwork(engine, principal, destination, correlationId);
  if (isAllowed(decision)) return decision;
  if (decision.rules.length === 0 && engine.mayAllowByAddress(principal, destination.target.port)) return undefined;
  return policyRefusal(decision, destination.target.host);
}

/**
 * The decide and resolve-check steps for a byte tunnel the proxy does not inspect (CONNECT, SOCKS5). When it
 * opens, nothing says what it will carry, so it is decided without a scheme. If only rules that name
 * `schemes:` could allow it, it is decided again as `https`, and allowed on condition that the client's first
 * bytes are a TLS ClientHello (`tlsOnly`; see first-bytes.ts, which also decides again once TLS is seen).
 */
export async function checkTunnel(
  engine: PolicyEngine,
  resolver: Resolver,
  principal: Principal,
  target: Target,
  correlationId: string,
): Promise<{ checked: CheckedDestination; tlsOnly: boolean } | Refusal> {
  const plain = await decideAndCheck(engine, resolver, principal, { target }, correlationId);
  if (!(plain instanceof Refusal)) return { checked: plain, tlsOnly: false };
  if ((plain.reason !== 'policy-denied' && plain.reason !== 'blocked-address') || !readsScheme(engine)) return plain;
  const tls = await decideAndCheck(engine, resolver, principal, { target, scheme: 'https' }, correlationId);
  return tls instanceof Refusal ? plain : { checked: tls, tlsOnly: true };
}

async function decideAndCheck(
  engine: PolicyEngine,
  resolver: Resolver,
  principal: Principal,
  destination: Destination,
  correlationId: string,
): Promise<CheckedDestination | Refusal> {
  const decision = decideDestination(engine, principal, destination, correlationId);
  if (decision instanceof Refusal) return decision;
  return resolveAndCheck(engine, resolver, principal, destination, correlationId);
}

/** The decision for a tunnel once its first bytes showed TLS: the same destination, as `https`. */
export function decideTls(engine: PolicyEngine, principal: Principal, target: Target, addresses: string[], correlationId: string): Decision | Refusal {
  const decision = engine.decide(networkRequest(principal, { target, scheme: 'https' }, correlationId, addresses));
  if (!isAllowed(decision)) return policyRefusal(decision, target.host);
  if (decision.needsInspection) {
    return new Refusal(403, 'needs-inspection', `rules for ${target.host} over TLS allow only some methods or paths, which needs TLS inspection of this host`, decision.rules);
  }
  return decision;
}

const schemeCache = new WeakMap<PolicyEngine, boolean>();

/** Whether any network rule can depend on the scheme (`schemes:`, or a condition that reads it). */
export function readsScheme(engine: PolicyEngine): boolean {
  let found = schemeCache.get(engine);
  if (found === undefined) {
    found = engine.document.network.some((rule) => rule.schemes !== undefined || (rule.when?.includes('scheme') ?? false));
    schemeCache.set(engine, found);
  }
  return found;
}

/**
 * Step "resolve-check": resolves once, checks every answer against the default-blocked ranges and against
 * the policy (a deny on any address denies), and returns the addresses that may be dialled. Synchronous when
 * the answer is (an IP literal, a fixed `egress.resolve` name): a request pays for no promise it does not need.
 */
export function resolveAndCheck(
  engine: PolicyEngine,
  resolver: Resolver,
  principal: Principal,
  destination: Destination,
  correlationId: string,
): CheckedDestination | Refusal | Promise<CheckedDestination | Refusal> {
  const { target } = destination;
  if (target.ip) return checkAnswers(engine, principal, destination, correlationId, [target.ip.address]);
  let answer: ReturnType<Resolver>;
  try {
    answer = resolver(target.host);
  } catch (error) {
    return resolveFailed(target.host, error);
  }
  if (Array.isArray(answer)) return checkAnswers(engine, principal, destination, correlationId, answer);
  return withTimeout(answer, RESOLVE_TIMEOUT_MS).then(
    (answers) => checkAnswers(engine, principal, destination, correlationId, answers),
    (error: unknown) => resolveFailed(target.host, error),
  );
}

function resolveFailed(host: string, error: unknown): Refusal {
  return new Refusal(502, 'resolve-failed', `${host} did not resolve (${(error as { code?: string }).code ?? 'error'})`);
}

function checkAnswers(engine: PolicyEngine, principal: Principal, destination: Destination, correlationId: string, answers: string[]): CheckedDestination | Refusal {
  const { target } = destination;
  if (answers.length === 0) return new Refusal(502, 'resolve-failed', `${target.host} resolved to no addresses`);
  const checked: CheckedAddress[] = [];
  for (const answer of answers) {
    const address = classifyAddress(answer);
    if (!address) return new Refusal(502, 'resolve-failed', `${target.host} resolved to something that is not an IP address`);
    if (address.blockedRange !== undefined) {
      const lifted = explicitlyAllowed(engine, principal, destination, address, correlationId);
      if (lifted instanceof Refusal) return lifted;
      if (!lifted) {
        return new Refusal(
          403,
          'blocked-address',
          `${target.host} resolves to ${address.address} (${address.blockedRange}), which is blocked unless a network rule allows that address by IP or CIDR`,
        );
      }
    }
    checked.push(address);
  }
  const decision = decideNetwork(engine, principal, destination, correlationId, checked.map((a) => a.address));
  if (!isAllowed(decision)) return policyRefusal(decision, target.host);
  return { decision, addresses: checked };
}

/**
 * A non-public address is allowed only when an allowing rule names it by IP or CIDR: a catch-all host
 * pattern such as `*` or `**` must not open loopback, the metadata service or the LAN.
 */
function explicitlyAllowed(engine: PolicyEngine, principal: Principal, destination: Destination, address: CheckedAddress, correlationId: string): boolean | Refusal {
  const decision = decideNetwork(engine, principal, { ...destination, target: { host: address.address, port: destination.target.port } }, correlationId);
  // A rule that denies the address itself is the better reason to give.
  if (!isAllowed(decision) && decision.rules.length > 0) return policyRefusal(decision, address.address);
  if (decision.effect !== 'allow') return false;
  const parsed = parseIpLiteral(address.address);
  if (!parsed) return false;
  const kind = parsed.address.kind();
  return addressEntriesOf(engine).some(
    (rule) =>
      decision.rules.includes(rule.id) &&
      rule.entries.some((entry) => (entry.kind !== kind ? false : 'prefix' in entry ? parsed.address.match(entry.network, entry.prefix) : entry.text === parsed.text)),
  );
}

/** An allow entry that names addresses: a CIDR, or one address (by its canonical text, see parseIpLiteral). */
type AddressEntry = { kind: string; network: ipaddr.IPv4 | ipaddr.IPv6; prefix: number } | { kind: string; text: string };

const addressEntries = new WeakMap<PolicyEngine, { id: string; entries: AddressEntry[] }[]>();

/** The allow entries of each network rule that name an IP or CIDR, parsed once per policy. */
function addressEntriesOf(engine: PolicyEngine): { id: string; entries: AddressEntry[] }[] {
  let rules = addressEntries.get(engine);
  if (!rules) {
    rules = engine.document.network.filter((rule) => rule.allow !== undefined).map((rule) => ({ id: rule.id, entries: (rule.allow ?? []).flatMap(parseAddressEntry) }));
    addressEntries.set(engine, rules);
  }
  return rules;
}

function parseAddressEntry(entry: string): AddressEntry[] {
  try {
    if (entry.includes('/')) {
      if (!ipaddr.isValidCIDR(entry)) return [];
      const [network, prefix] = ipaddr.parseCIDR(entry);
      return [{ kind: network.kind(), network, prefix }];
    }
    const literal = entry.startsWith('[') && entry.endsWith(']') ? entry.slice(1, -1) : entry;
    if (!ipaddr.isValid(literal)) return [];
    const named = parseIpLiteral(literal);
    return named ? [{ kind: named.address.kind(), text: named.text }] : [];
  } catch {
    return [];
  }
}

function policyRefusal(decision: Decision, host: string): Refusal {
  const rules = decision.rules.length > 0 ? ` (rule ${decision.rules.join(', ')})` : '';
  return new Refusal(403, 'policy-denied', `the network policy denies ${host}${rules}: ${decision.reason}`, decision.rules);
}

function withTimeout<T>(promise: Promise<T>, ms: number): Promise<T> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(Object.assign(new Error('timed out'), { code: 'ETIMEOUT' })), ms);
    promise.then(
      (value) => {
        clearTimeout(timer);
        resolve(value);
      },
      (error: unknown) => {
        clearTimeout(timer);
        reject(error);
      },
    );
  });
}
