/**
 * Throws random and mutated requests at the proxy's parser for a bounded time (GATEHOUSE_FUZZ_MS, default
 * 3 s) and checks what a user would notice: the proxy answers each with a well-formed refusal or a real
 * response (or closes), nothing malformed or unauthorised reaches the upstream server, and the proxy still
 * serves a good request afterwards. The seed is printed so a failure can be replayed (GATEHOUSE_FUZZ_SEED).
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { curl, rawExchange, startEchoServer, startTestProxy, type TestProxy } from './egress-helpers.js';
import { seededRandom } from '../src/dlp/samples.js';

const POLICY = `
network:
  - id: api
    allow: [api.test]
  - id: loopback-targets
    allow: [127.0.0.1]
    agents: [alice]
`;

const TOKENS = [
  '\r\n', '\n', '\r', '\0', ' ', '\t', ':', '@', '%', '%00', '%2f', '..', '[', ']', '::1', '%25eth0', '0x7f.1', '2130706433',
  'Transfer-Encoding: chunked\r\n', 'Content-Length: 5\r\n', 'Content-Length: -1\r\n', 'Host: admin.test\r\n',
  'Transfer-Encoding: chunked, identity\r\n', 'CONNECT', 'GET', 'HTTP/1.0',
  'HTTP/2.0', 'ffffffffffffffff\r\n', '0\r\n\r\n', '\u00e9', '\uff0e', 'Expect: 100-continue\r\n', 'Upgrade: websocket\r\nConnection: Upgrade\r\n',
];

describe('egress parser fuzz', () => {
  let echo: Awaited<ReturnType<typeof startEchoServer>>;
  let gate: TestProxy;
  const received: { url: string; host: string | undefined; proxyAuthorization: string | undefined }[] = [];

  before(async () => {
    echo = await startEchoServer((request, response) => {
      received.push({ url: request.url ?? '', host: request.headers.host, proxyAuthorization: request.headers['proxy-authorization'] });
      response.end('ok');
      return true;
    });
    gate = await startTestProxy(POLICY, { settings: { resolve: { 'api.test': ['127.0.0.1'], 'admin.test': ['127.0.0.1'] }, limits: { headerTimeoutMs: 500, connectionsPerSecond: 100_000 } } });
  });
  after(async () => {
    await gate.close();
    await echo.close();
  });

  it('answers random and mutated requests with well-formed responses and forwards only what passed every check', async () => {
    const seed = Number(process.env.GATEHOUSE_FUZZ_SEED ?? Date.now() % 1_000_000);
    const budgetMs = Number(process.env.GATEHOUSE_FUZZ_MS ?? 3_000);
    console.log(`fuzz seed ${seed}`);
    const next = seededRandom(seed);
    const pick = <T>(list: readonly T[]): T => list[Math.floor(next() * list.length)] as T;
    const port = echo.port;
    const corpus = [
      `GET http://api.test:${port}/a?b=c HTTP/1.1\r\nHost: api.test:${port}\r\nProxy-Authorization: Bearer key-alice\r\n\r\n`,
      `POST http://api.test:${port}/p HTTP/1.1\r\nHost: api.test:${port}\r\nProxy-Authorization: Bearer key-alice\r\nContent-Length: 5\r\n\r\nhello`,
      `POST http://api.test:${port}/c HTTP/1.1\r\nHost: api.test:${port}\r\nProxy-Authorization: Bearer key-alice\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n`,
      `CONNECT api.test:${port} HTTP/1.1\r\nHost: api.test:${port}\r\nProxy-Authorization: Bearer key-alice\r\n\r\nGET / HTTP/1.1\r\nHost: api.test\r\n\r\n`,
      `GET http://api.test:${port}/ HTTP/1.1\r\nHost: api.test:${port}\r\nProxy-Authorization: Bearer key-alice\r\n\r\nGET http://admin.test:${port}/ HTTP/1.1\r\nHost: admin.test:${port}\r\n\r\n`,
      // SOCKS5: greeting, username/password with the key, CONNECT by domain name; then a request in the tunnel.
      '\x05\x01\x02' + '\x01\x05alice\x09key-alice' + '\x05\x01\x00\x03\x08api.test' + String.fromCharCode(port >> 8, port & 0xff) + 'GET / HTTP/1.1\r\nHost: api.test\r\n\r\n',
      '\x05\x01\x02' + '\x01\x05alice\x09key-alice' + '\x05\x01\x00\x01\x7f\x00\x00\x01' + String.fromCharCode(port >> 8, port & 0xff),
    ];
    const mutate = (input: string): string => {
      let text = input;
      const rounds = 1 + Math.floor(next() * 4);
      for (let i = 0; i < rounds; i++) {
        const at = Math.floor(next() * (text.length + 1));
        const choice = next();
        if (choice < 0.25) text = text.slice(0, at) + pick(TOKENS) + text.slice(at);
        else if (choice < 0.45) text = text.slice(0, at) + text.slice(at + 1 + Math.floor(next() * 8));
        else if (choice < 0.6) text = text.slice(0, at) + String.fromCharCode(Math.floor(next() * 256)) + text.slice(at + 1);
        else if (choice < 0.7) text = text.slice(0, at) + text.slice(at, at + 20).repeat(1 + Math.floor(next() * 3)) + text.slice(at + 20);
        else if (choice < 0.8) text = Array.from({ length: Math.floor(next() * 200) }, () => String.fromCharCode(Math.floor(next() * 256))).join('');
        else text = text.replace(pick(['api.test', 'GET', 'HTTP/1.1', 'Host', '\r\n\r\n', String(port)]), pick(TOKENS));
      }
      return text;
    };

    const deadline = Date.now() + budgetMs;
    let cases = 0;
    const statuses = new Map<number, number>();
    while (Date.now() < deadline) {
      const batch = Array.from({ length: 8 }, () => mutate(pick(corpus)));
      const answers = await Promise.all(batch.map((text) => rawExchange(gate.proxy.address.port, Buffer.from(text, 'latin1'), 2_000, true)));
      for (const [index, answer] of answers.entries()) {
        cases += 1;
        if (answer === '') continue;
        if (batch[index]?.charCodeAt(0) === 5) {
          // A first byte of 5 is a SOCKS5 greeting: the answer is a SOCKS reply, not HTTP.
          assert.equal(answer.charCodeAt(0), 5, 'a SOCKS5 reply');
          continue;
        }
        // An interim "100 Continue" (sent only after the checks passed) precedes the final response.
        const final = answer.replace(/^(HTTP\/1\.1 1\d\d [^\r]*\r\n(?:[^\r]+\r\n)*\r\n)+/, '');
        const match = /^HTTP\/1\.1 (\d{3}) /.exec(final);
        assert.ok(match, `a well-formed status line for ${JSON.stringify(batch[index])}, got ${JSON.stringify(final.slice(0, 80))}`);
        const status = Number(match[1]);
        statuses.set(status, (statuses.get(status) ?? 0) + 1);
        assert.ok([200, 400, 403, 407, 408, 413, 417, 429, 431, 501, 502].includes(status), `unexpected status ${status} for ${JSON.stringify(batch[index])}`);
        if (status >= 400 && status !== 502) assert.match(final, /\r\nX-Gatehouse-Reason: [a-z-]+\r\n/i, 'every refusal says why');
      }
    }
    console.log(`fuzz: ${cases} cases, statuses ${JSON.stringify(Object.fromEntries(statuses))}`);
    assert.ok(cases > 100, 'the fuzzer ran a meaningful number of cases');

    assert.ok(received.length > 0, 'some requests got through to the upstream');
    for (const request of received) assert.equal(request.proxyAuthorization, undefined, 'agent keys never reach the upstream');
    const good = await curl(['-x', gate.url, '-U', 'a:key-alice', `http://api.test:${port}/still-alive`]);
    assert.equal(good.status, 200, 'the proxy still serves a good request');
  });
});
