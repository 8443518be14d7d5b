/**
 * Audit timing. In sync mode (`audit.mode: sync`, `awaitAudit`), an allowed connection's decision record is
 * acknowledged by the audit log before the proxy dials or forwards anything; in batch mode traffic does not
 * wait. Real clients (curl over CONNECT, absolute-URI HTTP and SOCKS5) and a real server on loopback. The
 * audit log is the real in-memory one wrapped so that its acknowledgement can be held back: nothing on this
 * machine delays a real disk write on cue.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { MemoryAuditLog } from '../src/audit/jsonl.js';
import type { AuditLog, AuditRecord } from '../src/audit/record.js';
import { curl, startEchoServer, startTestProxy, type TestProxy } from './egress-helpers.js';

const POLICY = `
network:
  - id: api
    allow: [api.test]
  - id: loopback-targets
    allow: [127.0.0.1]
`;

/** Holds back the acknowledgement of allowed decision records until `release()`; fails them after `fail()`. */
class HeldAuditLog implements AuditLog {
  readonly inner = new MemoryAuditLog();
  private waiting: (() => void)[] = [];
  holding = true;
  failing = false;

  get records(): AuditRecord[] {
    return this.inner.records;
  }

  async append(record: AuditRecord): Promise<void> {
    await this.inner.append(record);
    if (this.failing) throw new Error('disk full');
    if (!this.holding || record.effect !== 'allow') return;
    await new Promise<void>((resolve) => this.waiting.push(resolve));
  }

  get held(): number {
    return this.waiting.length;
  }

  release(): void {
    for (const resolve of this.waiting.splice(0)) resolve();
  }

  close(): Promise<void> {
    return Promise.resolve();
  }
}

const pause = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** Polls until `check` holds, for at most `ms`. */
async function until(check: () => boolean, ms = 3_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!check() && Date.now() < deadline) await pause(10);
}

describe('egress audit timing', () => {
  let echo: Awaited<ReturnType<typeof startEchoServer>>;
  let connections = 0;
  const requests: string[] = [];

  before(async () => {
    echo = await startEchoServer((request) => {
      requests.push(request.url ?? '');
      return false;
    });
    echo.server.on('connection', () => (connections += 1));
  });
  after(() => echo.close());

  describe('in sync mode', () => {
    const audit = new HeldAuditLog();
    let gate: TestProxy;
    before(async () => {
      gate = await startTestProxy(POLICY, { audit, awaitAudit: true, settings: { resolve: { 'api.test': ['127.0.0.1'] }, socks: { listen: '127.0.0.1:0' } } });
    });
    after(() => gate.close());

    const cases: [string, () => string[]][] = [
      ['a CONNECT tunnel', () => ['-p', '-x', gate.url, '-U', 'a:key-alice', `http://api.test:${echo.port}/through-connect`]],
      ['a plain-HTTP request', () => ['-x', gate.url, '-U', 'a:key-alice', `http://api.test:${echo.port}/through-forward`]],
      ['a SOCKS5 tunnel', () => ['-x', `socks5h://a:key-alice@127.0.0.1:${gate.proxy.socksAddress?.port}`, `http://api.test:${echo.port}/through-socks`]],
    ];
    for (const [name, args] of cases) {
      it(`sends nothing upstream through ${name} until the decision record is acknowledged`, async () => {
        audit.holding = true;
        const connectionsBefore = connections;
        const requestsBefore = requests.length;
        const result = curl(args());
        await until(() => audit.held > 0);
        assert.equal(audit.held, 1, 'the decision record is waiting for the audit log');
        const decisionRecord = audit.records.at(-1);
        assert.equal(decisionRecord?.effect, 'allow');
        await pause(300);
        assert.equal(connections, connectionsBefore, 'nothing was dialled');
        assert.equal(requests.length, requestsBefore, 'nothing was forwarded');
        audit.holding = false;
        audit.release();
        const done = await result;
        assert.equal(done.status, 200, done.stderr);
        assert.equal(requests.length, requestsBefore + 1);
        await until(() => audit.records.some((r) => r.correlationId === decisionRecord.correlationId && r.action.endsWith('.end')));
        const end = audit.records.find((r) => r.correlationId === decisionRecord.correlationId && r.action === `${decisionRecord.action}.end`);
        assert.equal(end?.effect, 'info', 'the end of the same connection is recorded with its bytes');
        assert.equal(typeof end?.details?.bytesDown, 'number');
      });
    }

    it('refuses, and dials nothing, when the decision record cannot be written', async () => {
      audit.failing = true;
      const connectionsBefore = connections;
      const result = await curl(['-x', gate.url, '-U', 'a:key-alice', `http://api.test:${echo.port}/unrecorded`]);
      assert.equal(result.status, 503);
      assert.equal(result.headers['x-gatehouse-reason'], 'audit-unavailable');
      assert.equal(connections, connectionsBefore);
    });
  });

  it('in batch mode, lets traffic flow while its record is still on its way', async () => {
    const audit = new HeldAuditLog();
    const gate = await startTestProxy(POLICY, { audit, settings: { resolve: { 'api.test': ['127.0.0.1'] } } });
    try {
      const result = await curl(['-p', '-x', gate.url, '-U', 'a:key-alice', `http://api.test:${echo.port}/batch`]);
      assert.equal(result.status, 200, result.stderr);
      // The tunnel carried plain HTTP, so its request has a record of its own, and the tunnel one at its end.
      await until(() => audit.held >= 2);
      assert.deepEqual(audit.records.map((record) => record.action), ['request', 'connect']);
      assert.equal(audit.records[0]?.resource, `http://api.test:${echo.port}/batch`);
    } finally {
      audit.release();
      await gate.close();
    }
  });
});
