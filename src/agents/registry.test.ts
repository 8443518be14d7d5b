import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import type Database from 'better-sqlite3';
import { openStore } from '../store/index.js';
import { AgentRegistry } from './registry.js';

const dir = mkdtempSync(join(tmpdir(), 'gatehouse-agents-'));
after(() => rmSync(dir, { recursive: true, force: true }));

function registry(): AgentRegistry {
  return new AgentRegistry(openStore(dir, `${Math.random()}.db`));
}

test('a new key authenticates as its agent with its teams', () => {
  const agents = registry();
  const created = agents.add('ci-bot', ['platform', 'ci']);
  assert.match(created.key, /^ghk_[a-z0-9]{12}_[A-Za-z0-9_-]{43}$/);
  assert.deepEqual(agents.authenticateAgentKey(created.key), { agent: 'ci-bot', teams: ['ci', 'platform'] });
});

test('stores only a hash: the key text is nowhere in the database file', () => {
  const db = openStore(dir, 'hash-only.db');
  const created = new AgentRegistry(db).add('claude');
  const secret = created.key.split('_').slice(2).join('_');
  const rows = JSON.stringify(db.prepare('SELECT name, teams, key_id, hex(key_hash) AS h FROM agents').all());
  assert.ok(!rows.includes(secret));
  assert.ok(!agentsList(db).includes(secret));
});

function agentsList(db: Database.Database): string {
  return JSON.stringify(new AgentRegistry(db).list());
}

test('refuses a wrong secret, a malformed key and a removed agent', () => {
  const agents = registry();
  const created = agents.add('cursor');
  const wrong = created.key.slice(0, -1) + (created.key.endsWith('A') ? 'B' : 'A');
  assert.equal(agents.authenticateAgentKey(wrong), undefined);
  assert.equal(agents.authenticateAgentKey('Bearer ' + created.key), undefined);
  assert.equal(agents.authenticateAgentKey(''), undefined);
  assert.equal(agents.remove('cursor'), true);
  assert.equal(agents.authenticateAgentKey(created.key), undefined);
  assert.equal(agents.remove('cursor'), false);
});

test('lists agents without their keys and refuses duplicates and bad names', () => {
  const agents = registry();
  agents.add('b-agent');
  agents.add('a-agent', ['t1']);
  const listed = agents.list();
  assert.deepEqual(listed.map((a) => a.name), ['a-agent', 'b-agent']);
  assert.ok(listed.every((a) => a.keyId.endsWith('_…')));
  assert.throws(() => agents.add('a-agent'), /already exists/);
  assert.throws(() => agents.add('bad name'), /not a valid agent name/);
  assert.throws(() => agents.add('ok', ['bad team']), /not a valid team name/);
});

test('a key removed by another process or another registry stops working on the next request', async () => {
  const file = `${Math.random()}.db`;
  const agents = new AgentRegistry(openStore(dir, file));
  const created = agents.add('revoked-elsewhere');
  const other = agents.add('stays');
  assert.deepEqual(agents.authenticateAgentKey(created.key), { agent: 'revoked-elsewhere' });
  // Another process: `gatehouse agent rm` opens the database on a connection of its own.
  const { default: Database } = await import('better-sqlite3');
  const cli = new Database(join(dir, file));
  cli.prepare('DELETE FROM agents WHERE name = ?').run('revoked-elsewhere');
  cli.close();
  assert.equal(agents.authenticateAgentKey(created.key), undefined);
  assert.deepEqual(agents.authenticateAgentKey(other.key), { agent: 'stays' });
  // Another registry on the same connection (the node's gateway and egress proxy share one store).
  assert.equal(new AgentRegistry(openStore(dir, file)).remove('stays'), true);
  assert.equal(agents.authenticateAgentKey(other.key), undefined);
});
