/**
 * From policy to placeholder: a credentials rule in gatehouse.yaml, compiled by the real policy engine,
 * grants a vault secret to an agent; the agent gets a placeholder, and only the granted host gets the value.
 */
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { parseYaml } from '../src/config/load.js';
import { configSchema } from '../src/config/schema.js';
import { dlpVerdict } from '../src/dlp/index.js';
import { SAMPLES, seededRandom } from '../src/dlp/samples.js';
import { compilePolicy } from '../src/policy/index.js';
import { openSecrets, PlaceholderRegistry } from '../src/secrets/index.js';
import { closeStores } from '../src/store/index.js';

const CONFIG = `
version: 1
policy:
  credentials:
    - id: github-token
      secret: github-token
      env: GITHUB_TOKEN
      hosts: [api.github.com]
      header: "Authorization: Bearer {secret}"
      agents: [claude-code]
    - id: npm-publish
      secret: npm-token
      env: NPM_TOKEN
      hosts: [registry.npmjs.org]
      agents: [release-bot]
  dlp:
    action: block
    surfaces: { network: redact }
`;

test('an agent gets placeholders only for its grants, and the real value only reaches the granted host', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'gatehouse-grants-'));
  const config = parseYaml(CONFIG, 'gatehouse.yaml', configSchema);
  const engine = compilePolicy(config.policy);
  const secrets = openSecrets({ dataDir: dir, settings: config.secrets, env: {} });
  const random = seededRandom(3);
  const github = SAMPLES['github-pat']!(random);
  secrets.vault.set('github-token', github);
  secrets.vault.set('npm-token', SAMPLES['npm-token']!(random));

  const registry = new PlaceholderRegistry();
  const grants = engine.grants({ agent: 'claude-code' });
  assert.deepEqual(grants.map((g) => g.ruleId), ['github-token']);
  const { env } = await registry.issueForSession('session-1', grants, (name) => secrets.resolveSecret(name));
  assert.deepEqual(Object.keys(env), ['GITHUB_TOKEN']);
  const placeholder = env.GITHUB_TOKEN!;
  assert.ok(placeholder.startsWith('ghp_') && placeholder !== github);

  // The agent sends its placeholder: swapped for the granted host, refused for any other.
  const toGithub = registry.swap(`GET /user HTTP/1.1\r\nAuthorization: token ${placeholder}\r\n`, 'session-1', { host: 'api.github.com' });
  assert.ok(toGithub.text.includes(github));
  const elsewhere = registry.swap(`{"paste":"${placeholder}"}`, 'session-1', { host: 'paste.example.net' });
  assert.equal(elsewhere.refused.length, 1);
  assert.ok(!elsewhere.text.includes(github));
  assert.deepEqual(registry.headerFor('session-1', 'github-token', { host: 'api.github.com' }), { name: 'Authorization', value: `Bearer ${github}` });

  // The real value, had it leaked into a body, is a known secret; the policy's per-surface action applies.
  const scanner = await secrets.createScanner(engine.dlp);
  const outcome = scanner.check(`debug: ${Buffer.from(github).toString('base64')}`);
  assert.equal(outcome.findings[0]?.secretName, 'github-token');
  assert.equal(dlpVerdict(outcome, engine.dlp, 'mcp').effect, 'deny');
  assert.equal(dlpVerdict(outcome, engine.dlp, 'network').effect, 'redact');
  closeStores();
});
