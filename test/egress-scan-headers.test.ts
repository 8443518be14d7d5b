/**
 * Plain-HTTP requests through a proxy that scans but has lent no placeholder, as `gatehouse node` runs before
 * any session holds one: a clean request goes through untouched, and a secret anywhere in the URL, a header
 * name or a header value is blocked or redacted under policy.dlp, spelt plainly or percent-encoded.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { createScanner } from '../src/dlp/index.js';
import { checksummedToken, seededRandom } from '../src/dlp/samples.js';
import { compile, curl, startEchoServer, startTestProxy, type TestProxy } from './egress-helpers.js';

const POLICY = (action: 'block' | 'redact'): string => `
network:
  - id: api
    allow: [api.test]
  - id: loopback-targets
    allow: [127.0.0.1]
dlp:
  action: ${action}
`;

interface Seen {
  url: string;
  headers: Record<string, string>;
}

describe('egress: secrets in the URL and headers of plain HTTP, with no placeholder lent', () => {
  let gate: TestProxy;
  let api: Awaited<ReturnType<typeof startEchoServer>>;
  let served = 0;
  const random = seededRandom(2026);
  const token = (): string => checksummedToken('ghp_', random);

  before(async () => {
    api = await startEchoServer(() => {
      served += 1;
      return false;
    });
    gate = await startTestProxy(POLICY('block'), { scanner: createScanner(), settings: { resolve: { 'api.test': ['127.0.0.1'] } } });
  });
  after(async () => {
    await gate.close();
    await api.close();
  });

  const send = (path: string, headers: string[]) =>
    curl(['-x', gate.url, '-U', 'alice:key-alice', ...headers.flatMap((header) => ['-H', header]), `http://api.test:${api.port}${path}`]);
  const underPolicy = async (action: 'block' | 'redact', run: () => Promise<void>): Promise<void> => {
    const previous = gate.holder.current;
    gate.holder.current = compile(POLICY(action));
    try {
      await run();
    } finally {
      gate.holder.current = previous;
    }
  };
  const lastRecord = () => gate.audit.records.findLast((record) => record.action === 'request');

  it('passes a clean request with every header and the URL as they were sent', async () => {
    const result = await send('/v1/search?q=a+b&next=/home', ['X-Trace: span=4bf92f3577b34da6; sampled=1', 'Accept-Language: en-GB,en;q=0.9', 'X-Empty;']);
    assert.equal(result.status, 200, result.stderr + result.body);
    const seen = JSON.parse(result.body) as Seen;
    assert.equal(seen.url, '/v1/search?q=a+b&next=/home');
    assert.equal(seen.headers['x-trace'], 'span=4bf92f3577b34da6; sampled=1');
    assert.equal(seen.headers['accept-language'], 'en-GB,en;q=0.9');
    assert.equal(seen.headers['x-empty'], '');
    assert.equal(lastRecord()?.details?.findings, undefined);
  });

  it('blocks a secret in a header value, a header name or the URL, and records it without the secret', async () => {
    const secret = token();
    for (const [where, path, headers] of [
      ['value', '/v1/me', [`X-Note: deploy with ${secret} today`]],
      ['name', '/v1/me', [`${secret}: 1`]],
      ['url', `/v1/me?ref=${secret}`, []],
    ] as const) {
      const servedBefore = served;
      const result = await send(path, [...headers]);
      assert.equal(result.status, 403, `${where}: ${result.stderr}${result.body}`);
      assert.equal(result.headers['x-gatehouse-reason'], 'secret-detected', where);
      assert.equal(served, servedBefore, `${where}: the request never reached the server`);
      const record = lastRecord();
      assert.deepEqual((record?.details?.findings as { rule: string }[] | undefined)?.map((finding) => finding.rule), ['github-pat'], where);
      assert.ok(!JSON.stringify(record).includes(secret), `${where}: the record holds no secret`);
    }
  });

  it('under redact, replaces a secret where it sits: in a value, percent-encoded in a value, and drops a header named by one', async () => {
    await underPolicy('redact', async () => {
      const plain = token();
      const encoded = token();
      const named = token();
      // Spelt plainly, then with an escape to decode in another header: the proxy reads the two differently.
      for (const cookie of [[], [`Cookie: session=${encoded.replace('_', '%5F')}; theme=dark`]]) {
        const result = await send('/v1/notes', [`X-Note: deploy with ${plain} today`, ...cookie, `${named}: 1`, 'X-Other: stays']);
        assert.equal(result.status, 200, result.stderr + result.body);
        const seen = JSON.parse(result.body) as Seen;
        assert.equal(seen.headers['x-note'], 'deploy with [REDACTED:github-pat] today');
        if (cookie.length > 0) assert.equal(seen.headers.cookie, 'session=[REDACTED:github-pat]; theme=dark');
        assert.equal(seen.headers[named.toLowerCase()], undefined, 'a header whose name was a secret is left out');
        assert.equal(seen.headers['x-other'], 'stays');
        assert.ok(!result.body.includes('ghp_'), 'no secret reached the server');
      }
      assert.equal(lastRecord()?.details?.redacted, true);
    });
  });
});
