import { test } from 'node:test';
import assert from 'node:assert/strict';
import { rlimitsFrom, settingsFor } from './launch.js';

test("an agent's own rlimits replace the defaults field by field, and its env names add to them", () => {
  const settings = {
    env: ['GOPATH'],
    rlimits: { memory: 8 * 1024 ** 3, openFiles: 8192 },
    agents: { 'ci-bot': { rlimits: { memory: 1024 ** 3, cpuTime: 600_000 }, env: ['CI'] } },
  };
  const merged = settingsFor(settings, 'ci-bot');
  assert.deepEqual(merged?.env, ['GOPATH', 'CI']);
  assert.deepEqual(rlimitsFrom(merged), { memoryBytes: 1024 ** 3, openFiles: 8192, cpuSeconds: 600 });
  assert.deepEqual(rlimitsFrom(settingsFor(settings, 'someone-else')), { memoryBytes: 8 * 1024 ** 3, openFiles: 8192 });
});

test('no rlimits configured means none applied', () => {
  assert.equal(rlimitsFrom({ rlimits: {} }), undefined);
  assert.equal(rlimitsFrom(undefined), undefined);
});

test("finds node's ELF loader from its headers (the bridge is started through an execute-only copy of it)", async () => {
  const { elfInterpreter } = await import('./bubblewrap.js');
  const { existsSync } = await import('node:fs');
  const loader = elfInterpreter(process.execPath);
  assert.ok(loader && loader.startsWith('/') && existsSync(loader), String(loader));
  assert.equal(elfInterpreter(new URL(import.meta.url).pathname), undefined, 'a script is not ELF');
  assert.equal(elfInterpreter('/nonexistent'), undefined);
});
