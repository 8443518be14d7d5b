import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { describe, it } from 'node:test';

const cli = resolve(import.meta.dirname, '..', 'src', 'cli', 'main.js');

/** Starts `gatehouse up` in a fresh data dir and resolves once it prints the API address. */
function startUp(home: string): Promise<{ child: ReturnType<typeof spawn>; url: string; output: () => string }> {
  const child = spawn(process.execPath, [cli, 'up', '--api', '127.0.0.1:0', '--gateway', '127.0.0.1:0', '--egress', '127.0.0.1:0'], {
    env: { ...process.env, GATEHOUSE_HOME: home, GATEHOUSE_LOG_LEVEL: 'warn' },
    cwd: resolve(home, '..'),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  return new Promise((resolvePromise, reject) => {
    const timer = setTimeout(() => reject(new Error(`gatehouse up did not start: ${stdout}`)), 20_000);
    child.stdout!.on('data', (chunk: Buffer) => {
      stdout += chunk.toString();
      const match = /decision API (http:\/\/\S+)/.exec(stdout);
      if (match) {
        clearTimeout(timer);
        resolvePromise({ child, url: match[1]!, output: () => stdout });
      }
    });
    child.on('exit', (code) => reject(new Error(`gatehouse up exited with ${code}: ${stdout}`)));
  });
}

function exited(child: ReturnType<typeof spawn>): Promise<number | null> {
  return new Promise((r) => child.once('exit', (code) => r(code)));
}

describe('gatehouse up', () => {
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    it(`creates its data dir, keys and example policy, serves decisions, and stops cleanly on ${signal}`, async () => {
      const home = join(mkdtempSync(join(tmpdir(), 'gh-up-')), 'home');
      const { child, url, output } = await startUp(home);
      assert.equal(statSync(home).mode & 0o777, 0o700);
      assert.ok(existsSync(join(home, 'gatehouse.yaml')));
      assert.ok(existsSync(join(home, 'keys', 'node.key')));
      assert.match(output(), /created .*gatehouse\.yaml/);

      const health = await fetch(`${url}/healthz`);
      assert.equal(health.status, 200);
      const decision = (await (await fetch(`${url}/v1/decide`, {
        method: 'POST',
        body: JSON.stringify({ surface: 'filesystem', agent: 'dev', path: '~/.ssh/id_rsa', access: 'read' }),
      })).json()) as { effect: string; rules: string[] };
      assert.equal(decision.effect, 'deny');
      assert.deepEqual(decision.rules, ['credentials-on-disk']);

      const done = exited(child);
      child.kill(signal);
      assert.equal(await done, 0);
      assert.match(output(), new RegExp(`${signal}: stopping`));
    });
  }
});
