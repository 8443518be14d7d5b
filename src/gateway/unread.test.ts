/**
 * The ledger of what agents leave unread, on a real node:http server with raw sockets as clients that read
 * or never read. Each request's path names its agent; the test writes the answers.
 */
import assert from 'node:assert/strict';
import { createServer, type ServerResponse } from 'node:http';
import { connect, type AddressInfo, type Socket } from 'node:net';
import { after, before, test } from 'node:test';
import { STREAM_UNREAD_LIMIT, UnreadLedger, UnreadWatch } from './unread.js';

const MB = 1024 * 1024;
const CHUNK = Buffer.alloc(6 * MB, 'x');
const cutOffs: { agent: string | undefined; reason: string }[] = [];
const cutOffsOf = (agent: string): string[] => cutOffs.filter((cut) => cut.agent === agent).map((cut) => cut.reason);
const ledger = new UnreadLedger(16 * MB, (principal, reason) => cutOffs.push({ agent: principal.agent, reason }));

const arriving: ((response: ServerResponse) => void)[] = [];
const server = createServer((req, res) => {
  res.writeHead(200, { 'content-type': 'text/plain' });
  res.flushHeaders();
  arriving.shift()?.(res);
});
let port: number;

before(async () => {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  port = (server.address() as AddressInfo).port;
});
after(() => {
  server.closeAllConnections();
  server.close();
});

interface Client {
  socket: Socket;
  res: ServerResponse;
  watch: UnreadWatch;
  /** Writes to the client and checks, as a transport does. */
  write(data: Buffer, end?: boolean): void;
  received(): number;
}

/** A client of `agent` that reads what it is sent, or (`reading: false`) never reads. */
async function client(agent: string, reading: boolean): Promise<Client> {
  const socket = connect(port, '127.0.0.1');
  socket.on('error', () => undefined);
  let received = 0;
  if (reading) socket.on('data', (chunk: Buffer) => (received += chunk.length));
  const res = await new Promise<ServerResponse>((resolve) => {
    arriving.push(resolve);
    socket.write(`GET /${agent} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n`);
  });
  if (!reading) socket.pause();
  const watch = new UnreadWatch(res, ledger.account({ agent }), 'a test response');
  return {
    socket,
    res,
    watch,
    write(data, end = false) {
      if (end) res.end(data);
      else res.write(data);
      watch.check();
    },
    received: () => received,
  };
}

async function until(condition: () => boolean, what: string): Promise<void> {
  for (let i = 0; i < 250 && !condition(); i += 1) await new Promise((resolve) => setTimeout(resolve, 20));
  assert.ok(condition(), what);
}

test('cuts off the response whose write takes its agent past the limit; the agent\'s others and other agents go on', async () => {
  const [first, second, third] = [await client('greedy', false), await client('greedy', false), await client('greedy', false)];
  const other = await client('other', false);
  first.write(CHUNK);
  second.write(CHUNK);
  other.write(CHUNK);
  assert.ok(ledger.unreadOf({ agent: 'greedy' }) >= 2 * CHUNK.length);
  assert.deepEqual(cutOffsOf('greedy'), [], 'two unread answers fit the limit');
  third.write(CHUNK);
  assert.deepEqual([first.res.destroyed, second.res.destroyed, third.res.destroyed, other.res.destroyed], [false, false, true, false]);
  assert.deepEqual(cutOffsOf('other'), []);
  assert.equal(cutOffsOf('greedy').length, 1);
  assert.match(cutOffsOf('greedy')[0]!, /^the agent left \d+ bytes unread across its connections, over gateway\.maxUnreadBytesPerAgent \(16777216\); a test response was cut off$/);
  assert.ok(ledger.unreadOf({ agent: 'greedy' }) < 3 * CHUNK.length, 'what the cut-off response held no longer counts');

  for (const each of [first, second, other]) each.socket.destroy();
  await until(() => ledger.unreadOf({ agent: 'greedy' }) === 0 && ledger.unreadOf({ agent: 'other' }) === 0, 'a closed connection holds nothing');
});

test('a long-lived stream counts down as its client reads, and its ended answer once the client has it', async () => {
  const reader = await client('reader', true);
  for (let round = 1; round <= 10; round += 1) {
    reader.write(CHUNK);
    await until(() => reader.received() >= round * CHUNK.length, `round ${round} was read`);
    await until(() => ledger.unreadOf({ agent: 'reader' }) === 0, `round ${round} no longer counts once read`);
  }
  // Ten rounds of 6 MB through one open stream, more than the limit: nothing drifted, nothing was cut off.
  assert.equal(reader.res.destroyed, false);
  reader.write(CHUNK, true);
  await until(() => reader.received() >= 11 * CHUNK.length, 'the last answer was read');
  await until(() => ledger.unreadOf({ agent: 'reader' }) === 0, 'an ended answer no longer counts once read');
  assert.deepEqual(cutOffsOf('reader'), []);
  reader.socket.destroy();
});

test('a response its client abandons stops counting', async () => {
  const gone = await client('leaver', false);
  gone.write(CHUNK);
  assert.ok(ledger.unreadOf({ agent: 'leaver' }) >= CHUNK.length);
  gone.socket.destroy();
  await until(() => ledger.unreadOf({ agent: 'leaver' }) === 0, 'the abandoned response holds nothing');
});

test('one response left unread past its own bound is cut off and recorded, whatever the agent\'s share', async () => {
  const generous = new UnreadLedger(1024 * MB, (principal, reason) => cutOffs.push({ agent: principal.agent, reason }));
  const socket = connect(port, '127.0.0.1');
  socket.on('error', () => undefined);
  const res = await new Promise<ServerResponse>((resolve) => {
    arriving.push(resolve);
    socket.write('GET /stalled HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n');
  });
  socket.pause();
  const watch = new UnreadWatch(res, generous.account({ agent: 'stalled' }), 'the test stream');
  for (let written = 0; written <= STREAM_UNREAD_LIMIT && !res.destroyed; written += CHUNK.length) {
    res.write(CHUNK);
    watch.check();
  }
  assert.equal(res.destroyed, true);
  assert.equal(cutOffsOf('stalled').length, 1);
  assert.match(cutOffsOf('stalled')[0]!, /^the client left \d+ bytes of the test stream unread, over the limit of 67108864 bytes for one response; it was cut off$/);
  await until(() => generous.unreadOf({ agent: 'stalled' }) === 0, 'the cut-off stream holds nothing');
  socket.destroy();
});
