import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { tempDataDir } from './audit-fixtures.js';

const distRoot = resolve(import.meta.dirname, '..');
const strace = ['/usr/bin/strace', '/bin/strace'].find((p) => existsSync(p));
const requireAll = process.env.GATEHOUSE_REQUIRE_SANDBOX === '1';

interface Call {
  time: number;
  name: string;
  fd: number;
  text: string;
}

/**
 * Runs one append under strace and returns the system calls that matter, in order: writes to the segment,
 * fdatasync/fsync of it, and the child's "ACKNOWLEDGED" line, written the moment `append` resolved.
 */
function traceOneAppend(mode: 'sync' | 'batch'): { calls: Call[]; segmentFd: number } {
  const tmp = tempDataDir();
  try {
    const script = `
      import { writeSync } from 'node:fs';
      import { ChainedAuditLog } from ${JSON.stringify(join(distRoot, 'src/audit/chain.js'))};
      import { ensureNodeKeys } from ${JSON.stringify(join(distRoot, 'src/util/keys.js'))};
      const dir = process.env.DIR;
      const log = ChainedAuditLog.open({ dir: dir + '/audit', node: 'n', keys: ensureNodeKeys(dir), mode: process.env.MODE });
      await log.append({ v: 1, time: new Date().toISOString(), node: 'n', principal: {}, surface: 'network', action: 'connect',
        resource: 'MARKER-RECORD:443', effect: 'allow', rules: [], reason: 'ok', latencyUs: 1, correlationId: 'c' });
      writeSync(1, 'ACKNOWLEDGED\\n');
      await new Promise((r) => setTimeout(r, 200));
      await log.close();
    `;
    const tracePath = join(tmp.dataDir, 'trace.txt');
    const run = spawnSync(
      strace!,
      ['-f', '-qq', '-ttt', '-s', '2048', '-e', 'trace=write,pwrite64,fdatasync,fsync', '-o', tracePath, process.execPath, '--input-type=module', '-e', script],
      { env: { ...process.env, DIR: tmp.dataDir, MODE: mode }, encoding: 'utf8', timeout: 20000 },
    );
    assert.equal(run.status, 0, run.stderr);
    const calls: Call[] = [];
    for (const line of readFileSync(tracePath, 'utf8').split('\n')) {
      const match = /^\d+\s+(\d+\.\d+)\s+(write|pwrite64|fdatasync|fsync)\((\d+)(.*)$/.exec(line);
      if (match) calls.push({ time: Number(match[1]), name: match[2]!, fd: Number(match[3]), text: match[4]! });
    }
    const record = calls.find((c) => c.name === 'write' && c.text.includes('MARKER-RECORD'));
    assert.ok(record, 'the record was written with write(2)');
    return { calls, segmentFd: record.fd };
  } finally {
    tmp.cleanup();
  }
}

const needsStrace = { skip: !strace && !requireAll ? 'needs strace (Debian package strace)' : false };

test('sync mode: a record is written and fdatasync\'d before its append resolves', needsStrace, () => {
  assert.ok(strace, 'strace is installed');
  const { calls, segmentFd } = traceOneAppend('sync');
  const written = calls.findIndex((c) => c.fd === segmentFd && c.text.includes('MARKER-RECORD'));
  const synced = calls.findIndex((c, i) => i > written && c.fd === segmentFd && (c.name === 'fdatasync' || c.name === 'fsync'));
  const acknowledged = calls.findIndex((c) => c.fd === 1 && c.text.includes('ACKNOWLEDGED'));
  assert.ok(written >= 0 && synced > written, 'the segment is synced after the write');
  assert.ok(acknowledged > synced, 'the append resolved only after the sync');
});

test('batch mode: a record is written before its append resolves and fdatasync\'d within the 50 ms window', needsStrace, () => {
  assert.ok(strace, 'strace is installed');
  const { calls, segmentFd } = traceOneAppend('batch');
  const written = calls.findIndex((c) => c.fd === segmentFd && c.text.includes('MARKER-RECORD'));
  const acknowledged = calls.findIndex((c) => c.fd === 1 && c.text.includes('ACKNOWLEDGED'));
  const synced = calls.findIndex((c, i) => i > written && c.fd === segmentFd && c.name === 'fdatasync');
  assert.ok(written >= 0 && acknowledged > written, 'the record reached the operating system before the append resolved');
  assert.ok(synced > acknowledged, 'the group commit synced it after acknowledging');
  const delayMs = (calls[synced]!.time - calls[written]!.time) * 1000;
  // 50 ms is the window; the rest is slack for a loaded CI machine under strace.
  assert.ok(delayMs < 50 + 150, `fdatasync followed the write after ${delayMs.toFixed(1)} ms`);
});
