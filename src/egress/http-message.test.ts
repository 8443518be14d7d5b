import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { forwardableHeaders } from './http-message.js';

describe('forwardable headers', () => {
  const raw = ['Host', 'api.test', 'Connection', 'keep-alive, X-Hop', 'X-Hop', 'private', 'Keep-Alive', 'timeout=5', 'Proxy-Authorization', 'Bearer key', 'Content-Length', '2', 'Accept', '*/*'];

  it('drops hop-by-hop headers, the names Connection lists, and the proxy credentials, keeping order and spelling', () => {
    assert.deepEqual(forwardableHeaders(raw, 'keep-alive, X-Hop'), ['Host', 'api.test', 'Content-Length', '2', 'Accept', '*/*']);
  });

  it('reads every Connection header value, and drops what the caller names too', () => {
    assert.deepEqual(forwardableHeaders(raw, ['close', ' x-hop '], ['accept']), ['Host', 'api.test', 'Content-Length', '2']);
  });

  it('never lets Connection drop the framing or the Host (a smuggling trick)', () => {
    assert.deepEqual(forwardableHeaders(raw, 'Content-Length, host, X-Hop'), ['Host', 'api.test', 'Content-Length', '2', 'Accept', '*/*']);
  });

  it('keeps everything that is not hop-by-hop when there is no Connection header', () => {
    assert.deepEqual(forwardableHeaders(['X-Hop', 'kept', 'Accept', '*/*'], undefined), ['X-Hop', 'kept', 'Accept', '*/*']);
  });
});
