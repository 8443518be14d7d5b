import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { appendFileSync, cpSync, readFileSync, unlinkSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { ChainedAuditLog } from '../src/audit/chain.js';
import { hashLine, listSegments } from '../src/audit/format.js';
import type { AuditRecord } from '../src/audit/record.js';
import { decisionRecord, tempDataDir, type TempDataDir } from './audit-fixtures.js';

const cli = resolve(import.meta.dirname, '../src/cli/main.js');

function gatehouse(dataDir: string, args: string[]): { status: number | null; stdout: string; stderr: string } {
  const run = spawnSync(process.execPath, [cli, '--data-dir', dataDir, ...args], { encoding: 'utf8', timeout: 20000 });
  return { status: run.status, stdout: run.stdout, stderr: run.stderr };
}

async function writeLog(tmp: TempDataDir, count: number, options: { segmentMaxBytes?: number; start?: number } = {}): Promise<void> {
  const log = ChainedAuditLog.open({ dir: tmp.auditDir, node: 'n1', keys: tmp.keys, checkpointEvery: 10, ...options });
  for (let i = options.start ?? 0; i < (options.start ?? 0) + count; i += 1) await log.append(decisionRecord(i));
  await log.close();
}

function segmentPath(tmp: TempDataDir): string {
  return join(tmp.auditDir, listSegments(tmp.auditDir)[0]!.name);
}

function editLines(path: string, edit: (lines: string[]) => void): void {
  const lines = readFileSync(path, 'utf8').split('\n').filter(Boolean);
  edit(lines);
  writeFileSync(path, lines.join('\n') + '\n');
}

/** Index (0-based line) of the record with this seq. */
function lineOf(lines: string[], seq: number): number {
  return lines.findIndex((l) => l.startsWith(`{"seq":${seq},`));
}

test('audit verify passes an untouched log and pinpoints an edited, a deleted and a reordered record', async () => {
  const original = tempDataDir();
  try {
    await writeLog(original, 50);
    const ok = gatehouse(original.dataDir, ['audit', 'verify']);
    assert.equal(ok.status, 0, ok.stdout + ok.stderr);
    assert.match(ok.stdout, /^OK: 55 records \(1-55\) in 1 segment\(s\); 5 signed checkpoints verified\./);

    const scenarios: { name: string; tamper: (lines: string[]) => void; expect: RegExp; kind: string }[] = [
      {
        name: 'edit',
        tamper: (lines) => {
          const i = lineOf(lines, 20);
          lines[i] = lines[i]!.replace('"effect":"allow"', '"effect":"deny"').replace('"effect":"deny","rules":["deny-rule"]', '"effect":"allow","rules":["deny-rule"]');
        },
        expect: /record 20 \(segment-0000000000000001\.jsonl line 20\) was altered/,
        kind: 'altered',
      },
      { name: 'delete', tamper: (lines) => void lines.splice(lineOf(lines, 30), 1), expect: /record 30 is missing before segment-0000000000000001\.jsonl line 30/, kind: 'missing' },
      {
        name: 'reorder',
        tamper: (lines) => {
          const i = lineOf(lines, 40);
          [lines[i], lines[i + 1]] = [lines[i + 1]!, lines[i]!];
        },
        expect: /record 40 is out of order: it was expected at segment-0000000000000001\.jsonl line 40 but found at segment-0000000000000001\.jsonl line 41/,
        kind: 'reordered',
      },
    ];
    for (const scenario of scenarios) {
      const copy = tempDataDir();
      try {
        cpSync(original.dataDir, copy.dataDir, { recursive: true });
        const before = readFileSync(segmentPath(copy), 'utf8');
        editLines(segmentPath(copy), scenario.tamper);
        assert.notEqual(readFileSync(segmentPath(copy), 'utf8'), before, `${scenario.name} changed the file`);
        const text = gatehouse(copy.dataDir, ['audit', 'verify']);
        assert.equal(text.status, 1, `${scenario.name}: verify fails ${text.stderr}`);
        assert.match(text.stdout, scenario.expect, `${scenario.name}: ${text.stdout}`);
        const jsonRun = gatehouse(copy.dataDir, ['audit', 'verify', '--json']);
        assert.ok(jsonRun.stdout.trim().startsWith('{'), `verify --json printed JSON (stderr: ${jsonRun.stderr})`);
        const json = JSON.parse(jsonRun.stdout) as { ok: boolean; problem: { kind: string } };
        assert.equal(json.ok, false);
        assert.equal(json.problem.kind, scenario.kind);
      } finally {
        copy.cleanup();
      }
    }
  } finally {
    original.cleanup();
  }
});

test('audit verify passes a log whose last record is still being written', async () => {
  const tmp = tempDataDir();
  try {
    await writeLog(tmp, 5);
    appendFileSync(segmentPath(tmp), '{"seq":7,"prev":"');
    const run = gatehouse(tmp.dataDir, ['audit', 'verify', '--json']);
    assert.equal(run.status, 0, run.stdout + run.stderr);
    assert.equal((JSON.parse(run.stdout) as { partialTail: boolean }).partialTail, true);
  } finally {
    tmp.cleanup();
  }
});

test('audit verify catches a rewritten chain through the checkpoint signature', async () => {
  const tmp = tempDataDir();
  try {
    await writeLog(tmp, 30);
    // An attacker without the node's key edits record 5 and recomputes every later hash, checkpoints included.
    editLines(segmentPath(tmp), (lines) => {
      let prev = '';
      for (let i = 0; i < lines.length; i += 1) {
        const record = JSON.parse(lines[i]!) as AuditRecord & { seq: number; prev: string };
        if (i > 0) record.prev = prev;
        if (record.seq === 5) record.reason = 'nothing to see here';
        if (record.action === 'audit.checkpoint') (record.details as Record<string, unknown>).head = record.prev;
        const { seq, prev: p, ...rest } = record;
        lines[i] = `{"seq":${seq},"prev":"${p}",${JSON.stringify(rest).slice(1)}`;
        prev = hashLine(lines[i]!);
      }
    });
    const run = gatehouse(tmp.dataDir, ['audit', 'verify']);
    assert.equal(run.status, 1, run.stderr);
    assert.match(run.stdout, /checkpoint 11 \(segment-0000000000000001\.jsonl line 11\) has an invalid signature/, run.stderr);
  } finally {
    tmp.cleanup();
  }
});

test('audit verify reports a removed middle segment as missing records, and a key it does not trust', async () => {
  const tmp = tempDataDir();
  try {
    await writeLog(tmp, 120, { segmentMaxBytes: 4096 });
    const segments = listSegments(tmp.auditDir);
    assert.ok(segments.length >= 3);
    unlinkSync(join(tmp.auditDir, segments[1]!.name));
    const run = gatehouse(tmp.dataDir, ['audit', 'verify']);
    assert.equal(run.status, 1, run.stderr);
    assert.match(run.stdout, new RegExp(`records ${segments[1]!.firstSeq}-${segments[2]!.firstSeq - 1} are missing before ${segments[2]!.name} line 1`), run.stderr);

    const other = tempDataDir();
    try {
      await writeLog(other, 15);
      const wrongKey = gatehouse(other.dataDir, ['audit', 'verify', '--key', join(tmp.dataDir, 'keys', 'node.pub')]);
      assert.equal(wrongKey.status, 1, wrongKey.stderr);
      assert.match(wrongKey.stdout, /was signed by key [0-9a-f]{16}, not by a trusted key \([0-9a-f]{16}\)/);
      // After a key rotation, both keys are trusted.
      const both = gatehouse(other.dataDir, ['audit', 'verify', '--key', join(tmp.dataDir, 'keys', 'node.pub'), join(other.dataDir, 'keys', 'node.pub')]);
      assert.equal(both.status, 0, both.stdout + both.stderr);
    } finally {
      other.cleanup();
    }
  } finally {
    tmp.cleanup();
  }
});

test('audit verify reports records cut off the end of the log once the index has seen them', async () => {
  const tmp = tempDataDir();
  try {
    await writeLog(tmp, 20);
    assert.equal(gatehouse(tmp.dataDir, ['audit', 'query', '--limit', '1']).status, 0);
    editLines(segmentPath(tmp), (lines) => void lines.splice(lines.length - 3, 3));
    const run = gatehouse(tmp.dataDir, ['audit', 'verify']);
    assert.equal(run.status, 1, run.stderr);
    assert.match(run.stdout, /records 20-22 are missing from the end of the log/);
  } finally {
    tmp.cleanup();
  }
});

test('audit query filters by agent, surface, effect, host, server/tool and time, and stays correct across restarts, rotation and retention', async () => {
  const tmp = tempDataDir();
  try {
    await writeLog(tmp, 60);
    const query = (args: string[]) => {
      const run = gatehouse(tmp.dataDir, ['audit', 'query', '--limit', '10000', '--json', ...args]);
      assert.equal(run.status, 0, run.stderr);
      return JSON.parse(run.stdout) as AuditRecord[];
    };
    const expected = (from: number, to: number, keep: (r: AuditRecord) => boolean) =>
      Array.from({ length: to - from }, (_, k) => decisionRecord(from + k)).filter(keep).map((r) => r.resource);

    const denies = query(['--agent', 'coder', '--surface', 'network', '--effect', 'deny']);
    assert.deepEqual(
      denies.map((r) => r.resource),
      expected(0, 60, (r) => r.principal.agent === 'coder' && r.surface === 'network' && r.effect === 'deny'),
    );
    assert.ok(denies.length > 0);
    const github = query(['--host', '*.github.com']);
    assert.ok(github.length > 0 && github.every((r) => r.resource === 'api.github.com:443'));
    const deletes = query(['--server', 'github', '--tool', 'delete_repo']);
    assert.deepEqual(
      deletes.map((r) => r.seq),
      query(['--surface', 'mcp']).filter((r) => r.resource === 'github/delete_repo').map((r) => r.seq),
    );
    const window = query(['--since', '2026-11-24T06:00:10Z', '--until', '2026-11-24T06:00:19Z']);
    assert.equal(window.filter((r) => r.surface !== 'system').length, 10);

    // Restart with small segments and retention: the index follows new segments and forgets removed ones.
    const log = ChainedAuditLog.open({ dir: tmp.auditDir, node: 'n1', keys: tmp.keys, segmentMaxBytes: 4096, retentionMaxBytes: 8192 });
    for (let i = 60; i < 200; i += 1) await log.append(decisionRecord(i));
    await log.close();
    const all = query([]);
    const firstKept = listSegments(tmp.auditDir)[0]!.firstSeq;
    assert.ok(firstKept > 1, 'retention removed the oldest segment');
    assert.equal(all[0]!.seq, firstKept, 'records of removed segments are gone from the index');
    assert.equal(all.at(-1)!.seq, all.length + firstKept - 1, 'every remaining record is indexed exactly once');

    const table = gatehouse(tmp.dataDir, ['audit', 'query', '--effect', 'deny', '--limit', '3']);
    assert.equal(table.stdout.trim().split('\n').length, 3);
    assert.match(table.stdout, /deny\s+\S+\s+\S+/);
    const bad = gatehouse(tmp.dataDir, ['audit', 'query', '--since', 'yesterday']);
    assert.equal(bad.status, 2);
    assert.match(bad.stderr, /--since "yesterday" is not a time/);
  } finally {
    tmp.cleanup();
  }
});

test('audit export writes JSONL and CSV, with spreadsheet formulas defused', async () => {
  const tmp = tempDataDir();
  try {
    const log = ChainedAuditLog.open({ dir: tmp.auditDir, node: 'n1', keys: tmp.keys });
    await log.append(decisionRecord(1, { resource: '=HYPERLINK("http://evil")', reason: 'has, a comma' }));
    await log.append(decisionRecord(2));
    await log.close();
    const jsonl = gatehouse(tmp.dataDir, ['audit', 'export']);
    const records = jsonl.stdout.trim().split('\n').map((l) => JSON.parse(l) as AuditRecord);
    assert.equal(records.length, 3);
    const out = join(tmp.dataDir, 'out.csv');
    const csv = gatehouse(tmp.dataDir, ['audit', 'export', '--format', 'csv', '--surface', 'filesystem', '-o', out]);
    assert.equal(csv.status, 0, csv.stderr);
    const rows = readFileSync(out, 'utf8').trim().split('\n');
    assert.equal(rows[0], 'seq,time,node,agent,surface,action,resource,effect,rules,reason,latencyUs,correlationId,policyVersion');
    assert.equal(rows.length, 2);
    assert.match(rows[1]!, /,"'=HYPERLINK\(""http:\/\/evil""\)",allow,allow-rule,"has, a comma",/);
  } finally {
    tmp.cleanup();
  }
});

test('audit tail shows the latest records, filtered by effect', async () => {
  const tmp = tempDataDir();
  try {
    await writeLog(tmp, 40);
    const denies = gatehouse(tmp.dataDir, ['audit', 'tail', '-n', '3', '--effect', 'deny', '--json']);
    assert.equal(denies.status, 0, denies.stderr);
    const records = denies.stdout.trim().split('\n').map((l) => JSON.parse(l) as AuditRecord);
    const expected = Array.from({ length: 40 }, (_, i) => decisionRecord(i)).filter((r) => r.effect === 'deny').slice(-3);
    assert.deepEqual(records.map((r) => r.resource), expected.map((r) => r.resource));
    const table = gatehouse(tmp.dataDir, ['audit', 'tail', '-n', '2']);
    assert.equal(table.stdout.trim().split('\n').length, 2);
    assert.match(table.stdout, /audit\.checkpoint/, 'the newest record is the closing checkpoint');
  } finally {
    tmp.cleanup();
  }
});

test('audit tail -f prints new records as they land, across a segment rotation', async () => {
  const tmp = tempDataDir();
  try {
    await writeLog(tmp, 3);
    const child = spawn(process.execPath, [cli, '--data-dir', tmp.dataDir, 'audit', 'tail', '-f', '--json', '-n', '2'], { stdio: ['ignore', 'pipe', 'pipe'] });
    const seen: AuditRecord[] = [];
    let buffered = '';
    const waitFor = (done: () => boolean, what: string) =>
      new Promise<void>((resolvePromise, reject) => {
        const timer = setTimeout(() => reject(new Error(`tail printed ${seen.length} records, still waiting for ${what}`)), 10000);
        const check = () => {
          if (done()) {
            clearTimeout(timer);
            child.stdout.off('data', onData);
            resolvePromise();
          }
        };
        const onData = (chunk: Buffer) => {
          buffered += chunk.toString('utf8');
          const lines = buffered.split('\n');
          buffered = lines.pop() ?? '';
          for (const line of lines) seen.push(JSON.parse(line) as AuditRecord);
          check();
        };
        child.stdout.on('data', onData);
        check();
      });
    try {
      await waitFor(() => seen.length >= 2, 'the last two records');
      assert.deepEqual(seen.map((r) => r.seq), [3, 4]);
      const log = ChainedAuditLog.open({ dir: tmp.auditDir, node: 'n1', keys: tmp.keys, segmentMaxBytes: 1500 });
      for (let i = 10; i < 20; i += 1) await log.append(decisionRecord(i, { resource: `followed-${i}:443` }));
      await log.close();
      assert.ok(listSegments(tmp.auditDir).length > 1, 'the log rotated while tail was following');
      await waitFor(() => seen.some((r) => r.resource === 'followed-19:443'), 'followed-19');
      const followed = seen.filter((r) => r.resource.startsWith('followed-')).map((r) => r.resource);
      assert.deepEqual(followed, Array.from({ length: 10 }, (_, k) => `followed-${10 + k}:443`));
      const seqs = seen.map((r) => r.seq!);
      assert.deepEqual(seqs, [...seqs].sort((a, b) => a - b), 'in order');
    } finally {
      child.kill('SIGTERM');
    }
  } finally {
    tmp.cleanup();
  }
});
