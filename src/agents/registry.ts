import { hash, randomBytes, timingSafeEqual } from 'node:crypto';
import type { Principal } from '../policy/types.js';
import { migrate, openStore, type Store } from '../store/index.js';
import { GatehouseError } from '../util/errors.js';

/** `ghk_<key id>_<secret>`: the id finds the row, the secret proves possession. */
const KEY_PATTERN = /^ghk_([a-z0-9]{12})_([A-Za-z0-9_-]{43})$/;
const NAME_PATTERN = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;
const TEAM_PATTERN = /^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$/;

const MIGRATIONS = [
  {
    id: 'agents/1-create',
    sql: `CREATE TABLE agents (
      name TEXT PRIMARY KEY,
      teams TEXT NOT NULL,
      key_id TEXT NOT NULL UNIQUE,
      key_hash BLOB NOT NULL,
      created_at TEXT NOT NULL
    )`,
  },
];

export interface AgentInfo {
  name: string;
  teams: string[];
  /** The public half of the key, safe to show (`ghk_<id>_…`). */
  keyId: string;
  createdAt: string;
}

export interface NewAgentKey extends AgentInfo {
  /** The whole key; shown once, never stored. */
  key: string;
}

interface AgentRow {
  name: string;
  teams: string;
  key_id: string;
  key_hash: Buffer;
  created_at: string;
}

export function parseAgentKey(key: string): { keyId: string; secret: string } | undefined {
  const match = KEY_PATTERN.exec(key);
  return match ? { keyId: match[1]!, secret: match[2]! } : undefined;
}

/** One-shot: a gateway hashes the presented key on every request, and a Hash object per call is garbage to collect. */
function hashSecret(secret: string): Buffer {
  return hash('sha256', secret, 'buffer');
}

function toInfo(row: AgentRow): AgentInfo {
  return { name: row.name, teams: JSON.parse(row.teams) as string[], keyId: row.key_id, createdAt: row.created_at };
}

/** Writes to the agents table through each connection (registries sharing a store share the count). */
const localWrites = new WeakMap<Store, number>();

/** A known key's row as authentication needs it. */
interface KnownKey {
  name: string;
  teams: string[];
  hash: Buffer;
}

export class AgentRegistry {
  private readonly byKeyId;
  private readonly byName;
  private readonly dataVersion;
  /**
   * Known keys by key id, so that a request does not query the database (a gateway authenticates every
   * request). It holds only keys that exist, so guessing ids cannot grow it. It is good while the database
   * is unchanged: SQLite's data_version moves when another process (`gatehouse agent rm`) commits, and this
   * process's own writes are counted in `localWrites`; either empties it, so a removed key stops working
   * on the next request, as it did without a cache.
   */
  private readonly known = new Map<string, KnownKey>();
  private knownAt = '';

  constructor(private readonly db: Store) {
    migrate(db, MIGRATIONS);
    this.byKeyId = db.prepare<[string], AgentRow>('SELECT * FROM agents WHERE key_id = ?');
    this.byName = db.prepare<[string], AgentRow>('SELECT * FROM agents WHERE name = ?');
    this.dataVersion = db.prepare<[], number>('PRAGMA data_version').pluck();
  }

  /** Creates an agent and its key. The key is in the result and nowhere else. */
  add(name: string, teams: string[] = []): NewAgentKey {
    if (!NAME_PATTERN.test(name)) {
      throw new GatehouseError('agent_name', `"${name}" is not a valid agent name: use letters, digits, "_", "." or "-" (at most 64)`);
    }
    for (const team of teams) {
      if (!TEAM_PATTERN.test(team)) throw new GatehouseError('agent_team', `"${team}" is not a valid team name: use letters, digits, "_", ".", ":" or "-"`);
    }
    if (this.byName.get(name)) {
      throw new GatehouseError('agent_exists', `an agent named "${name}" already exists; remove it first with "gatehouse agent rm ${name}"`);
    }
    const keyId = randomBytes(6).toString('hex');
    const secret = randomBytes(32).toString('base64url');
    const createdAt = new Date().toISOString();
    const uniqueTeams = [...new Set(teams)].sort();
    this.db
      .prepare('INSERT INTO agents (name, teams, key_id, key_hash, created_at) VALUES (?, ?, ?, ?, ?)')
      .run(name, JSON.stringify(uniqueTeams), keyId, hashSecret(secret), createdAt);
    this.wrote();
    return { name, teams: uniqueTeams, keyId: `ghk_${keyId}_…`, createdAt, key: `ghk_${keyId}_${secret}` };
  }

  list(): AgentInfo[] {
    return this.db
      .prepare<[], AgentRow>('SELECT * FROM agents ORDER BY name')
      .all()
      .map((row) => ({ ...toInfo(row), keyId: `ghk_${row.key_id}_…` }));
  }

  /** Removes the agent; its key stops working at once. Returns whether it existed. */
  remove(name: string): boolean {
    const removed = this.db.prepare('DELETE FROM agents WHERE name = ?').run(name).changes > 0;
    this.wrote();
    return removed;
  }

  /** The principal a key belongs to, or undefined for any key that is malformed, unknown or wrong. */
  authenticateAgentKey(key: string): Principal | undefined {
    const parsed = parseAgentKey(key);
    if (!parsed) return undefined;
    const known = this.lookup(parsed.keyId);
    if (!known) return undefined;
    const presented = hashSecret(parsed.secret);
    if (presented.length !== known.hash.length || !timingSafeEqual(presented, known.hash)) return undefined;
    return known.teams.length > 0 ? { agent: known.name, teams: [...known.teams] } : { agent: known.name };
  }

  private lookup(keyId: string): KnownKey | undefined {
    const at = `${this.dataVersion.get()}:${localWrites.get(this.db) ?? 0}`;
    if (at !== this.knownAt) {
      this.known.clear();
      this.knownAt = at;
    }
    const cached = this.known.get(keyId);
    if (cached) return cached;
    const row = this.byKeyId.get(keyId);
    if (!row) return undefined;
    const known = { name: row.name, teams: JSON.parse(row.teams) as string[], hash: row.key_hash };
    this.known.set(keyId, known);
    return known;
  }

  private wrote(): void {
    localWrites.set(this.db, (localWrites.get(this.db) ?? 0) + 1);
  }
}

/** The registry in a node's data directory. */
export function openAgentRegistry(dataDir: string): AgentRegistry {
  return new AgentRegistry(openStore(dataDir));
}
