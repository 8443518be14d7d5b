import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { GatehouseError } from '../util/errors.js';
import { parseYaml } from './load.js';
import { configSchema } from './schema.js';

function problem(text: string): string {
  try {
    parseYaml(text, 'gatehouse.yaml', configSchema);
  } catch (error) {
    assert.ok(error instanceof GatehouseError);
    assert.equal(error.exitCode, 2);
    return error.message;
  }
  assert.fail('expected the config to be rejected');
}

describe('config loading', () => {
  it('reports an unknown key with its line, column and key path', () => {
    const text = ['version: 1', 'policy:', '  network:', '    - id: gh', '      allow: [api.github.com]', '      prots: [443]', ''].join('\n');
    assert.equal(problem(text), 'gatehouse.yaml:6:7: policy.network[0].prots: unknown key "prots"; see "gatehouse config schema" for the keys allowed here');
  });
  it('reports a wrong type where the value stands', () => {
    const text = ['version: 1', 'policy:', '  network:', '    - id: gh', '      allow: [api.github.com]', '      ports: [https]', ''].join('\n');
    assert.match(problem(text), /^gatehouse\.yaml:6:15: policy\.network\[0\]\.ports\[0\]: /);
  });
  it('reports a missing required key at the map that lacks it', () => {
    const text = ['version: 1', 'policy:', '  filesystem:', '    - allow: { paths: [./] }', ''].join('\n');
    assert.match(problem(text), /^gatehouse\.yaml:4:7: policy\.filesystem\[0\]\.id: is required/);
  });
  it('reports a rule with both allow and deny', () => {
    const text = ['version: 1', 'policy:', '  network:', '    - id: x', '      allow: [a.com]', '      deny: [b.com]', ''].join('\n');
    assert.match(problem(text), /^gatehouse\.yaml:4:7: policy\.network\[0\]: a rule needs exactly one of "allow" or "deny"/);
  });
  it('reports YAML syntax errors with a position', () => {
    assert.match(problem('version: 1\npolicy:\n  network: [\n'), /^gatehouse\.yaml:\d+:\d+: /);
  });
  it('reports the wrong version', () => {
    assert.match(problem('version: 2\n'), /^gatehouse\.yaml:1:10: version: /);
  });
  it('substitutes ${env:NAME} and ${file:PATH}, and $${ stays literal', () => {
    const dir = mkdtempSync(join(tmpdir(), 'gh-config-'));
    writeFileSync(join(dir, 'name.txt'), 'node-from-file\n');
    process.env.GATEHOUSE_TEST_LABEL = 'ci';
    const config = parseYaml(
      ['version: 1', 'node:', '  name: ${file:name.txt}', '  labels:', '    env: ${env:GATEHOUSE_TEST_LABEL}', '    literal: "$${env:X}"', ''].join('\n'),
      'gatehouse.yaml',
      configSchema,
      dir,
    );
    assert.equal(config.node.name, 'node-from-file');
    assert.deepEqual(config.node.labels, { env: 'ci', literal: '${env:X}' });
  });
  it('names an unset environment variable and where it is used', () => {
    delete process.env.GATEHOUSE_TEST_UNSET;
    assert.equal(problem('version: 1\nnode:\n  name: ${env:GATEHOUSE_TEST_UNSET}\n'), 'gatehouse.yaml:3:9: node.name: ${env:GATEHOUSE_TEST_UNSET} names an environment variable that is not set');
  });
  it('refuses gateway prefixes that would let one server take another\'s tool names', () => {
    const upstreams = (lines: string[]) => ['version: 1', 'gateway:', '  upstreams:', ...lines, ''].join('\n');
    assert.match(problem(upstreams(['    github: { command: a }', '    evil: { command: b, prefix: "github__x" }'])), /gateway\.upstreams\.evil\.prefix: the prefix "github__x" contains the separator/);
    assert.match(problem(upstreams(['    github: { command: a }', '    evil: { command: b, prefix: github }'])), /^gatehouse\.yaml:5:\d+: gateway\.upstreams\.evil\.prefix: the prefix "github" is already used by upstream "github"/);
    assert.equal(parseYaml(upstreams(['    only: { command: a, prefix: "" }']), 'gatehouse.yaml', configSchema).gateway.upstreams.only?.prefix, '');
  });
  it('reports an invalid CEL condition where it is written', () => {
    const text = ['version: 1', 'policy:', '  mcp:', '    - id: acme', '      allow: { server: github, when: "args.owner ==" }', ''].join('\n');
    assert.match(problem(text), /^gatehouse\.yaml:5:\d+: policy\.mcp\[0\]\.allow\.when: the condition "args\.owner ==" is not valid CEL/);
    const unknown = ['version: 1', 'policy:', '  network:', '    - id: x', '      allow: [a.com]', '      when: "hostt == \'a.com\'"', ''].join('\n');
    assert.match(problem(unknown), /^gatehouse\.yaml:6:\d+: policy\.network\[0\]\.when: .*variables are agent, teams/);
  });
  it('fills defaults for a minimal file', () => {
    const config = parseYaml('version: 1\n', 'gatehouse.yaml', configSchema);
    assert.equal(config.node.api.listen, '127.0.0.1:7400');
    assert.deepEqual(config.policy.network, []);
    assert.equal(config.policy.dlp.action, 'block');
  });
});
