import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import type { LookupFunction } from 'node:net';
import type { AddressInfo } from 'node:net';
import { after, before, test } from 'node:test';
import { addressRefusal, checkedFetch, createCheckedFetch } from './dial.js';

let port: number;
const server = createServer((req, res) => {
  if (req.url === '/cut') {
    // A JSON answer whose connection drops halfway.
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': '100' });
    res.write('{"jsonrpc":"2.0",');
    setTimeout(() => res.destroy(), 20);
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
after(() => server.close());

test('classifies loopback, private, link-local (metadata) and mapped addresses as not dialable', () => {
  assert.match(addressRefusal('127.0.0.1') ?? '', /loopback/);
  assert.match(addressRefusal('10.1.2.3') ?? '', /private/);
  assert.match(addressRefusal('169.254.169.254') ?? '', /linkLocal/);
  assert.match(addressRefusal('::ffff:127.0.0.1') ?? '', /loopback/);
  assert.match(addressRefusal('::1') ?? '', /loopback/);
  assert.equal(addressRefusal('93.184.216.34'), undefined);
});

test('refuses to connect to a name that resolves to a loopback address, and to loopback literals', async () => {
  await assert.rejects(checkedFetch(`http://localhost:${port}/`), /localhost resolves to (127\.0\.0\.1|::1) is a loopback address/);
  await assert.rejects(checkedFetch(`http://127.0.0.1:${port}/`), /loopback address/);
  await assert.rejects(checkedFetch(`http://[::ffff:7f00:1]:${port}/`), /loopback address/);
});

test('carries method, headers, body and a streamed response over the checked connection', async () => {
  // Stands in for public DNS (none is reachable here): "upstream.test" resolves to the local server, and
  // the address check is the one the gateway uses except that it lets this one loopback port through.
  const lookup: LookupFunction = (_hostname, options, callback) => {
    if ((options as { all?: boolean }).all) return (callback as unknown as (e: null, a: { address: string; family: number }[]) => void)(null, [{ address: '127.0.0.1', family: 4 }]);
    callback(null, '127.0.0.1', 4);
  };
  const fetchLocal = createCheckedFetch(lookup, () => undefined);
  const posted = await fetchLocal(`http://upstream.test:${port}/`, { method: 'POST', headers: { 'x-test': 'yes' }, body: '{"a":1}' });
  assert.equal(posted.status, 201);
  assert.equal(posted.headers.get('x-seen'), 'yes');
  assert.deepEqual(await posted.json(), { got: '{"a":1}' });
  const streamed = await fetchLocal(`http://upstream.test:${port}/stream`);
  assert.equal(await streamed.text(), 'data: one\n\ndata: two\n\n');
  await assert.rejects(fetchLocal(`http://upstream.test:${port}/cut`), /aborted|closed before the whole body/);
});

test('refuses every address the egress proxy blocks by default, including IPv6 forms that carry IPv4', () => {
  for (const address of ['127.0.0.1', '10.1.2.3', '169.254.169.254', '::1', 'fd00:ec2::254', '::ffff:127.0.0.1', '::7f00:1', '::127.0.0.1', '64:ff9b::a00:1', '2002:7f00:1::', 'fe80::1', '100::1', '4000::1']) {
    assert.ok(addressRefusal(address), `${address} must be refused`);
  }
  for (const address of ['93.184.216.34', '2606:2800:220:1:248:1893:25c8:1946']) assert.equal(addressRefusal(address), undefined, address);
});
