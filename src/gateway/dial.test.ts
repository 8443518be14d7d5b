import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { TLSSocket } from 'node:tls';
import type { LookupFunction } from 'node:net';
import type { AddressInfo } from 'node:net';
import { after, before, test } from 'node:test';
import { CertificateAuthority } from '../egress/ca.js';
import { addressRefusal, checkedLookup, Dialer } from './dial.js';

let port: number;
const limits = { connectMs: 5000, exchangeMs: 5000, maxBytes: 1000 };
const server = createServer((req, res) => {
  if (req.url === '/cut') {
    // A JSON answer whose connection drops halfway.
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': '100' });
    res.write('{"jsonrpc":"2.0",');
    setTimeout(() => res.destroy(), 20);
    return;
  }
  if (req.url === '/silent') return; // never answers
  if (req.url === '/slow-stream') {
    res.writeHead(200, { 'content-type': 'text/event-stream' });
    res.write('data: one\n\n');
    setTimeout(() => res.end('data: two\n\n'), 2000);
    return;
  }
  if (req.url === '/stream') {
    res.writeHead(200, { 'content-type': 'text/event-stream' });
    res.write('data: one\n\n');
    setTimeout(() => res.end('data: two\n\n'), 20);
    return;
  }
  let body = '';
  req.on('data', (chunk: Buffer) => (body += chunk.toString()));
  req.on('end', () => res.writeHead(201, { 'content-type': 'application/json', 'x-seen': req.headers['x-test'] ?? '' }).end(JSON.stringify({ got: body })));
});

before(async () => {
  server.listen(0, '127.0.0.1');
  await new Promise((resolve) => server.once('listening', resolve));
  port = (server.address() as AddressInfo).port;
});
after(() => {
  server.closeAllConnections();
  server.close();
});

/** Stands in for public DNS (none is reachable here): every name resolves to the local servers' address. */
const toLocalServer: LookupFunction = (_hostname, options, callback) => {
  if ((options as { all?: boolean }).all) return (callback as unknown as (e: null, a: { address: string; family: number }[]) => void)(null, [{ address: '127.0.0.1', family: 4 }]);
  callback(null, '127.0.0.1', 4);
};

test('classifies loopback, private, link-local (metadata) and mapped addresses as not dialable', () => {
  assert.match(addressRefusal('127.0.0.1') ?? '', /loopback/);
  assert.match(addressRefusal('10.1.2.3') ?? '', /private/);
  assert.match(addressRefusal('169.254.169.254') ?? '', /linkLocal/);
  assert.match(addressRefusal('::ffff:127.0.0.1') ?? '', /loopback/);
  assert.match(addressRefusal('::1') ?? '', /loopback/);
  assert.equal(addressRefusal('93.184.216.34'), undefined);
});

test('refuses to connect to a name that resolves to a loopback address, and to loopback literals', async () => {
  const checkedFetch = new Dialer(checkedLookup, addressRefusal, limits).fetch;
  await assert.rejects(checkedFetch(`http://localhost:${port}/`), /localhost resolves to (127\.0\.0\.1|::1) is a loopback address/);
  await assert.rejects(checkedFetch(`http://127.0.0.1:${port}/`), /loopback address/);
  await assert.rejects(checkedFetch(`http://[::ffff:7f00:1]:${port}/`), /loopback address/);
});

test('carries method, headers, body and a streamed response over the checked connection', async () => {
  const fetchLocal = new Dialer(toLocalServer, () => undefined, limits).fetch;
  const posted = await fetchLocal(`http://upstream.test:${port}/`, { method: 'POST', headers: { 'x-test': 'yes' }, body: '{"a":1}' });
  assert.equal(posted.status, 201);
  assert.equal(posted.headers.get('x-seen'), 'yes');
  assert.deepEqual(await posted.json(), { got: '{"a":1}' });
  const streamed = await fetchLocal(`http://upstream.test:${port}/stream`);
  assert.equal(await streamed.text(), 'data: one\n\ndata: two\n\n');
  await assert.rejects(fetchLocal(`http://upstream.test:${port}/cut`), /other side closed|aborted/);
});

test('refuses every address the egress proxy blocks by default, including IPv6 forms that carry IPv4', () => {
  for (const address of ['127.0.0.1', '10.1.2.3', '169.254.169.254', '::1', 'fd00:ec2::254', '::ffff:127.0.0.1', '::7f00:1', '::127.0.0.1', '64:ff9b::a00:1', '2002:7f00:1::', 'fe80::1', '100::1', '4000::1']) {
    assert.ok(addressRefusal(address), `${address} must be refused`);
  }
  for (const address of ['93.184.216.34', '2606:2800:220:1:248:1893:25c8:1946']) assert.equal(addressRefusal(address), undefined, address);
});

test('over HTTPS the certificate must name the upstream\'s host, which is also the SNI, while the checked address is what is dialled', async () => {
  const ca = await CertificateAuthority.create('stand-in public CA');
  const seen: string[] = [];
  const start = async (host: string): Promise<{ port: number; close(): void }> => {
    const leaf = await ca.issue(host);
    const secure = createHttpsServer({ key: leaf.key, cert: leaf.certificate }, (_req, res) => res.writeHead(200, { 'content-type': 'application/json' }).end('{"ok":true}'));
    secure.on('secureConnection', (socket: TLSSocket & { servername?: string | false }) => seen.push(String(socket.servername)));
    secure.listen(0, '127.0.0.1');
    await new Promise((resolve) => secure.once('listening', resolve));
    return { port: (secure.address() as AddressInfo).port, close: () => secure.close() };
  };
  const named = await start('upstream.test');
  const other = await start('elsewhere.test');
  const dialer = new Dialer(toLocalServer, () => undefined, { ...limits, ca: ca.certificatePem });
  try {
    const answer = await dialer.fetch(`https://upstream.test:${named.port}/`);
    assert.deepEqual(await answer.json(), { ok: true });
    assert.deepEqual(seen, ['upstream.test']);
    // The same address, but a certificate for another name: refused.
    await assert.rejects(dialer.fetch(`https://upstream.test:${other.port}/`), /altnames|does not match/i);
  } finally {
    await dialer.close();
    named.close();
    other.close();
  }
});

test('gives up on an upstream that does not answer within the exchange time; the GET stream may stay quiet longer', async () => {
  const dialer = new Dialer(toLocalServer, () => undefined, { ...limits, exchangeMs: 300 });
  try {
    const started = performance.now();
    await assert.rejects(dialer.dial(new URL(`http://upstream.test:${port}/silent`), { method: 'POST', headers: {}, body: '{}' }), /timeout/i);
    assert.ok(performance.now() - started < 3000);
    const stream = await dialer.fetch(`http://upstream.test:${port}/slow-stream`);
    assert.equal(await stream.text(), 'data: one\n\ndata: two\n\n');
  } finally {
    await dialer.close();
  }
});

test('closing the dialer ends the requests still in flight', async () => {
  const dialer = new Dialer(toLocalServer, () => undefined, limits);
  const pending = dialer.dial(new URL(`http://upstream.test:${port}/silent`), { method: 'POST', headers: {}, body: '{}' });
  await new Promise((resolve) => setTimeout(resolve, 50));
  await dialer.close();
  await assert.rejects(pending, /destroyed/i);
});
