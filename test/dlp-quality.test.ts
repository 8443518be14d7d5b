/**
 * Detection quality: a generated corpus of fake, format-valid secrets for every rule, each embedded in
 * realistic contexts, must all be found; a benign corpus must give no high-severity finding. Recall and
 * precision are printed.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes, randomUUID } from 'node:crypto';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createRequire } from 'node:module';
import { test } from 'node:test';
import { createScanner, RULES, type Finding } from '../src/dlp/index.js';
import { SAMPLES, seededRandom } from '../src/dlp/samples.js';

const scanner = createScanner();
const random = seededRandom(20261124);

/** The secret's own text inside a sample that carries its context (assignments, URLs, JSON). */
type Context = { name: string; wrap: (sample: string) => string };

const CONTEXTS: Context[] = [
  { name: 'bare', wrap: (s) => s },
  { name: 'json', wrap: (s) => JSON.stringify({ id: 'call_1', result: { content: [{ type: 'text', text: `config:\n${s}\n` }] } }) },
  { name: 'env file', wrap: (s) => `# generated\nNODE_ENV=production\nLOG_LEVEL=info\nVALUE=${s.includes('\n') ? JSON.stringify(s) : s}\nPORT=8080\n` },
  {
    name: 'shell history',
    wrap: (s) => `  501  cd ~/src/acme\n  502  git pull --rebase\n  503  echo '${s}' | pbcopy\n  504  npm test\n`,
  },
  {
    name: 'stack trace',
    wrap: (s) =>
      `Error: upstream rejected request (${s})\n    at Client.request (/app/node_modules/acme/lib/client.js:118:11)\n    at async main (/app/src/index.ts:42:3)\n`,
  },
];

function covers(findings: Finding[], ruleId: string): boolean {
  return findings.some((f) => f.ruleId === ruleId);
}

test('every rule has a sample generator and there are at least 40 provider rules', () => {
  const missing = RULES.filter((rule) => !SAMPLES[rule.id]).map((rule) => rule.id);
  assert.deepEqual(missing, []);
  assert.ok(RULES.length >= 40, `only ${RULES.length} rules`);
});

test('finds every generated secret in every context (recall 100%)', () => {
  let found = 0;
  let total = 0;
  const misses: string[] = [];
  for (const rule of RULES) {
    for (const context of CONTEXTS) {
      for (let round = 0; round < 3; round++) {
        const sample = SAMPLES[rule.id]!(random);
        const text = context.wrap(sample);
        total++;
        const findings = scanner.scan(text);
        if (covers(findings, rule.id)) found++;
        else misses.push(`${rule.id} in ${context.name}: ${findings.map((f) => f.ruleId).join(',') || 'nothing'}`);
        // The secret itself never appears in what a finding carries.
        for (const finding of findings) {
          const secret = text.slice(finding.start, finding.end);
          assert.ok(!JSON.stringify(finding).includes(secret), `${rule.id}: finding leaks the secret`);
        }
      }
    }
  }
  const recall = found / total;
  console.log(`dlp recall: ${found}/${total} = ${(recall * 100).toFixed(1)}% over ${RULES.length} rules x ${CONTEXTS.length} contexts`);
  assert.deepEqual(misses, []);
});

test('finds every generated secret inside parsed JSON through scanJson', () => {
  const misses: string[] = [];
  for (const rule of RULES) {
    const sample = SAMPLES[rule.id]!(random);
    const value = { jsonrpc: '2.0', result: { content: [{ type: 'text', text: sample }], meta: { note: 'ok' } } };
    const findings = scanner.scanJson(value);
    if (!covers(findings, rule.id)) misses.push(rule.id);
    else assert.equal(findings.find((f) => f.ruleId === rule.id)!.path, '/result/content/0/text');
  }
  assert.deepEqual(misses, []);
});

function benignCorpus(): { name: string; text: string }[] {
  const require = createRequire(import.meta.url);
  const pieces: { name: string; text: string }[] = [];
  const uuids = Array.from({ length: 500 }, () => randomUUID()).join('\n');
  pieces.push({ name: 'uuids', text: uuids });
  pieces.push({ name: 'git shas', text: Array.from({ length: 500 }, () => `commit ${randomBytes(20).toString('hex')}`).join('\n') });
  pieces.push({
    name: 'sha256/sha512',
    text: Array.from({ length: 300 }, (_, i) => {
      const data = randomBytes(32);
      return `${createHash('sha256').update(data).digest('hex')}  file-${i}.tar.gz\nsha512:${createHash('sha512').update(data).digest('hex')}`;
    }).join('\n'),
  });
  pieces.push({ name: 'base64 image', text: `<img src="data:image/png;base64,${randomBytes(60_000).toString('base64')}">` });
  pieces.push({ name: 'base64 in JSON', text: JSON.stringify({ attachments: Array.from({ length: 20 }, () => randomBytes(3000).toString('base64')) }) });
  // Real minified JavaScript and a real lockfile (integrity strings) from this repository's own dependencies.
  const tldts = require.resolve('tldts/dist/index.cjs.min.js');
  pieces.push({ name: 'minified JS (tldts)', text: readFileSync(tldts, 'utf8') });
  // Real bundled code that talks about tokens, keys and passwords all the time without holding any.
  pieces.push({ name: 'MCP client bundle', text: readFileSync(require.resolve('@modelcontextprotocol/client'), 'utf8') });
  pieces.push({
    name: 'code that names secrets without holding them',
    text: [
      "const signer = { clientId: 'my-client', privateKey: pemEncodedPrivateKey, alg: 'RS256' };",
      'export const RESULT_VALUE_PASSWORD_MISSING = "password_missing";',
      "redact('https://user:pass@registry.npmjs.org/')",
      'pino-mq -u "amqp://guest:guest@localhost//"',
      'onresumptiontoken: options?.onresumptiontoken,',
      'requested_token_type: "urn:ietf:params:oauth:token-type:id-jag",',
      'const challengePassword = "1.2.840.113549.1.9.7";',
      'password = os.environ["DB_PASSWORD"]',
      'api_key: ${{ secrets.API_KEY }}',
      'curl -u "$USER:$PASSWORD" https://api.internal/',
      '// Prints https://abc:123@example.com/',
    ].join('\n'),
  });
  pieces.push({
    name: 'configuration that refers to secrets by name',
    text: [
      '# GitHub Actions',
      'env:',
      '  NPM_TOKEN: ${{ secrets.NPM_TOKEN }}',
      '  GITHUB_TOKEN: ${{ github.token }}',
      '# Kubernetes',
      'envFrom:',
      '  - secretRef: { name: api-credentials }',
      'volumes:',
      '  - name: tls',
      '    secret: { secretName: ingress-tls-cert }',
      'env:',
      '  - name: DB_PASSWORD',
      '    valueFrom: { secretKeyRef: { name: db, key: password } }',
      '# docker compose',
      'environment:',
      '  POSTGRES_PASSWORD_FILE: /run/secrets/db_password',
      '  REDIS_URL: redis://redis:6379/0',
      'FROM node:20.19-bookworm-slim@sha256:' + createHash('sha256').update('base').digest('hex'),
      '# terraform',
      'password = var.db_password',
      'token    = data.vault_generic_secret.api.data["token"]',
      '# yarn.lock',
      '"zod@^4.0.0":',
      '  version "4.6.7"',
      '  resolved "https://registry.yarnpkg.com/zod/-/zod-4.6.7.tgz#' + randomBytes(20).toString('hex') + '"',
      '  integrity sha512-' + randomBytes(64).toString('base64'),
    ].join('\n'),
  });
  pieces.push({ name: 'package-lock.json', text: readFileSync(new URL('../../package-lock.json', import.meta.url), 'utf8') });
  const words =
    'the quick brown fox jumps over lazy dog policy agent network filesystem token secret password key rotate vault session gateway proxy request response allow deny audit record'.split(' ');
  let english = '';
  const r = seededRandom(7);
  for (let i = 0; i < 20_000; i++) english += words[Math.floor(r() * words.length)] + (i % 13 === 12 ? '. ' : ' ');
  pieces.push({ name: 'English', text: english });
  pieces.push({ name: 'timestamps and ids', text: Array.from({ length: 500 }, (_, i) => `${1700000000000 + i * 7919} order=${100000 + i} ${randomUUID()}`).join('\n') });
  return pieces;
}

test('a benign corpus gives no high-severity finding, and precision is printed', () => {
  const corpus = benignCorpus();
  let falsePositives = 0;
  let bytes = 0;
  const highs: string[] = [];
  for (const piece of corpus) {
    bytes += piece.text.length;
    const findings = scanner.scan(piece.text);
    falsePositives += findings.length;
    for (const finding of findings.filter((f) => f.severity === 'high')) highs.push(`${piece.name}: ${finding.ruleId} ${finding.preview}`);
  }
  // True positives: one per generated sample in the recall test's bare context.
  const truePositives = RULES.length;
  const precision = truePositives / (truePositives + falsePositives);
  console.log(`dlp precision: ${truePositives} true / ${falsePositives} false positives over ${(bytes / 1e6).toFixed(2)} MB benign = ${(precision * 100).toFixed(1)}%`);
  assert.deepEqual(highs, []);
});

test('the pinned dependencies, read as real-world code, give no high-severity finding', () => {
  // Source and docs of packages pinned in package.json: fixed content, and full of code that handles tokens,
  // keys and passwords without holding any. Test suites are included (they hold sample cards and JWTs).
  const modules = new URL('../../node_modules/', import.meta.url);
  const packages = ['zod', 'yaml', 'commander', 'pino', 'jose', 'tldts', '@modelcontextprotocol/client', '@modelcontextprotocol/server', '@peculiar/x509', 'oauth4webapi', 'undici'];
  let bytes = 0;
  let files = 0;
  const bySeverity: Record<string, number> = { high: 0, medium: 0, low: 0 };
  const highs: string[] = [];
  const walk = (dir: string): void => {
    for (const name of readdirSync(dir).sort()) {
      const path = join(dir, name);
      if (statSync(path).isDirectory()) {
        if (name !== 'node_modules') walk(path);
      } else if (/\.(js|cjs|mjs|ts|md|json)$/.test(name)) {
        const content = readFileSync(path);
        bytes += content.length;
        files++;
        for (const finding of scanner.scan(content)) {
          bySeverity[finding.severity]!++;
          if (finding.severity === 'high') highs.push(`${path}: ${finding.ruleId}`);
        }
      }
    }
  };
  for (const name of packages) walk(fileURLToPath(new URL(name, modules)));
  console.log(
    `dlp on real code: ${files} files, ${(bytes / 1e6).toFixed(1)} MB: ${bySeverity.high} high, ${bySeverity.medium} medium, ${bySeverity.low} low findings`,
  );
  assert.ok(bytes > 5e6, 'the corpus is there');
  assert.deepEqual(highs, []);
});
