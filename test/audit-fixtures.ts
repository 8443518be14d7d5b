/** Shared helpers for the audit tests: temporary data dirs and realistic records. */
import { mkdtempSync, rmSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ensureNodeKeys, type KeyPair } from '../src/util/keys.js';
import { newCorrelationId, type AuditRecord } from '../src/audit/record.js';
import { listSegments } from '../src/audit/format.js';

export interface TempDataDir {
  dataDir: string;
  auditDir: string;
  keys: KeyPair;
  cleanup(): void;
}

export function tempDataDir(prefix = 'gh-audit-'): TempDataDir {
  const dataDir = mkdtempSync(join(tmpdir(), prefix));
  return {
    dataDir,
    auditDir: join(dataDir, 'audit'),
    keys: ensureNodeKeys(dataDir),
    cleanup: () => rmSync(dataDir, { recursive: true, force: true }),
  };
}

const HOSTS = ['api.github.com', 'registry.npmjs.org', 'pastebin.com', 'example.internal'];

/** A network, filesystem or MCP decision record; `i` varies it deterministically. */
export function decisionRecord(i: number, overrides: Partial<AuditRecord> = {}): AuditRecord {
  const kind = i % 3;
  const base: AuditRecord = {
    v: 1,
    time: new Date(Date.UTC(2026, 10, 24, 6, 0, 0) + i * 1000).toISOString(),
    node: 'test-node',
    principal: { agent: i % 2 === 0 ? 'coder' : 'ci-bot', teams: ['dev'] },
    surface: kind === 0 ? 'network' : kind === 1 ? 'filesystem' : 'mcp',
    action: kind === 0 ? 'connect' : kind === 1 ? 'open' : 'tools/call',
    resource: kind === 0 ? `${HOSTS[i % HOSTS.length]}:443` : kind === 1 ? `/home/dev/project/file-${i % 7}.ts` : `github/${i % 4 === 0 ? 'delete_repo' : 'get_issue'}`,
    effect: i % 5 === 0 ? 'deny' : 'allow',
    rules: [i % 5 === 0 ? 'deny-rule' : 'allow-rule'],
    reason: i % 5 === 0 ? 'matched a deny rule' : 'matched an allow rule',
    latencyUs: 3,
    correlationId: newCorrelationId(),
  };
  return { ...base, ...overrides };
}

/** All lines of all segments, in order. */
export function readAllLines(auditDir: string): string[] {
  const out: string[] = [];
  for (const { name } of listSegments(auditDir)) {
    const text = readFileSync(join(auditDir, name), 'utf8');
    for (const line of text.split('\n')) if (line) out.push(line);
  }
  return out;
}

export function readAllRecords(auditDir: string): AuditRecord[] {
  return readAllLines(auditDir).map((line) => JSON.parse(line) as AuditRecord);
}
