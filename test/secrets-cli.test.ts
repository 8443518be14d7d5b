/**
 * The `gatehouse secret` and `gatehouse scan` commands, run as real processes against a temporary data dir.
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { test } from 'node:test';
import { SAMPLES, seededRandom } from '../src/dlp/samples.js';

const CLI = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
const random = seededRandom(5);

function run(args: string[], options: { home: string; input?: string; env?: Record<string, string> }) {
  const env: NodeJS.ProcessEnv = { PATH: process.env.PATH, HOME: options.home, GATEHOUSE_HOME: options.home, ...options.env };
  const result = spawnSync(process.execPath, [CLI, ...args], { input: options.input ?? '', env, cwd: options.home, encoding: 'utf8', timeout: 20_000 });
  return { code: result.status, stdout: result.stdout, stderr: result.stderr };
}

function home(): string {
  return mkdtempSync(join(tmpdir(), 'gatehouse-cli-'));
}

test('secret set reads stdin, ls never shows the value, and the value survives into a new process', () => {
  const dir = home();
  const value = SAMPLES['openai-api-key']!(random);
  const set = run(['secret', 'set', 'openai', '--scope', 'agent:claude'], { home: dir, input: `${value}\n` });
  assert.equal(set.code, 0, set.stderr);
  const ls = run(['secret', 'ls', '--json'], { home: dir });
  assert.equal(ls.code, 0);
  assert.ok(!ls.stdout.includes(value.slice(10, 40)));
  const listed = JSON.parse(ls.stdout) as { vault: { name: string; scopes: string[]; createdAt: string }[] };
  assert.deepEqual(listed.vault.map((s) => [s.name, s.scopes]), [['openai', ['agent:claude']]]);

  // A new process finds the stored value anywhere, even base64-encoded, through the vault's known secrets.
  const file = join(dir, 'leak.txt');
  writeFileSync(file, `header\nAuthorization: Basic ${Buffer.from(`user:${value}`).toString('base64')}\n`);
  const scan = run(['scan', '--known', '--json', file], { home: dir });
  assert.equal(scan.code, 1, scan.stderr);
  const report = JSON.parse(scan.stdout) as { findings: { rule: string; secret?: string; line: number }[] };
  assert.ok(report.findings.some((f) => f.rule === 'known-secret' && f.secret === 'openai' && f.line === 2));
  assert.ok(!scan.stdout.includes(value.slice(10, 40)));
});

test('a value is never taken from the command line', () => {
  const dir = home();
  const result = run(['secret', 'set', 'token', 'the-value-on-argv'], { home: dir });
  assert.equal(result.code, 2);
  assert.match(result.stderr, /too many arguments/);
  assert.match(run(['secret', 'ls'], { home: dir }).stdout, /No secrets yet/);
});

test('rotate and rm; errors name the secret and the fix', () => {
  const dir = home();
  run(['secret', 'set', 'db'], { home: dir, input: 'first-value-1234' });
  const again = run(['secret', 'set', 'db'], { home: dir, input: 'x-value-12345678' });
  assert.equal(again.code, 2);
  assert.match(again.stderr, /already exists; use "gatehouse secret rotate db"/);
  const rotated = run(['secret', 'rotate', 'db'], { home: dir, input: 'second-value-5678' });
  assert.equal(rotated.code, 0, rotated.stderr);
  assert.match(rotated.stderr, /version 2/);
  const listed = JSON.parse(run(['secret', 'ls', '--json'], { home: dir }).stdout) as { vault: { rotatedAt?: string }[] };
  assert.ok(listed.vault[0]!.rotatedAt);
  assert.equal(run(['secret', 'rm', 'db'], { home: dir }).code, 0);
  const missing = run(['secret', 'rm', 'db'], { home: dir });
  assert.equal(missing.code, 2);
  assert.match(missing.stderr, /no secret named "db"/);
  assert.equal(run(['secret', 'set', 'empty'], { home: dir, input: '' }).code, 2);
});

test('a wrong GATEHOUSE_MASTER_KEY is one clear error, and the vault still opens with the right key', () => {
  const dir = home();
  const key = randomBytes(32).toString('hex');
  assert.equal(run(['secret', 'set', 'x'], { home: dir, input: 'value-x-12345678', env: { GATEHOUSE_MASTER_KEY: key } }).code, 0);
  const wrong = run(['secret', 'ls'], { home: dir, env: { GATEHOUSE_MASTER_KEY: randomBytes(32).toString('hex') } });
  assert.equal(wrong.code, 2);
  assert.match(wrong.stderr, /^gatehouse: the master key from GATEHOUSE_MASTER_KEY does not open the vault/);
  assert.ok(!wrong.stderr.includes('    at '), 'no stack trace');
  assert.match(run(['secret', 'ls'], { home: dir, env: { GATEHOUSE_MASTER_KEY: key } }).stdout, /^x /);
});

test('scan prints a table and exits 1 on findings, 0 on clean input, and reads stdin', () => {
  const dir = home();
  const file = join(dir, '.env');
  writeFileSync(file, `NODE_ENV=production\nGITHUB_TOKEN=${SAMPLES['github-pat']!(random)}\nSTRIPE=${SAMPLES['stripe-secret-key']!(random)}\n`);
  const found = run(['scan', file], { home: dir });
  assert.equal(found.code, 1);
  assert.match(found.stdout, /\.env:2:14 +github-pat +high +high +ghp_\*\*\*\* \(40 chars\)/);
  assert.match(found.stdout, /\.env:3:8 +stripe-secret-key/);
  assert.match(found.stderr, /2 secrets found/);

  const clean = run(['scan', '-'], { home: dir, input: 'just some text\nand a uuid 0b7c2d4e-8f1a-4b3c-9d2e-1f0a9b8c7d6e\n' });
  assert.equal(clean.code, 0, clean.stdout);
  assert.match(clean.stderr, /No secrets found/);

  const piped = run(['scan', '--json'], { home: dir, input: `token ${SAMPLES['slack-bot-token']!(random)}` });
  assert.equal(piped.code, 1);
  assert.equal((JSON.parse(piped.stdout) as { findings: { file: string }[] }).findings[0]!.file, '<stdin>');
});

test('scan fails (never passes silently) on input over the limit, and on binary input still finds secrets', () => {
  const dir = home();
  const big = join(dir, 'big.log');
  writeFileSync(big, 'a'.repeat(5000));
  const result = run(['scan', '--max-bytes', '1000', big], { home: dir });
  assert.equal(result.code, 1);
  assert.match(result.stderr, /over 1000 bytes and was not scanned/);

  const binary = join(dir, 'blob.bin');
  writeFileSync(binary, Buffer.concat([randomBytes(2000), Buffer.from(` ${SAMPLES['aws-access-key-id']!(random)} `), Buffer.from([0xff, 0xfe, 0x00])]));
  const scanned = run(['scan', '--json', binary], { home: dir });
  assert.equal(scanned.code, 1);
  assert.ok((JSON.parse(scanned.stdout) as { findings: { rule: string }[] }).findings.some((f) => f.rule === 'aws-access-key-id'));
});

test('the terminal prompt does not echo the value', async (t) => {
  // `script` (util-linux) gives the CLI a real pseudo-terminal, which is what the no-echo path needs.
  if (spawnSync('script', ['--version']).error) {
    if (process.env.GATEHOUSE_REQUIRE_SANDBOX === '1') assert.fail('the "script" command (util-linux) is required for this test');
    t.skip('the "script" command (util-linux) is not installed');
    return;
  }
  const dir = home();
  const value = `typed-${randomBytes(8).toString('hex')}`;
  const command = `${process.execPath} ${CLI} secret set typed`;
  const child = spawn('script', ['-qec', command, '/dev/null'], {
    env: { PATH: process.env.PATH, HOME: dir, GATEHOUSE_HOME: dir, TERM: 'dumb' },
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  let output = '';
  const done = new Promise<number | null>((resolve) => child.on('close', resolve));
  const timer = setTimeout(() => child.kill('SIGKILL'), 15_000);
  await new Promise<void>((resolve) => {
    child.stdout.on('data', (chunk: Buffer) => {
      output += chunk.toString();
      if (output.includes('input is hidden')) resolve();
    });
  });
  // Give the CLI a moment to switch the terminal to raw mode after printing the prompt.
  await new Promise((resolve) => setTimeout(resolve, 300));
  child.stdin.write(`${value}\r`);
  const code = await done;
  clearTimeout(timer);
  assert.equal(code, 0, output);
  assert.ok(!output.includes(value), `the value was echoed: ${JSON.stringify(output)}`);
  assert.match(output, /Secret "typed" stored/);
  const scan = run(['scan', '--known', '-'], { home: dir, input: `echo ${value}` });
  assert.equal(scan.code, 1, 'the stored value is the one typed');
});

test('secret ls shows configured providers and which policy rules grant each secret', () => {
  const dir = home();
  writeFileSync(
    join(dir, 'gatehouse.yaml'),
    'version: 1\nsecrets:\n  providers:\n    npm: { env: NPM_TOKEN }\npolicy:\n  credentials:\n    - id: gh\n      secret: github-token\n      hosts: [api.github.com]\n      agents: [claude-code]\n',
  );
  const set = run(['secret', 'set', 'github-token'], { home: dir, input: 'abcdefgh12345678' });
  assert.equal(set.code, 0, set.stderr);
  const ls = run(['secret', 'ls', '--json'], { home: dir });
  assert.equal(ls.code, 0, ls.stderr);
  const listed = JSON.parse(ls.stdout) as {
    vault: { name: string; grantedBy: string[] }[];
    providers: { name: string; source: string }[];
  };
  assert.deepEqual(listed.vault.map((s) => [s.name, s.grantedBy]), [['github-token', ['gh (claude-code)']]]);
  assert.deepEqual(listed.providers.map((p) => [p.name, p.source]), [['npm', 'env:NPM_TOKEN']]);
});

test('scan --list-rules lists at least 40 rule ids', () => {
  const listed = run(['scan', '--list-rules', '--json'], { home: home() });
  assert.equal(listed.code, 0);
  const rules = JSON.parse(listed.stdout) as { id: string }[];
  assert.ok(rules.length >= 40);
  assert.ok(rules.some((r) => r.id === 'github-pat'));
});

test('secret rekey rotates the master key and the vault keeps working', () => {
  const dir = home();
  assert.equal(run(['secret', 'set', 'a'], { home: dir, input: 'value-aaaaaaaa' }).code, 0);
  const rekey = run(['secret', 'rekey'], { home: dir });
  assert.equal(rekey.code, 0, rekey.stderr);
  assert.match(rekey.stderr, /master\.key now holds the new key/);
  assert.equal(rekey.stdout, '', 'a key kept in a file is never printed');
  assert.match(run(['secret', 'ls'], { home: dir }).stdout, /^a /);

  const key = randomBytes(32).toString('hex');
  const envHome = home();
  assert.equal(run(['secret', 'set', 'b'], { home: envHome, input: 'value-bbbbbbbb', env: { GATEHOUSE_MASTER_KEY: key } }).code, 0);
  const printed = run(['secret', 'rekey'], { home: envHome, env: { GATEHOUSE_MASTER_KEY: key } });
  assert.equal(printed.code, 0, printed.stderr);
  const newKey = printed.stdout.trim();
  assert.match(newKey, /^[0-9a-f]{64}$/);
  assert.match(run(['secret', 'ls'], { home: envHome, env: { GATEHOUSE_MASTER_KEY: newKey } }).stdout, /^b /);
});

test('scan leaves published example keys out unless asked for low severity', () => {
  const dir = home();
  const docs = 'aws_access_key_id = AKIAIOSFODNN7EXAMPLE\ncard: 4111 1111 1111 1111\n';
  assert.equal(run(['scan', '-'], { home: dir, input: docs }).code, 0);
  const low = run(['scan', '--severity', 'low', '--json', '-'], { home: dir, input: docs });
  assert.equal(low.code, 1);
  assert.deepEqual((JSON.parse(low.stdout) as { findings: { rule: string; severity: string }[] }).findings.map((f) => [f.rule, f.severity]), [
    ['aws-access-key-id', 'low'],
    ['payment-card-number', 'low'],
  ]);
});

test('scan walks a directory, skipping .git and node_modules', () => {
  const dir = home();
  const project = join(dir, 'project');
  for (const sub of ['src', '.git', 'node_modules/pkg']) mkdirSync(join(project, sub), { recursive: true });
  writeFileSync(join(project, 'src', 'config.ts'), `export const token = '${SAMPLES['npm-token']!(random)}';\n`);
  writeFileSync(join(project, '.git', 'config'), `url = https://x:${SAMPLES['github-pat']!(random)}@github.com/acme/app\n`);
  writeFileSync(join(project, 'node_modules', 'pkg', 'index.js'), `const k = '${SAMPLES['stripe-secret-key']!(random)}';\n`);
  const result = run(['scan', '--json', project], { home: dir });
  assert.equal(result.code, 1, result.stderr);
  const findings = (JSON.parse(result.stdout) as { findings: { file: string; rule: string }[] }).findings;
  assert.deepEqual(findings.map((f) => [f.file.slice(project.length), f.rule]), [['/src/config.ts', 'npm-token']]);
});
