import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { PerCallerPools } from './pools.js';

const agent = (name: string) => ({ principal: { agent: name }, session: undefined });

describe('PerCallerPools', () => {
  it('keeps one pool per caller and drops the least recently used one past the limit', () => {
    let made = 0;
    const pools = new PerCallerPools(() => ({ id: ++made, destroy: () => undefined }), 2);
    const a = pools.for(agent('a'));
    const b = pools.for(agent('b'));
    assert.equal(pools.for(agent('a')), a, 'the same caller gets the same pool');
    assert.equal(pools.for(agent('a')), a, 'and again, as the most recent');
    pools.for(agent('c')); // b is the least recently used now
    assert.equal(pools.for(agent('a')), a, 'a was used after b, so it stays');
    assert.notEqual(pools.for(agent('b')), b, 'b was dropped and gets a new pool');
  });

  it('drops the oldest even when the same caller asked twice in a row before', () => {
    let made = 0;
    const pools = new PerCallerPools(() => ({ id: ++made, destroy: () => undefined }), 2);
    const a = pools.for(agent('a'));
    pools.for(agent('a'));
    const b = pools.for(agent('b'));
    pools.for(agent('c')); // a is the oldest
    assert.equal(pools.for(agent('b')), b);
    assert.notEqual(pools.for(agent('a')), a);
  });

  it('keeps sessions apart from agents of the same name', () => {
    const pools = new PerCallerPools(() => ({ destroy: () => undefined }));
    assert.notEqual(pools.for({ principal: { agent: 'x' }, session: 'x' }), pools.for(agent('x')));
  });
});
