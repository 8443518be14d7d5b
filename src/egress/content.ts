/**
 * Steps for HTTP requests the proxy can read (plain HTTP, and requests inside an inspected tunnel):
 *
 *   read body (bounded) → find placeholders → scan for secrets → swap placeholders → inject headers
 *
 * Placeholders are found first so the secret scan does not mistake them (they are shaped like real keys)
 * for leaks, and so one heading to the wrong host is caught before anything is forwarded. Real values go in
 * last, after scanning, and only on TLS to a host the grant names.
 *
 * Both searches also read what a server decodes: a JSON body's escapes, and percent-escapes in the URL,
 * header values and any body (`ghp%5F…`, `%67%68%70…`, `%255F`). A secret found only decoded is blocked
 * or, under redact, replaced where its escapes sit, so the rest reaches the server byte-exact.
 */
import type { IncomingMessage } from 'node:http';
import type { EgressSettings } from '../config/schema.js';
import { dlpVerdict, findingsForAudit, type Finding, type ScanOutcome, type Scanner } from '../dlp/index.js';
import type { PolicyEngine } from '../policy/engine.js';
import { matchHostPattern, parseHostPattern } from '../policy/hosts.js';
import { isAllowed } from '../policy/types.js';
import { Masker } from '../secrets/masker.js';
import { redactionPairs, type PlaceholderRegistry, type PlaceholderSearch } from '../secrets/placeholders.js';
import type { Caller } from './authenticate.js';
import { forwardableHeaders, hasBody } from './http-message.js';
import { hasEscapes, MAX_LAYERS, percentReadings, type PercentReading } from '../dlp/percent-decoding.js';
import { Refusal } from './refusal.js';
import type { Target } from './target.js';

/** Looks up a secret's real value by name (the vault). Undefined when it is not there. */
export type ResolveSecret = (name: string) => string | undefined | Promise<string | undefined>;

/** The optional parts that make content inspection possible; each absent part is a step that does nothing. */
export interface ContentTools {
  scanner?: Scanner;
  placeholders?: PlaceholderRegistry;
  resolveSecret?: ResolveSecret;
}

export interface OutgoingRequest {
  pathAndQuery: string;
  /** Flat [name, value, ...] list, hop-by-hop headers already removed. */
  headers: string[];
  /** The whole body when it was read; undefined when it streams through uninspected. */
  body: Buffer | undefined;
  /** Body bytes already read when the rest streams uninspected (over the size limit, policy allows). */
  bodyPrefix: Buffer[];
  /** Masks the response: set when the caller holds placeholders or a real value was injected. */
  responseMasker?: Masker;
  /** Real values injected into the headers, each with its secret's name (see LiveMasker). */
  injected: { secret: string; value: string }[];
}

export type BodyRead = { body: Buffer } | { tooLarge: true; prefix: Buffer[] } | { timedOut: string };

/** How long a body the proxy holds for inspection may take: between two pieces, and in all. */
export interface BodyDeadlines {
  gapMs: number;
  totalMs: number;
}

/**
 * Reads a request body up to `limit` bytes; past that it stops reading and returns what it has. A client
 * that trickles its body (slowloris) is cut off at a deadline instead of holding the proxy's sockets.
 */
export function readBody(request: IncomingMessage, limit: number, deadlines: BodyDeadlines): Promise<BodyRead> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const stop = (): void => {
      clearTimeout(gap);
      clearTimeout(total);
      request.off('data', onData);
      request.off('end', onEnd);
    };
    const expire = (why: string) => (): void => {
      stop();
      request.pause();
      resolve({ timedOut: why });
    };
    let gap = setTimeout(expire(`no body data for ${deadlines.gapMs} ms`), deadlines.gapMs);
    const total = setTimeout(expire(`the body took longer than ${deadlines.totalMs} ms`), deadlines.totalMs);
    const onData = (chunk: Buffer): void => {
      chunks.push(chunk);
      size += chunk.length;
      clearTimeout(gap);
      gap = setTimeout(expire(`no body data for ${deadlines.gapMs} ms`), deadlines.gapMs);
      if (size > limit) {
        stop();
        request.pause();
        resolve({ tooLarge: true, prefix: chunks });
      }
    };
    const onEnd = (): void => {
      stop();
      resolve({ body: Buffer.concat(chunks, size) });
    };
    request.on('data', onData);
    request.once('end', onEnd);
    request.once('error', (error) => {
      stop();
      reject(error);
    });
  });
}

export interface PrepareInput {
  engine: PolicyEngine;
  tools: ContentTools;
  caller: Caller;
  target: Target;
  scheme: 'http' | 'https';
  request: IncomingMessage;
  /** The normalised path and the original query: what is sent upstream. */
  pathAndQuery: string;
  limits: EgressSettings['limits'];
}

/** Request headers the proxy answers itself, never forwarded: "Expect" (see forward.ts). */
const ANSWERED_BY_PROXY: readonly string[] = ['expect'];

/** Runs the content steps. `facts` (the audit record's details) gets what was found, even on a refusal. */
export async function prepareRequest(input: PrepareInput, facts: Record<string, unknown>): Promise<OutgoingRequest | Refusal> {
  const { engine, tools, caller, target, scheme, request } = input;
  // Hop-by-hop headers never go upstream; "Expect" is answered by the proxy itself once the request passed.
  const outgoing: OutgoingRequest = {
    pathAndQuery: input.pathAndQuery,
    headers: forwardableHeaders(request.rawHeaders, request.headers.connection, ANSWERED_BY_PROXY),
    body: undefined,
    bodyPrefix: [],
    injected: [],
  };
  const wantsBody = tools.scanner !== undefined || tools.placeholders !== undefined;

  // Step: read the body, bounded. Over the limit, policy.dlp.onTooLarge says block or pass uninspected.
  if (wantsBody && hasBody(request)) {
    const limit = Math.min(input.limits.maxInspectedBytes, engine.dlp.maxBytes);
    // A body held for inspection must keep arriving (no gap over the header timeout) and finish in time.
    const read = await readBody(request, limit, { gapMs: input.limits.headerTimeoutMs, totalMs: input.limits.idleTimeoutMs });
    if ('timedOut' in read) return new Refusal(408, 'body-timeout', `the request body arrived too slowly: ${read.timedOut}`);
    if ('tooLarge' in read) {
      if (engine.dlp.onTooLarge !== 'allow') {
        return new Refusal(413, 'body-too-large', `the request body is over ${limit} bytes, the most this proxy inspects (policy.dlp.onTooLarge is block)`);
      }
      outgoing.bodyPrefix = read.prefix;
      facts.uninspected = `body over ${limit} bytes passed uninspected (policy.dlp.onTooLarge is allow)`;
    } else {
      outgoing.body = read.body;
    }
  }

  // Headers a credential grant will set are dropped first: the agent's own value never leaves, so it is
  // neither scanned nor forwarded.
  const injecting =
    tools.resolveSecret && scheme === 'https' ? engine.grants(caller.principal).filter((grant) => grant.header && grantCovers(grant.hosts, target.host)) : [];
  for (const grant of injecting) if (grant.header) outgoing.headers = removeHeader(outgoing.headers, grant.header.name);

  // Every part the agent wrote is handled as bytes from here on: the URL and header values as the bytes
  // that arrived (latin1 text in node), a Basic credential that carries a placeholder as its decoded bytes
  // (git sends a token as the password of HTTP Basic auth), and the body as is. Real values go in as UTF-8.
  const registry = tools.placeholders;
  const live = registry !== undefined && registry.size > 0;
  // Most requests are plainly clean: no body, no placeholder lent to anyone, nothing to decode and nothing
  // found. One scan of the text as it stands settles that; any other request goes through every step.
  const quick = !live && tools.scanner && outgoing.body === undefined ? quickScan(tools.scanner, outgoing.pathAndQuery, outgoing.headers) : undefined;
  if ((live || tools.scanner) && quick !== 'clean') {
    // A form body is URL text: a client form-encodes a placeholder in it as it would in a query (a "/" as
    // %2F, a space as "+"), and the real value must then go in percent-encoded to stay one field.
    const formBody = outgoing.body !== undefined && isFormBody(request);
    // The request target is latin1 text as node read it (its normalised path decodes only ASCII).
    const requestTarget = outgoing.pathAndQuery;
    const url = new Part(requestTarget, 'URL', { url: true }, { body: false, formFrom: queryStart(requestTarget) }, true);
    // Name, value, name, value: as in the header list. Header names are the agent's text too (`ghp_…: 1`
    // carries a token as well as a value would); a real value never goes in as one, since it is no place
    // for a credential.
    const headerParts = outgoing.headers.map((text, index) => (index % 2 === 0 ? new Part(text, 'headers', {}, undefined, false) : headerPart(text, registry)));
    const body = outgoing.body ? new Part(outgoing.body, 'body', formBody ? { form: true } : {}, { body: true, formFrom: formBody ? 0 : Infinity }, true) : undefined;
    const refused = inspectParts([url, ...headerParts, ...(body ? [body] : [])], { engine, tools, caller, target, scheme, what: 'request' }, facts, quick);
    if (refused) return refused;

    if (url.changed) outgoing.pathAndQuery = urlText(url.bytes);
    if (headerParts.some((part) => part.changed)) {
      const headers: string[] = [];
      for (let i = 0; i + 1 < outgoing.headers.length; i += 2) {
        // A redacted name is no longer a valid one: that header is left out.
        if ((headerParts[i] as Part).changed) continue;
        headers.push(outgoing.headers[i] as string, headerText(headerParts[i + 1] as Part, outgoing.headers[i + 1] as string));
      }
      outgoing.headers = headers;
    }
    if (body?.changed) outgoing.body = body.bytes;
  }

  // Step: inject credential headers from grants that name this host (TLS only: over plain HTTP the grant is
  // left out, and the record says so).
  if (tools.resolveSecret && scheme !== 'https') {
    const skipped = engine.grants(caller.principal).filter((grant) => grant.header && grantCovers(grant.hosts, target.host));
    if (skipped.length > 0) facts.injectionSkipped = { rules: skipped.map((grant) => grant.ruleId), reason: 'credentials are only injected over TLS' };
  }
  const injectedValues = outgoing.injected;
  if (tools.resolveSecret && injecting.length > 0) {
    const injected: string[] = [];
    for (const grant of injecting) {
      if (!grant.header) continue;
      const decision = engine.decide({ surface: 'credentials', secret: grant.secret, host: target.host, ...principalFields(caller) });
      if (!isAllowed(decision)) continue;
      const value = await tools.resolveSecret(grant.secret);
      if (value === undefined) {
        return new Refusal(502, 'upstream-unreachable', `secret "${grant.secret}" for rule ${grant.ruleId} is not in the vault`, [grant.ruleId]);
      }
      outgoing.headers = setHeader(outgoing.headers, grant.header.name, grant.header.template.replaceAll('{secret}', value));
      injected.push(grant.ruleId);
      injectedValues.push({ secret: grant.secret, value });
    }
    if (injected.length > 0) facts.injected = injected;
  }

  // A response may reflect any real value the caller was lent or had injected: it is masked (see
  // responseMasker), which needs it readable, so no content coding is asked for.
  const masker = responseMasker(tools, caller, injectedValues);
  if (masker) {
    outgoing.responseMasker = masker;
    outgoing.headers = setHeader(outgoing.headers, 'accept-encoding', 'identity');
  }
  if (outgoing.body) outgoing.headers = setHeader(outgoing.headers, 'content-length', String(outgoing.body.length));
  return outgoing;
}

/** What the content steps need to judge the parts of one request or message. */
interface InspectContext {
  engine: PolicyEngine;
  tools: ContentTools;
  caller: Caller;
  target: Target;
  scheme: 'http' | 'https';
  /** What the reasons call the whole: a request, or a WebSocket message. */
  what: 'request' | 'message';
}

/**
 * The placeholder, scan, redact and swap steps over the parts the agent wrote. Rewrites their bytes in
 * place (marking them `changed`); returns the refusal that stops them. `facts` gets what was found.
 * `scanned` is an outcome per part from a scan of exactly these parts already made (see quickScan).
 */
function inspectParts(parts: Part[], context: InspectContext, facts: Record<string, unknown>, scanned?: ScanOutcome[]): Refusal | undefined {
  const { engine, tools, caller, target, scheme, what } = context;
  const registry = tools.placeholders;
  const live = registry !== undefined && registry.size > 0;
  const session = caller.session ?? '';

  // What a server that decodes the agent's text reads: escapes in a JSON body, percent-escapes in the URL,
  // header values and the body (see readingsOf). Placeholders and secrets are looked for there too.
  const readings = new Map<Part, Readings>();
  for (const part of parts) {
    if (!part.decode) continue;
    // A URL or header value without escapes has nothing to decode, seen without making bytes of its text.
    if (!part.decode.body && !hasEscapes(part.scannable, part.decode.formFrom)) continue;
    const found = readingsOf(part.bytes, part.decode);
    if (found === 'too-deep') {
      return new Refusal(400, 'bad-request', `the ${what} is percent-encoded more than ${MAX_LAYERS} layers deep in the ${part.name}, too deep for the proxy to read it for secrets`);
    }
    if (found instanceof Refusal) return found;
    if (found) readings.set(part, found);
  }

  // Step: find placeholders. One going anywhere its grant does not name is attempted exfiltration.
  if (registry && live) {
    const hits = [
      ...parts.flatMap((part) => registry.find(part.bytes, false, part.search)),
      // Decoded, too: `%67%68%70…` or `\u0067hp…` hides a placeholder from a search of the bytes that arrived.
      ...[...readings.values()].flatMap((reading) => decodedTexts(reading).flatMap((bytes) => registry.find(bytes))),
    ];
    for (const hit of hits) {
      const placeholder = hit.placeholder;
      const grantAllows =
        placeholder.session === session &&
        registry.allowedAt(placeholder, { host: target.host }) &&
        isAllowed(engine.decide({ surface: 'credentials', secret: placeholder.secret, host: target.host, ...principalFields(caller) }));
      if (!grantAllows) {
        facts.attemptedExfiltration = { secret: placeholder.secret, rule: placeholder.ruleId, session: placeholder.session };
        return new Refusal(
          403,
          'placeholder-exfiltration',
          `a placeholder for secret "${placeholder.secret}" is heading to ${target.host}, which its grant (rule ${placeholder.ruleId}) does not allow`,
          [placeholder.ruleId],
        );
      }
      if (scheme !== 'https') {
        return new Refusal(403, 'credential-over-plaintext', `secret "${placeholder.secret}" may only be sent over TLS; use ${what === 'message' ? 'wss://' : 'https://'}`, [placeholder.ruleId]);
      }
    }
    if (hits.length > 0) facts.placeholders = [...new Set(hits.map((h) => h.placeholder.secret))];
  }

  // Step: scan what the agent wrote (URL, headers, body, message) for secrets; live placeholders are not findings.
  if (tools.scanner) {
    const scanner = tools.scanner;
    // Every part, and every decoded reading of one, in one scan of the whole: the node's scan metric
    // counts one per request or message.
    const decoded = [...readings.values()].flatMap(decodedTexts);
    const outcomes = scanned?.length === parts.length && decoded.length === 0 ? scanned : scanner.checkEach([...parts.map((part) => part.scannable), ...decoded]);
    const decodedFindings = new Map(decoded.map((bytes, index) => [bytes, (outcomes[parts.length + index] as ScanOutcome).findings]));
    const withoutLive = (findings: Finding[], bytes: () => Buffer, search: PlaceholderSearch = {}): Finding[] =>
      registry && live && findings.length > 0 ? registry.withoutPlaceholders(findings, bytes(), search) : findings;
    const scan = (bytes: Buffer): Finding[] => withoutLive(decodedFindings.get(bytes) ?? scanner.check(bytes).findings, () => bytes);
    const found = parts.map((part, index) => withoutLive((outcomes[index] as ScanOutcome).findings, () => part.bytes, part.search));
    // A placeholder the client percent-encoded once may decode past itself (a "%41" or "+" inside it read
    // again): where it sits in the text that arrived, nothing found decoded is a secret.
    const placeholderSpans = (bytes: Buffer, search: PlaceholderSearch = {}): Span[] => (registry && live ? registry.find(bytes, false, search) : []);
    /** Where a secret showed only percent-decoded, for the reason and the record. */
    const percentEncoded = new Set<string>();
    for (const [part, reading] of readings) {
      const index = parts.indexOf(part);
      // A JSON body is also read as the server's parser will read it: `\u0067hp_…` is `ghp_…` there, and its
      // percent-decoded readings are taken from that text. When it shows more, it is the body from here on
      // (redacted, it goes as equivalent JSON).
      if (reading.json) {
        const kept = scan(reading.json);
        const decoded = percentFindings(reading.percent, [...kept, ...placeholderSpans(reading.json)], scan);
        if (kept.length + decoded.length > (found[index] as Finding[]).length) {
          part.bytes = reading.json;
          found[index] = [...kept, ...decoded];
          if (decoded.length > 0) percentEncoded.add(part.name);
        }
        continue;
      }
      const decoded = percentFindings(reading.percent, [...(found[index] as Finding[]), ...placeholderSpans(part.bytes, part.search)], scan);
      if (decoded.length > 0) percentEncoded.add(part.name);
      found[index] = [...(found[index] as Finding[]), ...decoded];
    }
    const findings: Finding[] = found.flat();
    const verdict = dlpVerdict({ status: findings.length > 0 ? 'found' : 'clean', findings, size: 0 }, engine.dlp, 'network');
    if (findings.length > 0) facts.findings = findingsForAudit(findings);
    if (percentEncoded.size > 0) facts.percentEncoded = [...percentEncoded];
    const where = percentEncoded.size > 0 ? ` percent-encoded in the ${[...percentEncoded].join(' and ')}` : '';
    if (verdict.effect === 'deny') return new Refusal(403, 'secret-detected', `the ${what} carries a secret${where}: ${verdict.reason}`);
    if (verdict.effect === 'redact') {
      // Redact exactly the findings kept above (not a fresh scan, which would take placeholders for secrets).
      // One found percent-decoded is redacted where it is spelt in the text that arrived (its escapes
      // replaced whole): the rest of the URL or body reaches the server byte-exact, and decodes as before.
      parts.forEach((part, index) => {
        const kept = found[index] as Finding[];
        if (kept.length === 0) return;
        part.bytes = scanner.redact(part.bytes, kept);
        part.changed = true;
      });
      facts.redacted = true;
    }
  }

  // Step: swap this session's placeholders for the real values (TLS only, allowed hosts only: checked above).
  // In the URL (and in a form body where the client encoded the placeholder), a real value goes in
  // percent-encoded: raw, a "/", "?", "#", "&" or "+" in it would change what the text says (headers and
  // other bodies carry it as it is).
  if (registry && live && scheme === 'https') {
    const destination = { host: target.host };
    for (const part of parts) {
      if (!part.swappable) continue;
      const swapped = registry.swap(part.bytes, session, destination, part.search);
      if (swapped.swapped.length === 0) continue;
      part.bytes = swapped.text;
      part.changed = true;
    }
  }
  return undefined;
}

/** Who sends a WebSocket message and where: the steps' view of one inspected wss:// connection. */
export interface MessageInput {
  engine: PolicyEngine;
  tools: ContentTools;
  caller: Caller;
  target: Target;
  /** `http` for ws://: a placeholder is refused, as in any plain request (credentials never go in the clear). */
  scheme: 'http' | 'https';
}

/**
 * The content steps for one message (or control frame's payload) an agent sends on a WebSocket the proxy reads:
 * read like a request body (JSON escapes and percent-escapes too), placeholders judged, secrets scanned
 * under policy.dlp, this session's placeholders swapped for the real values. The payload to send (the same
 * Buffer when nothing changed), or the refusal that closes the connection. `facts` gets what was found.
 */
export function prepareMessage(input: MessageInput, payload: Buffer, facts: Record<string, unknown>): Buffer | Refusal {
  const { tools } = input;
  if (!tools.scanner && !(tools.placeholders && tools.placeholders.size > 0)) return payload;
  const part = new Part(payload, 'message', {}, { body: true, formFrom: Infinity }, true);
  const refused = inspectParts([part], { ...input, what: 'message' }, facts);
  if (refused) return refused;
  return part.changed ? part.bytes : payload;
}

/**
 * The response step for a caller whose session holds placeholders, or whose request got a credential header
 * injected: real values a server reflects back become the session's placeholders (or `[REDACTED:<secret>]`
 * for an injected value the agent holds no placeholder for), so the agent never reads a secret. Undefined
 * when there is nothing to mask: that response passes untouched.
 */
function responseMasker(tools: ContentTools, caller: Caller, injected: { secret: string; value: string }[]): Masker | undefined {
  const registry = tools.placeholders;
  const session = caller.session;
  const lent = registry !== undefined && session !== undefined && registry.sessionPlaceholders(session).length > 0;
  if (!lent && injected.length === 0) return undefined;
  const redactions = injected.flatMap(({ secret, value }) => redactionPairs(secret, value));
  return lent ? registry.masker(session, redactions) : new Masker(redactions);
}

/**
 * The response masker over time, for a connection that outlives its request (a WebSocket): the caller's
 * session may be lent more placeholders while it is open, and a real value swapped in for one of them must
 * be masked on its way back too. `now` rebuilds the masker when the session's placeholders changed.
 */
export class LiveMasker {
  /** Every masker handed out, for the count of secrets masked. */
  private readonly used = new Set<Masker>();
  private current: Masker | undefined;
  /** The session's placeholders `current` was built for; unknown ('') until the first look. */
  private lent = '';
  /**
   * The registry's change count when `lent` was taken: none yet, so the first message looks, since
   * placeholders may have been lent between the request's steps and the server's answer.
   */
  private changes = -1;

  constructor(
    private readonly tools: ContentTools,
    private readonly caller: Caller,
    private readonly outgoing: OutgoingRequest,
  ) {
    this.current = outgoing.responseMasker;
    if (this.current) this.used.add(this.current);
  }

  /** The masker for what the server sends next; undefined while there is nothing to mask. */
  now(): Masker | undefined {
    // Asked per message: the session's placeholders are listed again only after the registry changed.
    const changes = this.tools.placeholders?.changes ?? 0;
    if (changes === this.changes) return this.current;
    this.changes = changes;
    const lent = this.lentNow();
    if (lent !== this.lent) {
      this.lent = lent;
      this.current = responseMasker(this.tools, this.caller, this.outgoing.injected);
      if (this.current) this.used.add(this.current);
    }
    return this.current;
  }

  /** How many secrets were masked, by name. */
  get maskedSecrets(): number {
    return new Set([...this.used].flatMap((masker) => [...masker.found].map((pair) => pair.secret))).size;
  }

  private lentNow(): string {
    const session = this.caller.session;
    return session === undefined || !this.tools.placeholders ? '' : this.tools.placeholders.sessionPlaceholders(session).map((placeholder) => placeholder.value).join(' ');
  }
}

/**
 * How a server that decodes a part may read it, besides its bytes: a JSON body's text as a parser reads it
 * (`json`), and percent-decoded readings of that text, or of the bytes when the body is not JSON.
 */
interface Readings {
  json?: Buffer;
  percent: PercentReading[];
}

/**
 * The decoded readings of one part; undefined when there is nothing to decode (no backslash, no "%", no
 * "+" where form rules apply), which is the common case and costs a byte search or two. Every body is read
 * percent-decoded, not only a form: its Content-Type is the agent's own text, and a server it controls
 * decodes whatever it likes. A binary body (one with a NUL byte: a git pack, an archive, an image) is not:
 * random bytes hold escapes everywhere, so decoding it would double the scan of every upload for nothing
 * a text encoding hides, and a server that percent-decodes binary data on purpose could as well XOR it.
 */
function readingsOf(bytes: Buffer, options: { body: boolean; formFrom: number }): Readings | undefined | Refusal | 'too-deep' {
  const json = options.body ? decodedJson(bytes) : undefined;
  if (json instanceof Refusal) return json;
  if (!json && options.body && bytes.includes(0)) return undefined;
  const percent = percentReadings(json ?? bytes, json ? Infinity : options.formFrom);
  if (percent === 'too-deep') return percent;
  if (!json && percent.length === 0) return undefined;
  return { ...(json ? { json } : {}), percent };
}

function decodedTexts(readings: Readings): Buffer[] {
  return [...(readings.json ? [readings.json] : []), ...readings.percent.map((reading) => reading.bytes)];
}

interface Span {
  start: number;
  end: number;
}

/**
 * Findings the percent-decoded readings show, as spans of the text they were decoded from, except those
 * inside a span of `covered` (findings already made there, and placeholders).
 */
function percentFindings(readings: PercentReading[], covered: Span[], scan: (bytes: Buffer) => Finding[]): Finding[] {
  const added: Finding[] = [];
  for (const reading of readings) {
    for (const finding of scan(reading.bytes)) {
      const span = reading.spanOf(finding.start, finding.end);
      if (![...covered, ...added].some((other) => other.start <= span.start && span.end <= other.end)) added.push({ ...finding, ...span });
    }
  }
  return added;
}

/**
 * The first look at a request without a body while no placeholder is lent: `clean` when its URL, header
 * names and values hold no escape to decode and the scanner finds nothing in them; else the scan's outcomes
 * (URL, then the header list's names and values in order: inspectParts' parts), or undefined when something
 * needs decoding and nothing was scanned yet.
 */
function quickScan(scanner: Scanner, pathAndQuery: string, headers: string[]): 'clean' | ScanOutcome[] | undefined {
  if (hasEscapes(pathAndQuery, queryStart(pathAndQuery))) return undefined;
  for (let i = 1; i < headers.length; i += 2) if (hasEscapes(headers[i] as string)) return undefined;
  const outcomes = scanner.checkEach([pathAndQuery, ...headers]);
  return outcomes.every((outcome) => outcome.findings.length === 0) ? 'clean' : outcomes;
}

/** Where form rules (`+` is a space) start in a request target: its "?". */
function queryStart(target: string): number {
  const at = target.indexOf('?');
  return at < 0 ? Infinity : at;
}

function isFormBody(request: IncomingMessage): boolean {
  return /^\s*application\/x-www-form-urlencoded\s*(?:;|$)/i.test(request.headers['content-type'] ?? '');
}

/**
 * A JSON body's text as a parser reads it: escapes decoded, then written back in JSON's plainest form.
 * Undefined when the body has no backslash (nothing to decode) or is not JSON.
 */
function decodedJson(bytes: Buffer): Buffer | undefined | Refusal {
  if (!bytes.includes(0x5c)) return undefined;
  let value: unknown;
  try {
    value = JSON.parse(bytes.toString('utf8'));
  } catch {
    return undefined;
  }
  try {
    return Buffer.from(JSON.stringify(value), 'utf8');
  } catch {
    // Parsed, but nested too deep to write back: a server may still read it, so it is not passed unscanned.
    return new Refusal(400, 'bad-request', 'the JSON request body is nested too deeply for the proxy to scan it for secrets');
  }
}

/**
 * One piece of the request (or message) the content steps read and may rewrite. It is held as it came: bytes
 * (the URL, a body, a message) or text (a header name or value, which node's parser gives as latin1 text, one
 * character per byte). The other form is made only when a step asks for it: a request whose headers hold no
 * escape and meet no live placeholder is scanned without a Buffer made for any of them.
 */
class Part {
  changed = false;
  /** The scheme text (`Basic `) when `bytes` are a header's decoded Basic credential (see headerPart). */
  basic: string | undefined;
  private heldText: string | undefined;
  private heldBytes: Buffer | undefined;

  constructor(
    content: string | Buffer,
    /** What a reason calls it: "URL", "headers", "body", "message". */
    readonly name: string,
    /** How placeholders are found and swapped in it. */
    readonly search: PlaceholderSearch,
    /** How it is read decoded (see readingsOf); header names are not. */
    readonly decode: { body: boolean; formFrom: number } | undefined,
    /** Whether a real value may go in (never as a header name: it is no place for a credential). */
    readonly swappable: boolean,
  ) {
    if (typeof content === 'string') this.heldText = content;
    else this.heldBytes = content;
  }

  get bytes(): Buffer {
    return (this.heldBytes ??= Buffer.from(this.heldText as string, 'latin1'));
  }

  set bytes(bytes: Buffer) {
    this.heldBytes = bytes;
    this.heldText = undefined;
  }

  /** What the scanner reads (the same characters either way): the text when it is held, else the bytes. */
  get scannable(): string | Buffer {
    return this.heldText ?? (this.heldBytes as Buffer);
  }
}

/** How a header value is read: decoded as percent-escapes (not as a form), and a real value may go in. */
const HEADER_VALUE_DECODE = { body: false, formFrom: Infinity };

const BASIC_CREDENTIALS = /^(\s*basic\s+)([A-Za-z0-9+/]+={0,2})\s*$/i;

/**
 * A header value as bytes. A Basic credential is read decoded when it holds a live placeholder, so the
 * placeholder is judged and swapped like any other, and what surrounds it is scanned as what it is.
 */
function headerPart(value: string, registry: PlaceholderRegistry | undefined): Part {
  const basic = registry && registry.size > 0 ? BASIC_CREDENTIALS.exec(value) : null;
  if (basic) {
    const decoded = Buffer.from(basic[2] as string, 'base64');
    if (registry!.containsAny(decoded)) {
      const part = new Part(decoded, 'headers', {}, HEADER_VALUE_DECODE, true);
      part.basic = basic[1] as string;
      return part;
    }
  }
  return new Part(value, 'headers', {}, HEADER_VALUE_DECODE, true);
}

function headerText(part: Part, original: string): string {
  if (!part.changed) return original;
  return part.basic !== undefined ? part.basic + part.bytes.toString('base64') : part.bytes.toString('latin1');
}

/** A rewritten request target: bytes outside printable ASCII (the agent's own, as they arrived) are percent-encoded. */
function urlText(bytes: Buffer): string {
  let out = '';
  for (const byte of bytes) out += byte > 0x20 && byte < 0x7f ? String.fromCharCode(byte) : `%${byte.toString(16).toUpperCase().padStart(2, '0')}`;
  return out;
}

/** Replaces every header of that name (case-insensitive) with one. */
export function setHeader(headers: string[], name: string, value: string): string[] {
  return [...removeHeader(headers, name), name, value];
}

function removeHeader(headers: string[], name: string): string[] {
  const out: string[] = [];
  const lower = name.toLowerCase();
  for (let i = 0; i + 1 < headers.length; i += 2) {
    if ((headers[i] as string).toLowerCase() !== lower) out.push(headers[i] as string, headers[i + 1] as string);
  }
  return out;
}

function grantCovers(hosts: string[], host: string): boolean {
  return hosts.some((text) => {
    const pattern = parseHostPattern(text);
    return typeof pattern !== 'string' && matchHostPattern(pattern, host);
  });
}

function principalFields(caller: Caller): { agent?: string; teams?: string[]; user?: string } {
  const out: { agent?: string; teams?: string[]; user?: string } = {};
  if (caller.principal.agent !== undefined) out.agent = caller.principal.agent;
  if (caller.principal.teams !== undefined) out.teams = caller.principal.teams;
  if (caller.principal.user !== undefined) out.user = caller.principal.user;
  return out;
}
