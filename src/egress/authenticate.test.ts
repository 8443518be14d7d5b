import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { authenticateCaller, keyFromProxyAuthorization, type Authenticate, type Client } from './authenticate.js';
import { Refusal } from './refusal.js';

const TCP: Client = { listener: 'tcp' };
const alice = { agent: 'alice' };

describe('authenticateCaller', () => {
  it('answers at once when the key lookup does', () => {
    const caller = authenticateCaller(TCP, 'good', (key) => (key === 'good' ? alice : undefined));
    assert.deepEqual(caller, { principal: alice, session: undefined });
  });

  it('waits for a lookup that answers later, a promise or any other thenable', async () => {
    const later: Authenticate = async (key) => (key === 'good' ? alice : undefined);
    assert.deepEqual(await authenticateCaller(TCP, 'good', later), { principal: alice, session: undefined });
    // A thenable from elsewhere (another realm, a library's own promise) is an answer to wait for, not a principal.
    const thenable = { then: (resolve: (value: undefined) => void) => resolve(undefined) };
    const answer = await authenticateCaller(TCP, 'good', () => thenable as unknown as Promise<undefined>);
    assert.ok(answer instanceof Refusal && answer.status === 407, 'a thenable resolving to nothing lets no one in');
  });

  it('refuses with 407 for a missing or unknown key and for a lookup that fails', async () => {
    for (const outcome of [
      authenticateCaller(TCP, undefined, () => alice),
      authenticateCaller(TCP, '', () => alice),
      authenticateCaller(TCP, 'bad', () => undefined),
      authenticateCaller(TCP, 'bad', () => {
        throw new Error('registry down');
      }),
      await authenticateCaller(TCP, 'bad', () => Promise.reject(new Error('registry down'))),
    ]) {
      assert.ok(outcome instanceof Refusal, 'refused');
      assert.equal(outcome.status, 407);
      assert.equal(outcome.reason, 'auth-required');
    }
  });

  it('takes a session socket for its principal, whatever key is shown', () => {
    const session: Client = { listener: 'session', principal: { agent: 'sandboxed' }, session: 's1' };
    assert.deepEqual(authenticateCaller(session, 'anything', () => undefined), { principal: { agent: 'sandboxed' }, session: 's1' });
  });
});

describe('keyFromProxyAuthorization', () => {
  it('reads the Basic password (or the user when there is none) and Bearer tokens, the same every time', () => {
    const basic = `Basic ${Buffer.from('agent:ghk_secret').toString('base64')}`;
    for (let i = 0; i < 3; i++) assert.equal(keyFromProxyAuthorization(basic), 'ghk_secret');
    assert.equal(keyFromProxyAuthorization(`Basic ${Buffer.from('ghk_only:').toString('base64')}`), 'ghk_only');
    assert.equal(keyFromProxyAuthorization('Bearer ghk_token'), 'ghk_token');
    assert.equal(keyFromProxyAuthorization('Digest x'), undefined);
    assert.equal(keyFromProxyAuthorization(undefined), undefined);
  });
});
