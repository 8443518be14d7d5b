/**
 * Formats in a server's inputSchema whose names Ajv would find on Object.prototype: each must be a plain
 * annotation, not a check that throws on every call or refuses every string.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { InputSchemas } from './input-schema.js';

const stringWithFormat = (format: string) => ({ type: 'object' as const, properties: { value: { type: 'string', format } } });

test('a format named like a member of Object.prototype is an annotation: strings pass, other types do not', () => {
  const schemas = new InputSchemas();
  for (const format of ['hasOwnProperty', 'isPrototypeOf', 'valueOf', 'constructor', 'toString']) {
    const check = schemas.checkerFor(stringWithFormat(format), () => assert.fail(`${format} made the schema unusable`));
    assert.deepEqual(check({ value: 'anything' }), { ok: true }, format);
    assert.equal(check({ value: 1 }).ok, false, format);
  }
});

test('the format "__proto__" makes the schema unusable, so conditions on its arguments fail closed', () => {
  const reasons: string[] = [];
  const check = new InputSchemas().checkerFor(stringWithFormat('__proto__'), (reason) => reasons.push(reason));
  assert.equal(check({ value: 'anything' }).ok, 'unchecked');
  assert.match(reasons.join(), /cannot be compiled \(it uses the format "__proto__"/);
});
