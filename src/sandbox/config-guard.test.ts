import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { configSchema } from '../config/schema.js';
import { configExposure, configFiles } from './config-guard.js';

test('lists the config and every file it names; a signed policy leaves out the config and its bundle', () => {
  const config = configSchema.parse({
    version: 1,
    node: { policyBundle: 'policy.bundle', trustedKeys: ['keys/ops.pub', '-----BEGIN PUBLIC KEY-----\ninline\n-----END PUBLIC KEY-----'] },
    sandbox: { bwrap: '~/bin/bwrap' },
    secrets: { masterKeyFile: '/etc/gh/master.key', providers: { token: { file: 'token.txt' }, other: { command: ['./fetch-secret'] } } },
  });
  const text = 'headers: { X: "${file:./header.txt}" }';
  assert.deepEqual(configFiles(config, '/cfg/gatehouse.yaml', text, '/home/u'), [
    '/cfg/gatehouse.yaml', '/cfg/policy.bundle', '/cfg/keys/ops.pub', '/cfg/header.txt', '/home/u/bin/bwrap', '/etc/gh/master.key', '/cfg/token.txt', '/cfg/fetch-secret',
  ]);
  const signed = configSchema.parse({ version: 1, node: { policyBundle: 'policy.bundle', requireSignedPolicy: true, trustedKeys: ['keys/ops.pub'] } });
  assert.deepEqual(configFiles(signed, '/cfg/gatehouse.yaml', '', '/home/u'), ['/cfg/keys/ops.pub']);
});

test('a config is exposed under a writable allow, not under a read-only one, a mask, or the private /tmp', () => {
  const root = mkdtempSync(join(tmpdir(), 'gh-guard-'));
  try {
    const ws = join(root, 'ws');
    mkdirSync(join(ws, 'ro'), { recursive: true });
    const view = { allow: [{ path: ws, access: 'rw' as const, ruleId: 'ws' }, { path: join(ws, 'ro'), access: 'ro' as const, ruleId: 'ro' }], deny: [], unmountable: [] };
    const base = { view, home: join(root, 'home'), cwd: ws, dataDir: join(ws, 'data') };
    assert.match(configExposure({ ...base, files: [join(ws, 'gatehouse.yaml')], configPath: join(ws, 'gatehouse.yaml') }) ?? '', /^refusing to run: the config file .* lies where the policy lets the program write/);
    assert.equal(configExposure({ ...base, files: [join(ws, 'ro', 'gatehouse.yaml')], configPath: join(ws, 'ro', 'gatehouse.yaml') }), undefined);
    mkdirSync(join(ws, 'data'));
    assert.equal(configExposure({ ...base, files: [join(ws, 'data', 'gatehouse.yaml')], configPath: join(ws, 'data', 'gatehouse.yaml') }), undefined);
    assert.equal(configExposure({ ...base, files: [join(root, 'elsewhere.yaml')], configPath: join(root, 'elsewhere.yaml') }), undefined);
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});
