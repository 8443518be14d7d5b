/**
 * The vault against a real SQLite store on disk, and the providers against real files and processes.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { configSchema } from '../src/config/schema.js';
import { openSecrets, ProviderSet, runCommand, Vault } from '../src/secrets/index.js';
import { closeStores, openStore } from '../src/store/index.js';

function tempDir(): string {
  return mkdtempSync(join(tmpdir(), 'gatehouse-vault-'));
}

const noEnv = {} as NodeJS.ProcessEnv;

function dbBytes(dir: string): Buffer {
  return Buffer.concat(readdirSync(dir).filter((f) => f.startsWith('gatehouse.db')).map((f) => readFileSync(join(dir, f))));
}

test('a secret survives a restart, and is encrypted at rest (not in the database or WAL files)', () => {
  const dir = tempDir();
  const value = `ghp_${randomBytes(18).toString('hex')}`;
  Vault.open(dir, { env: noEnv }).set('github-token', value, ['agent:claude']);
  closeStores();
  assert.equal(dbBytes(dir).indexOf(value), -1);
  assert.equal(dbBytes(dir).indexOf(value.slice(4, 20)), -1);
  const reopened = Vault.open(dir, { env: noEnv });
  assert.equal(reopened.get('github-token'), value);
  assert.deepEqual(reopened.list().map((s) => [s.name, s.scopes, s.version]), [['github-token', ['agent:claude'], 1]]);
  closeStores();
});

test('the generated master key file is private (0600) and the data dir 0700', () => {
  const dir = tempDir();
  Vault.open(dir, { env: noEnv });
  assert.equal(statSync(join(dir, 'master.key')).mode & 0o777, 0o600);
  assert.equal(statSync(dir).mode & 0o777, 0o700);
  closeStores();
});

test('a wrong master key gives a clear error and changes nothing; the right key still opens it', () => {
  const dir = tempDir();
  const right = randomBytes(32).toString('hex');
  const vault = Vault.open(dir, { env: { GATEHOUSE_MASTER_KEY: right } });
  vault.set('db-password', 'Tr0ub4dor&3-horse');
  closeStores();
  const before = readRows(dir);
  assert.throws(
    () => Vault.open(dir, { env: { GATEHOUSE_MASTER_KEY: randomBytes(32).toString('hex') } }),
    (error: Error & { code?: string }) => error.code === 'vault_wrong_master_key' && /does not open the vault/.test(error.message),
  );
  assert.throws(() => Vault.open(dir, { env: { GATEHOUSE_MASTER_KEY: 'a long but wrong passphrase here' } }), { code: 'vault_wrong_master_key' });
  closeStores();
  assert.deepEqual(readRows(dir), before);
  assert.equal(Vault.open(dir, { env: { GATEHOUSE_MASTER_KEY: right } }).get('db-password'), 'Tr0ub4dor&3-horse');
  closeStores();
});

function readRows(dir: string): unknown {
  const db = openStore(dir);
  const rows = { keys: db.prepare('SELECT * FROM vault_keys').all(), secrets: db.prepare('SELECT * FROM vault_secrets').all() };
  closeStores();
  return rows;
}

test('a passphrase master key works across restarts', () => {
  const dir = tempDir();
  const env = { GATEHOUSE_MASTER_KEY: 'correct horse battery staple' };
  Vault.open(dir, { env }).set('a', 'value-aaaaaaaa');
  closeStores();
  assert.equal(Vault.open(dir, { env }).get('a'), 'value-aaaaaaaa');
  closeStores();
  assert.throws(() => Vault.open(dir, { env: { GATEHOUSE_MASTER_KEY: 'short' } }), { code: 'vault_master_key_weak' });
});

test('a key file readable by others is refused; a missing key for an existing vault is not regenerated', () => {
  const dir = tempDir();
  const keyFile = join(dir, 'custom.key');
  writeFileSync(keyFile, randomBytes(32).toString('base64') + '\n', { mode: 0o644 });
  chmodSync(keyFile, 0o644);
  assert.throws(() => Vault.open(dir, { keyFile, env: noEnv }), (e: Error & { code?: string }) => e.code === 'vault_key_file_mode' && /chmod 600/.test(e.message));
  chmodSync(keyFile, 0o600);
  Vault.open(dir, { keyFile, env: noEnv }).set('x', 'value-xxxxxxxx');
  closeStores();
  // Without the configured key file, the default master.key does not exist: refuse rather than orphan secrets.
  assert.throws(() => Vault.open(dir, { env: noEnv }), { code: 'vault_key_file_missing' });
  assert.equal(existsSync(join(dir, 'master.key')), false);
  closeStores();
});

test('rotate changes the value and the version; set refuses to overwrite; rm removes', () => {
  const dir = tempDir();
  const vault = Vault.open(dir, { env: noEnv });
  vault.set('api', 'first-value-123');
  assert.throws(() => vault.set('api', 'other-value-123'), { code: 'vault_exists' });
  const rotated = vault.rotate('api', 'second-value-456');
  assert.equal(rotated.version, 2);
  assert.ok(rotated.rotatedAt);
  assert.equal(vault.get('api'), 'second-value-456');
  assert.ok(!JSON.stringify(vault.list()).includes('second-value'));
  assert.throws(() => vault.rotate('missing', 'x'), { code: 'vault_not_found' });
  assert.throws(() => vault.set('bad name', 'x'), { code: 'vault_bad_name' });
  assert.throws(() => vault.set('empty', ''), { code: 'vault_empty_value' });
  assert.equal(vault.remove('api'), true);
  assert.equal(vault.get('api'), undefined);
  closeStores();
});

test('a ciphertext moved to another secret’s row fails its integrity check', () => {
  const dir = tempDir();
  const vault = Vault.open(dir, { env: noEnv });
  vault.set('one', 'value-one-1111');
  vault.set('two', 'value-two-2222');
  const db = openStore(dir);
  db.prepare("UPDATE vault_secrets SET sealed = (SELECT sealed FROM vault_secrets WHERE name = 'one') WHERE name = 'two'").run();
  assert.throws(() => vault.get('two'), { code: 'vault_corrupt' });
  assert.equal(vault.get('one'), 'value-one-1111');
  closeStores();
});

test('providers: an environment variable, a file, and a command with a timeout and a cache', async () => {
  const dir = tempDir();
  const file = join(dir, 'db.txt');
  writeFileSync(file, 'from-a-file\n');
  const counter = join(dir, 'runs');
  const script = `require('fs').appendFileSync(${JSON.stringify(counter)}, 'x'); process.stdout.write('from-a-command\\n')`;
  let now = 1_000_000;
  const providers = new ProviderSet(
    configSchema.parse({
      version: 1,
      secrets: {
        providers: {
          a: { env: 'A_TOKEN' },
          b: { file },
          c: { command: [process.execPath, '-e', script], cacheTtlSeconds: 60 },
          slow: { command: [process.execPath, '-e', 'setTimeout(() => {}, 10000)'], timeoutMs: 300 },
          failing: { command: [process.execPath, '-e', 'console.error("vault is sealed"); process.exit(3)'] },
          missing: { command: ['/nonexistent/secret-tool'] },
        },
      },
    }).secrets.providers,
    { A_TOKEN: 'from-the-env' },
    () => now,
  );
  assert.equal(await providers.resolve('a'), 'from-the-env');
  assert.equal(await providers.resolve('b'), 'from-a-file');
  const [first, second] = await Promise.all([providers.resolve('c'), providers.resolve('c')]);
  assert.equal(first, 'from-a-command');
  assert.equal(second, 'from-a-command');
  await providers.resolve('c');
  assert.equal(readFileSync(counter, 'utf8'), 'x', 'one run serves concurrent and cached requests');
  now += 61_000;
  await providers.resolve('c');
  assert.equal(readFileSync(counter, 'utf8'), 'xx', 'the cache expires after its TTL');

  const started = Date.now();
  await assert.rejects(providers.resolve('slow'), /did not finish within 300 ms/);
  assert.ok(Date.now() - started < 5000);
  await assert.rejects(providers.resolve('failing'), /exit code 3\): vault is sealed/);
  await assert.rejects(providers.resolve('missing'), /was not found/);
});

test('a provider command does not inherit the vault master key', async () => {
  const previous = process.env.GATEHOUSE_MASTER_KEY;
  process.env.GATEHOUSE_MASTER_KEY = 'do-not-leak-this-master-key';
  try {
    const value = await runCommand('probe', [process.execPath, '-e', 'process.stdout.write(String(process.env.GATEHOUSE_MASTER_KEY) + ":" + String(!!process.env.PATH))'], 5000);
    assert.equal(value, 'undefined:true');
  } finally {
    if (previous === undefined) delete process.env.GATEHOUSE_MASTER_KEY;
    else process.env.GATEHOUSE_MASTER_KEY = previous;
  }
});

test('a provider needs exactly one source', () => {
  const result = configSchema.safeParse({ version: 1, secrets: { providers: { x: { env: 'A', file: '/b' } } } });
  assert.equal(result.success, false);
});

test('resolveSecret prefers a configured provider, then the vault, and names what is missing', async () => {
  const dir = tempDir();
  const settings = configSchema.parse({ version: 1, secrets: { providers: { 'from-env': { env: 'X_SECRET' } } } }).secrets;
  const secrets = openSecrets({ dataDir: dir, settings, env: { X_SECRET: 'env-value-123456' } });
  secrets.vault.set('in-vault', 'vault-value-123456');
  assert.equal(await secrets.resolveSecret('from-env'), 'env-value-123456');
  assert.equal(await secrets.resolveSecret('in-vault'), 'vault-value-123456');
  await assert.rejects(secrets.resolveSecret('nope'), { code: 'secret_not_found' });
  const known = await secrets.knownSecrets();
  assert.deepEqual(known.map((k) => k.name).sort(), ['env:X_SECRET', 'from-env', 'in-vault']);
  closeStores();
});

test('relative paths in the secrets section are relative to the config file', async () => {
  const dir = tempDir();
  mkdirSync(join(dir, 'conf', 'keys'), { recursive: true });
  writeFileSync(join(dir, 'conf', 'keys', 'db.txt'), 'relative-value-123\n');
  writeFileSync(join(dir, 'conf', 'keys', 'master.key'), randomBytes(32).toString('hex'), { mode: 0o600 });
  const settings = configSchema.parse({
    version: 1,
    secrets: { masterKeyFile: 'keys/master.key', providers: { db: { file: 'keys/db.txt' } } },
  }).secrets;
  const secrets = openSecrets({ dataDir: join(dir, 'data'), settings, env: {}, baseDir: join(dir, 'conf') });
  assert.equal(await secrets.resolveSecret('db'), 'relative-value-123');
  secrets.vault.set('x', 'value-xxxxxxxx');
  assert.equal(existsSync(join(dir, 'data', 'master.key')), false, 'the configured key file is used, not a generated one');
  closeStores();
});

test('rekey re-wraps the data key: secrets survive, the old master key stops working', () => {
  const dir = tempDir();
  const vault = Vault.open(dir, { env: noEnv });
  vault.set('a', 'value-aaaaaaaa');
  const oldKey = readFileSync(join(dir, 'master.key'), 'utf8');
  const result = vault.rekey();
  assert.equal(result.source, join(dir, 'master.key'));
  assert.equal(result.newKey, undefined, 'a key file is rewritten, not printed');
  assert.notEqual(readFileSync(join(dir, 'master.key'), 'utf8'), oldKey);
  assert.equal(statSync(join(dir, 'master.key')).mode & 0o777, 0o600);
  closeStores();
  assert.equal(Vault.open(dir, { env: noEnv }).get('a'), 'value-aaaaaaaa');
  closeStores();
  assert.throws(() => Vault.open(dir, { env: { GATEHOUSE_MASTER_KEY: oldKey } }), { code: 'vault_wrong_master_key' });
  closeStores();
});

test('a rekey interrupted before the key file was replaced still opens, and completes', () => {
  const dir = tempDir();
  const vault = Vault.open(dir, { env: noEnv });
  vault.set('a', 'value-aaaaaaaa');
  const oldKey = readFileSync(join(dir, 'master.key'), 'utf8');
  vault.rekey();
  const newKey = readFileSync(join(dir, 'master.key'), 'utf8');
  closeStores();
  // As if the process died after the store took the new key but before the rename.
  writeFileSync(join(dir, 'master.key.new'), newKey, { mode: 0o600 });
  writeFileSync(join(dir, 'master.key'), oldKey, { mode: 0o600 });
  assert.equal(Vault.open(dir, { env: noEnv }).get('a'), 'value-aaaaaaaa');
  assert.equal(readFileSync(join(dir, 'master.key'), 'utf8'), newKey);
  assert.equal(existsSync(join(dir, 'master.key.new')), false);
  closeStores();
});

test('rekey with GATEHOUSE_MASTER_KEY returns the generated key for the operator to store', () => {
  const dir = tempDir();
  const env = { GATEHOUSE_MASTER_KEY: randomBytes(32).toString('hex') };
  const vault = Vault.open(dir, { env });
  vault.set('a', 'value-aaaaaaaa');
  const { newKey } = vault.rekey();
  assert.match(newKey!, /^[0-9a-f]{64}$/);
  closeStores();
  assert.equal(Vault.open(dir, { env: { GATEHOUSE_MASTER_KEY: newKey! } }).get('a'), 'value-aaaaaaaa');
  closeStores();
  assert.throws(() => Vault.open(dir, { env }), { code: 'vault_wrong_master_key' });
  closeStores();
});
