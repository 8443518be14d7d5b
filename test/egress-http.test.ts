/**
 * The HTTP forward proxy with real clients: curl (-x, --proxytunnel) and raw sockets for the requests no
 * well-behaved client sends. Every target server runs on 127.0.0.1; test host names reach it through the
 * resolver override, and the policy allows 127.0.0.1 by address (the default loopback block is lifted only
 * by an explicit rule).
 */
import assert from 'node:assert/strict';
import { request as httpRequest } from 'node:http';
import { after, before, describe, it } from 'node:test';
import { checksummedToken, seededRandom } from '../src/dlp/samples.js';
import { PlaceholderRegistry } from '../src/secrets/placeholders.js';
import { curl, rawExchange, reasonOf, startEchoServer, startTestProxy, type TestProxy, waitFor } from './egress-helpers.js';

const POLICY = `
network:
  - id: api
    allow: [api.test, "*.wild.test"]
  - id: loopback-targets
    allow: [127.0.0.1]
  - id: no-admin
    deny: [admin.test]
  - id: cidr-only
    allow: [127.0.0.4/32]
    agents: [bob]
`;

describe('egress HTTP proxy', () => {
  let echo: Awaited<ReturnType<typeof startEchoServer>>;
  let gate: TestProxy;
  const resolve = { 'api.test': ['127.0.0.1'], 'a.wild.test': ['127.0.0.1'], 'admin.test': ['127.0.0.1'], 'other.test': ['127.0.0.2'], 'bobs.test': ['127.0.0.4'] };

  before(async () => {
    echo = await startEchoServer();
    gate = await startTestProxy(POLICY, { settings: { resolve, limits: { headerTimeoutMs: 1000 } } });
  });
  after(async () => {
    await gate.close();
    await echo.close();
  });

  it('forwards an allowed plain-HTTP request from curl -x and records it', async () => {
    const result = await curl(['-x', gate.url, '-U', 'alice:key-alice', `http://api.test:${echo.port}/hello?q=1`]);
    assert.equal(result.status, 200, result.stderr + result.body);
    const seen = JSON.parse(result.body) as { url: string; headers: Record<string, string> };
    assert.equal(seen.url, '/hello?q=1');
    assert.equal(seen.headers['proxy-authorization'], undefined, 'the agent key is not forwarded');
    const record = gate.audit.records.find((r) => r.resource === `http://api.test:${echo.port}/hello`);
    assert.ok(record, 'one record for the request');
    assert.equal(record.effect, 'allow');
    assert.deepEqual(record.principal.agent, 'alice');
    assert.equal(record.details?.address, '127.0.0.1');
    assert.equal(record.details?.method, 'GET');
    assert.ok(typeof record.details?.bytesDown === 'number' && record.details.bytesDown > 0);
  });

  it('names the target as Host upstream for an HTTP/1.0 request that has none', async () => {
    const raw = await rawExchange(
      gate.proxy.address.port,
      `GET http://api.test:${echo.port}/old-client HTTP/1.0\r\nProxy-Authorization: Bearer key-alice\r\n\r\n`,
      3_000,
      true,
    );
    assert.match(raw, /^HTTP\/1\.1 200 /, raw.slice(0, 120));
    const seen = JSON.parse(raw.slice(raw.indexOf('\r\n\r\n') + 4)) as { url: string; headers: Record<string, string> };
    assert.equal(seen.url, '/old-client');
    assert.equal(seen.headers.host, `api.test:${echo.port}`);
  });

  it('asks for an agent key (407) when none is given, and rejects an unknown key', async () => {
    const none = await curl(['-x', gate.url, `http://api.test:${echo.port}/`]);
    assert.equal(none.status, 407);
    assert.equal(none.headers['x-gatehouse-reason'], 'auth-required');
    const wrong = await curl(['-x', gate.url, '-U', 'alice:nope', `http://api.test:${echo.port}/`]);
    assert.equal(wrong.status, 407);
  });

  it('denies a host the policy denies, with 403 and a machine-readable reason naming the rule', async () => {
    const result = await curl(['-x', gate.url, '-U', 'alice:key-alice', `http://admin.test:${echo.port}/`]);
    assert.equal(result.status, 403);
    assert.equal(result.headers['x-gatehouse-reason'], 'policy-denied');
    assert.match(result.body, /no-admin/);
    const record = gate.audit.records.find((r) => r.resource.startsWith('http://admin.test'));
    assert.equal(record?.effect, 'deny');
    assert.deepEqual(record?.rules, ['no-admin']);
  });

  it('matches wildcards, and refuses a name no rule allows that resolves to a non-public address', async () => {
    const wild = await curl(['-x', gate.url, '-U', 'alice:key-alice', `http://a.wild.test:${echo.port}/`]);
    assert.equal(wild.status, 200);
    const other = await curl(['-x', gate.url, '-U', 'alice:key-alice', `http://other.test:${echo.port}/`]);
    assert.equal(other.status, 403);
    assert.equal(other.headers['x-gatehouse-reason'], 'blocked-address');
    assert.match(other.body, /127\.0\.0\.2/);
  });

  it('allows a name by CIDR when every address it resolves to is inside, only for the agent the rule names', async () => {
    const bob = await curl(['-x', gate.url, '-U', 'bob:key-bob', `http://bobs.test:${echo.port}/`]);
    assert.equal(bob.status, 502, 'allowed, then nothing listens on 127.0.0.4');
    assert.equal(bob.headers['x-gatehouse-reason'], 'upstream-unreachable');
    const alice = await curl(['-x', gate.url, '-U', 'alice:key-alice', `http://bobs.test:${echo.port}/`]);
    assert.equal(alice.status, 403);
  });

  it('tunnels CONNECT for an allowed host (curl --proxytunnel) and records bytes both ways', async () => {
    const result = await curl(['-p', '-x', gate.url, '-U', 'alice:key-alice', `http://api.test:${echo.port}/tunnelled`]);
    assert.equal(result.status, 200, result.stderr);
    assert.equal((JSON.parse(result.body) as { url: string }).url, '/tunnelled');
    await waitFor(() => gate.audit.records.some((r) => r.action === 'connect' && r.resource === `api.test:${echo.port}`));
    const record = gate.audit.records.find((r) => r.action === 'connect' && r.resource === `api.test:${echo.port}`);
    assert.equal(record?.effect, 'allow');
    assert.ok((record?.details?.bytesUp as number) > 0 && (record?.details?.bytesDown as number) > 0);
  });

  it('refuses a CONNECT to a denied host with 403 before any tunnel opens', async () => {
    const raw = await rawExchange(gate.proxy.address.port, `CONNECT admin.test:${echo.port} HTTP/1.1\r\nHost: admin.test:${echo.port}\r\nProxy-Authorization: Bearer key-alice\r\n\r\n`);
    assert.match(raw, /^HTTP\/1\.1 403 /);
    assert.equal(reasonOf(raw), 'policy-denied');
  });

  it('serves a session over its Unix socket without any key: the socket is the identity', async () => {
    const session = await gate.proxy.openSession({ agent: 'bob' }, 'sess-1');
    try {
      const body = await new Promise<{ status: number; text: string }>((resolve, reject) => {
        const request = httpRequest({ socketPath: session.socketPath, path: `http://api.test:${echo.port}/via-session`, headers: { host: `api.test:${echo.port}` } }, (response) => {
          let text = '';
          response.on('data', (chunk: Buffer) => (text += chunk.toString()));
          response.on('end', () => resolve({ status: response.statusCode ?? 0, text }));
        });
        request.on('error', reject);
        request.end();
      });
      assert.equal(body.status, 200, body.text);
      const record = gate.audit.records.find((r) => r.resource.endsWith('/via-session'));
      assert.equal(record?.principal.agent, 'bob');
      assert.equal(record?.principal.session, 'sess-1');
      assert.equal(record?.details?.listener, 'session');
    } finally {
      await session.close();
    }
  });

  describe('hardened parsing: each refused clearly', () => {
    const send = (text: string): Promise<string> => rawExchange(gate.proxy.address.port, text);
    const auth = 'Proxy-Authorization: Bearer key-alice\r\n';

    for (const [name, target, reason] of [
      ['decimal integer IPv4', '2130706433:80', 'non-canonical-ip'],
      ['hex IPv4', '0x7f.1:80', 'non-canonical-ip'],
      ['octal IPv4', '0177.0.0.1:80', 'non-canonical-ip'],
      ['short-form IPv4', '127.1:80', 'non-canonical-ip'],
      ['trailing-dot numeric', '127.0.0.1.:80', 'non-canonical-ip'],
      ['single hex integer', '0x7f000001:80', 'non-canonical-ip'],
      ['octal integer', '017700000001:80', 'non-canonical-ip'],
      ['zero-padded parts', '127.000.000.001:80', 'non-canonical-ip'],
      ['full-width dots (refused by the parser itself)', '127\u30020\u30020\u30021:80', 'bad-request'],
      ['percent-encoded host', '%31%32%37.0.0.1:80', 'bad-target'],
      ['IPv6 zone id', '[fe80::1%25eth0]:80', 'ipv6-zone-id'],
      ['IPv6 zone id, raw', '[fe80::1%eth0]:80', 'ipv6-zone-id'],
      ['unbracketed IPv6', '::1:80', 'bad-target'],
      ['userinfo', 'user@api.test:80', 'bad-target'],
      ['no port', 'api.test', 'bad-target'],
      ['port 0', 'api.test:0', 'bad-port'],
      ['signed port', 'api.test:+80', 'bad-port'],
    ] as const) {
      it(`refuses CONNECT to ${name} (${target}) with 400 ${reason}`, async () => {
        const raw = await send(`CONNECT ${target} HTTP/1.1\r\nHost: ${target}\r\n${auth}\r\n`);
        assert.match(raw, /^HTTP\/1\.1 400 /, raw);
        assert.equal(reasonOf(raw), reason);
      });
    }

    it('refuses CONNECT to the IPv4-mapped form of loopback as a blocked address', async () => {
      const raw = await send(`CONNECT [::ffff:127.0.0.2]:80 HTTP/1.1\r\nHost: x\r\n${auth}\r\n`);
      assert.match(raw, /^HTTP\/1\.1 403 /, raw);
      assert.equal(reasonOf(raw), 'blocked-address');
    });

    it('refuses Content-Length with Transfer-Encoding (request smuggling)', async () => {
      const raw = await send(`POST http://api.test:${echo.port}/ HTTP/1.1\r\nHost: api.test:${echo.port}\r\n${auth}Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n`);
      assert.match(raw, /^HTTP\/1\.1 400 /);
      assert.equal(reasonOf(raw), 'smuggling');
    });

    it('refuses duplicate Content-Length headers', async () => {
      const raw = await send(`POST http://api.test:${echo.port}/ HTTP/1.1\r\nHost: api.test:${echo.port}\r\n${auth}Content-Length: 4\r\nContent-Length: 5\r\n\r\nabcde`);
      assert.equal(reasonOf(raw), 'smuggling');
    });

    it('refuses a Transfer-Encoding other than chunked', async () => {
      const raw = await send(`POST http://api.test:${echo.port}/ HTTP/1.1\r\nHost: api.test:${echo.port}\r\n${auth}Transfer-Encoding: xchunked\r\n\r\n`);
      assert.match(raw, /^HTTP\/1\.1 400 /);
      assert.equal(reasonOf(raw), 'smuggling');
    });

    it('refuses an absolute URI whose host differs from the Host header', async () => {
      const raw = await send(`GET http://api.test:${echo.port}/ HTTP/1.1\r\nHost: admin.test:${echo.port}\r\n${auth}\r\n`);
      assert.match(raw, /^HTTP\/1\.1 403 /);
      assert.equal(reasonOf(raw), 'host-mismatch');
    });

    it('refuses two Host headers', async () => {
      const raw = await send(`GET http://api.test:${echo.port}/ HTTP/1.1\r\nHost: api.test:${echo.port}\r\nHost: admin.test\r\n${auth}\r\n`);
      assert.equal(reasonOf(raw), 'host-mismatch');
    });

    it('refuses a malformed request line', async () => {
      const raw = await send('GET  HTTP/1.1 extra\r\n\r\n');
      assert.match(raw, /^HTTP\/1\.1 400 /);
      assert.equal(reasonOf(raw), 'bad-request');
    });

    it('refuses origin-form requests: this is a proxy', async () => {
      const raw = await send(`GET /x HTTP/1.1\r\nHost: api.test\r\n${auth}\r\n`);
      assert.match(raw, /^HTTP\/1\.1 400 /);
      assert.equal(reasonOf(raw), 'bad-request');
    });

    it('refuses overlong headers with 431', async () => {
      const raw = await send(`GET http://api.test:${echo.port}/ HTTP/1.1\r\nHost: api.test\r\nX-Big: ${'a'.repeat(40_000)}\r\n\r\n`);
      assert.match(raw, /^HTTP\/1\.1 431 /);
      assert.equal(reasonOf(raw), 'headers-too-large');
    });

    it('closes a slow client that does not finish its headers in time (slowloris)', async () => {
      const started = Date.now();
      const raw = await rawExchange(gate.proxy.address.port, 'GET http://api.test/ HTTP/1.1\r\nHost: api.test\r\nX-Slow: ', 6_000);
      assert.ok(Date.now() - started < 4_000, 'closed within a few seconds of the 1 s header timeout');
      assert.match(raw, /^HTTP\/1\.1 408 /);
      assert.equal(reasonOf(raw), 'header-timeout');
    });

    it('does not forward path tricks: dot segments and escapes are normalised before the decision', async () => {
      const result = await curl(['--path-as-is', '-x', gate.url, '-U', 'alice:key-alice', `http://api.test:${echo.port}/a/../%62/./c`]);
      assert.equal(result.status, 200);
      assert.equal((JSON.parse(result.body) as { url: string }).url, '/b/c');
      // An encoded slash stays one (a server may take it as part of a segment), spelt %2F.
      const encodedSlash = await curl(['-x', gate.url, '-U', 'alice:key-alice', `http://api.test:${echo.port}/a%2fb`]);
      assert.equal(encodedSlash.status, 200);
      assert.equal((JSON.parse(encodedSlash.body) as { url: string }).url, '/a%2Fb');
      const encodedBackslash = await curl(['-x', gate.url, '-U', 'alice:key-alice', `http://api.test:${echo.port}/a%5cb`]);
      assert.equal(encodedBackslash.status, 400);
    });
  });
});

describe('egress credentials over plain HTTP', () => {
  it('never injects a credential header in the clear, and records that it left it out', async () => {
    const echo = await startEchoServer();
    const policy = 'network:\n  - id: api\n    allow: [api.test]\n  - id: lo\n    allow: [127.0.0.1]\ncredentials:\n  - id: gh\n    secret: github-token\n    hosts: [api.test]\n    header: "Authorization: Bearer {secret}"\n';
    const gate = await startTestProxy(policy, { resolveSecret: () => 'real-token', settings: { resolve: { 'api.test': ['127.0.0.1'] } } });
    try {
      const result = await curl(['-x', gate.url, '-U', 'a:key-alice', `http://api.test:${echo.port}/plain`]);
      assert.equal(result.status, 200);
      assert.equal((JSON.parse(result.body) as { headers: Record<string, string> }).headers.authorization, undefined);
      const record = gate.audit.records.find((r) => r.resource.endsWith('/plain'));
      assert.deepEqual((record?.details?.injectionSkipped as { rules: string[] }).rules, ['gh']);
    } finally {
      await gate.close();
      await echo.close();
    }
  });
});

describe('egress placeholders over plain HTTP', () => {
  it('never swaps a placeholder in the clear, and blocks it to a host its grant does not name', async () => {
    const echo = await startEchoServer();
    const policy = 'network:\n  - id: api\n    allow: [api.test, other.test]\n  - id: lo\n    allow: [127.0.0.1]\ncredentials:\n  - id: deploy\n    secret: deploy-key\n    hosts: [api.test]\n';
    const placeholders = new PlaceholderRegistry();
    const gate = await startTestProxy(policy, { placeholders, settings: { resolve: { 'api.test': ['127.0.0.1'], 'other.test': ['127.0.0.1'] } } });
    const grant = gate.holder.current.grants({ agent: 'alice' }).find((g) => g.secret === 'deploy-key');
    assert.ok(grant);
    const placeholder = placeholders.issue('sess-plain', grant, checksummedToken('ghp_', seededRandom(3)));
    const session = await gate.proxy.openSession({ agent: 'alice' }, 'sess-plain');
    const send = (host: string): Promise<{ status: number; reason: string | undefined }> =>
      new Promise((resolve, reject) => {
        const request = httpRequest(
          { socketPath: session.socketPath, path: `http://${host}:${echo.port}/`, headers: { host: `${host}:${echo.port}`, 'x-key': placeholder.value } },
          (response) => {
            response.resume();
            resolve({ status: response.statusCode ?? 0, reason: response.headers['x-gatehouse-reason'] as string | undefined });
          },
        );
        request.on('error', reject);
        request.end();
      });
    try {
      assert.deepEqual(await send('api.test'), { status: 403, reason: 'credential-over-plaintext' });
      assert.deepEqual(await send('other.test'), { status: 403, reason: 'placeholder-exfiltration' });
    } finally {
      await session.close();
      await gate.close();
      await echo.close();
    }
  });
});

describe('egress decisions before DNS', () => {
  it('denies a port no rule lists without sending a DNS query for the host', async () => {
    const asked: string[] = [];
    const gate = await startTestProxy('network:\n  - id: only-443\n    allow: [ports.test]\n    ports: [443]\n', {
      resolver: async (host) => {
        asked.push(host);
        return ['127.0.0.1'];
      },
    });
    try {
      const raw = await rawExchange(gate.proxy.address.port, 'CONNECT ports.test:80 HTTP/1.1\r\nHost: ports.test:80\r\nProxy-Authorization: Bearer key-alice\r\n\r\n');
      assert.match(raw, /^HTTP\/1\.1 403 /);
      assert.equal(reasonOf(raw), 'policy-denied');
      const secret = await rawExchange(gate.proxy.address.port, 'CONNECT c2VjcmV0.attacker.test:443 HTTP/1.1\r\nHost: x\r\nProxy-Authorization: Bearer key-alice\r\n\r\n');
      assert.equal(reasonOf(secret), 'policy-denied');
      assert.deepEqual(asked, [], 'no name was resolved');
    } finally {
      await gate.close();
    }
  });
});

describe('egress path rules over plain HTTP with an encoded slash', () => {
  it('forwards %2F inside a segment, and denies a path that a decoding server would route to a denied one', async () => {
    const seen: string[] = [];
    const echo = await startEchoServer((request) => {
      seen.push(request.url ?? '');
      return false;
    });
    const policy = 'network:\n  - id: api\n    allow: [api.test]\n  - id: lo\n    allow: [127.0.0.1]\n  - id: no-admin\n    deny: [api.test]\n    paths: ["/admin/**"]\n';
    const gate = await startTestProxy(policy, { settings: { resolve: { 'api.test': ['127.0.0.1'] } } });
    try {
      const project = await curl(['-x', gate.url, '-U', 'alice:key-alice', `http://api.test:${echo.port}/api/v4/projects/group%2Fproject?x=1`]);
      assert.equal(project.status, 200, project.body);
      assert.equal((JSON.parse(project.body) as { url: string }).url, '/api/v4/projects/group%2Fproject?x=1');
      const tricked = await curl(['--path-as-is', '-x', gate.url, '-U', 'alice:key-alice', `http://api.test:${echo.port}/docs%2F..%2Fadmin/users`]);
      assert.equal(tricked.status, 403, tricked.body);
      assert.match(tricked.body, /no-admin/);
      assert.deepEqual(seen, ['/api/v4/projects/group%2Fproject?x=1'], 'the denied request never reached the server');
    } finally {
      await gate.close();
      await echo.close();
    }
  });
});
