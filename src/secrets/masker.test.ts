import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Masker, type MaskPair } from './masker.js';

const pair = (real: string, stand: string, secret = 'token'): MaskPair => ({ real: Buffer.from(real), stand: Buffer.from(stand), secret });

/** Streams `text` through a masker in pieces cut at `cuts`, and returns what came out. */
function stream(masker: Masker, text: string, cuts: number[]): string {
  const bytes = Buffer.from(text);
  const out: Buffer[] = [];
  let at = 0;
  for (const cut of [...cuts, bytes.length]) {
    out.push(masker.push(bytes.subarray(at, cut)));
    at = cut;
  }
  out.push(masker.end());
  return Buffer.concat(out).toString();
}

describe('Masker', () => {
  const real = 'ghp_realRealRealRealRealRealRealReal0001';
  const stand = 'ghp_placePlacePlacePlacePlacePlacePlac01';
  const text = `{"echo":"Bearer ${real}","again":"${real}"}`;

  it('masks a real value cut between two pieces at every possible byte', () => {
    for (let cut = 0; cut <= Buffer.byteLength(text); cut++) {
      assert.equal(stream(new Masker([pair(real, stand)]), text, [cut]), `{"echo":"Bearer ${stand}","again":"${stand}"}`, `cut at ${cut}`);
    }
  });

  it('masks a real value split over one-byte pieces, multi-byte UTF-8 characters included', () => {
    const unicode = 'schlüssel€☃𝄞-7f3a9c';
    const masker = new Masker([pair(unicode, 'placeholder-value-x')]);
    const body = `a${unicode}b${unicode}`;
    const cuts = Array.from({ length: Buffer.byteLength(body) - 1 }, (_, index) => index + 1);
    assert.equal(stream(masker, body, cuts), 'aplaceholder-value-xbplaceholder-value-x');
  });

  it('holds back only a tail that could still become a real value, so an event stream is not delayed', () => {
    const masker = new Masker([pair(real, stand)]);
    assert.equal(masker.push(Buffer.from('data: first\n\n')).toString(), 'data: first\n\n');
    assert.equal(masker.push(Buffer.from('data: ghp_real')).toString(), 'data: ');
    assert.equal(masker.push(Buffer.from('ly not\n\n')).toString(), 'ghp_really not\n\n');
    assert.equal(masker.end().length, 0);
  });

  it('takes the longest real value where two start at the same byte, and records what it found', () => {
    const short = pair('secret-abc', '[short]', 'short');
    const long = pair('secret-abcdef', '[long]', 'long');
    const masker = new Masker([short, long]);
    assert.equal(masker.mask(Buffer.from('x secret-abcdef y secret-abc z')).toString(), 'x [long] y [short] z');
    assert.deepEqual([...masker.found].map((found) => found.secret).sort(), ['long', 'short']);
  });

  it('says whether masking keeps lengths, which decides whether a Content-Length still holds', () => {
    assert.equal(new Masker([pair(real, stand)]).keepsLength, true);
    assert.equal(new Masker([pair(real, '[REDACTED:token]')]).keepsLength, false);
  });
});
