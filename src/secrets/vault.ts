/**
 * The vault: secrets encrypted at rest with AES-256-GCM in the node's SQLite store.
 *
 * Each secret is sealed with a random data key; the data key is stored wrapped (AES-256-GCM) by the master
 * key. The master key comes from GATEHOUSE_MASTER_KEY, else a key file (mode 0600), else `<dataDir>/master.key`,
 * generated on first run. The associated data binds each ciphertext to its secret's name and version, so
 * rows cannot be swapped. A wrong master key fails to unwrap the data key: a clear error, and nothing is
 * written.
 */
import { createCipheriv, createDecipheriv, createHash, randomBytes, scryptSync } from 'node:crypto';
import { chmodSync, existsSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { migrate, openStore, type Store } from '../store/index.js';
import { GatehouseError } from '../util/errors.js';
import { expandHome } from '../util/paths.js';

export interface SecretInfo {
  name: string;
  /** Free labels given at `secret set --scope` (agents, teams, environments). */
  scopes: string[];
  createdAt: string;
  /** When the value last changed after creation; undefined if never rotated. */
  rotatedAt: string | undefined;
  version: number;
}

export interface MasterKeyOptions {
  /** A configured key file (`secrets.masterKeyFile`). */
  keyFile?: string;
  /** The environment to read GATEHOUSE_MASTER_KEY from (default: process.env). */
  env?: NodeJS.ProcessEnv;
}

const MIGRATIONS = [
  {
    id: 'vault/1-create',
    sql: `
      CREATE TABLE vault_keys (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        wrapped BLOB NOT NULL,
        kdf TEXT NOT NULL,
        salt BLOB NOT NULL,
        created_at TEXT NOT NULL
      );
      CREATE TABLE vault_secrets (
        name TEXT PRIMARY KEY,
        scopes TEXT NOT NULL,
        sealed BLOB NOT NULL,
        version INTEGER NOT NULL,
        created_at TEXT NOT NULL,
        rotated_at TEXT
      );`,
  },
];

const NAME = /^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$/;
const WRAP_AAD = Buffer.from('gatehouse vault data key v1');
/** Passphrase master keys are stretched once, when the vault opens; never per request. */
const SCRYPT = { N: 1 << 15, r: 8, p: 1, maxmem: 64 * 1024 * 1024 };
const MAX_VALUE_BYTES = 64 * 1024;

function seal(key: Buffer, plaintext: Buffer, aad: Buffer): Buffer {
  const iv = randomBytes(12);
  const cipher = createCipheriv('aes-256-gcm', key, iv);
  cipher.setAAD(aad);
  const body = Buffer.concat([cipher.update(plaintext), cipher.final()]);
  return Buffer.concat([iv, cipher.getAuthTag(), body]);
}

/** Undefined when the key is wrong or the data was altered (GCM authentication failed). */
function open(key: Buffer, sealed: Buffer, aad: Buffer): Buffer | undefined {
  if (sealed.length < 28) return undefined;
  try {
    const decipher = createDecipheriv('aes-256-gcm', key, sealed.subarray(0, 12));
    decipher.setAAD(aad);
    decipher.setAuthTag(sealed.subarray(12, 28));
    return Buffer.concat([decipher.update(sealed.subarray(28)), decipher.final()]);
  } catch {
    return undefined;
  }
}

function secretAad(name: string, version: number): Buffer {
  return Buffer.from(`gatehouse vault secret v1\0${name}\0${version}`);
}

/** Where the master key came from, for messages. Never the key. */
interface MasterKeyMaterial {
  source: string;
  /** The key file it was read from (undefined for GATEHOUSE_MASTER_KEY). */
  file?: string;
  /** Raw 32-byte key, or a passphrase to stretch with the vault's salt. */
  raw: Buffer | undefined;
  passphrase: string | undefined;
}

/** 64 hex characters or base64 of 32 bytes is a raw key; anything else is a passphrase. */
function parseMasterKey(text: string, source: string): MasterKeyMaterial {
  const trimmed = text.trim();
  if (trimmed.length === 0) throw new GatehouseError('vault_master_key_empty', `the master key from ${source} is empty`);
  if (/^[0-9a-fA-F]{64}$/.test(trimmed)) return { source, raw: Buffer.from(trimmed, 'hex'), passphrase: undefined };
  if (/^[A-Za-z0-9+/_-]{43}=?$/.test(trimmed)) {
    const decoded = Buffer.from(trimmed, trimmed.includes('-') || trimmed.includes('_') ? 'base64url' : 'base64');
    if (decoded.length === 32) return { source, raw: decoded, passphrase: undefined };
  }
  if (trimmed.length < 16) {
    throw new GatehouseError('vault_master_key_weak', `the master key from ${source} is too short: use 32 random bytes (hex or base64) or a passphrase of at least 16 characters`);
  }
  return { source, raw: undefined, passphrase: trimmed };
}

function readKeyFile(path: string): string {
  const mode = statSync(path).mode & 0o777;
  if ((mode & 0o077) !== 0) {
    throw new GatehouseError(
      'vault_key_file_mode',
      `the master key file ${path} is readable by other users (mode ${mode.toString(8).padStart(4, '0')}); run "chmod 600 ${path}"`,
    );
  }
  return readFileSync(path, 'utf8');
}

export class Vault {
  private readonly db: Store;
  private readonly dataKey: Buffer;
  private readonly material: MasterKeyMaterial;

  private constructor(db: Store, dataKey: Buffer, material: MasterKeyMaterial) {
    this.db = db;
    this.dataKey = dataKey;
    this.material = material;
  }

  /** Where the master key came from: `GATEHOUSE_MASTER_KEY` or a key file's path. Never the key. */
  get keySource(): string {
    return this.material.source;
  }

  /**
   * Opens (creating on first use) the vault in `dataDir`. Throws `vault_wrong_master_key` if the master key
   * does not unwrap this vault's data key.
   */
  static open(dataDir: string, options: MasterKeyOptions = {}): Vault {
    const db = openStore(dataDir);
    migrate(db, MIGRATIONS);
    const row = db.prepare('SELECT wrapped, kdf, salt FROM vault_keys WHERE id = 1').get() as
      | { wrapped: Buffer; kdf: string; salt: Buffer }
      | undefined;
    const material = Vault.masterKeyMaterial(dataDir, options, row !== undefined);
    if (row) {
      let dataKey = open(Vault.deriveMaster(material, row.kdf, row.salt), row.wrapped, WRAP_AAD);
      if (!dataKey && material.file && existsSync(`${material.file}.new`)) {
        // A rekey was interrupted after the store took the new key but before the key file was replaced.
        const next = parseMasterKey(readKeyFile(`${material.file}.new`), `${material.file}.new`);
        dataKey = open(Vault.deriveMaster(next, row.kdf, row.salt), row.wrapped, WRAP_AAD);
        if (dataKey) {
          renameSync(`${material.file}.new`, material.file);
          return new Vault(db, dataKey, { ...next, source: material.file, file: material.file });
        }
      }
      if (!dataKey) {
        throw new GatehouseError(
          'vault_wrong_master_key',
          `the master key from ${material.source} does not open the vault in ${dataDir}; use the key the vault was created with (GATEHOUSE_MASTER_KEY, secrets.masterKeyFile or ${join(dataDir, 'master.key')})`,
        );
      }
      return new Vault(db, dataKey, material);
    }
    const salt = randomBytes(16);
    const kdf = material.raw ? 'raw' : `scrypt:${SCRYPT.N}:${SCRYPT.r}:${SCRYPT.p}`;
    const master = Vault.deriveMaster(material, kdf, salt);
    const dataKey = randomBytes(32);
    // INSERT OR IGNORE: if another process created the vault first, open theirs instead of overwriting it.
    const inserted = db
      .prepare('INSERT OR IGNORE INTO vault_keys (id, wrapped, kdf, salt, created_at) VALUES (1, ?, ?, ?, ?)')
      .run(seal(master, dataKey, WRAP_AAD), kdf, salt, new Date().toISOString());
    if (inserted.changes === 0) return Vault.open(dataDir, options);
    return new Vault(db, dataKey, material);
  }

  private static masterKeyMaterial(dataDir: string, options: MasterKeyOptions, vaultExists: boolean): MasterKeyMaterial {
    const env = options.env ?? process.env;
    const fromEnv = env.GATEHOUSE_MASTER_KEY;
    if (fromEnv !== undefined && fromEnv !== '') return parseMasterKey(fromEnv, 'GATEHOUSE_MASTER_KEY');
    if (options.keyFile !== undefined) {
      const path = expandHome(options.keyFile);
      if (!existsSync(path)) {
        throw new GatehouseError('vault_key_file_missing', `the master key file ${path} (secrets.masterKeyFile) does not exist`);
      }
      return { ...parseMasterKey(readKeyFile(path), path), file: path };
    }
    const path = join(dataDir, 'master.key');
    if (existsSync(path)) return { ...parseMasterKey(readKeyFile(path), path), file: path };
    if (vaultExists) {
      // Generating a new key now would orphan every stored secret.
      throw new GatehouseError(
        'vault_key_file_missing',
        `the vault in ${dataDir} exists but its master key is missing: restore ${path}, or set GATEHOUSE_MASTER_KEY`,
      );
    }
    const key = randomBytes(32).toString('hex');
    try {
      writeFileSync(path, key + '\n', { mode: 0o600, flag: 'wx' });
    } catch (error) {
      // Another process generated it first: use theirs.
      if ((error as NodeJS.ErrnoException).code === 'EEXIST') return { ...parseMasterKey(readKeyFile(path), path), file: path };
      throw error;
    }
    chmodSync(path, 0o600);
    return { source: path, file: path, raw: Buffer.from(key, 'hex'), passphrase: undefined };
  }

  private static deriveMaster(material: MasterKeyMaterial, kdf: string, salt: Buffer): Buffer {
    if (kdf === 'raw') {
      if (material.raw) return material.raw;
      // A passphrase given for a vault made with a raw key: hash it so the unwrap fails cleanly.
      return createHash('sha256').update(material.passphrase ?? '').digest();
    }
    const [, n, r, p] = kdf.split(':').map(Number);
    const secret = material.passphrase ?? material.raw!.toString('hex');
    return scryptSync(secret, salt, 32, { N: n!, r: r!, p: p!, maxmem: SCRYPT.maxmem });
  }

  /**
   * Wraps the data key under a new master key (`newKey`, or 32 random bytes); the secrets themselves are not
   * re-encrypted. A key file is replaced through `<file>.new` so an interrupted rekey leaves a vault that
   * still opens (see `open`). For GATEHOUSE_MASTER_KEY the caller must store the new key; it is returned.
   */
  rekey(newKey?: string): { source: string; newKey: string | undefined } {
    const text = newKey ?? randomBytes(32).toString('hex');
    const next = parseMasterKey(text, 'the new master key');
    const salt = randomBytes(16);
    const kdf = next.raw ? 'raw' : `scrypt:${SCRYPT.N}:${SCRYPT.r}:${SCRYPT.p}`;
    const wrapped = seal(Vault.deriveMaster(next, kdf, salt), this.dataKey, WRAP_AAD);
    const file = this.material.file;
    if (file) {
      // A fresh file (never a leftover one, whose mode could be wider) holds the new key until the store has it.
      rmSync(`${file}.new`, { force: true });
      writeFileSync(`${file}.new`, text.trim() + '\n', { mode: 0o600, flag: 'wx' });
    }
    this.db.prepare('UPDATE vault_keys SET wrapped = ?, kdf = ?, salt = ? WHERE id = 1').run(wrapped, kdf, salt);
    if (file) {
      chmodSync(`${file}.new`, 0o600);
      renameSync(`${file}.new`, file);
      return { source: file, newKey: undefined };
    }
    return { source: this.material.source, newKey: newKey === undefined ? text : undefined };
  }

  static validName(name: string): boolean {
    return NAME.test(name);
  }

  private checkName(name: string): void {
    if (!NAME.test(name)) {
      throw new GatehouseError('vault_bad_name', `"${name}" is not a valid secret name: use letters, digits, "_", ".", ":" or "-", starting with a letter or digit`);
    }
  }

  /** Stores a new secret; refuses to overwrite (use `rotate`). */
  set(name: string, value: string, scopes: readonly string[] = []): SecretInfo {
    this.checkName(name);
    this.checkValue(name, value);
    const now = new Date().toISOString();
    const result = this.db
      .prepare('INSERT OR IGNORE INTO vault_secrets (name, scopes, sealed, version, created_at, rotated_at) VALUES (?, ?, ?, 1, ?, NULL)')
      .run(name, JSON.stringify([...scopes]), seal(this.dataKey, Buffer.from(value, 'utf8'), secretAad(name, 1)), now);
    if (result.changes === 0) {
      throw new GatehouseError('vault_exists', `a secret named "${name}" already exists; use "gatehouse secret rotate ${name}" to change its value`);
    }
    return { name, scopes: [...scopes], createdAt: now, rotatedAt: undefined, version: 1 };
  }

  /** Replaces the value of an existing secret. */
  rotate(name: string, value: string): SecretInfo {
    this.checkName(name);
    this.checkValue(name, value);
    const row = this.row(name);
    if (!row) throw new GatehouseError('vault_not_found', `no secret named "${name}"; see "gatehouse secret ls"`);
    const version = row.version + 1;
    const now = new Date().toISOString();
    this.db
      .prepare('UPDATE vault_secrets SET sealed = ?, version = ?, rotated_at = ? WHERE name = ? AND version = ?')
      .run(seal(this.dataKey, Buffer.from(value, 'utf8'), secretAad(name, version)), version, now, name, row.version);
    return { name, scopes: JSON.parse(row.scopes) as string[], createdAt: row.created_at, rotatedAt: now, version };
  }

  get(name: string): string | undefined {
    const row = this.row(name);
    if (!row) return undefined;
    const plain = open(this.dataKey, row.sealed, secretAad(name, row.version));
    if (!plain) throw new GatehouseError('vault_corrupt', `the stored secret "${name}" fails its integrity check; rotate it with "gatehouse secret rotate ${name}"`);
    return plain.toString('utf8');
  }

  has(name: string): boolean {
    return this.row(name) !== undefined;
  }

  remove(name: string): boolean {
    return this.db.prepare('DELETE FROM vault_secrets WHERE name = ?').run(name).changes > 0;
  }

  list(): SecretInfo[] {
    const rows = this.db.prepare('SELECT name, scopes, version, created_at, rotated_at FROM vault_secrets ORDER BY name').all() as {
      name: string;
      scopes: string;
      version: number;
      created_at: string;
      rotated_at: string | null;
    }[];
    return rows.map((row) => ({
      name: row.name,
      scopes: JSON.parse(row.scopes) as string[],
      createdAt: row.created_at,
      rotatedAt: row.rotated_at ?? undefined,
      version: row.version,
    }));
  }

  /** Every name and value, for the secret scanner's known secrets. */
  entries(): { name: string; value: string }[] {
    return this.list().map((info) => ({ name: info.name, value: this.get(info.name)! }));
  }

  private row(name: string): { sealed: Buffer; version: number; scopes: string; created_at: string } | undefined {
    return this.db.prepare('SELECT sealed, version, scopes, created_at FROM vault_secrets WHERE name = ?').get(name) as
      | { sealed: Buffer; version: number; scopes: string; created_at: string }
      | undefined;
  }

  private checkValue(name: string, value: string): void {
    if (value.length === 0) throw new GatehouseError('vault_empty_value', `the value for "${name}" is empty; nothing was stored`);
    if (Buffer.byteLength(value) > MAX_VALUE_BYTES) {
      throw new GatehouseError('vault_value_too_large', `the value for "${name}" is over ${MAX_VALUE_BYTES / 1024} KiB; store a file path with a file provider instead`);
    }
  }
}

