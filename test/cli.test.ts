import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { describe, it } from 'node:test';
import type { Command } from 'commander';
import { buildProgram } from '../src/cli/main.js';

const root = resolve(import.meta.dirname, '..', '..');
const cli = join(root, 'dist', 'src', 'cli', 'main.js');
const home = mkdtempSync(join(tmpdir(), 'gh-cli-'));

function gatehouse(args: string[], input?: string): { status: number; stdout: string; stderr: string } {
  const result = spawnSync(process.execPath, [cli, ...args], {
    cwd: root,
    input,
    encoding: 'utf8',
    env: { ...process.env, GATEHOUSE_HOME: home },
    timeout: 30_000,
  });
  return { status: result.status ?? -1, stdout: result.stdout, stderr: result.stderr };
}

function leafCommands(command: Command, path: string[] = []): { path: string[]; command: Command }[] {
  const subcommands = command.commands;
  if (subcommands.length === 0) return [{ path, command }];
  return subcommands.flatMap((sub) => leafCommands(sub, [...path, sub.name()]));
}

describe('the gatehouse command', () => {
  it('prints its version', () => {
    const { status, stdout } = gatehouse(['--version']);
    assert.equal(status, 0);
    assert.equal(stdout.trim(), JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')).version);
  });

  it('has help with examples on every command', () => {
    const missing: string[] = [];
    for (const { path, command } of leafCommands(buildProgram())) {
      let text = '';
      command.configureOutput({ writeOut: (s) => (text += s), writeErr: (s) => (text += s) });
      command.outputHelp();
      if (!/\nExamples:\n(?: {2}\$ .*\n)*? {2}\$ .*\bgatehouse\b/.test(text)) missing.push(path.join(' '));
    }
    assert.deepEqual(missing, [], `commands without examples in --help: ${missing.join(', ')}`);
  });

  it('exits 2 for an unknown command and for a bad config, naming the line and column', () => {
    assert.equal(gatehouse(['no-such-command']).status, 2);
    const bad = join(home, 'bad.yaml');
    writeFileSync(bad, 'version: 1\npolicy:\n  network:\n    - id: x\n      allow: [a.com]\n      port: [1]\n');
    const { status, stderr } = gatehouse(['--config', bad, 'policy', 'check']);
    assert.equal(status, 2);
    assert.match(stderr, /bad\.yaml:6:7: policy\.network\[0\]\.port: unknown key "port"/);
    assert.doesNotMatch(stderr, /at .*\.js:\d+/, 'no stack trace for an expected failure');
  });

  it('explains a decision and exits 1 when it denies', () => {
    const config = ['--config', join(root, 'examples', 'team.yaml')];
    const denied = gatehouse([...config, 'policy', 'explain', '--request', '{"surface":"network","agent":"coder","host":"x.pastebin.com","port":443}']);
    assert.equal(denied.status, 1);
    assert.match(denied.stdout, /^DENY {2}denied by rule "paste-sites"/);
    assert.match(denied.stdout, /✓ paste-sites \(deny\)/);
    const allowed = gatehouse([...config, 'policy', 'explain', '-r', '-', '--json'], '{"surface":"network","agent":"ci-bot","host":"10.20.0.9","port":5432}');
    assert.equal(allowed.status, 0);
    assert.deepEqual(JSON.parse(allowed.stdout).decision.rules, ['internal-db']);
  });

  it('runs the example team policy tests green', () => {
    const { status, stdout } = gatehouse(['policy', 'test', join(root, 'examples', 'team.cases.yaml')]);
    assert.equal(status, 0, stdout);
    assert.match(stdout, /\n\d+ passed, 0 failed/);
  });

  it('reports a failing policy test with a readable diff and exits 1', () => {
    const cases = join(home, 'failing.cases.yaml');
    writeFileSync(
      cases,
      [
        `config: ${join(root, 'examples', 'team.yaml')}`,
        'cases:',
        '  - name: pastebin is fine (it is not)',
        '    request: { surface: network, agent: coder, host: pastebin.com, port: 443 }',
        '    expect: allow',
        '  - name: github is allowed',
        '    request: { surface: network, agent: coder, host: api.github.com, port: 443 }',
        '    expect: allow',
      ].join('\n'),
    );
    const { status, stdout } = gatehouse(['policy', 'test', cases]);
    assert.equal(status, 1);
    assert.match(stdout, /✗ pastebin is fine \(it is not\)\n {4}request {3}\{"surface":"network"/);
    assert.match(stdout, /- expected {2}allow\n {2}\+ actual {4}deny by "paste-sites"/);
    assert.match(stdout, /1 passed, 1 failed/);
  });

  it('signs a bundle and verifies it; a changed bundle fails verification with exit 1', () => {
    assert.equal(gatehouse(['keys', 'generate', '--dir', join(home, 'keys')]).status, 0);
    const out = join(home, 'team.bundle.json');
    const made = gatehouse(['--config', join(root, 'examples', 'team.yaml'), 'policy', 'bundle', '--bundle-version', '1.0', '--key', join(home, 'keys', 'node.key'), '--out', out, '--json']);
    assert.equal(made.status, 0, made.stderr);
    assert.equal(gatehouse(['policy', 'verify', out, '--key', join(home, 'keys', 'node.pub')]).status, 0);
    writeFileSync(out, readFileSync(out, 'utf8').replace('"paste-sites"', '"paste-sitez"'));
    const tampered = gatehouse(['policy', 'verify', out, '--key', join(home, 'keys', 'node.pub')]);
    assert.equal(tampered.status, 1);
    assert.match(tampered.stderr, /modified|does not verify|digest/);
  });

  it('prints a JSON Schema that editors can use', () => {
    const { status, stdout } = gatehouse(['config', 'schema']);
    assert.equal(status, 0);
    const schema = JSON.parse(stdout);
    assert.equal(schema.type, 'object');
    assert.ok(schema.properties.policy.properties.network, 'the schema describes policy.network');
    assert.equal(schema.additionalProperties, false, 'unknown keys are flagged by editors too');
  });
});
