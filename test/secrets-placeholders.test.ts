/**
 * Placeholders: shaped like the real token, unique per session, found anywhere in a body, swapped for the
 * real value only for their own session and an allowed destination.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { test } from 'node:test';
import { createScanner } from '../src/dlp/index.js';
import { SAMPLES, seededRandom } from '../src/dlp/samples.js';
import type { CredentialGrant } from '../src/policy/engine.js';
import { PlaceholderRegistry } from '../src/secrets/index.js';

const random = seededRandom(99);
const scanner = createScanner();

function grant(overrides: Partial<CredentialGrant> = {}): CredentialGrant {
  return { ruleId: 'github-token', secret: 'github-token', env: 'GITHUB_TOKEN', hosts: ['api.github.com', '*.githubusercontent.com'], servers: ['github'], ...overrides };
}

const SHAPED_FORMATS = [
  'github-pat', 'github-oauth-token', 'github-app-token', 'github-fine-grained-pat', 'gitlab-pat', 'slack-bot-token', 'slack-user-token',
  'stripe-secret-key', 'openai-api-key', 'anthropic-api-key', 'huggingface-token', 'google-api-key', 'npm-token', 'pypi-token',
  'dockerhub-token', 'aws-access-key-id', 'sendgrid-api-key', 'twilio-api-key', 'jwt', 'digitalocean-token', 'mailchimp-api-key',
  'databricks-token', 'linear-api-key', 'shopify-token', 'postman-api-key',
];

test('a placeholder keeps the real token format: prefix, length, and it passes the same format check and checksum', () => {
  const registry = new PlaceholderRegistry();
  for (const ruleId of SHAPED_FORMATS) {
    const real = SAMPLES[ruleId]!(random);
    const placeholder = registry.issue('s1', grant({ ruleId: `grant-${ruleId}` }), real);
    assert.notEqual(placeholder.value, real, ruleId);
    assert.equal(placeholder.value.length, real.length, `${ruleId}: same length`);
    const [finding] = scanner.scan(placeholder.value);
    assert.equal(finding?.ruleId, ruleId, `${ruleId}: ${placeholder.value} is recognised as the same format`);
    assert.equal(finding?.confidence, scanner.scan(real)[0]?.confidence, `${ruleId}: checksum as valid as the real one`);
    assert.ok(!JSON.stringify(placeholder).includes(real), 'the placeholder record never holds the real value');
  }
});

test('placeholders are unique per session and across sessions', () => {
  const registry = new PlaceholderRegistry();
  const real = SAMPLES['github-pat']!(random);
  const seen = new Set<string>();
  for (let i = 0; i < 200; i++) seen.add(registry.issue(`session-${i}`, grant(), real).value);
  assert.equal(seen.size, 200);
  assert.equal(registry.size, 200);
});

test('finds any live placeholder of any session in text and in bytes, and nothing in ordinary text', () => {
  const registry = new PlaceholderRegistry();
  const a = registry.issue('a', grant(), SAMPLES['github-pat']!(random));
  const b = registry.issue('b', grant({ ruleId: 'openai', secret: 'openai' }), SAMPLES['openai-api-key']!(random));
  const body = `{"auth":"token ${a.value}","other":"${b.value}"}`;
  const hits = registry.find(body);
  assert.deepEqual(hits.map((h) => h.placeholder.value), [a.value, b.value]);
  assert.equal(body.slice(hits[0]!.start, hits[0]!.end), a.value);
  assert.ok(registry.containsAny(Buffer.from(`GET /?t=${b.value} HTTP/1.1`)));
  assert.equal(registry.containsAny(`token ${SAMPLES['github-pat']!(random)} is a real-looking token but not ours`), false);
  assert.equal(registry.containsAny(a.value.slice(0, -1)), false, 'a truncated placeholder is not live');
});

test('swaps the real value in only for its own session and an allowed host or server', () => {
  const registry = new PlaceholderRegistry();
  const real = SAMPLES['github-pat']!(random);
  const mine = registry.issue('mine', grant(), real);
  const theirs = registry.issue('theirs', grant(), SAMPLES['github-pat']!(random));

  const allowed = registry.swap(`Authorization: Bearer ${mine.value}`, 'mine', { host: 'API.GitHub.com.' });
  assert.equal(allowed.text, `Authorization: Bearer ${real}`);
  assert.deepEqual(allowed.swapped.map((p) => p.value), [mine.value]);

  const wildcard = registry.swap(mine.value, 'mine', { host: 'raw.githubusercontent.com' });
  assert.equal(wildcard.text, real);

  const wrongHost = registry.swap(`Bearer ${mine.value}`, 'mine', { host: 'evil.example.com' });
  assert.equal(wrongHost.text, `Bearer ${mine.value}`, 'the real value never goes to a host the grant does not name');
  assert.equal(wrongHost.refused.length, 1);

  const lookalike = registry.swap(mine.value, 'mine', { host: 'api.github.com.evil.example' });
  assert.equal(lookalike.refused.length, 1);

  const otherSession = registry.swap(theirs.value, 'mine', { host: 'api.github.com' });
  assert.equal(otherSession.text, theirs.value);
  assert.equal(otherSession.refused[0]!.placeholder.session, 'theirs');

  assert.equal(registry.secretFor('mine', mine.value, { server: 'github' }), real);
  assert.equal(registry.secretFor('mine', mine.value, { server: 'slack' }), undefined);
  assert.equal(registry.secretFor('theirs', mine.value, { server: 'github' }), undefined);
});

test('a revoked session’s placeholders are no longer live or swappable', () => {
  const registry = new PlaceholderRegistry();
  const p = registry.issue('gone', grant(), SAMPLES['slack-bot-token']!(random));
  assert.ok(registry.containsAny(p.value));
  assert.equal(registry.revokeSession('gone'), 1);
  assert.equal(registry.containsAny(p.value), false);
  assert.equal(registry.secretFor('gone', p.value, { host: 'api.github.com' }), undefined);
});

test('a short secret such as a password still gets a findable placeholder', () => {
  const registry = new PlaceholderRegistry();
  const p = registry.issue('s', grant({ secret: 'db-password' }), 'hunter2!');
  assert.ok(p.value.length >= 16);
  assert.ok(registry.containsAny(`psql "postgres://app:${p.value}@db/x"`));
});

test('a credentials grant with a malformed host pattern is refused when issuing', () => {
  const registry = new PlaceholderRegistry();
  assert.throws(() => registry.issue('s', grant({ hosts: ['api.*.com'] }), 'x'.repeat(20)), /wildcard/);
});

test('swapping in a byte body keeps the bytes around it and writes the real value', () => {
  const registry = new PlaceholderRegistry();
  const real = 'sk_live_' + 'Ünïcødé'.normalize() + 'A'.repeat(24);
  const p = registry.issue('s', grant({ hosts: ['api.stripe.com'] }), real);
  const body = Buffer.concat([Buffer.from([0xff, 0x00]), Buffer.from(`key=${p.value}&x=1`)]);
  const { text, swapped } = registry.swap(body, 's', { host: 'api.stripe.com' });
  assert.ok(Buffer.isBuffer(text));
  assert.equal(swapped.length, 1);
  assert.deepEqual(text, Buffer.concat([Buffer.from([0xff, 0x00]), Buffer.from(`key=${real}&x=1`)]));
});

test('issueForSession gives the sandbox its environment, and headerFor injects only where allowed', async () => {
  const registry = new PlaceholderRegistry();
  const values: Record<string, string> = { 'github-token': SAMPLES['github-pat']!(random), npm: SAMPLES['npm-token']!(random) };
  const grants = [
    grant({ header: { name: 'Authorization', template: 'Bearer {secret}' } }),
    grant({ ruleId: 'npm', secret: 'npm', env: 'NPM_TOKEN', hosts: ['registry.npmjs.org'], servers: [] }),
  ];
  const { env, placeholders } = await registry.issueForSession('s', grants, async (name) => values[name]!);
  assert.deepEqual(Object.keys(env).sort(), ['GITHUB_TOKEN', 'NPM_TOKEN']);
  assert.equal(env.GITHUB_TOKEN, placeholders[0]!.value);
  assert.ok(env.NPM_TOKEN!.startsWith('npm_') && env.NPM_TOKEN !== values.npm);
  assert.deepEqual(registry.headerFor('s', 'github-token', { host: 'api.github.com' }), { name: 'Authorization', value: `Bearer ${values['github-token']}` });
  assert.equal(registry.headerFor('s', 'github-token', { host: 'example.com' }), undefined);
  assert.equal(registry.headerFor('other', 'github-token', { host: 'api.github.com' }), undefined);
});

test('a placeholder inside HTTP basic auth (as git sends a token) is swapped, and refused elsewhere', () => {
  const registry = new PlaceholderRegistry();
  const real = SAMPLES['github-pat']!(random);
  const p = registry.issue('s', grant({ hosts: ['github.com'] }), real);
  const header = `Basic ${Buffer.from(`x-access-token:${p.value}`).toString('base64')}`;
  const swapped = registry.swapHeader(header, 's', { host: 'github.com' });
  assert.equal(swapped.value, `Basic ${Buffer.from(`x-access-token:${real}`).toString('base64')}`);
  const refused = registry.swapHeader(header, 's', { host: 'gitlab.example.com' });
  assert.equal(refused.value, header);
  assert.equal(refused.refused.length, 1);
  assert.equal(registry.swapHeader(`token ${p.value}`, 's', { host: 'github.com' }).value, `token ${real}`);
});

test('leak findings that are live placeholders can be told apart from real tokens', () => {
  const registry = new PlaceholderRegistry();
  const p = registry.issue('s', grant(), SAMPLES['github-pat']!(random));
  const real = SAMPLES['github-pat']!(random);
  const body = `{"a":"${p.value}","b":"${real}"}`;
  const findings = scanner.scan(body);
  assert.equal(findings.length, 2, 'both look like GitHub tokens to the scanner');
  const leaks = registry.withoutPlaceholders(findings, body);
  assert.equal(leaks.length, 1);
  assert.equal(body.slice(leaks[0]!.start, leaks[0]!.end), real);
  assert.equal(registry.withoutPlaceholders(scanner.scan(Buffer.from(body)), Buffer.from(body)).length, 1);
});

test('issuing the same grant again in a session returns the same placeholder; a rotated value gets a new one', () => {
  const registry = new PlaceholderRegistry();
  const real = SAMPLES['github-pat']!(random);
  const first = registry.issue('s', grant(), real);
  assert.equal(registry.issue('s', grant(), real).value, first.value);
  assert.equal(registry.size, 1);
  const rotated = registry.issue('s', grant(), SAMPLES['github-pat']!(random));
  assert.notEqual(rotated.value, first.value);
});

test('a response that reflects the real value gets the placeholder back instead', () => {
  const registry = new PlaceholderRegistry();
  const real = SAMPLES['github-pat']!(random);
  const p = registry.issue('s', grant(), real);
  const echoed = `{"headers":{"Authorization":"Bearer ${real}"},"again":"${real}"}`;
  const { text, masked } = registry.mask(echoed, 's');
  assert.equal(text, `{"headers":{"Authorization":"Bearer ${p.value}"},"again":"${p.value}"}`);
  assert.deepEqual(masked.map((m) => m.value), [p.value]);
  const bytes = registry.mask(Buffer.from(echoed), 's');
  assert.equal(bytes.text.toString(), text);
  assert.equal(registry.mask(echoed, 'another-session').masked.length, 0, 'only the session’s own values');
});

test('every format gets a placeholder, and URLs and connection strings keep what clients parse', () => {
  const registry = new PlaceholderRegistry();
  for (const ruleId of Object.keys(SAMPLES)) {
    const real = SAMPLES[ruleId]!(random);
    const p = registry.issue('all', grant({ ruleId: `grant-${ruleId}` }), real);
    assert.ok(registry.containsAny(p.value), `${ruleId}: the placeholder is findable`);
    assert.notEqual(p.value, real);
  }
  for (const ruleId of ['slack-webhook-url', 'discord-webhook-url', 'terraform-cloud-token', 'azure-ad-client-secret', 'private-key', 'openssh-private-key', 'gitlab-runner-registration-token', 'grafana-service-account-token']) {
    const real = SAMPLES[ruleId]!(random);
    const p = registry.issue('formats', grant({ ruleId: `grant-${ruleId}` }), real);
    assert.equal(scanner.scan(p.value)[0]?.ruleId, ruleId, `${ruleId}: ${p.value.slice(0, 80)}`);
  }

  const db = registry.issue('urls', grant({ ruleId: 'db' }), 'postgres://app:S3cr3t-p4ss!@db.internal:5432/orders');
  assert.match(db.value, /^postgres:\/\/app:[^@]+@db\.internal:5432\//);
  assert.ok(!db.value.includes('S3cr3t-p4ss!'));

  const key = randomBytes(64).toString('base64');
  const connection = `DefaultEndpointsProtocol=https;AccountName=acmeprod;AccountKey=${key};EndpointSuffix=core.windows.net`;
  const p = registry.issue('urls', grant({ ruleId: 'azure' }), connection);
  assert.match(p.value, /^DefaultEndpointsProtocol=https;AccountName=acmeprod;AccountKey=[^;]+;EndpointSuffix=core\.windows\.net$/);
  assert.ok(!p.value.includes(key));
});

test('issues a placeholder for any real value, whatever its characters', () => {
  const registry = new PlaceholderRegistry();
  const grant = { ruleId: 'r', secret: 's', hosts: ['api.example.com'], servers: [] };
  for (const real of ['pässwörd-€☃-𝄞-Zugangsschlüssel-7f3a9c', 'ß-ü-ö', '€☃', 'x𝄞y']) {
    const placeholder = registry.issue('session-unicode', grant, real);
    assert.match(placeholder.value, /^[\x20-\x7e]+$/, `an ASCII placeholder for ${real}`);
    assert.notEqual(placeholder.value, real);
    assert.equal(registry.swap(placeholder.value, 'session-unicode', { host: 'api.example.com' }).text, real);
  }
});

test('a percent-escape in the real value stays as it is in the placeholder, so it never decodes to another byte', () => {
  const registry = new PlaceholderRegistry();
  const grant = { ruleId: 'r', secret: 's', hosts: ['api.example.com'], servers: [] };
  // Random digits in place of "41" would read as "%00" (NUL) once in a hundred placeholders.
  for (let i = 0; i < 300; i++) {
    const placeholder = registry.issue(`session-${i}`, grant, 'Zq8mN3vR7tY2kL9;pw/rd?x#1&x=2%41 b+c%2F');
    assert.match(placeholder.value, /=\d%41 \w\+\w%2F$/, placeholder.value);
  }
});

test('in a URL, a placeholder is found however the client percent-encoded it, and the real value goes in percent-encoded', () => {
  const registry = new PlaceholderRegistry();
  const real = 'Zq8mN3vR7tY2kL9/a?b#c&d=e%f g+h';
  const p = registry.issue('s1', grant({ hosts: ['api.test'] }), real);
  assert.match(p.value, /^[A-Za-z0-9]{15}\/\w\?\w#\w&\w=\w%\w \w\+\w$/, 'the placeholder keeps the separators');
  const encodedReal = 'Zq8mN3vR7tY2kL9%2Fa%3Fb%23c%26d%3De%25f%20g%2Bh';
  // Upper- or lower-case escapes, "+" for the space, and "%25" read as the "%" it spells.
  for (const sent of [encodeURIComponent(p.value), encodeURIComponent(p.value).replace(/%[0-9A-F]{2}/g, (escape) => escape.toLowerCase()), encodeURIComponent(p.value).replace('%20', '+')]) {
    const url = `/v1/x?token=${sent}&next=1`;
    assert.deepEqual(registry.find(url, false, { url: true }).map((hit) => url.slice(hit.start, hit.end)), [sent], sent);
    assert.equal(registry.swap(url, 's1', { host: 'api.test' }, { url: true }).text, `/v1/x?token=${encodedReal}&next=1`);
  }
  // Outside a URL, an encoded placeholder is not one, and the real value goes in as it is.
  assert.deepEqual(registry.find(`token=${encodeURIComponent(p.value)}`), []);
  assert.equal(registry.swap(`token=${p.value}`, 's1', { host: 'api.test' }).text, `token=${real}`);
  // A server that quotes the URL back gives the agent the encoded placeholder, not the encoded secret.
  assert.equal(registry.mask(`you asked for /v1/x?token=${encodedReal}`, 's1').text, `you asked for /v1/x?token=${encodeURIComponent(p.value)}`);
});
