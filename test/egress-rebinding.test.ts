/**
 * Resolve once: the proxy resolves a name once per connection, checks every answer, and dials exactly a
 * checked address. The resolvers here are test doubles standing in for a hostile DNS server (none can run
 * on this machine without root); every socket is still real and on loopback.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { curl, rawExchange, reasonOf, startEchoServer, startTestProxy } from './egress-helpers.js';

const POLICY = `
network:
  - id: app
    allow: [app.test, "**.rebind.test"]
  - id: loopback-targets
    allow: [127.0.0.1]
`;

describe('DNS rebinding and resolve-once', () => {
  let echo: Awaited<ReturnType<typeof startEchoServer>>;
  before(async () => {
    echo = await startEchoServer();
  });
  after(async () => echo.close());

  it('refuses an allowed name that resolves to the cloud metadata address', async () => {
    const gate = await startTestProxy(POLICY, { resolver: async () => ['169.254.169.254'] });
    try {
      const result = await curl(['-x', gate.url, '-U', 'a:key-alice', 'http://app.test/latest/meta-data/']);
      assert.equal(result.status, 403);
      assert.equal(result.headers['x-gatehouse-reason'], 'blocked-address');
      assert.match(result.body, /169\.254\.169\.254/);
    } finally {
      await gate.close();
    }
  });

  it('refuses when any one of several answers is blocked (no picking the good one)', async () => {
    const gate = await startTestProxy(POLICY, { resolver: async () => ['127.0.0.1', '10.0.0.5'] });
    try {
      const raw = await rawExchange(gate.proxy.address.port, `CONNECT app.test:${echo.port} HTTP/1.1\r\nHost: app.test\r\nProxy-Authorization: Bearer key-alice\r\n\r\n`);
      assert.equal(reasonOf(raw), 'blocked-address');
    } finally {
      await gate.close();
    }
  });

  it('refuses IPv4-mapped and NAT64 answers that carry a blocked IPv4 address', async () => {
    for (const answer of ['::ffff:169.254.169.254', '64:ff9b::a9fe:a9fe', '::ffff:7f00:2']) {
      const gate = await startTestProxy(POLICY, { resolver: async () => [answer] });
      try {
        const result = await curl(['-x', gate.url, '-U', 'a:key-alice', 'http://app.test/']);
        assert.equal(result.headers['x-gatehouse-reason'], 'blocked-address', answer);
      } finally {
        await gate.close();
      }
    }
  });

  it('resolves once and dials the checked address even when a second lookup would answer differently', async () => {
    let lookups = 0;
    // The first answer is the allowed loopback target; any later answer is the metadata service.
    const rebinding = async (): Promise<string[]> => (lookups++ === 0 ? ['127.0.0.1'] : ['169.254.169.254']);
    const gate = await startTestProxy(POLICY, { resolver: rebinding });
    try {
      const result = await curl(['-p', '-x', gate.url, '-U', 'a:key-alice', `http://x.rebind.test:${echo.port}/once`]);
      assert.equal(result.status, 200, result.body);
      assert.equal(lookups, 1, 'exactly one lookup for the connection');
      await new Promise((resolve) => setTimeout(resolve, 100));
      const record = gate.audit.records.find((r) => r.action === 'connect');
      assert.equal(record?.details?.address, '127.0.0.1');
    } finally {
      await gate.close();
    }
  });

  it('does not let a catch-all host pattern open loopback: only an IP or CIDR rule lifts the block', async () => {
    const gate = await startTestProxy('network:\n  - id: everything\n    allow: ["**"]\n', { settings: { resolve: { 'app.test': ['127.0.0.1'] } } });
    try {
      const named = await curl(['-x', gate.url, '-U', 'a:key-alice', `http://app.test:${echo.port}/`]);
      assert.equal(named.headers['x-gatehouse-reason'], 'blocked-address');
      const literal = await rawExchange(gate.proxy.address.port, `CONNECT 127.0.0.1:${echo.port} HTTP/1.1\r\nHost: x\r\nProxy-Authorization: Bearer key-alice\r\n\r\n`);
      assert.equal(reasonOf(literal), 'blocked-address');
    } finally {
      await gate.close();
    }
  });

  it('answers 502 with resolve-failed when the name does not resolve', async () => {
    const gate = await startTestProxy(POLICY, {
      resolver: async () => {
        throw Object.assign(new Error('not found'), { code: 'ENOTFOUND' });
      },
    });
    try {
      const result = await curl(['-x', gate.url, '-U', 'a:key-alice', 'http://app.test/']);
      assert.equal(result.status, 502);
      assert.equal(result.headers['x-gatehouse-reason'], 'resolve-failed');
    } finally {
      await gate.close();
    }
  });
});
