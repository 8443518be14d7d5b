/**
 * Stdio upstreams in a real sandbox: the gateway starts server-filesystem through the sandbox launcher
 * (bubblewrap), and the server cannot see a file the policy does not give it, though the same server
 * outside the sandbox can. Needs bubblewrap (Debian package "bubblewrap"); with GATEHOUSE_REQUIRE_SANDBOX=1
 * a missing bwrap fails the test instead of skipping it.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import type { CallToolResult } from '@modelcontextprotocol/client';
import { MemoryAuditLog } from '../src/audit/jsonl.js';
import { launchSandboxed, quickGaps } from '../src/sandbox/index.js';
import { filesystemEntry, startHarness, type Harness } from './gateway-harness.js';

const gaps = quickGaps('bwrap');
const required = process.env.GATEHOUSE_REQUIRE_SANDBOX === '1';
const skip = gaps.length > 0 && !required ? `bubblewrap cannot sandbox here: ${gaps.join('; ')}` : false;
const repo = new URL('../..', import.meta.url).pathname.replace(/\/$/, '');

let secretDir: string;
let sandboxed: Harness;
let plain: Harness;
const launches = new MemoryAuditLog();

function text(result: CallToolResult): string {
  return result.content.map((block) => (block.type === 'text' ? block.text : '')).join('');
}

const config = (dir: string) => ({
  gateway: { upstreams: { fs: { command: process.execPath, args: [filesystemEntry, dir], cwd: repo } } },
  policy: {
    mcp: [{ id: 'fs', allow: { server: 'fs', tools: ['*'] } }],
    filesystem: [{ id: 'repo', allow: { paths: [repo], access: 'ro' } }],
  },
});

before(async () => {
  if (skip) return;
  assert.deepEqual(gaps, [], `bubblewrap is required (GATEHOUSE_REQUIRE_SANDBOX=1): ${gaps.join('; ')}`);
  secretDir = mkdtempSync('/tmp/gatehouse-sandbox-secret-');
  writeFileSync(join(secretDir, 'secret.txt'), 'outside the sandbox\n');
  sandboxed = await startHarness(config('/tmp'), undefined, {
    launch: async (server, command) =>
      launchSandboxed({
        command: [command.command, ...command.args],
        principal: { agent: `mcp:${server}` },
        policy: sandboxed.policy.current,
        audit: launches,
        stdio: 'pipe',
        server,
        envAdd: command.env,
        cwd: repo,
      }),
  });
  plain = await startHarness(config('/tmp'));
});

after(async () => {
  if (skip) return;
  await sandboxed?.close();
  await plain?.close();
  rmSync(secretDir, { recursive: true, force: true });
});

test('a sandboxed stdio upstream cannot read a file the policy does not give it; the same server outside can', { skip }, async () => {
  const path = join(secretDir, 'secret.txt');
  const outside = await plain.connect(plain.agents.add('t').key);
  assert.match(text((await outside.callTool({ name: 'fs__read_text_file', arguments: { path } })) as CallToolResult), /outside the sandbox/);

  const inside = await sandboxed.connect(sandboxed.agents.add('t').key);
  const result = (await inside.callTool({ name: 'fs__read_text_file', arguments: { path } })) as CallToolResult;
  assert.equal(result.isError, true);
  assert.doesNotMatch(text(result), /outside the sandbox/);
  const launch = launches.records.find((r) => r.action === 'sandbox.launch');
  assert.equal(launch?.details?.driver, 'bubblewrap');
  assert.equal(launch?.details?.server, 'fs');
});
