/**
 * Scanner behaviour a data plane relies on: known secrets in every encoding, redaction that keeps JSON
 * valid, streaming across chunk boundaries with a bounded hold-back, checksums, and bad input.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { test } from 'node:test';
import { policySchema } from '../src/config/policy-schema.js';
import { createScanner, dlpVerdict, findingsForAudit, RULES, secretsFromEnvironment } from '../src/dlp/index.js';
import { checksummedToken, SAMPLES, seededRandom } from '../src/dlp/samples.js';

const random = seededRandom(42);
const scanner = createScanner();

test('a GitHub token with a wrong CRC32 suffix is reported at lower confidence; a valid one is high', () => {
  const valid = checksummedToken('ghp_', random);
  const broken = valid.slice(0, -1) + (valid.endsWith('A') ? 'B' : 'A');
  const [good] = scanner.scan(`token ${valid}`);
  const [bad] = scanner.scan(`token ${broken}`);
  assert.equal(good?.confidence, 'high');
  assert.equal(good?.severity, 'high');
  assert.equal(bad?.confidence, 'low');
  assert.equal(bad?.severity, 'medium');
});

test('a card number must pass Luhn and an issuer prefix', () => {
  assert.equal(scanner.scan('card 4111 1111 1111 1111 exp 12/29')[0]?.ruleId, 'payment-card-number');
  assert.equal(scanner.scan('card 4111-1111-1111-1111')[0]?.ruleId, 'payment-card-number');
  assert.deepEqual(scanner.scan('card 4111 1111 1111 1112'), []);
  // Grouped as cards are printed, or not at all: a UUID whose first groups are digits is none.
  assert.equal(scanner.scan('amex 3782 822463 10005')[0]?.ruleId, 'payment-card-number');
  assert.deepEqual(scanner.scan('id 41111111-1111-1111-a0b1-c2d3e4f5a6b7'), []);
  assert.deepEqual(scanner.scan('epoch 1700000000000123 ms'), []);
  assert.deepEqual(scanner.scan('sha a4111111111111111b'), []);
});

test('a token glued to a preceding word is not a match, but one after an escaped newline is', () => {
  const token = checksummedToken('ghp_', random);
  assert.deepEqual(scanner.scan(`xyz${token}`), []);
  assert.equal(scanner.scan(`"line\\n${token}"`).length, 1);
});

test('generic assignments need entropy and are not references or placeholders', () => {
  assert.equal(scanner.scan('DB_PASSWORD=Tr0ub4dor&3xq')[0]?.ruleId, 'generic-password');
  for (const benign of ['password = process.env.DB_PASSWORD', 'password: "changeme"', 'PASSWORD=${DB_PASSWORD}', 'password=xxxxxxxxxx', 'token: this.session.token']) {
    assert.deepEqual(scanner.scan(benign), [], benign);
  }
});

test('known secrets are found verbatim and base64-, hex- and URL-encoded, naming the secret not the value', () => {
  const value = 'p@ss/word+Sup3r-secret value!';
  const known = createScanner({ knownSecrets: [{ name: 'db-password', value }] });
  const encodings: [string, string][] = [
    ['verbatim', `x ${value} y`],
    ['url', `https://example.test/?q=${encodeURIComponent(value)}&z=1`],
    ['url', `q=${encodeURIComponent(value).replace(/%[0-9A-F]{2}/g, (e) => e.toLowerCase())}`],
    ['url', `user=app&password=${encodeURIComponent(value).replaceAll('%20', '+')}`],
    ['hex', `blob=${Buffer.from(value).toString('hex')}`],
    ['hex', `BLOB=${Buffer.from(value).toString('hex').toUpperCase()}`],
    ['base64', `Basic ${Buffer.from(value).toString('base64')}`],
    // Inside a longer base64 blob, at each of the three alignments.
    ['base64', Buffer.from(`a${value}`).toString('base64')],
    ['base64', Buffer.from(`ab${value}`).toString('base64')],
    ['base64', Buffer.from(`user:${value}`).toString('base64url')],
  ];
  for (const [encoding, text] of encodings) {
    const findings = known.scan(text);
    const finding = findings.find((f) => f.ruleId === 'known-secret');
    assert.ok(finding, `${encoding}: ${text}`);
    assert.equal(finding.secretName, 'db-password');
    assert.equal(finding.encoding, encoding);
    assert.ok(!JSON.stringify(finding).includes(value));
    assert.ok(!finding.preview.includes('p@ss'));
  }
  assert.deepEqual(known.scan('nothing to see here'), []);
});

test('credential-looking environment variables become known secrets; paths and flags do not', () => {
  const secrets = secretsFromEnvironment({
    OPENAI_API_KEY: 'sk-live-value-0123456789',
    GOOGLE_APPLICATION_CREDENTIALS: '/etc/gcp/key.json',
    HOME: '/home/dev',
    FEATURE_TOKEN_ENABLED: 'true',
    SESSION_SECRET: 'short',
    DBUS_SESSION_BUS_ADDRESS: 'unix:path=/run/user/1000/bus',
    SESSION_MANAGER: 'local/devbox:@/tmp/.ICE-unix/2211,unix/devbox:/tmp/.ICE-unix/2211',
    API_KEY_PLACEHOLDER: 'aaaaaaaaaaaa',
  });
  assert.deepEqual(secrets, [{ name: 'env:OPENAI_API_KEY', value: 'sk-live-value-0123456789' }]);
});

test('redactJson keeps JSON valid and removes the secret from values and keys', () => {
  const token = checksummedToken('ghp_', random);
  const pem = SAMPLES['private-key']!(random);
  const value = {
    content: [{ type: 'text', text: `here is ${token} and "quotes" \\ backslash` }],
    config: { password: 'Xy9!kQ2#vB7m', note: 'ok', n: 4111111111111111 },
    [`key-${token}`]: 1,
    pem,
  };
  const redacted = scanner.redactJson(value);
  const text = JSON.stringify(redacted);
  assert.doesNotThrow(() => JSON.parse(text));
  assert.ok(!text.includes(token));
  assert.ok(!text.includes('Xy9!kQ2#vB7m'));
  assert.ok(!text.includes('BEGIN RSA PRIVATE KEY-----\\n'), 'the PEM body is gone');
  assert.match(text, /\[REDACTED:github-pat\]/);
  assert.equal((redacted as typeof value).config.note, 'ok');
  // The original is untouched.
  assert.ok(JSON.stringify(value).includes(token));
});

test('redacting raw JSON text keeps it parseable even for a JSON-escaped private key', () => {
  const text = JSON.stringify({ key: SAMPLES['private-key']!(random), token: SAMPLES['slack-bot-token']!(random) });
  const out = scanner.redact(text);
  assert.notEqual(out, text);
  assert.doesNotThrow(() => JSON.parse(out));
});

test('deeply nested JSON is scanned without overflowing the stack', () => {
  const token = checksummedToken('ghp_', random);
  let value: unknown = { token };
  for (let i = 0; i < 100_000; i++) value = [value];
  const findings = scanner.scanJson(value);
  assert.equal(findings.length, 1);
  assert.ok(findings[0]!.path!.endsWith('/0/0/token'));
  const redacted = scanner.redactJson(value);
  assert.notEqual(redacted, value);
});

test('binary data and invalid UTF-8 are scanned as bytes, with byte offsets', () => {
  const token = SAMPLES['anthropic-api-key']!(random);
  const garbage = randomBytes(4096);
  const invalid = Buffer.from([0xff, 0xfe, 0xc3, 0x28, 0xa0, 0xa1, 0xe2, 0x28, 0xa1, 0x00, 0x0a]);
  const input = Buffer.concat([garbage, invalid, Buffer.from(token), invalid, garbage]);
  const findings = scanner.scan(input).filter((f) => f.ruleId === 'anthropic-api-key');
  assert.equal(findings.length, 1);
  assert.equal(findings[0]!.start, garbage.length + invalid.length);
  assert.equal(findings[0]!.end, garbage.length + invalid.length + token.length);
  const redacted = scanner.redact(input);
  assert.ok(Buffer.isBuffer(redacted));
  assert.equal(redacted.indexOf(Buffer.from(token)), -1);
  assert.deepEqual(redacted.subarray(0, garbage.length), garbage);
});

test('input over the limit is an explicit too_large outcome, which scan turns into an error', () => {
  const small = createScanner({ maxBytes: 1024 });
  const big = 'a'.repeat(1025);
  assert.equal(small.check(big).status, 'too_large');
  assert.throws(() => small.scan(big), { code: 'dlp_too_large' });
  assert.equal(small.checkJson({ list: ['a'.repeat(600), 'b'.repeat(600)] }).status, 'too_large');
  assert.equal(small.checkJson(new Array(2000).fill(0)).status, 'too_large', 'many tiny values count too');
  const settings = policySchema.parse({}).dlp;
  assert.equal(dlpVerdict(small.check(big), settings, 'mcp').effect, 'deny');
  assert.equal(dlpVerdict(small.check(big), { ...settings, onTooLarge: 'allow' }, 'mcp').effect, 'allow');
});

test('the policy action per surface decides block, redact or log', () => {
  const settings = policySchema.parse({ dlp: { action: 'block', surfaces: { network: 'redact' } } }).dlp;
  const secret = SAMPLES['stripe-secret-key']!(random);
  const outcome = scanner.check(secret);
  assert.equal(dlpVerdict(outcome, settings, 'mcp').effect, 'deny');
  assert.equal(dlpVerdict(outcome, settings, 'network').effect, 'redact');
  assert.equal(dlpVerdict(outcome, { ...settings, action: 'log', surfaces: {} }, 'mcp').effect, 'allow');
  assert.equal(dlpVerdict(scanner.check('hello'), settings, 'mcp').effect, 'allow');
  const audit = JSON.stringify(findingsForAudit(outcome.findings));
  assert.ok(!audit.includes(secret.slice(8, 30)), 'the audit form of a finding carries no part of the secret');
});

test('a stream finds a secret split across every possible chunk boundary, once', () => {
  for (const ruleId of ['github-pat', 'openai-api-key', 'azure-ad-client-secret', 'mailchimp-api-key', 'private-key', 'payment-card-number', 'database-url-password']) {
    const secret = SAMPLES[ruleId]!(random);
    const text = Buffer.from(`prefix text ${secret} suffix text`);
    for (let cut = 1; cut < text.length; cut++) {
      const stream = scanner.stream();
      const a = stream.push(text.subarray(0, cut));
      const b = stream.push(text.subarray(cut));
      const c = stream.end();
      const findings = [...a.findings, ...b.findings, ...c.findings].filter((f) => f.ruleId === ruleId);
      assert.equal(findings.length, 1, `${ruleId} cut at ${cut}`);
      assert.equal(Buffer.concat([a.release, b.release, c.release]).toString(), text.toString(), 'detect mode forwards the bytes unchanged');
    }
  }
});

test('a redacting stream never releases any part of a secret, even fed one byte at a time', () => {
  const token = SAMPLES['slack-bot-token']!(random);
  const text = Buffer.from(`{"a":"${token}","b":"${'x'.repeat(300)}"}`);
  const stream = scanner.stream({ redact: true });
  const out: Buffer[] = [];
  let findings = 0;
  let maxHeld = 0;
  let fed = 0;
  let released = 0;
  for (const byte of text) {
    const result = stream.push(Buffer.from([byte]));
    fed++;
    released += result.release.length;
    out.push(result.release);
    findings += result.findings.length;
    maxHeld = Math.max(maxHeld, fed - released);
  }
  const last = stream.end();
  out.push(last.release);
  findings += last.findings.length;
  const result = Buffer.concat(out).toString();
  assert.equal(findings, 1);
  assert.ok(!result.includes(token.slice(5, 20)));
  assert.doesNotThrow(() => JSON.parse(result));
  // Held back no more than the longest rule that could match here needs.
  const longest = Math.max(...RULES.map((r) => r.maxLength));
  assert.ok(maxHeld <= longest, `held ${maxHeld}`);
});

test('clean streaming text is released promptly, holding back only a short tail', () => {
  const stream = scanner.stream();
  const chunk = Buffer.from('lorem ipsum dolor sit amet consectetur adipiscing elit '.repeat(200));
  const result = stream.push(chunk);
  assert.ok(chunk.length - result.release.length <= scanner.holdBack + 1, `held ${chunk.length - result.release.length}`);
});

test('a stream over its byte limit says too_large and releases nothing more', () => {
  const stream = createScanner().stream({ maxBytes: 100 });
  assert.equal(stream.push(Buffer.alloc(80, 97)).tooLarge, false);
  const over = stream.push(Buffer.alloc(80, 97));
  assert.equal(over.tooLarge, true);
  assert.equal(over.release.length, 0);
  assert.equal(stream.end().tooLarge, true);
});

test('an AWS secret key is found next to its access key id even when nothing names it', () => {
  const id = SAMPLES['aws-access-key-id']!(random);
  const secret = 'wJ8lrXUtnFEMI/K7MDENG/bPxRfiCY1x2y3z4Q5w';
  const csv = `User name,Access key ID,Secret access key\ndeploy,${id},${secret}\n`;
  const findings = scanner.scan(csv);
  assert.deepEqual(findings.map((f) => f.ruleId), ['aws-access-key-id', 'aws-secret-access-key']);
  assert.equal(csv.slice(findings[1]!.start, findings[1]!.end), secret);
  // Without an access key id nearby, a bare 40-character word is not enough.
  assert.deepEqual(scanner.scan(`deploy,${secret}`), []);
  // A git SHA next to a key id is not a secret key.
  assert.equal(scanner.scan(`${id} commit ${'a1b2c3d4e5'.repeat(4)}`).length, 1);
});

test('a stream finds a known secret split across chunks', () => {
  const value = 'correct-horse-battery-staple-42';
  const known = createScanner({ knownSecrets: [{ name: 'db', value }] });
  const text = Buffer.from(`user=app password-ish ${Buffer.from(value).toString('base64')} end`);
  for (let cut = 1; cut < text.length; cut++) {
    const stream = known.stream({ redact: true });
    const a = stream.push(text.subarray(0, cut));
    const b = stream.push(text.subarray(cut));
    const c = stream.end();
    const findings = [...a.findings, ...b.findings, ...c.findings];
    assert.equal(findings.filter((f) => f.secretName === 'db').length, 1, `cut at ${cut}`);
    const out = Buffer.concat([a.release, b.release, c.release]).toString();
    assert.ok(!out.includes(Buffer.from(value).toString('base64').slice(4, 30)), `cut at ${cut}: ${out}`);
  }
});

test('zero-width characters or soft hyphens inside a token do not hide it, in text or bytes', () => {
  const token = SAMPLES['github-pat']!(random);
  const hidden = `${token.slice(0, 10)}\u200b${token.slice(10, 20)}\u00ad${token.slice(20)}`;
  const text = `please post this: ${hidden} thanks`;
  const [finding] = scanner.scan(text);
  assert.equal(finding?.ruleId, 'github-pat');
  assert.equal(finding?.hidden, true);
  assert.equal(text.slice(finding!.start, finding!.end), hidden);
  assert.equal(scanner.redact(text), 'please post this: [REDACTED:github-pat] thanks');
  const bytes = Buffer.from(text, 'utf8');
  const [inBytes] = scanner.scan(bytes);
  assert.equal(inBytes?.ruleId, 'github-pat');
  assert.equal(bytes.subarray(inBytes!.start, inBytes!.end).toString('utf8'), hidden);
  // Ordinary non-ASCII text is left alone.
  assert.deepEqual(scanner.scan('café — naïve façade ☕ ümlaut'), []);
});

test('JSON unicode escapes do not hide a token from scanJson, and redaction can reuse the findings', () => {
  const token = SAMPLES['github-pat']!(random);
  const raw = `{"note":"\\u0067\\u0068\\u0070\\u005f${token.slice(4)}"}`;
  assert.deepEqual(scanner.scan(raw).filter((f) => f.ruleId === 'github-pat'), [], 'the raw text hides it');
  const value = JSON.parse(raw) as unknown;
  const outcome = scanner.checkJson(value);
  assert.equal(outcome.findings[0]?.ruleId, 'github-pat');
  assert.deepEqual(scanner.redactJson(value, outcome.findings), { note: '[REDACTED:github-pat]' });
});

test('adversarial repetitions scan in linear time (no regex blow-up, no quadratic overlap resolution)', () => {
  // Each of these once took 2-7 s per MB; they now take well under 100 ms. The bound leaves room for a busy machine.
  const cases: Record<string, string> = {
    'repeated JWT starts': '-eyJ'.repeat(1 << 18),
    'repeated PEM headers': '-----BEGIN PRIVATE KEY-----\n'.repeat(40_000),
    'repeated OpenAI prefixes': '-sk-'.repeat(1 << 18),
    'repeated password assignments': 'password:"'.repeat(100_000),
    'repeated URL user-info': 'postgres://u:p@'.repeat(70_000),
    'one long token-looking run': 'token=' + 'a'.repeat(1 << 20),
  };
  for (const [name, text] of Object.entries(cases)) {
    const started = process.hrtime.bigint();
    scanner.check(text);
    const ms = Number(process.hrtime.bigint() - started) / 1e6;
    assert.ok(ms < 1000, `${name}: ${ms.toFixed(0)} ms for ${(text.length / 1e6).toFixed(1)} MB`);
  }
});

test('a private key trickled into a stream one small chunk at a time is found without rescanning it every time', () => {
  const pem = SAMPLES['private-key']!(random);
  const body = Buffer.from(`key:\n${pem.replace('-----END', `${'QUJD\n'.repeat(3000)}-----END`)}\ndone\n`);
  const stream = scanner.stream({ redact: true });
  const out: Buffer[] = [];
  let findings = 0;
  const started = process.hrtime.bigint();
  for (let at = 0; at < body.length; at += 7) {
    const result = stream.push(body.subarray(at, at + 7));
    out.push(result.release);
    findings += result.findings.length;
  }
  const last = stream.end();
  out.push(last.release);
  findings += last.findings.length;
  const ms = Number(process.hrtime.bigint() - started) / 1e6;
  assert.equal(findings, 1);
  assert.match(Buffer.concat(out).toString(), /^key:\n\[REDACTED:private-key\]\ndone\n$/);
  assert.ok(ms < 2000, `${ms.toFixed(0)} ms`);
});

test('documentation examples are low severity and, by default, only logged; rules can be turned off by id', () => {
  const settings = policySchema.parse({ dlp: { action: 'block' } }).dlp;
  const example = scanner.check('aws_access_key_id = AKIAIOSFODNN7EXAMPLE');
  assert.equal(example.findings[0]?.severity, 'low');
  assert.equal(dlpVerdict(example, settings, 'mcp').effect, 'allow');
  assert.equal(dlpVerdict(example, { ...settings, minSeverity: 'low' }, 'mcp').effect, 'deny');
  const weak = scanner.check(`ghp_${'a'.repeat(36)}`);
  assert.equal(weak.findings[0]?.severity, 'medium', 'a GitHub-shaped token with a bad checksum');
  assert.equal(dlpVerdict(weak, settings, 'mcp').effect, 'deny');
  assert.equal(dlpVerdict(weak, { ...settings, minSeverity: 'high' }, 'mcp').effect, 'allow');

  const withoutCards = createScanner({ disabledRules: ['payment-card-number'] });
  assert.deepEqual(withoutCards.scan('card 4000 0566 5566 5556'), []);
  assert.throws(() => createScanner({ disabledRules: ['no-such-rule'] }), { code: 'dlp_unknown_rule' });
});

test('a stream finds a token hidden with zero-width characters, split across chunks', () => {
  const token = SAMPLES['slack-bot-token']!(random);
  const hidden = `${token.slice(0, 12)}\u200b${token.slice(12, 30)}\u200d${token.slice(30)}`;
  const text = Buffer.from(`${'x '.repeat(400)}post ${hidden} now ${'y '.repeat(400)}`);
  for (const cut of [1, 700, 805, 812, 830, 870, text.length - 1]) {
    const stream = scanner.stream({ redact: true });
    const a = stream.push(text.subarray(0, cut));
    const b = stream.push(text.subarray(cut));
    const c = stream.end();
    const findings = [...a.findings, ...b.findings, ...c.findings];
    assert.equal(findings.filter((f) => f.ruleId === 'slack-bot-token').length, 1, `cut at ${cut}`);
    const out = Buffer.concat([a.release, b.release, c.release]).toString();
    assert.ok(out.includes('post [REDACTED:slack-bot-token] now'), `cut at ${cut}`);
  }
});

test('a stream full of zero-width characters still releases its bytes as it goes', () => {
  const stream = scanner.stream();
  const chunk = Buffer.from('ab\u200bcd '.repeat(2000));
  let released = 0;
  for (let i = 0; i < 10; i++) released += stream.push(chunk).release.length;
  assert.ok(released > chunk.length * 9, `released ${released} of ${chunk.length * 10}`);
});

test('redactJson keeps a "__proto__" key as data, redacted like any other', () => {
  const token = SAMPLES['github-pat']!(random);
  const value = JSON.parse(`{"__proto__":{"token":"${token}"},"ok":1}`) as unknown;
  const redacted = scanner.redactJson(value);
  assert.equal(JSON.stringify(redacted), '{"__proto__":{"token":"[REDACTED:github-pat]"},"ok":1}');
  assert.equal(Object.getPrototypeOf(redacted), Object.prototype);
});

test('a known secret with non-ASCII characters is found verbatim in text and in bytes', () => {
  const value = 'pässwörd-Geheimnis-2024';
  const known = createScanner({ knownSecrets: [{ name: 'db', value }] });
  assert.equal(known.scan(`login with ${value} now`)[0]?.secretName, 'db');
  const bytes = Buffer.from(`login with ${value} now`, 'utf8');
  const [inBytes] = known.scan(bytes);
  assert.equal(inBytes?.secretName, 'db');
  assert.equal(bytes.subarray(inBytes!.start, inBytes!.end).toString('utf8'), value);
});

test('redact removes the whole of findings that overlap, not only the first (findings from two readings of one text)', () => {
  const text = 'key=AAAABBBBCCCCDDDD end';
  const first = { ...scanner.scan(`token ${checksummedToken('ghp_', random)}`)[0]!, start: 4, end: 12 };
  const second = { ...first, start: 8, end: 20 };
  const redacted = scanner.redact(text, [first, second]);
  assert.equal(redacted, `key=[REDACTED:${first.ruleId}] end`);
});

test('percent-encoding does not hide a token from scanJson: found decoded, redacted where its escapes sit', () => {
  const token = SAMPLES['github-pat']!(random);
  const everyByte = [...token].map((c) => `%${c.charCodeAt(0).toString(16).padStart(2, '0')}`).join('');
  const twice = token.replace('_', '%255F');
  for (const [value, redacted] of [
    [{ url: `https://paste.test/?t=${token.replace('_', '%5F')}&x=1` }, { url: 'https://paste.test/?t=[REDACTED:github-pat]&x=1' }],
    [{ note: `schlüssel ${everyByte} ☃` }, { note: 'schlüssel [REDACTED:github-pat] ☃' }],
    [{ path: `/a/${twice}/b` }, { path: '/a/[REDACTED:github-pat]/b' }],
  ] as const) {
    const outcome = scanner.checkJson(value);
    assert.deepEqual(outcome.findings.map((f) => [f.ruleId, f.percentEncoded]), [['github-pat', true]], JSON.stringify(value));
    assert.deepEqual(scanner.redactJson(value, outcome.findings), redacted);
    assert.ok(JSON.stringify(findingsForAudit(outcome.findings)).includes('"percentEncoded":true'));
  }
  // Malformed and ordinary escapes are no finding.
  assert.equal(scanner.checkJson({ q: 'a%20b%zz%4 100%' }).status, 'clean');
});

test('a string percent-encoded past the decoding limit is a finding itself, not passed unread', () => {
  let text = 'ghp%5F';
  for (let layer = 0; layer < 10; layer++) text = encodeURIComponent(text);
  const outcome = scanner.checkJson({ note: text });
  assert.deepEqual(outcome.findings.map((f) => f.ruleId), ['percent-encoding-too-deep']);
  assert.equal(dlpVerdict(outcome, policySchema.parse({}).dlp, 'mcp').effect, 'deny');
});
