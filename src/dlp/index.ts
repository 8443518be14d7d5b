/**
 * Secret-leak detection (DLP): rules, the single-pass scanner, redaction and streaming.
 *
 * Build one scanner at start-up or policy reload and share it:
 *
 *   const scanner = await secrets.createScanner(engine.dlp);   // src/secrets: vault + providers + env, policy limits
 *   // or: createScanner({ knownSecrets, maxBytes, disabledRules })
 *   scanner.scan(textOrBuffer)        // Finding[]; throws GatehouseError 'dlp_too_large' over maxBytes
 *   scanner.check(textOrBuffer)       // { status: 'clean' | 'found' | 'too_large', findings, size }
 *   scanner.scanJson(value)           // findings in every string (and key) of a parsed value, with `path`
 *   scanner.redact(text | Buffer)     // secrets replaced by [REDACTED:<rule id>]
 *   scanner.redactJson(value)         // a redacted copy; still valid JSON
 *   const stream = scanner.stream({ redact: true });
 *   stream.push(chunk) / stream.end() // { release, findings, tooLarge }: forward `release`, act on findings
 *
 * Then apply the policy, reusing the findings to redact:
 *
 *   const outcome = scanner.checkJson(args);
 *   const verdict = dlpVerdict(outcome, engine.dlp, 'mcp');   // effect: allow | redact | deny
 *   if (verdict.effect === 'redact') args = scanner.redactJson(args, outcome.findings);
 *
 * What it does not see: a secret split across separate JSON strings or chunks of different requests, or
 * transformed beyond base64/hex/URL encoding (reversed, encrypted). Raw JSON text hides `\u0067hp_...`
 * escapes from a text scan, so scan parsed JSON with `scanJson` wherever the body is JSON; it also reads each
 * string percent-decoded (`ghp%5F…` in a URL argument), as percent-decoding.ts does for the egress proxy's
 * URLs and bodies. Tokens with
 * zero-width characters or soft hyphens inside are found (`finding.hidden`), in streams too.
 *
 * `dlpVerdict` acts only on findings at or above `policy.dlp.minSeverity` (default medium); the rest are
 * logged. Live placeholders look like real tokens to this scanner: swap them first (src/secrets), or drop
 * them with `registry.withoutPlaceholders(findings, input)`.
 *
 * A Finding carries the rule id, span, severity, confidence and a preview that never contains the secret;
 * put findings in audit records through `findingsForAudit`. Spans are UTF-16 units for strings and bytes
 * for Buffers and streams (Buffers are read as latin1, so binary and invalid UTF-8 are scanned as bytes).
 *
 * Rules are listed by `gatehouse scan --list-rules`; `samples.ts` makes fake, format-valid tokens for tests.
 *
 * May import: util, config types. Knows nothing of the data planes.
 */
export { createScanner, Scanner, StreamScanner, KNOWN_SECRET_RULE_ID, tooLargeError } from './scanner.js';
export type { Finding, ScanOutcome, ScanStatus, ScannerOptions } from './scanner.js';
export { RULES } from './rules.js';
export type { Rule, Severity, Confidence } from './rules.js';
export { secretsFromEnvironment, MIN_KNOWN_SECRET_LENGTH } from './known.js';
export type { KnownSecret, KnownEncoding } from './known.js';
export { dlpVerdict, findingsForAudit } from './verdict.js';
export type { DlpVerdict, DlpSurface } from './verdict.js';
