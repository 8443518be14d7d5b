/**
 * Audit floods. A steered agent can be refused as fast as it can open connections (a denied host, its rate
 * limit, a bad key); each refusal used to be one audit record, so it could fill the disk and bury real events.
 * Now the first refusals of each caller in a window are recorded in full and the rest are counted into one
 * summary record, written when the window ends or the proxy closes. Real clients (raw sockets over TCP and a
 * session's Unix socket), a real proxy and a real target server on loopback; the first test writes the real
 * hash-chained audit file and reads it back.
 */
import assert from 'node:assert/strict';
import { connect, createServer, type AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { ChainedAuditLog } from '../src/audit/chain.js';
import type { AuditRecord } from '../src/audit/record.js';
import { verifyLog } from '../src/audit/verify.js';
import { FLOOD_RECORDS } from '../src/egress/flood.js';
import { readAllRecords, tempDataDir } from './audit-fixtures.js';
import { reasonOf, startEchoServer, startTestProxy } from './egress-helpers.js';

const POLICY = `
network:
  - id: loopback-targets
    allow: [127.0.0.1]
  - id: paste-sites
    deny: [evil.test, other-evil.test]
`;

/** Limits high enough that a burst is refused by the policy, not by the agent's rate limit. */
const UNLIMITED = { settings: { limits: { connectionsPerSecond: 1_000_000 } } };

const SUMMARY = 'refusals.suppressed';
/** Refusals of one caller recorded one by one in a window before the rest are counted (the last says so). */
const FULL = FLOOD_RECORDS + 1;

/** Sends `bytes` on a new connection to the proxy and collects the answer until the proxy closes. */
function exchange(where: { port: number } | { path: string }, bytes: string): Promise<string> {
  return new Promise((resolve) => {
    const socket = 'port' in where ? connect(where.port, '127.0.0.1') : connect(where.path);
    let data = '';
    const timer = setTimeout(() => socket.destroy(), 10_000);
    socket.on('connect', () => socket.write(bytes));
    socket.on('data', (chunk: Buffer) => (data += chunk.toString('latin1')));
    socket.on('error', () => undefined);
    socket.on('close', () => {
      clearTimeout(timer);
      resolve(data);
    });
  });
}

/** `count` connections, `parallel` at a time, each sending `bytes(i)`; their answers in order. */
async function burst(where: { port: number } | { path: string }, count: number, bytes: (i: number) => string, parallel = 100): Promise<string[]> {
  const answers: string[] = [];
  for (let start = 0; start < count; start += parallel) {
    const batch = Array.from({ length: Math.min(parallel, count - start) }, (_, k) => exchange(where, bytes(start + k)));
    answers.push(...(await Promise.all(batch)));
  }
  return answers;
}

const connectTo = (target: string, key?: string) => (): string =>
  `CONNECT ${target} HTTP/1.1\r\nHost: ${target}\r\n${key ? `Proxy-Authorization: Bearer ${key}\r\n` : ''}\r\n`;

const statusOf = (answer: string): number => Number(/^HTTP\/1\.1 (\d{3})/.exec(answer)?.[1]);

const isSummary = (record: AuditRecord): boolean => record.action === SUMMARY;
const ofAgent = (agent: string | undefined) => (record: AuditRecord): boolean => record.principal.agent === agent;
const refusals = (records: AuditRecord[], reasonCode: string): AuditRecord[] =>
  records.filter((r) => !isSummary(r) && r.effect === 'deny' && r.details?.reasonCode === reasonCode);
const suppressed = (summaries: AuditRecord[]): number => summaries.reduce((sum, r) => sum + (r.details?.suppressed as number), 0);

/** Every count a summary gives adds up to its total: by reason, and by reason and host (with the rest). */
function assertSummaryAddsUp(summary: AuditRecord): void {
  const details = summary.details as { suppressed: number; byReason: Record<string, number>; byHost: { count: number }[]; otherHosts: number };
  const byReason = Object.values(details.byReason).reduce((sum, n) => sum + n, 0);
  const byHost = details.byHost.reduce((sum, entry) => sum + entry.count, 0) + details.otherHosts;
  assert.equal(byReason, details.suppressed, 'counts by reason add up to the total');
  assert.equal(byHost, details.suppressed, 'counts by reason and host add up to the total');
}

describe('egress audit floods', () => {
  let echo: Awaited<ReturnType<typeof startEchoServer>>;
  /** A loopback port nothing listens on. */
  let closedPort: number;
  before(async () => {
    echo = await startEchoServer();
    const probe = createServer();
    await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', resolve));
    closedPort = (probe.address() as AddressInfo).port;
    await new Promise((resolve) => probe.close(resolve));
  });
  after(() => echo.close());

  it('2000 refused CONNECTs through a session leave the first refusals and one summary, written to the audit file on close, that counts the rest exactly', async () => {
    const tmp = tempDataDir('gh-egress-flood-');
    const log = ChainedAuditLog.open({ dir: tmp.auditDir, node: 'test', keys: tmp.keys });
    const gate = await startTestProxy(POLICY, { audit: log, ...UNLIMITED });
    try {
      const session = await gate.proxy.openSession({ agent: 'alice' }, 'sandbox-1');
      const answers = await burst({ path: session.socketPath }, 2000, connectTo('evil.test:443'));
      assert.ok(answers.every((answer) => statusOf(answer) === 403 && reasonOf(answer) === 'policy-denied'), 'every one is refused');
      await new Promise((resolve) => setTimeout(resolve, 200));
      const summarizedBeforeClose = suppressed(readAllRecords(tmp.auditDir).filter(isSummary));

      await gate.close();
      await log.close();
      const records = readAllRecords(tmp.auditDir).filter((r) => r.surface === 'network');
      const full = refusals(records, 'policy-denied');
      const summaries = records.filter(isSummary);
      assert.ok(full.length <= FULL, `${full.length} refusals recorded in full`);
      assert.ok(records.length <= FULL + summaries.length, `${records.length} network records for 2000 refusals`);
      assert.match(full.at(-1)?.reason ?? '', /further refusals of this caller within a minute are counted in one summary record/);
      assert.ok(suppressed(summaries) > summarizedBeforeClose, 'closing the proxy wrote the summary of the window still open');
      assert.equal(full.length + suppressed(summaries), 2000, 'recorded in full plus counted is every refusal');
      for (const summary of summaries) {
        assert.deepEqual(summary.principal, { agent: 'alice', session: 'sandbox-1' });
        assert.equal(summary.effect, 'deny');
        assertSummaryAddsUp(summary);
        assert.deepEqual(summary.details?.byHost, [{ reasonCode: 'policy-denied', host: 'evil.test', count: summary.details?.suppressed }]);
      }
      const verified = verifyLog(tmp.auditDir, { publicKey: tmp.keys.publicKey });
      assert.equal(verified.ok, true, verified.problem?.message);
    } finally {
      await gate.close();
      await log.close();
      tmp.cleanup();
    }
  });

  it('2000 rate-limited requests are recorded up to the cap and counted beyond it; every allowed request is recorded', async () => {
    const gate = await startTestProxy(POLICY, { settings: { limits: { connectionsPerSecond: 5 } } });
    const target = `127.0.0.1:${echo.port}`;
    let answers: string[];
    try {
      answers = await burst({ port: gate.proxy.address.port }, 2000, (i) => `GET http://${target}/${i} HTTP/1.1\r\nHost: ${target}\r\nProxy-Authorization: Bearer key-alice\r\nConnection: close\r\n\r\n`);
    } finally {
      await gate.close();
    }
    const allowed = answers.filter((answer) => statusOf(answer) === 200).length;
    const limited = answers.filter((answer) => statusOf(answer) === 429 && reasonOf(answer) === 'rate-limited').length;
    assert.equal(allowed + limited, 2000, 'each request was either served or rate-limited');
    assert.ok(limited > 1900, `${limited} rate-limited`);

    const records = gate.audit.records;
    assert.equal(records.filter((r) => r.effect === 'allow').length, allowed, 'every allowed request has its record');
    const full = refusals(records, 'rate-limited');
    const summaries = records.filter(isSummary);
    assert.ok(full.length <= FULL, `${full.length} rate-limited refusals recorded in full`);
    assert.equal(full.length + suppressed(summaries), limited, 'recorded in full plus counted is every rate-limited request');
    for (const summary of summaries) {
      assertSummaryAddsUp(summary);
      assert.deepEqual(summary.details?.byReason, { 'rate-limited': summary.details?.suppressed });
      assert.deepEqual(summary.details?.byHost, [{ reasonCode: 'rate-limited', host: '127.0.0.1', count: summary.details?.suppressed }]);
    }
  });

  it("one agent's flood leaves another agent's refusals, its own allowed connections and its first refusal for a new host recorded in full", async () => {
    const gate = await startTestProxy(POLICY, UNLIMITED);
    const proxy = { port: gate.proxy.address.port };
    try {
      await burst(proxy, 500, connectTo('evil.test:443', 'key-alice'));
      const bob = await burst(proxy, 5, connectTo('evil.test:443', 'key-bob'));
      assert.ok(bob.every((answer) => statusOf(answer) === 403));
      const allowed = await exchange(proxy, `GET http://127.0.0.1:${echo.port}/during-the-flood HTTP/1.1\r\nHost: 127.0.0.1:${echo.port}\r\nProxy-Authorization: Bearer key-alice\r\nConnection: close\r\n\r\n`);
      assert.equal(statusOf(allowed), 200);
      const newHost = await exchange(proxy, connectTo('other-evil.test:443', 'key-alice')());
      assert.equal(statusOf(newHost), 403);
      // A connection the policy allowed but the server refused: evidence of traffic let go, never only counted.
      const failedDials = await burst(proxy, FULL + 5, connectTo(`127.0.0.1:${closedPort}`, 'key-alice'));
      assert.ok(failedDials.every((answer) => statusOf(answer) === 502 && reasonOf(answer) === 'upstream-unreachable'));
      await burst(proxy, 200, connectTo('evil.test:8443', 'key-alice'));
    } finally {
      await gate.close();
    }
    const records = gate.audit.records;
    const alice = records.filter(ofAgent('alice'));
    const aliceRefusals = refusals(alice, 'policy-denied');
    assert.ok(aliceRefusals.length <= FULL + 1, `${aliceRefusals.length} of alice's 701 refusals recorded in full`);
    assert.ok(aliceRefusals.some((r) => r.resource === 'other-evil.test:443'), 'the first refusal for another host is recorded amid the flood');
    assert.ok(alice.some((r) => r.effect === 'allow' && r.resource.endsWith('/during-the-flood')), 'the allowed request amid the flood is recorded');
    assert.equal(refusals(alice, 'upstream-unreachable').length, FULL + 5, 'every failed dial to an allowed destination is recorded in full');
    const aliceSummaries = alice.filter(isSummary);
    assert.equal(aliceRefusals.length + suppressed(aliceSummaries), 701, "alice's refusals, recorded or counted, are all accounted for");
    // Ports of one host count as one host: a sweep of ports is one line of the summary.
    for (const summary of aliceSummaries) assert.deepEqual(summary.details?.byHost, [{ reasonCode: 'policy-denied', host: 'evil.test', count: summary.details?.suppressed }]);

    const bobs = records.filter(ofAgent('bob'));
    assert.equal(refusals(bobs, 'policy-denied').length, 5, "every one of bob's refusals is recorded in full");
    assert.equal(bobs.filter(isSummary).length, 0);
  });

  it('refusals of unauthenticated callers are bounded per listener, and leave the agents who did authenticate their own records', async () => {
    const gate = await startTestProxy(POLICY, UNLIMITED);
    const proxy = { port: gate.proxy.address.port };
    try {
      const answers = await burst(proxy, 2000, connectTo('evil.test:443', 'not-a-key'));
      assert.ok(answers.every((answer) => statusOf(answer) === 407 && reasonOf(answer) === 'auth-required'));
      const alice = await burst(proxy, 3, connectTo('evil.test:443', 'key-alice'));
      assert.ok(alice.every((answer) => statusOf(answer) === 403));
    } finally {
      await gate.close();
    }
    const records = gate.audit.records;
    const anonymous = records.filter(ofAgent(undefined));
    const full = refusals(anonymous, 'auth-required');
    const summaries = anonymous.filter(isSummary);
    assert.ok(full.length <= FULL, `${full.length} of 2000 unauthenticated refusals recorded in full`);
    assert.equal(full.length + suppressed(summaries), 2000, 'recorded in full plus counted is every unauthenticated refusal');
    for (const summary of summaries) {
      assert.equal(summary.details?.listener, 'tcp');
      assert.deepEqual(summary.details?.byReason, { 'auth-required': summary.details?.suppressed });
      assertSummaryAddsUp(summary);
    }
    assert.equal(refusals(records.filter(ofAgent('alice')), 'policy-denied').length, 3, "the unauthenticated flood does not spend alice's records");
  });
});
