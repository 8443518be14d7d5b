/**
 * `gatehouse secret` with a node running: the change is recorded in the node's audit log (never the value),
 * and the node's egress proxy knows the new value at once, so a request carrying it is blocked. Without a
 * node the command writes the record itself. Real CLI processes, a real node, curl and a loopback server.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { test } from 'node:test';
import { pino } from 'pino';
import { openAgentRegistry } from '../src/agents/index.js';
import { startNode } from '../src/node/daemon.js';

const CLI = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));

/** Asynchronous: the node answers the command's control connection from this very process. */
function cli(args: string[], dataDir: string, input = ''): Promise<{ code: number | null; stderr: string; stdout: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [CLI, ...args], { env: { PATH: process.env.PATH, HOME: dataDir, GATEHOUSE_HOME: dataDir }, cwd: dataDir });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
    child.on('close', (code) => resolve({ code, stdout, stderr }));
    child.stdin.end(input);
  });
}

function curl(args: string[]): Promise<string> {
  return new Promise((resolve) => {
    const child = spawn('curl', ['-sS', '--max-time', '10', ...args], { stdio: ['ignore', 'pipe', 'inherit'] });
    let stdout = '';
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
    child.on('close', () => resolve(stdout));
  });
}

function auditText(dataDir: string): string {
  const dir = join(dataDir, 'audit');
  return readdirSync(dir).filter((name) => name.endsWith('.jsonl')).map((name) => readFileSync(join(dir, name), 'utf8')).join('');
}

test('a secret stored while the node runs is recorded by the node and blocked on its way out at once', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'gh-secrets-node-'));
  const dataDir = join(dir, 'data');
  mkdirSync(dataDir, { mode: 0o700 });
  const target = createServer((request, response) => {
    request.resume();
    request.on('end', () => response.end('received'));
  });
  await new Promise<void>((resolve) => target.listen(0, '127.0.0.1', () => resolve()));
  const port = (target.address() as AddressInfo).port;
  const configPath = join(dataDir, 'gatehouse.yaml');
  writeFileSync(configPath, `version: 1\nnode: { name: vault-node }\npolicy:\n  network:\n    - id: local\n      allow: [127.0.0.1]\n      ports: [${port}]\n`);
  // A value no built-in rule recognises: only the vault makes it a secret.
  const value = 'corp-internal-zq8Wm3kP7xR2vT9nL4bY';
  const node = await startNode({ configPath, dataDir, logger: pino({ level: 'silent' }), apiListen: '127.0.0.1:0', gatewayListen: '127.0.0.1:0', egressListen: '127.0.0.1:0' });
  try {
    const key = openAgentRegistry(dataDir).add('dev').key;
    const send = () => curl(['-x', `http://127.0.0.1:${node.egress!.address.port}`, '--proxy-user', `dev:${key}`, '-o', '/dev/null', '-w', '%{http_code}', '--data', `note=${value}`, `http://127.0.0.1:${port}/upload`]);
    assert.equal(await send(), '200', 'before it is a secret, the value passes');

    const set = await cli(['secret', 'set', 'corp-token'], dataDir, value);
    assert.equal(set.code, 0, set.stderr);
    assert.equal(await send(), '403', 'the node learned the new value without a restart');

    const record = auditText(dataDir).split('\n').filter(Boolean).map((line) => JSON.parse(line)).find((entry) => entry.action === 'secret.set');
    assert.equal(record?.resource, 'corp-token');
    assert.equal(record?.node, 'vault-node');
    assert.equal(record?.surface, 'credentials');
  } finally {
    await node.close();
    target.close();
  }
  // No node now: the command writes the record itself, into the same chain.
  const removed = await cli(['secret', 'rm', 'corp-token'], dataDir);
  assert.equal(removed.code, 0, removed.stderr);
  const text = auditText(dataDir);
  assert.match(text, /"action":"secret.rm"/);
  assert.ok(!text.includes(value), 'the value itself is never in the audit log');
  const verify = await cli(['audit', 'verify'], dataDir);
  assert.equal(verify.code, 0, verify.stdout + verify.stderr);
  rmSync(dir, { recursive: true, force: true });
});
