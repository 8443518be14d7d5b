/**
 * The compiled scanner. `createScanner` builds one keyword automaton over every rule's keywords and every
 * known secret's encodings, and compiles each rule's pattern once. A scan is then one pass over the text:
 * the automaton reports keyword ends, and only there is the rule's anchored pattern (and its check) run.
 * Payment cards have no keyword; the same pass counts runs of digits and checks a run that is long enough.
 */
import { GatehouseError } from '../util/errors.js';
import { buildAutomaton, type Automaton } from './automaton.js';
import { applyRedactions, KNOWN_SECRET_RULE_ID, latin1, matchStarts, resolveOverlaps, type Finding, type ScanOutcome } from './findings.js';
import { invisibleWidth, stripInvisible } from './invisible.js';
import { MAX_LAYERS, percentReadings } from './percent-decoding.js';
import { knownForms, type KnownForm, type KnownSecret } from './known.js';
import { CARD_RULE_ID, RULES, type Rule } from './rules.js';
import { StreamScanner } from './stream.js';
import { CONFIRMED, isDocumentationExample, REJECT, shannonEntropy, WEAK } from './validators.js';

export { KNOWN_SECRET_RULE_ID } from './findings.js';
export type { Finding, ScanOutcome, ScanStatus } from './findings.js';
export { StreamScanner } from './stream.js';


export interface ScannerOptions {
  /** Values that are a finding wherever they appear (vault entries, credential environment variables). */
  knownSecrets?: readonly KnownSecret[];
  /** Larger input is not scanned: `check` says `too_large`, `scan` throws `dlp_too_large`. Default 10 MiB. */
  maxBytes?: number;
  /** Rule ids to leave out. */
  disabledRules?: readonly string[];
}

const DEFAULT_MAX_BYTES = 10 * 1024 * 1024;
/** The automaton keys a known secret on its first characters; the rest is compared directly. */
const KNOWN_KEYWORD_LENGTH = 12;
/** How far from an AWS access key id to look for its secret key. */
const AWS_PAIR_WINDOW = 300;
/** Characters either side of an invisible character that are scanned again without it. */
const HIDDEN_WINDOW = 512;
/** Past this many invisible characters the whole text is scanned again instead. */
const MAX_HIDDEN_WINDOWS = 256;
const BASE64_CHAR = /[A-Za-z0-9/+=]/;
const HAS_LOWER = /[a-z]/;
const HAS_UPPER = /[A-Z]/;
const HAS_SPACE = /\s/;
const ASCII_RUN = /[\x00-\x7f]{6,}/;
const AWS_SECRET_SHAPE = /(?<![A-Za-z0-9/+=])[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+=])/g;

interface CompiledRule {
  rule: Rule;
  regex: RegExp;
  /** Order in the rule table: earlier rules are more specific and win overlaps. */
  rank: number;
}

/** What one automaton keyword stands for: a rule (with its fixed offset) or a known secret's encoding. */
interface Trigger {
  rule: CompiledRule | undefined;
  form: KnownForm | undefined;
  before: number;
}

/** The end of a scan of one buffer: its findings and, for streams, where an unfinished match may start. */
interface RangeResult {
  pendingFrom: number;
}



/** Object keys whose string value is a credential on its own (for JSON, where the key is not in the text). */
const PASSWORD_KEY = /(?:password|passwd|pwd|passphrase)$/i;
const SECRET_KEY = /(?:secret|token|api[_-]?key|access[_-]?key|auth[_-]?key|private[_-]?key|credentials?)$/i;

function isWordChar(c: number): boolean {
  return (c >= 48 && c <= 57) || (c >= 65 && c <= 90) || (c >= 97 && c <= 122);
}

/**
 * Whether a match at `start` begins a word. An escape such as `\n` before it counts as a separator, since
 * text inside JSON strings and source code literals arrives escaped.
 */
function atWordStart(text: string, start: number, previous: number): boolean {
  const before = start > 0 ? text.charCodeAt(start - 1) : previous;
  if (before < 0 || !isWordChar(before)) return true;
  // n, t, r, b, f after a backslash
  return (before === 110 || before === 116 || before === 114 || before === 98 || before === 102) && start >= 2 && text.charCodeAt(start - 2) === 92;
}

export function tooLargeError(size: number, limit: number): GatehouseError {
  return new GatehouseError('dlp_too_large', `content of ${size} bytes is over the secret-scan limit of ${limit} bytes (policy.dlp.maxBytes)`, {
    exitCode: 1,
    details: { size, limit },
  });
}

export class Scanner {
  readonly maxBytes: number;
  readonly rules: readonly Rule[];
  /**
   * The fewest characters a stream must hold back at the end of each chunk (for keywords that are still
   * arriving and matches that start before their keyword). Pending matches may hold back more, up to
   * their rule's `maxLength`.
   */
  readonly holdBack: number;

  private readonly compiled: CompiledRule[];
  private readonly automaton: Automaton;
  private readonly triggers: Trigger[];
  private readonly knownSecrets: readonly KnownSecret[];
  private readonly card: CompiledRule | undefined;
  private readonly passwordRule: CompiledRule | undefined;
  private readonly apiKeyRule: CompiledRule | undefined;
  private readonly awsSecret: CompiledRule | undefined;
  private normalizing = false;
  /** Per rule: the end of its last match in the text being scanned. */
  private readonly coveredUntil: Int32Array;

  constructor(options: ScannerOptions = {}) {
    this.maxBytes = options.maxBytes ?? DEFAULT_MAX_BYTES;
    const disabled = new Set(options.disabledRules ?? []);
    for (const id of disabled) {
      if (!RULES.some((rule) => rule.id === id)) {
        throw new GatehouseError('dlp_unknown_rule', `policy.dlp.disabledRules names "${id}", which is not a detection rule; "gatehouse scan --list-rules" lists them`);
      }
    }
    this.rules = RULES.filter((rule) => !disabled.has(rule.id));
    this.compiled = this.rules.map((rule, rank) => ({
      rule,
      rank,
      regex: new RegExp(rule.pattern, `y${rule.secretGroups ? 'd' : ''}${rule.flags ?? ''}`),
    }));
    this.card = this.compiled.find((c) => c.rule.id === CARD_RULE_ID);
    this.passwordRule = this.compiled.find((c) => c.rule.id === 'generic-password');
    this.apiKeyRule = this.compiled.find((c) => c.rule.id === 'generic-api-key');
    this.awsSecret = this.compiled.find((c) => c.rule.id === 'aws-secret-access-key');
    this.coveredUntil = new Int32Array(this.compiled.length);
    this.knownSecrets = options.knownSecrets ?? [];

    const keywords: string[] = [];
    this.triggers = [];
    let holdBack = 0;
    for (const compiled of this.compiled) {
      for (const keyword of compiled.rule.keywords) {
        keywords.push(keyword);
        this.triggers.push({ rule: compiled, form: undefined, before: compiled.rule.before ?? 0 });
        holdBack = Math.max(holdBack, (compiled.rule.before ?? 0) + keyword.length - 1);
      }
    }
    for (const form of knownForms(this.knownSecrets)) {
      // The automaton is ASCII: key a value with other characters on its first ASCII run long enough.
      const run = ASCII_RUN.exec(form.text);
      if (!run) continue; // its hex, base64 and URL forms still cover it
      const before = run.index;
      const keyword = run[0].slice(0, KNOWN_KEYWORD_LENGTH);
      keywords.push(keyword);
      this.triggers.push({ rule: undefined, form, before });
      holdBack = Math.max(holdBack, before + keyword.length - 1);
    }
    this.holdBack = holdBack;
    this.automaton = buildAutomaton(keywords);
  }

  /**
   * Takes on `next`'s rules, limit and known secrets, keeping this scanner's `onScan`: how a node applies a
   * policy reload or a vault change to the scanners its data planes already hold. Streams already open go on
   * with the new tables from their next chunk.
   */
  adopt(next: Scanner): void {
    const onScan = this.onScan;
    Object.assign(this, next);
    this.onScan = onScan;
  }

  /** Findings in `input`; throws `dlp_too_large` (a GatehouseError) over the limit, so it cannot be ignored. */
  scan(input: string | Uint8Array): Finding[] {
    const outcome = this.check(input);
    if (outcome.status === 'too_large') throw tooLargeError(outcome.size, this.maxBytes);
    return outcome.findings;
  }

  /** Told how long each `check` and `checkJson` took, in microseconds (the node's scan-latency metric). */
  onScan: ((microseconds: number) => void) | undefined;

  /** Like `scan`, but reports `too_large` as an outcome for the caller's policy to decide. */
  check(input: string | Uint8Array): ScanOutcome {
    if (!this.onScan) return this.checkText(input);
    const started = performance.now();
    const outcome = this.checkText(input);
    this.onScan((performance.now() - started) * 1000);
    return outcome;
  }

  /**
   * `check` over the parts of one whole (a request's URL, header names and values, body): an outcome per
   * part, in order, and one `onScan` report for them all, so the node's scan-latency metric counts scans of
   * requests and messages, not of their pieces.
   */
  checkEach(inputs: readonly (string | Uint8Array)[]): ScanOutcome[] {
    const started = this.onScan ? performance.now() : 0;
    const outcomes = inputs.map((input) => this.checkText(input));
    this.onScan?.((performance.now() - started) * 1000);
    return outcomes;
  }

  private checkText(input: string | Uint8Array): ScanOutcome {
    const size = input.length;
    if (size > this.maxBytes) return { status: 'too_large', findings: [], size };
    const text = typeof input === 'string' ? input : latin1(input);
    const findings: Finding[] = [];
    this.scanText(text, true, -1, findings);
    const resolved = resolveOverlaps(findings);
    return { status: resolved.length > 0 ? 'found' : 'clean', findings: resolved, size };
  }

  /** Findings in every string (keys included) of a parsed JSON value; each carries its `path`. */
  scanJson(value: unknown): Finding[] {
    const outcome = this.checkJson(value);
    if (outcome.status === 'too_large') throw tooLargeError(outcome.size, this.maxBytes);
    return outcome.findings;
  }

  checkJson(value: unknown): ScanOutcome {
    if (!this.onScan) return this.checkValue(value);
    const started = performance.now();
    const outcome = this.checkValue(value);
    this.onScan((performance.now() - started) * 1000);
    return outcome;
  }

  private checkValue(value: unknown): ScanOutcome {
    const findings: Finding[] = [];
    let size = 0;
    // An explicit stack: deeply nested input cannot overflow the call stack.
    const stack: { value: unknown; path: string; key: string | undefined }[] = [{ value, path: '', key: undefined }];
    while (stack.length > 0) {
      const item = stack.pop()!;
      const current = item.value;
      // Every value counts at least one unit, so a huge array of tiny values meets the limit too.
      size += 1;
      if (typeof current === 'string') {
        size += current.length;
        if (size > this.maxBytes) return { status: 'too_large', findings: [], size };
        this.scanString(current, item.path, item.key, false, findings);
      } else if (typeof current === 'number' || typeof current === 'bigint') {
        const digits = String(current);
        if (digits.length >= 13) this.scanString(digits, item.path, undefined, false, findings);
      } else if (Array.isArray(current)) {
        for (let i = current.length - 1; i >= 0; i--) stack.push({ value: current[i], path: `${item.path}/${i}`, key: undefined });
      } else if (current !== null && typeof current === 'object') {
        for (const key of Object.keys(current)) {
          const path = `${item.path}/${escapePointer(key)}`;
          size += key.length;
          this.scanString(key, path, undefined, true, findings);
          stack.push({ value: (current as Record<string, unknown>)[key], path, key });
        }
      }
    }
    if (size > this.maxBytes) return { status: 'too_large', findings: [], size };
    return { status: findings.length > 0 ? 'found' : 'clean', findings, size };
  }

  /**
   * `input` with every finding's secret replaced by `[REDACTED:<rule id>]`. Throws over the limit. Pass the
   * findings of an earlier `check`/`scan` of the same input to skip scanning it again.
   */
  redact(input: string, findings?: readonly Finding[]): string;
  redact(input: Uint8Array, findings?: readonly Finding[]): Buffer;
  redact(input: string | Uint8Array, known?: readonly Finding[]): string | Buffer {
    const findings = known ?? this.scan(input);
    if (typeof input === 'string') return applyRedactions(input, findings);
    return Buffer.from(applyRedactions(latin1(input), findings), 'latin1');
  }

  /**
   * A copy of a JSON value with secrets redacted inside its strings; the result is still valid JSON. Pass
   * the findings of an earlier `checkJson`/`scanJson` of the same value to skip scanning it again.
   */
  redactJson<T>(value: T, known?: readonly Finding[]): T {
    const findings = known ?? this.scanJson(value);
    if (findings.length === 0) return value;
    const byPath = new Map<string, Finding[]>();
    for (const finding of findings) {
      const key = `${finding.inKey ? 'k' : 'v'}${finding.path ?? ''}`;
      const list = byPath.get(key);
      if (list) list.push(finding);
      else byPath.set(key, [finding]);
    }
    const copy = (source: unknown, path: string): unknown => {
      const here = byPath.get(`v${path}`);
      if (typeof source === 'string') return here ? applyRedactions(source, here) : source;
      if (typeof source === 'number' || typeof source === 'bigint') return here ? applyRedactions(String(source), here) : source;
      return source;
    };
    // Iterative deep copy, for the same reason as in checkJson.
    const root: { value: unknown } = { value: copy(value, '') };
    const stack: { source: unknown; target: Record<string, unknown> | unknown[]; path: string }[] = [];
    const containerFor = (source: unknown): Record<string, unknown> | unknown[] | undefined =>
      Array.isArray(source) ? [] : source !== null && typeof source === 'object' ? {} : undefined;
    const rootContainer = containerFor(value);
    if (rootContainer) {
      root.value = rootContainer;
      stack.push({ source: value, target: rootContainer, path: '' });
    }
    while (stack.length > 0) {
      const { source, target, path } = stack.pop()!;
      const entries: [string, unknown][] = Array.isArray(source)
        ? source.map((v, i) => [String(i), v])
        : Object.entries(source as Record<string, unknown>);
      for (const [key, child] of entries) {
        const childPath = `${path}/${escapePointer(key)}`;
        const keyFindings = Array.isArray(source) ? undefined : byPath.get(`k${childPath}`);
        const outKey = keyFindings ? applyRedactions(key, keyFindings) : key;
        const container = containerFor(child);
        const out = container ?? copy(child, childPath);
        if (Array.isArray(target)) target.push(out);
        // defineProperty, not assignment: a "__proto__" key must stay an own property of the copy.
        else Object.defineProperty(target, outKey, { value: out, enumerable: true, writable: true, configurable: true });
        if (container) stack.push({ source: child, target: container, path: childPath });
      }
    }
    return root.value as T;
  }

  /** A streaming scanner over byte chunks; see StreamScanner. */
  stream(options: { redact?: boolean; maxBytes?: number } = {}): StreamScanner {
    return new StreamScanner(this, options.redact ?? false, options.maxBytes ?? this.maxBytes);
  }

  /** Scans one string of a JSON value, adding key-aware generic checks the text alone cannot see. */
  private scanString(text: string, path: string, key: string | undefined, inKey: boolean, out: Finding[]): void {
    const before = out.length;
    if (text.length >= 4) {
      this.scanText(text, true, -1, out);
      if (text.includes('%') || (text.includes('?') && text.includes('+'))) this.scanPercentDecoded(text, out);
    }
    if (key !== undefined && out.length === before && text.length >= 8) {
      const generic = PASSWORD_KEY.test(key) ? this.passwordRule : SECRET_KEY.test(key) ? this.apiKeyRule : undefined;
      if (generic && generic.rule.check!(text, text) === CONFIRMED && text.length <= 4096 && !HAS_SPACE.test(text)) {
        out.push(makeFinding(generic.rule, 0, text.length, text, CONFIRMED));
      }
    }
    if (out.length > before) {
      const mine = resolveOverlaps(out.splice(before));
      for (const finding of mine) {
        finding.path = path;
        if (inKey) finding.inKey = true;
        out.push(finding);
      }
    }
  }

  /**
   * A string's percent-decoded readings, scanned as a server that decodes it reads them (a `url` argument
   * holding `ghp%5F…`, or `%67%68%70…`): each finding spans the escapes that spell it in `text`, so that it
   * is redacted there. A string still changing after MAX_LAYERS of decoding is a finding itself: no client
   * encodes that often, and stopping there would let a secret through.
   */
  private scanPercentDecoded(text: string, out: Finding[]): void {
    const bytes = Buffer.from(text, 'utf8');
    const query = bytes.indexOf(0x3f);
    const readings = percentReadings(bytes, query < 0 ? Infinity : query);
    if (readings === 'too-deep') {
      out.push({ ...TOO_DEEP, start: 0, end: text.length, preview: `**** (${text.length} chars)`, percentEncoded: true });
      return;
    }
    // Spans are UTF-16 units in `text`; the readings' are bytes of its UTF-8.
    const unit = bytes.length === text.length ? (offset: number) => offset : (offset: number) => bytes.toString('utf8', 0, offset).length;
    for (const reading of readings) {
      const found: Finding[] = [];
      this.scanText(latin1(reading.bytes), true, -1, found);
      for (const finding of found) {
        const span = reading.spanOf(finding.start, finding.end);
        out.push({ ...finding, start: unit(span.start), end: unit(span.end), percentEncoded: true });
      }
    }
  }

  /**
   * The single pass over `text`. With `final` false (streams) a candidate that could still grow past the end
   * of `text` is not judged; its start is returned as `pendingFrom`. `previous` is the character code before
   * `text[0]` (or -1), for the word-boundary check.
   * @internal
   */
  scanText(text: string, final: boolean, previous: number, out: Finding[]): RangeResult {
    const { delta, column, acceptFrom, columns, outputStart, outputs, lengths } = this.automaton;
    const n = text.length;
    let pendingFrom = n;
    let state = 0;
    this.coveredUntil.fill(0);
    let digits = 0;
    let runStart = 0;
    let separator = false;
    // Where the text holds invisible characters (zero-width, soft hyphen), which can hide a token.
    let hidden: number[] | undefined;
    for (let i = 0; i < n; i++) {
      const c = text.charCodeAt(i);
      let col = 0;
      if (c < 128) col = column[c]!;
      else if (invisibleWidth(text, i) > 0) {
        if (hidden === undefined) hidden = [];
        if (hidden.length < MAX_HIDDEN_WINDOWS) hidden.push(i);
      }
      state = delta[state + col]!;
      if (state >= acceptFrom) {
        const index = state / columns;
        for (let o = outputStart[index]!; o < outputStart[index + 1]!; o++) {
          const id = outputs[o]!;
          const pending = this.onKeyword(text, i + 1 - lengths[id]!, id, final, previous, out);
          if (pending < pendingFrom) pendingFrom = pending;
        }
      }
      if (c >= 48 && c <= 57) {
        if (digits === 0) runStart = i;
        digits++;
        separator = false;
      } else if (digits !== 0) {
        if ((c === 32 || c === 45) && !separator) {
          separator = true;
        } else {
          if (digits >= 13 && digits <= 19) this.onDigits(text, runStart, final, previous, out);
          digits = 0;
          separator = false;
        }
      }
    }
    if (final && this.awsSecret) this.pairAwsSecrets(text, out);
    if (hidden && !this.normalizing) {
      const incomplete = this.rescanWithoutInvisible(text, hidden, final, out);
      if (incomplete < pendingFrom) pendingFrom = incomplete;
    }
    if (digits >= 13 && digits <= 19) {
      if (final) this.onDigits(text, runStart, final, previous, out);
      else if (runStart < pendingFrom) pendingFrom = runStart;
    } else if (digits > 0 && !final && runStart < pendingFrom) {
      pendingFrom = runStart; // a run still short of a card number may grow into one
    }
    return { pendingFrom };
  }

  /** Returns where an unfinished match starts (streams), or `text.length` when nothing is pending. */
  private onKeyword(text: string, keywordStart: number, id: number, final: boolean, previous: number, out: Finding[]): number {
    const trigger = this.triggers[id]!;
    const n = text.length;
    const start = keywordStart - trigger.before;
    if (start < 0) return n;
    if (trigger.form) {
      const form = trigger.form;
      const end = start + form.text.length;
      if (end > n) {
        return !final && form.text.startsWith(text.slice(start)) ? start : n;
      }
      if (!text.startsWith(form.text, start)) return n;
      const known = this.knownSecrets[form.secret]!;
      out.push({
        ruleId: KNOWN_SECRET_RULE_ID,
        title: 'Known secret',
        severity: 'high',
        confidence: 'high',
        start,
        end,
        preview: `[${known.name}${form.encoding === 'verbatim' ? '' : `, ${form.encoding}`}] (${form.text.length} chars)`,
        secretName: known.name,
        encoding: form.encoding,
      });
      return n;
    }
    const compiled = trigger.rule!;
    const rule = compiled.rule;
    if (rule.boundary !== false && !atWordStart(text, start, previous)) return n;
    if (rule.boundaryChars !== undefined && start > 0 && rule.boundaryChars.includes(text[start - 1]!)) return n;
    return this.tryRule(compiled, text, start, final, out);
  }

  /**
   * A token with zero-width characters or soft hyphens inside still works for whoever strips them. Scan
   * the text without them and map what is found back onto the original spans (which then include the
   * invisible characters, so redaction removes them too).
   */
  private rescanWithoutInvisible(text: string, positions: number[], final: boolean, out: Finding[]): number {
    // Only the neighbourhood of each invisible character: a token they hide must contain them.
    const windows: [number, number][] = [];
    for (const at of positions) {
      const from = Math.max(0, at - HIDDEN_WINDOW);
      const to = Math.min(text.length, at + HIDDEN_WINDOW);
      const last = windows[windows.length - 1];
      if (last && from <= last[1]) last[1] = to;
      else windows.push([from, to]);
    }
    // In a stream, a window that reaches the end of what has arrived is not judged yet: held back instead.
    let incomplete = text.length;
    if (positions.length >= MAX_HIDDEN_WINDOWS) {
      // Too many to window: all of it, except (in a stream) the tail, which the next chunk completes.
      const n = text.length;
      windows.splice(0, windows.length, [0, final ? n : Math.max(0, n - HIDDEN_WINDOW)]);
      if (!final) incomplete = Math.max(0, n - 2 * HIDDEN_WINDOW);
    }
    this.normalizing = true;
    try {
      for (const [from, to] of windows) {
        if (!final && to >= text.length) {
          incomplete = Math.min(incomplete, from);
          continue;
        }
        const stripped = stripInvisible(text, from, to);
        if (!stripped) continue;
        const found: Finding[] = [];
        this.scanText(stripped.text, true, from > 0 ? text.charCodeAt(from - 1) : -1, found);
        for (const finding of found) {
          const start = stripped.map[finding.start]!;
          const end = stripped.map[finding.end - 1]! + 1;
          if (out.some((f) => f.start < end && start < f.end)) continue;
          out.push({ ...finding, start, end, hidden: true });
        }
      }
    } finally {
      this.normalizing = false;
    }
    return incomplete;
  }

  /**
   * An AWS secret access key has no prefix of its own; next to an access key id (in a credentials CSV, a
   * config block, a log line) a 40-character base64 word with high entropy is one, whatever names it.
   */
  private pairAwsSecrets(text: string, out: Finding[]): void {
    const ids = out.filter((f) => f.ruleId === 'aws-access-key-id');
    for (const id of ids) {
      const from = Math.max(0, id.start - AWS_PAIR_WINDOW);
      const to = Math.min(text.length, id.end + AWS_PAIR_WINDOW);
      // Search a copy of the window only, so a long text costs nothing beyond it.
      const window = text.slice(from, to);
      AWS_SECRET_SHAPE.lastIndex = 0;
      for (let match = AWS_SECRET_SHAPE.exec(window); match !== null; match = AWS_SECRET_SHAPE.exec(window)) {
        const secret = match[0];
        const start = from + match.index;
        if (start > 0 && BASE64_CHAR.test(text[start - 1]!)) continue;
        if (start + secret.length < text.length && BASE64_CHAR.test(text[start + secret.length]!)) continue;
        if (out.some((f) => f.start === start)) continue;
        if (!HAS_LOWER.test(secret) || !HAS_UPPER.test(secret) || shannonEntropy(secret) < 4.2) continue;
        const finding = makeFinding(this.awsSecret!.rule, start, start + secret.length, text, CONFIRMED);
        finding.confidence = 'medium';
        out.push(finding);
      }
    }
  }

  private onDigits(text: string, runStart: number, final: boolean, previous: number, out: Finding[]): void {
    if (!this.card) return;
    if (!atWordStart(text, runStart, previous)) return;
    this.tryRule(this.card, text, runStart, final, out);
  }

  private tryRule(compiled: CompiledRule, text: string, start: number, final: boolean, out: Finding[]): number {
    const rule = compiled.rule;
    const regex = compiled.regex;
    const n = text.length;
    // A keyword inside this rule's previous match (`password=password=…`) is part of it, not a new one;
    // skipping it keeps adversarial repetitions linear.
    if (start < this.coveredUntil[compiled.rank]!) return n;
    const couldGrow = !final && start + rule.maxLength > n;
    regex.lastIndex = start;
    if (!rule.secretGroups) {
      if (!regex.test(text)) return couldGrow ? start : n;
      const end = regex.lastIndex;
      if (couldGrow && end >= n) return start;
      this.coveredUntil[compiled.rank] = end;
      this.accept(rule, text, start, end, start, end, out);
      return n;
    }
    const match = regex.exec(text);
    if (match === null) return couldGrow ? start : n;
    if (couldGrow && regex.lastIndex >= n) return start;
    this.coveredUntil[compiled.rank] = regex.lastIndex;
    for (const group of rule.secretGroups) {
      const span = match.indices?.[group];
      if (span) {
        this.accept(rule, text, start, regex.lastIndex, span[0], span[1], out);
        break;
      }
    }
    return n;
  }

  private accept(rule: Rule, text: string, matchStart: number, matchEnd: number, start: number, end: number, out: Finding[]): void {
    const verdict = rule.check ? rule.check(text.slice(start, end), text.slice(matchStart, matchEnd)) : CONFIRMED;
    if (verdict === REJECT) return;
    const finding = makeFinding(rule, start, end, text, verdict);
    if (isDocumentationExample(text.slice(start, end))) {
      finding.severity = 'low';
      finding.confidence = 'low';
    }
    if (matchStart !== start) matchStarts.set(finding, matchStart);
    out.push(finding);
  }
}

/** What a string percent-encoded past MAX_LAYERS is found as (see scanPercentDecoded). */
const TOO_DEEP = {
  ruleId: 'percent-encoding-too-deep',
  title: `Text percent-encoded more than ${MAX_LAYERS} layers deep, too deep to read for secrets`,
  severity: 'high',
  confidence: 'medium',
} as const;

function makeFinding(rule: Rule, start: number, end: number, text: string, verdict: typeof WEAK | typeof CONFIRMED): Finding {
  const weak = verdict === WEAK;
  const prefix = rule.prefix !== undefined && text.startsWith(rule.prefix, start) ? rule.prefix : '';
  return {
    ruleId: rule.id,
    title: rule.title,
    severity: weak && rule.severity === 'high' ? 'medium' : rule.severity,
    confidence: weak ? 'low' : rule.confidence,
    start,
    end,
    preview: `${prefix}**** (${end - start} chars)`,
  };
}

/** Builds the scanner once (at start-up or policy reload); share it across requests. */
export function createScanner(options: ScannerOptions = {}): Scanner {
  return new Scanner(options);
}

function escapePointer(key: string): string {
  return key.replaceAll('~', '~0').replaceAll('/', '~1');
}

