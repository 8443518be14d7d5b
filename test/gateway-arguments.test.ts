/**
 * Arguments against the tool's inputSchema: the gateway refuses a call whose arguments break the schema
 * before the policy judges them, so a condition such as `args.force == true` cannot be dodged with
 * `force: "true"` or `force: 1` sent to a server that coerces either into true. A tool whose schema cannot
 * be compiled stays callable, but every condition on its arguments fails closed.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { CallToolResult, Client } from '@modelcontextprotocol/client';
import { fixtureUpstream, startHarness, type Harness } from './gateway-harness.js';

function text(result: CallToolResult): string {
  return result.content.map((block) => (block.type === 'text' ? block.text : '')).join('');
}

describe('tool arguments checked against the inputSchema', () => {
  let harness: Harness;
  let careful: Client;
  let plain: Client;

  before(async () => {
    harness = await startHarness({
      gateway: { upstreams: { repos: fixtureUpstream({}, ['--coercing']) } },
      policy: {
        mcp: [
          { id: 'repos', allow: { server: 'repos', tools: ['*'] } },
          { id: 'no-force', deny: { server: 'repos', tools: ['delete_repo*'] }, when: 'has(args.force) && args.force == true', agents: ['careful'] },
        ],
      },
    });
    careful = await harness.connect(harness.agents.add('careful').key);
    plain = await harness.connect(harness.agents.add('plain').key);
  });
  after(() => harness.close());

  const call = (client: Client, name: string, args: Record<string, unknown>) => client.callTool({ name, arguments: args }) as Promise<CallToolResult>;

  test('refuses force: "true" and force: 1 with invalid params naming the path, where the server would have forced', async () => {
    assert.equal(text(await call(careful, 'repos__delete_repo', { repo: 'scratch' })), 'deleted scratch');
    const honest = await call(careful, 'repos__delete_repo', { repo: 'scratch', force: true });
    assert.equal(honest.isError, true);
    assert.match(text(honest), /no-force/);
    for (const force of ['true', 1]) {
      const refused = await call(careful, 'repos__delete_repo', { repo: 'scratch', force }).catch((error: unknown) => error);
      assert.equal((refused as { code?: number }).code, -32602, `force: ${JSON.stringify(force)} got ${JSON.stringify(refused)}`);
      assert.match(String((refused as Error).message), /Invalid arguments for tool repos__delete_repo: args\/force must be boolean/);
      const record = harness.audit.records.findLast((r) => r.action === 'tools/call');
      assert.equal(record?.effect, 'deny');
      assert.deepEqual(record?.rules, ['input-schema']);
      assert.match(record?.reason ?? '', /args\/force must be boolean/);
    }
  });

  test('refuses an argument the schema does not declare, and a missing required one', async () => {
    const extra = await call(plain, 'repos__delete_repo', { repo: 'scratch', Force: true }).catch((error: unknown) => error);
    assert.equal((extra as { code?: number }).code, -32602);
    assert.match(String((extra as Error).message), /args\/Force is not a parameter of this tool/);
    const missing = await call(plain, 'repos__delete_repo', {}).catch((error: unknown) => error);
    assert.match(String((missing as Error).message), /args must have required property 'repo'/);
  });

  test('keeps a tool with an unusable schema callable, but fails closed on every condition over its arguments', async () => {
    // No condition reads this agent's arguments: the call goes through unchecked.
    assert.equal(text(await call(plain, 'repos__delete_repo_draft4', { repo: 'scratch', force: 'true' })), 'deleted scratch by force');
    // A deny that reads arguments cannot trust their types, so it stands, even for harmless ones.
    const denied = await call(careful, 'repos__delete_repo_draft4', { repo: 'scratch', force: 'true' });
    assert.equal(denied.isError, true);
    assert.match(text(denied), /no-force.*inputSchema cannot be compiled .*conditions on its arguments fail closed/);
    assert.equal((await call(careful, 'repos__delete_repo_draft4', { repo: 'scratch' })).isError, true);
    const record = harness.audit.records.findLast((r) => r.action === 'tools/call');
    assert.match(String(record?.details?.argsUnchecked), /inputSchema cannot be compiled .*draft-04/);
    const event = harness.audit.records.find((r) => r.action === 'upstream.schema-unusable');
    assert.match(event?.reason ?? '', /repos\/delete_repo_draft4: its inputSchema cannot be compiled/);
  });

  test('enforces a format the validator knows, takes one it does not know as an annotation, and says nothing on stderr', async () => {
    // Ajv used to print "unknown format "phone" ignored" for every schema with such a format.
    const written: string[] = [];
    const write = process.stderr.write;
    process.stderr.write = ((chunk: string | Uint8Array, ...rest: never[]) => {
      written.push(String(chunk));
      return write.call(process.stderr, chunk, ...rest);
    }) as typeof process.stderr.write;
    try {
      assert.equal(text(await call(plain, 'repos__invite', { email: 'ada@example.com', phone: 'call me maybe' })), 'invited ada@example.com');
      const refused = await call(plain, 'repos__invite', { email: 'not an address', phone: '+44 20 7946 0000' }).catch((error: unknown) => error);
      assert.equal((refused as { code?: number }).code, -32602);
      assert.match(String((refused as Error).message), /args\/email must match format "email"/);
      const wrongType = await call(plain, 'repos__invite', { email: 'ada@example.com', phone: 44 }).catch((error: unknown) => error);
      assert.match(String((wrongType as Error).message), /args\/phone must be string/);
    } finally {
      process.stderr.write = write;
    }
    assert.deepEqual(written.filter((line) => /format/.test(line)), []);
  });

  test("a server's catastrophic pattern cannot stall the gateway on an agent's input", async () => {
    // ^(a+)+$ against 40 a's and a "!" backtracks for hours in a plain regex engine.
    const started = Date.now();
    const calls = [call(plain, 'repos__tag_repo', { tag: `${'a'.repeat(40)}!` }).then(text, (error: Error) => error.message), call(careful, 'repos__tag_repo', { tag: 'aaa' }).then(text)];
    const [hostile, honest] = await Promise.all(calls);
    assert.match(hostile!, /args\/tag must match pattern/);
    assert.equal(honest, 'tagged aaa');
    assert.ok(Date.now() - started < 10_000, `both answered in ${Date.now() - started} ms`);
  });
});
