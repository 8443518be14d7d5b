import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { closePayload, encodeFrame, FrameParser, frameHeader, Opcode, ProtocolViolation, type FrameEvent, type FrameHeader } from './websocket.js';

interface Parsed {
  header: FrameHeader;
  payload: Buffer;
}

/** Feeds `pieces` to a parser and assembles whole frames from its events. */
function parse(parser: FrameParser, pieces: Buffer[]): Parsed[] | ProtocolViolation {
  const frames: Parsed[] = [];
  let current: { header: FrameHeader; chunks: Buffer[] } | undefined;
  for (const piece of pieces) {
    const events = parser.push(piece);
    if (events instanceof ProtocolViolation) return events;
    for (const event of events as FrameEvent[]) {
      if (event.kind === 'frame') current = { header: event.header, chunks: [] };
      else if (event.kind === 'payload') current?.chunks.push(Buffer.from(event.bytes));
      else if (current) {
        frames.push({ header: current.header, payload: Buffer.concat(current.chunks) });
        current = undefined;
      }
    }
  }
  return frames;
}

function payloadOf(length: number): Buffer {
  return Buffer.from(Array.from({ length }, (_, i) => (i * 7 + 3) & 0xff));
}

/** A frame written by hand: any header bits, an optional mask key, any announced length. */
function rawFrame(first: number, length: number | bigint, payload: Buffer, key?: Buffer): Buffer {
  const lengthBytes =
    typeof length === 'bigint' ? Buffer.concat([Buffer.from([(key ? 0x80 : 0) | 127]), Buffer.from(length.toString(16).padStart(16, '0'), 'hex')]) : Buffer.from([(key ? 0x80 : 0) | length]);
  const body = key ? Buffer.from(payload.map((byte, i) => byte ^ (key[i & 3] as number))) : payload;
  return Buffer.concat([Buffer.from([first]), lengthBytes, key ?? Buffer.alloc(0), body]);
}

describe('WebSocket frame parser', () => {
  for (const length of [0, 5, 125, 126, 300, 65535, 65536]) {
    it(`reads a masked ${length}-byte frame split at every byte boundary (${length < 126 ? 7 : length < 65536 ? 16 : 64}-bit length)`, () => {
      const payload = payloadOf(length);
      const frame = encodeFrame(true, Opcode.binary, payload, true);
      // Every split point for short frames; for long ones, every point in the header and a spread through the payload.
      const splits = length <= 300 ? Array.from({ length: frame.length + 1 }, (_, i) => i) : [...Array.from({ length: 20 }, (_, i) => i), 1000, frame.length - 1, frame.length];
      for (const at of splits) {
        const frames = parse(new FrameParser(true), [frame.subarray(0, at), frame.subarray(at)]);
        assert.ok(!(frames instanceof ProtocolViolation), `split at ${at}`);
        assert.equal(frames.length, 1, `split at ${at}`);
        assert.deepEqual(frames[0]?.header, { fin: true, opcode: Opcode.binary, length });
        assert.ok(frames[0]?.payload.equals(payload), `payload intact, split at ${at}`);
      }
    });
  }

  it('reads a fragmented message with a ping between its fragments, fed one byte at a time', () => {
    const bytes = Buffer.concat([
      encodeFrame(false, Opcode.text, Buffer.from('hel'), true),
      encodeFrame(true, Opcode.ping, Buffer.from('are you there'), true),
      encodeFrame(false, Opcode.continuation, Buffer.alloc(0), true),
      encodeFrame(true, Opcode.continuation, Buffer.from('lo'), true),
    ]);
    const frames = parse(new FrameParser(true), [...bytes].map((byte) => Buffer.from([byte])));
    assert.ok(!(frames instanceof ProtocolViolation));
    assert.deepEqual(
      frames.map((frame) => [frame.header.opcode, frame.header.fin, frame.payload.toString()]),
      [
        [Opcode.text, false, 'hel'],
        [Opcode.ping, true, 'are you there'],
        [Opcode.continuation, false, ''],
        [Opcode.continuation, true, 'lo'],
      ],
    );
  });

  it("reads a server's unmasked frames, several in one piece", () => {
    const bytes = Buffer.concat([encodeFrame(true, Opcode.text, Buffer.from('one'), false), encodeFrame(true, Opcode.binary, payloadOf(70_000), false)]);
    const frames = parse(new FrameParser(false), [bytes]);
    assert.ok(!(frames instanceof ProtocolViolation));
    assert.equal(frames.length, 2);
    assert.equal(frames[0]?.payload.toString(), 'one');
    assert.ok(frames[1]?.payload.equals(payloadOf(70_000)));
  });

  const key = Buffer.from([1, 2, 3, 4]);
  const refusals: [string, boolean, Buffer, RegExp][] = [
    ['an unmasked client frame', true, rawFrame(0x81, 2, Buffer.from('hi')), /not masked/],
    ['a masked server frame', false, rawFrame(0x81, 2, Buffer.from('hi'), key), /server frame is masked/],
    ['a reserved bit (a compressed frame)', true, rawFrame(0xc1, 2, Buffer.from('hi'), key), /reserved bit/],
    ['an unknown data opcode', true, rawFrame(0x83, 2, Buffer.from('hi'), key), /unknown opcode 0x3/],
    ['an unknown control opcode', true, rawFrame(0x8b, 0, Buffer.alloc(0), key), /unknown opcode 0xb/],
    ['a control frame over 125 bytes', true, frameHeader(true, Opcode.ping, 126, key), /over 125 bytes/],
    ['a fragmented control frame', true, rawFrame(0x09, 0, Buffer.alloc(0), key), /control frame is fragmented/],
    ['a close frame with a one-byte payload', true, rawFrame(0x88, 1, Buffer.from([3]), key), /one-byte payload/],
    ['a continuation with no message', true, rawFrame(0x80, 0, Buffer.alloc(0), key), /no message to continue/],
    ['a 64-bit length with its top bit set', true, rawFrame(0x82, 0x8000_0000_0000_0000n, Buffer.alloc(0), key), /more than any message can be/],
    ['a 64-bit length past 2^53', true, rawFrame(0x82, 2n ** 53n, Buffer.alloc(0), key), /more than any message can be/],
  ];
  for (const [what, masked, bytes, message] of refusals) {
    it(`refuses ${what}, also when its header arrives byte by byte`, () => {
      const whole = new FrameParser(masked).push(bytes);
      assert.ok(whole instanceof ProtocolViolation, what);
      assert.match(whole.message, message);
      const parser = new FrameParser(masked);
      const split = parse(parser, [...bytes].map((byte) => Buffer.from([byte])));
      assert.ok(split instanceof ProtocolViolation, `${what}, byte by byte`);
      // A parser that found a violation stays stopped.
      assert.ok(parser.push(encodeFrame(true, Opcode.text, Buffer.from('x'), masked)) instanceof ProtocolViolation);
    });
  }

  it('refuses a new message that begins before the last fragment of the one before', () => {
    const parser = new FrameParser(true);
    const frames = parse(parser, [encodeFrame(false, Opcode.text, Buffer.from('a'), true), encodeFrame(true, Opcode.text, Buffer.from('b'), true)]);
    assert.ok(frames instanceof ProtocolViolation);
    assert.match(frames.message, /before the previous one's last fragment/);
  });

  it('accepts the largest length a number holds exactly, announced in 64 bits', () => {
    const events = new FrameParser(false).push(rawFrame(0x82, 2n ** 53n - 1n, Buffer.alloc(0)));
    assert.ok(!(events instanceof ProtocolViolation));
    assert.deepEqual(events, [{ kind: 'frame', header: { fin: true, opcode: Opcode.binary, length: Number.MAX_SAFE_INTEGER } }]);
  });
});

describe('WebSocket frame encoder', () => {
  it('masks every client frame with a fresh key', () => {
    const payload = Buffer.from('same payload');
    const first = encodeFrame(true, Opcode.text, payload, true);
    const second = encodeFrame(true, Opcode.text, payload, true);
    assert.notDeepEqual(first.subarray(2, 6), second.subarray(2, 6), 'two keys');
    assert.equal(first.indexOf(payload), -1, 'the payload does not appear in clear');
  });

  it('cuts a close reason to fit a control frame without splitting a character', () => {
    const payload = closePayload(1008, '€'.repeat(60));
    assert.ok(payload.length <= 125);
    assert.equal(payload.readUInt16BE(0), 1008);
    assert.equal(payload.subarray(2).toString('utf8'), '€'.repeat(41));
  });
});
