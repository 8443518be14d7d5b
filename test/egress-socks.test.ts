/**
 * SOCKS5 with real clients: curl --socks5-hostname (domain addresses, username/password carrying the agent
 * key), curl --socks5 (IPv4 addresses) and a session's Unix socket (no authentication: the socket is the
 * identity). Target servers run on loopback.
 */
import assert from 'node:assert/strict';
import { connect } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { curl, startEchoServer, startTestProxy, type TestProxy } from './egress-helpers.js';

const POLICY = `
network:
  - id: db
    allow: [db.test]
  - id: loopback-targets
    allow: [127.0.0.1, "::1"]
  - id: no-admin
    deny: [admin.test]
`;

describe('egress SOCKS5', () => {
  let echo: Awaited<ReturnType<typeof startEchoServer>>;
  let gate: TestProxy;
  before(async () => {
    echo = await startEchoServer();
    gate = await startTestProxy(POLICY, {
      settings: { resolve: { 'db.test': ['127.0.0.1'], 'admin.test': ['127.0.0.1'], 'meta.test': ['169.254.169.254'] }, socks: { listen: '127.0.0.1:0' } },
    });
  });
  after(async () => {
    await gate.close();
    await echo.close();
  });

  const socksUrl = (user: string, key: string): string => `socks5h://${user}:${key}@127.0.0.1:${gate.proxy.socksAddress?.port}`;

  it('connects curl --socks5-hostname to an allowed host with the agent key as the password', async () => {
    const result = await curl(['-x', socksUrl('alice', 'key-alice'), `http://db.test:${echo.port}/socks`]);
    assert.equal(result.status, 200, result.stderr);
    assert.equal((JSON.parse(result.body) as { url: string }).url, '/socks');
    await new Promise((resolve) => setTimeout(resolve, 100));
    const record = gate.audit.records.find((r) => r.resource === `db.test:${echo.port}` && r.details?.protocol === 'socks5');
    assert.equal(record?.effect, 'allow');
    assert.equal(record?.principal.agent, 'alice');
    assert.equal(record?.details?.address, '127.0.0.1');
  });

  it('also speaks SOCKS5 on the HTTP proxy port (told apart by the first byte)', async () => {
    const result = await curl(['-x', `socks5h://alice:key-alice@127.0.0.1:${gate.proxy.address.port}`, `http://db.test:${echo.port}/same-port`]);
    assert.equal(result.status, 200, result.stderr);
  });

  it('connects to IPv4 and IPv6 address types when the policy names the address', async () => {
    const v4 = await curl(['-x', `socks5://alice:key-alice@127.0.0.1:${gate.proxy.socksAddress?.port}`, `http://127.0.0.1:${echo.port}/v4`]);
    assert.equal(v4.status, 200, v4.stderr);
  });

  it('refuses a denied host, a wrong key and a default-blocked address', async () => {
    const denied = await curl(['-x', socksUrl('alice', 'key-alice'), `http://admin.test:${echo.port}/`]);
    assert.notEqual(denied.code, 0);
    assert.match(denied.stderr, /not allowed|denied|connection/i);
    const wrongKey = await curl(['-x', socksUrl('alice', 'nope'), `http://db.test:${echo.port}/`]);
    assert.notEqual(wrongKey.code, 0);
    const metadata = await curl(['-x', socksUrl('alice', 'key-alice'), 'http://meta.test/']);
    assert.notEqual(metadata.code, 0);
    await new Promise((resolve) => setTimeout(resolve, 100));
    const reasons = gate.audit.records.filter((r) => r.details?.protocol === 'socks5' && r.effect === 'deny').map((r) => r.details?.reasonCode);
    assert.ok(reasons.includes('policy-denied'));
    assert.ok(reasons.includes('auth-required'));
    assert.ok(reasons.includes('blocked-address'));
  });

  it('refuses clients that offer no username/password on TCP', async () => {
    const reply = await new Promise<Buffer>((resolve) => {
      const socket = connect(gate.proxy.socksAddress?.port ?? 0, '127.0.0.1', () => socket.write(Buffer.from([5, 1, 0])));
      socket.once('data', (data: Buffer) => {
        socket.destroy();
        resolve(data);
      });
    });
    assert.deepEqual([...reply], [5, 0xff]);
  });

  it('lets a session socket in without authentication, as the session principal', async () => {
    const session = await gate.proxy.openSession({ agent: 'carol' }, 'sess-socks');
    try {
      const result = await curl(['-x', `socks5h://localhost${session.socketPath}`, `http://db.test:${echo.port}/from-session`]);
      assert.equal(result.status, 200, result.stderr);
      await new Promise((resolve) => setTimeout(resolve, 100));
      const record = gate.audit.records.find((r) => r.principal.session === 'sess-socks');
      assert.equal(record?.principal.agent, 'carol');
    } finally {
      await session.close();
    }
  });
});
