/**
 * The node's embedded store: one SQLite database (better-sqlite3) at `<dataDir>/gatehouse.db`.
 * Each module that keeps state (vault, agents, pins, audit index) owns its tables and registers its
 * migrations by name; a migration runs once, inside a transaction.
 */
import Database from 'better-sqlite3';
import { join } from 'node:path';
import { ensurePrivateDir } from '../util/paths.js';

export type Store = Database.Database;

export interface Migration {
  /** Unique and stable forever, for example "vault/1-create". */
  id: string;
  sql: string;
}

const opened = new Map<string, Store>();

/** Opens (once per process and path) the store in `dataDir`. */
export function openStore(dataDir: string, file = 'gatehouse.db'): Store {
  const path = join(ensurePrivateDir(dataDir), file);
  const existing = opened.get(path);
  if (existing?.open) return existing;
  const db = new Database(path);
  // First: switching a new file to WAL takes a lock, and without a busy timeout a second process opening the
  // same new store at that moment fails at once with SQLITE_BUSY instead of waiting its turn.
  db.pragma('busy_timeout = 5000');
  db.pragma('journal_mode = WAL');
  db.pragma('synchronous = FULL');
  db.pragma('foreign_keys = ON');
  db.exec('CREATE TABLE IF NOT EXISTS migrations (id TEXT PRIMARY KEY, applied_at TEXT NOT NULL)');
  opened.set(path, db);
  return db;
}

/**
 * Applies the migrations that have not run yet, in order. Each one is checked and applied inside an
 * IMMEDIATE transaction, which takes the write lock first: two processes opening a new store at once
 * (a node and a CLI command) serialise instead of both trying to create the same tables.
 */
export function migrate(db: Store, migrations: readonly Migration[]): void {
  const applied = db.prepare('SELECT 1 FROM migrations WHERE id = ?');
  const record = db.prepare('INSERT INTO migrations (id, applied_at) VALUES (?, ?)');
  for (const migration of migrations) {
    if (applied.get(migration.id)) continue;
    db.transaction(() => {
      if (applied.get(migration.id)) return;
      db.exec(migration.sql);
      record.run(migration.id, new Date().toISOString());
    }).immediate();
  }
}

export function closeStores(): void {
  for (const db of opened.values()) if (db.open) db.close();
  opened.clear();
}
