/**
 * The node's control socket over a real Unix socket: what a run may and may not ask of the node.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { AuditRecord } from '../audit/record.js';
import { policySchema } from '../config/policy-schema.js';
import { compilePolicy } from '../policy/index.js';
import { PlaceholderRegistry } from '../secrets/index.js';
import { connectToNode } from './control-client.js';
import { startControlServer, type ControlOptions } from './control.js';

async function withControl(
  body: (context: { dataDir: string; records: AuditRecord[]; policy: { version: string; digest: string } }) => Promise<void>,
  options: Partial<Pick<ControlOptions, 'gatewayFor'>> = {},
): Promise<void> {
  const dataDir = mkdtempSync(join(tmpdir(), 'gh-control-'));
  const engine = compilePolicy(policySchema.parse({}));
  const records: AuditRecord[] = [];
  const control = await startControlServer({
    dataDir,
    node: 'node-a',
    policy: { current: engine },
    audit: { append: async (record) => void records.push(record), close: async () => undefined },
    egress: undefined,
    placeholders: new PlaceholderRegistry(),
    resolveSecret: async () => 'unused',
    ...options,
  });
  try {
    await body({ dataDir, records, policy: { version: engine.version, digest: engine.digest } });
  } finally {
    await control.close();
    rmSync(dataDir, { recursive: true, force: true });
  }
}

/** Sends raw lines and collects the replies until the node closes the connection or `count` arrive. */
function exchange(path: string, lines: string[], count: number): Promise<Array<{ id: unknown; ok: boolean; error?: string }>> {
  return new Promise((resolve, reject) => {
    const socket = connect(path);
    let text = '';
    const done = (): void => resolve(text.split('\n').filter(Boolean).map((line) => JSON.parse(line)));
    socket.setEncoding('utf8').on('data', (chunk: string) => {
      text += chunk;
      if (text.split('\n').filter(Boolean).length >= count) {
        socket.end();
        done();
      }
    });
    socket.once('close', done);
    socket.once('error', reject);
    socket.write(lines.join('\n') + '\n');
  });
}

test('the control socket is private to the node user, and gone when the node stops', async () => {
  let path = '';
  await withControl(async ({ dataDir }) => {
    path = join(dataDir, 'node.sock');
    assert.equal(statSync(path).mode & 0o777, 0o600);
  });
  assert.throws(() => statSync(path));
});

test('a run writes its launch records through the node, stamped with the node name and acknowledged', async () => {
  await withControl(async ({ dataDir, records, policy }) => {
    const link = await connectToNode(dataDir);
    assert.ok(link);
    const opened = await link.open({ agent: 'coder' }, policy, true);
    assert.equal(opened.node, 'node-a');
    assert.equal(opened.egress, null, 'a node without an egress proxy gives the run none');
    assert.equal(opened.gateway, null, 'a node without a gateway socket gives the run none');
    const record = { v: 1, time: new Date().toISOString(), node: 'forged', principal: { agent: 'coder', session: 's1' }, surface: 'system', action: 'sandbox.launch', resource: 'true', effect: 'info', rules: ['x'], reason: 'started', latencyUs: 0, correlationId: 'c1', seq: 99 } as AuditRecord;
    await link.audit.append(record);
    assert.equal(records.length, 1);
    assert.equal(records[0]!.node, 'node-a');
    assert.deepEqual(records[0]!.principal, { agent: 'coder', session: 's1' });
    assert.equal(records[0]!.seq, undefined, 'the chain fields are the audit log\'s to set');
    await assert.rejects(link.audit.append({ ...record, surface: 'system', action: 'policy.reload' }), /a run may not record "system\/policy.reload"/);
    await assert.rejects(link.audit.append({ ...record, effect: 'allow' }), /"record.effect" may not be "allow"/);
    assert.equal(records.length, 1);
    await link.close();
  });
});

test('a node with a gateway gives each run a gateway socket of its own, for the run\'s agent, closed with the run', async () => {
  const asked: unknown[] = [];
  let closed = 0;
  await withControl(
    async ({ dataDir, policy }) => {
      const link = await connectToNode(dataDir);
      assert.ok(link);
      const opened = await link.open({ agent: 'coder', user: 'ada' }, policy, false);
      assert.deepEqual(opened.gateway, { socketPath: '/tmp/run-1/mcp.sock' });
      assert.deepEqual(asked, [{ agent: 'coder', user: 'ada' }]);
      assert.equal(closed, 0);
      await link.close();
      for (let i = 0; i < 50 && closed === 0; i += 1) await new Promise((resolve) => setTimeout(resolve, 10));
      assert.equal(closed, 1, 'the run\'s gateway socket closes when the run does');
    },
    {
      gatewayFor: async (principal) => {
        asked.push(principal);
        return { socketPath: '/tmp/run-1/mcp.sock', close: async () => void (closed += 1) };
      },
    },
  );
});

test('a run on another policy is refused, and nothing is recorded before a run is opened', async () => {
  await withControl(async ({ dataDir, records, policy }) => {
    const link = await connectToNode(dataDir);
    assert.ok(link);
    await assert.rejects(link.open({}, { version: 'other', digest: 'f'.repeat(64) }, false), /the node enforces policy .* but this run loaded other/);
    await link.close();
    const replies = await exchange(join(dataDir, 'node.sock'), [JSON.stringify({ id: 1, op: 'audit', record: {} }), JSON.stringify({ id: 2, op: 'open', principal: { agent: 7 }, policy })], 2);
    assert.deepEqual(replies.map((reply) => [reply.id, reply.ok, reply.error]), [
      [1, false, 'open the run before sending audit records'],
      [2, false, '"principal.agent" must be a string'],
    ]);
    assert.equal(records.length, 0);
  });
});

test('a malformed line gets one clear error and the connection is closed', async () => {
  await withControl(async ({ dataDir }) => {
    const replies = await exchange(join(dataDir, 'node.sock'), ['{"id": 1, "op": '], 5);
    assert.equal(replies.length, 1);
    assert.match(replies[0]!.error ?? '', /^a control request is not valid JSON/);
  });
});

test('no node, or a stale socket left by one that crashed: the run goes on alone', async () => {
  const dataDir = mkdtempSync(join(tmpdir(), 'gh-control-'));
  try {
    assert.equal(await connectToNode(dataDir), undefined);
    const control = await startControlServer({
      dataDir,
      node: 'n',
      policy: { current: compilePolicy(policySchema.parse({})) },
      audit: { append: async () => undefined, close: async () => undefined },
      egress: undefined,
      placeholders: new PlaceholderRegistry(),
      resolveSecret: async () => '',
    });
    // A crash leaves the socket file behind with nobody listening.
    const { writeFileSync } = await import('node:fs');
    await control.close();
    writeFileSync(join(dataDir, 'node.sock'), '');
    assert.equal(await connectToNode(dataDir), undefined);
  } finally {
    rmSync(dataDir, { recursive: true, force: true });
  }
});
