import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { test } from 'node:test';
import { InputRelay, StateSigner } from './input-relay.js';
import type { CallBinding } from './upstream.js';

function round(capabilities: Record<string, unknown>): CallBinding {
  return {
    session: 'stateless-test',
    send: () => Promise.reject(new Error('a 2026-07-28 request cannot be sent requests')),
    notify: async () => undefined,
    multiRound: { response: () => undefined, requestState: undefined, capabilities },
  };
}

test('puts to the client only the questions its declared capabilities let it answer', async () => {
  const relay = new InputRelay('stateless-test');
  const url = relay.binding.send({ method: 'elicitation/create', params: { mode: 'url', message: 'Open this', url: 'https://example.com/' } });
  const form = relay.binding.send({ method: 'elicitation/create', params: { message: 'Name?', requestedSchema: { type: 'object', properties: {} }, _meta: { progressToken: 1 } } });
  // A bare `elicitation: {}` declares form mode only.
  const step = await relay.next(round({ elicitation: {} }), undefined);
  assert.deepEqual(step, {
    kind: 'input',
    requests: { 'upstream-2': { method: 'elicitation/create', params: { message: 'Name?', requestedSchema: { type: 'object', properties: {} } } } },
  });
  await assert.rejects(url, /did not declare the elicitation\.url capability/);
  relay.reply('upstream-2', { action: 'decline' });
  assert.deepEqual(await form, { action: 'decline' });
  relay.follow(Promise.resolve({ content: [] }));
  assert.deepEqual(await relay.next(round({}), undefined), { kind: 'done', result: { content: [] } });
});

test('a client that goes away while a round waits cancels the call upstream', async () => {
  const relay = new InputRelay('stateless-test');
  const cancelled = new Promise((resolve) => relay.signal.addEventListener('abort', () => resolve(relay.signal.reason)));
  const client = new AbortController();
  const waiting = relay.next(round({}), client.signal);
  relay.follow(new Promise((_resolve, reject) => relay.signal.addEventListener('abort', () => reject(relay.signal.reason))));
  client.abort();
  assert.match(String(await cancelled), /the client cancelled the call/);
  assert.equal((await waiting).kind, 'failed');
});

test('a request state checks only for the purpose, binding and time it was signed for', () => {
  const signer = new StateSigner(randomBytes(32));
  const bound = ['agent', null, ['ops'], 'server__tool', 'sha256:abc'];
  const state = signer.sign('parked', bound, Date.now() + 60_000, 'nonce-1');
  assert.equal(signer.check('parked', state, bound)?.nonce, 'nonce-1');
  assert.equal(signer.check('approval', state, bound), undefined);
  assert.equal(signer.check('parked', state, ['other-agent', ...bound.slice(1)]), undefined);
  assert.equal(signer.check('parked', state.replace('nonce-1', 'nonce-2'), bound), undefined);
  assert.equal(signer.check('parked', signer.sign('parked', bound, Date.now() - 1, 'nonce-1'), bound), undefined);
  assert.equal(new StateSigner(randomBytes(32)).check('parked', state, bound), undefined, 'a restarted gateway knows no earlier state');
});
