import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { MAX_LAYERS, percentReadings, type PercentReading } from './percent-decoding.js';

const read = (text: string, formFrom?: number): string[] => {
  const readings = percentReadings(Buffer.from(text, 'latin1'), formFrom);
  assert.notEqual(readings, 'too-deep');
  return (readings as PercentReading[]).map((reading) => reading.bytes.toString('latin1'));
};

describe('percent-decoded readings', () => {
  it('reads every layer of escapes, in either case', () => {
    assert.deepEqual(read('ghp%5Fx'), ['ghp_x']);
    assert.deepEqual(read('%67%68%70%5f'), ['ghp_']);
    assert.deepEqual(read('ghp%255F'), ['ghp_'], 'encoded twice');
    assert.deepEqual(read(`%${'25'.repeat(MAX_LAYERS - 1)}41`), ['A'], 'as deep as it reads');
  });

  it('has no reading for text with nothing to decode, so such text costs no second scan', () => {
    assert.deepEqual(read('/v1/search?q=plain'), []);
    assert.deepEqual(read('a+b'), [], '"+" is only a space where form rules apply');
  });

  it('leaves malformed escapes as they are, byte for byte', () => {
    assert.deepEqual(read('%zz%4%G1 100%'), []);
    assert.deepEqual(read('%%41%4'), ['%A%4']);
    assert.deepEqual(read('\xff%ff%00'), ['\xff\xff\x00']);
  });

  it('reads "+" as a space only from where form rules start, and also keeps the reading without that', () => {
    assert.deepEqual(read('/a+b?c+d%2Be', 4), ['/a+b?c+d+e', '/a+b?c d e']);
    assert.deepEqual(read('k=BEGIN+RSA+KEY', 0), ['k=BEGIN RSA KEY']);
  });

  it('refuses text that still decodes after the most layers it reads', () => {
    assert.equal(percentReadings(Buffer.from(`q=%${'25'.repeat(MAX_LAYERS)}41`)), 'too-deep');
  });

  it('maps a decoded span to the whole escapes that spell it', () => {
    const text = 'a=1&t=%2567hp%5F42&z=%41';
    const [reading] = percentReadings(Buffer.from(text)) as PercentReading[];
    const decoded = reading!.bytes.toString();
    assert.equal(decoded, 'a=1&t=ghp_42&z=A');
    const start = decoded.indexOf('ghp_42');
    const span = reading!.spanOf(start, start + 'ghp_42'.length);
    assert.equal(text.slice(span.start, span.end), '%2567hp%5F42');
  });
});
