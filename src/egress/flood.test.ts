import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { policySchema } from '../config/policy-schema.js';
import { compilePolicy } from '../policy/index.js';
import { FLOOD_DISTINCT, FLOOD_RECORDS, RefusalFlood, SUMMARY_HOSTS, hostOf, type FloodVerdict, type RefusalSummary } from './flood.js';

const engine = compilePolicy(policySchema.parse({ network: [] }));
const alice = { principal: { agent: 'alice' }, session: undefined, listener: 'tcp' };
const pause = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

describe('refusal flood bound', () => {
  it('writes the summary when the window ends, without waiting for close, and then starts a fresh window', async () => {
    const summaries: RefusalSummary[] = [];
    const flood = new RefusalFlood((summary) => summaries.push(summary), 100);
    const verdicts: FloodVerdict[] = Array.from({ length: 30 }, () => flood.admit(alice, 'policy-denied', 'evil.test:443', engine));
    assert.deepEqual(verdicts.slice(0, FLOOD_RECORDS), Array(FLOOD_RECORDS).fill('record'));
    assert.equal(verdicts[FLOOD_RECORDS], 'record-last');
    assert.ok(verdicts.slice(FLOOD_RECORDS + 1).every((verdict) => verdict === 'count'));
    assert.equal(summaries.length, 0, 'nothing is summarized while the window is open');

    await pause(250);
    assert.equal(summaries.length, 1);
    assert.equal(summaries[0]?.suppressed, 30 - FLOOD_RECORDS - 1);
    assert.deepEqual(summaries[0]?.byHost, [{ reasonCode: 'policy-denied', host: 'evil.test', count: 30 - FLOOD_RECORDS - 1 }]);
    assert.equal(flood.admit(alice, 'policy-denied', 'evil.test:443', engine), 'record', 'a new window records again');
    flood.close();
    assert.equal(summaries.length, 1, 'a window with nothing counted writes no summary');
  });

  it('records the first refusal of each new host amid a flood, up to a bound, and lists a bounded number of hosts in the summary', () => {
    const summaries: RefusalSummary[] = [];
    const flood = new RefusalFlood((summary) => summaries.push(summary));
    for (let i = 0; i <= FLOOD_RECORDS; i++) flood.admit(alice, 'policy-denied', 'evil.test:443', engine);
    const hosts = FLOOD_DISTINCT + 50;
    const verdicts = Array.from({ length: hosts }, (_, i) => flood.admit(alice, 'policy-denied', `host-${i}.test:443`, engine));
    assert.equal(verdicts.filter((verdict) => verdict === 'record').length, FLOOD_DISTINCT, 'new hosts are recorded until the bound');
    assert.equal(flood.admit(alice, 'policy-denied', 'host-0.test:443', engine), 'count', 'a host seen before is counted');
    flood.close();
    const summary = summaries[0];
    assert.ok(summary);
    assert.equal(summary.suppressed, 51);
    assert.equal(summary.byHost.length, Math.min(SUMMARY_HOSTS, 51));
    assert.equal(summary.byHost.reduce((sum, entry) => sum + entry.count, 0) + summary.otherHosts, 51);
    assert.equal(flood.admit(alice, 'policy-denied', 'evil.test:443', engine), 'record', 'after close every refusal is recorded');
  });

  it('counts the callers apart: agents, sessions, and unauthenticated callers per listener', () => {
    const flood = new RefusalFlood(() => undefined);
    const callers = [
      alice,
      { principal: { agent: 'alice' }, session: 's1', listener: 'session' },
      { principal: { agent: 'bob' }, session: undefined, listener: 'tcp' },
      { principal: undefined, session: undefined, listener: 'tcp' },
      { principal: undefined, session: undefined, listener: 'socks' },
    ];
    for (const caller of callers) {
      const verdicts = Array.from({ length: FLOOD_RECORDS + 2 }, () => flood.admit(caller, 'rate-limited', 'api.test:443', engine));
      assert.equal(verdicts.at(-2), 'record-last');
      assert.equal(verdicts.at(-1), 'count');
    }
    flood.close();
  });

  it('names the host of a resource without scheme, port or path', () => {
    assert.equal(hostOf('evil.test:443'), 'evil.test');
    assert.equal(hostOf('http://evil.test:8080/a/b?c'), 'evil.test');
    assert.equal(hostOf('https://[2001:db8::1]:8443/x'), '[2001:db8::1]');
    assert.equal(hostOf('[::1]:443'), '[::1]');
    assert.equal(hostOf('-'), '-');
    assert.equal(hostOf('x'.repeat(5000)).length, 255);
  });
});
