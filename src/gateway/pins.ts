/**
 * Tool pinning. On first sight a tool's definition (name, title, description, input and output schemas,
 * annotations, plus its server's instructions) is pinned by SHA-256 over a canonical form. A definition
 * that later differs (a "rug pull") is held out of every list and call until a person approves it with
 * `gatehouse mcp pins approve`. Descriptions that try to steer the model (hide things from the user, read
 * credential files, call other tools covertly) are flagged and held on first sight too.
 */
import type { Tool } from '@modelcontextprotocol/client';
import { migrate, type Store } from '../store/index.js';
import { canonicalJson, digestOf } from './canonical.js';

const MIGRATIONS = [
  {
    id: 'gateway/1-pins',
    sql: `CREATE TABLE gateway_pins (
      server TEXT NOT NULL,
      tool TEXT NOT NULL,
      digest TEXT,
      definition TEXT,
      pending_digest TEXT,
      pending_definition TEXT,
      flags TEXT NOT NULL DEFAULT '[]',
      first_seen TEXT NOT NULL,
      updated_at TEXT NOT NULL,
      PRIMARY KEY (server, tool)
    )`,
  },
  {
    id: 'gateway/2-pins-version',
    sql: `CREATE TABLE gateway_pins_version (id INTEGER PRIMARY KEY CHECK (id = 1), version INTEGER NOT NULL);
      INSERT INTO gateway_pins_version (id, version) VALUES (1, 0)`,
  },
];

/** How often a running gateway looks for approvals made by another process. */
const VERSION_CHECK_MS = 500;

/** Patterns of tool descriptions that try to steer the model against its user. */
const STEERING: { id: string; pattern: RegExp }[] = [
  { id: 'conceal-from-user', pattern: /\b(do not|don't|never|without)\s+(tell|telling|inform|informing|mention|mentioning|reveal|revealing|show|showing|notify|notifying)\b[^.]{0,60}\b(user|human|operator)/i },
  { id: 'conceal-from-user', pattern: /\b(hide|conceal|keep (it|this) secret)\b[^.]{0,40}\b(from|to)\s+the\s+(user|human)/i },
  { id: 'credential-files', pattern: /(~\/\.ssh|\bid_(rsa|ed25519|ecdsa)\b|\.aws\/credentials|\.netrc\b|\.kube\/config|\.npmrc\b|\.pgpass\b|\.docker\/config\.json|\/etc\/shadow|\.env\b)/i },
  { id: 'covert-tool-call', pattern: /\b(before|after|instead of)\s+(using|calling|running|answering)\b[^.]{0,80}\b(call|invoke|use|run)\s+(the\s+)?[\w.-]+\s+tool\b/i },
  { id: 'prompt-injection', pattern: /<\s*(important|system|instructions?|secret)\s*>|\bignore (all |any )?(previous|prior|above) instructions\b/i },
];

export type PinState = 'pinned' | 'held';

export interface PinCheck {
  state: PinState;
  /** Why it is held: `changed` (differs from the approved pin) or `flagged` (steering on first sight). */
  reason?: 'changed' | 'flagged';
  flags: string[];
  /** True the first time this definition is seen (first pin, or a new pending change). */
  news: boolean;
}

export interface PinRow {
  server: string;
  tool: string;
  digest: string | null;
  pendingDigest: string | null;
  flags: string[];
  firstSeen: string;
  updatedAt: string;
  state: 'pinned' | 'held-changed' | 'held-flagged';
}

interface Row {
  server: string;
  tool: string;
  digest: string | null;
  definition: string | null;
  pending_digest: string | null;
  pending_definition: string | null;
  flags: string;
  first_seen: string;
  updated_at: string;
}

/** What a pin covers: everything a client model reads about the tool, and the server's instructions. */
export function pinnedForm(tool: Tool, instructions: string | undefined): Record<string, unknown> {
  return {
    name: tool.name,
    title: tool.title,
    description: tool.description,
    inputSchema: tool.inputSchema,
    outputSchema: tool.outputSchema,
    annotations: tool.annotations,
    instructions,
  };
}

export function steeringFlags(tool: Tool, instructions: string | undefined): string[] {
  const text = [tool.description ?? '', tool.title ?? '', JSON.stringify(tool.inputSchema ?? {}), instructions ?? ''].join('\n');
  return [...new Set(STEERING.filter((rule) => rule.pattern.test(text)).map((rule) => rule.id))];
}

export class PinStore {
  private readonly get;
  private readonly readVersion;
  private cachedVersion = 0;
  private checkedAt = 0;

  constructor(private readonly db: Store) {
    migrate(db, MIGRATIONS);
    this.get = db.prepare<[string, string], Row>('SELECT * FROM gateway_pins WHERE server = ? AND tool = ?');
    this.readVersion = db.prepare('SELECT version FROM gateway_pins_version WHERE id = 1').pluck();
  }

  /** Goes up with every approval, from any process; read at most every half second. */
  version(): number {
    const now = Date.now();
    if (now - this.checkedAt >= VERSION_CHECK_MS) {
      this.checkedAt = now;
      this.cachedVersion = this.readVersion.get() as number;
    }
    return this.cachedVersion;
  }

  /** Runs several checks in one transaction: first sight of a server's tools then costs one disk sync, not one per tool. */
  batch<T>(checks: () => T): T {
    return this.db.transaction(checks)();
  }

  /** Checks a tool against its pin, pinning it on first sight. */
  check(server: string, tool: Tool, instructions: string | undefined): PinCheck {
    const form = pinnedForm(tool, instructions);
    const digest = digestOf(form);
    const flags = steeringFlags(tool, instructions);
    const now = new Date().toISOString();
    const row = this.get.get(server, tool.name);
    if (!row) {
      if (flags.length > 0) {
        this.db
          .prepare('INSERT INTO gateway_pins (server, tool, digest, definition, pending_digest, pending_definition, flags, first_seen, updated_at) VALUES (?, ?, NULL, NULL, ?, ?, ?, ?, ?)')
          .run(server, tool.name, digest, canonicalJson(form), JSON.stringify(flags), now, now);
        return { state: 'held', reason: 'flagged', flags, news: true };
      }
      this.db
        .prepare('INSERT INTO gateway_pins (server, tool, digest, definition, flags, first_seen, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)')
        .run(server, tool.name, digest, canonicalJson(form), '[]', now, now);
      return { state: 'pinned', flags, news: true };
    }
    if (row.digest === digest) return { state: 'pinned', flags: JSON.parse(row.flags) as string[], news: false };
    const news = row.pending_digest !== digest;
    if (news) {
      this.db
        .prepare('UPDATE gateway_pins SET pending_digest = ?, pending_definition = ?, flags = ?, updated_at = ? WHERE server = ? AND tool = ?')
        .run(digest, canonicalJson(form), JSON.stringify(flags), now, server, tool.name);
    }
    return { state: 'held', reason: row.digest === null ? 'flagged' : 'changed', flags, news };
  }

  list(): PinRow[] {
    return this.db
      .prepare<[], Row>('SELECT * FROM gateway_pins ORDER BY server, tool')
      .all()
      .map((row) => ({
        server: row.server,
        tool: row.tool,
        digest: row.digest,
        pendingDigest: row.pending_digest,
        flags: JSON.parse(row.flags) as string[],
        firstSeen: row.first_seen,
        updatedAt: row.updated_at,
        state: row.pending_digest === null ? 'pinned' : row.digest === null ? 'held-flagged' : 'held-changed',
      }));
  }

  /** The approved and the pending definitions of a held tool, as pretty JSON, for `pins diff`. */
  diff(server: string, tool: string): { approved: unknown; pending: unknown } | undefined {
    const row = this.get.get(server, tool);
    if (!row || row.pending_definition === null) return undefined;
    return {
      approved: row.definition === null ? null : (JSON.parse(row.definition) as unknown),
      pending: JSON.parse(row.pending_definition) as unknown,
    };
  }

  /** Approves the pending definition of a held tool. Returns false when nothing was pending. */
  approve(server: string, tool: string): boolean {
    const row = this.get.get(server, tool);
    if (!row || row.pending_digest === null) return false;
    this.db
      .prepare('UPDATE gateway_pins SET digest = pending_digest, definition = pending_definition, pending_digest = NULL, pending_definition = NULL, updated_at = ? WHERE server = ? AND tool = ?')
      .run(new Date().toISOString(), server, tool);
    this.db.prepare('UPDATE gateway_pins_version SET version = version + 1 WHERE id = 1').run();
    this.checkedAt = 0;
    return true;
  }
}
